/**
 * Age-based retention: with `maxAgeMs` set, records older than that are
 * deleted when the store opens and then every hour (a timer that does not
 * keep the process alive). A failed prune is reported, and tried again at
 * the next tick.
 */
import type { MeshguardError } from "../../errors.js";
import type { GatewayStore, Retention } from "../types.js";
import { asStoreError } from "./batcher.js";

export const PRUNE_EVERY_MS = 3_600_000;

/** startPruning prunes now and every `everyMs`; returns the function that stops it. */
export function startPruning(store: Pick<GatewayStore, "prune">, retention: Retention, onError: (err: MeshguardError) => void, everyMs = PRUNE_EVERY_MS): () => void {
  const maxAge = retention.maxAgeMs;
  if (maxAge === undefined) return () => {};
  const run = () => {
    store.prune(Date.now() - maxAge).catch((err: unknown) => onError(asStoreError(err, "could not delete log records past retention.maxAge")));
  };
  run();
  const timer = setInterval(run, everyMs);
  timer.unref();
  return () => clearInterval(timer);
}
