/**
 * Age-based retention: with `maxAgeMs` set, records older than that are
 * deleted when the store opens and then every hour, or every `everyMs`
 * (the config's `retention.pruneEvery`), by a timer that does not keep the
 * process alive. A failed prune is reported, and tried again at the next
 * tick; a successful one is reported to `onPruned` (the gateway writes it
 * to its JSON log).
 */
import type { MeshguardError } from "../../errors.js";
import type { GatewayStore, Retention } from "../types.js";
import { asStoreError } from "./batcher.js";

export const PRUNE_EVERY_MS = 3_600_000;

/** What a prune run did: `deleted` records older than `before` (epoch ms). */
export type OnPruned = (deleted: number, before: number) => void;

/** startPruning prunes now and every `everyMs`; returns the function that stops it. */
export function startPruning(store: Pick<GatewayStore, "prune">, retention: Retention, onError: (err: MeshguardError) => void, everyMs = PRUNE_EVERY_MS, onPruned?: OnPruned): () => void {
  const maxAge = retention.maxAgeMs;
  if (maxAge === undefined) return () => {};
  const run = () => {
    const before = Date.now() - maxAge;
    store.prune(before).then(
      (n) => onPruned?.(n, before),
      (err: unknown) => onError(asStoreError(err, "could not delete log records past retention.maxAge")),
    );
  };
  run();
  const timer = setInterval(run, everyMs);
  timer.unref();
  return () => clearInterval(timer);
}
