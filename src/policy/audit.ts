/**
 * Audit: every decision can become a DecisionEvent (./event.ts) written to a
 * pluggable sink (JSON lines by default). Denials and approvals are always written;
 * allows are sampled at a configurable rate. The same event format is the
 * observation log of learn mode (`mode: "observe"`: the call went through
 * whatever the policy said), so `meshguard policy learn` reads what the
 * guard writes.
 *
 * Events carry no secrets unless configured (see ./event.ts): no header
 * values, no query values, no MCP argument values, no bodies.
 */

import { ErrorCode, MeshguardError } from "../errors.js";
import type { DecisionEvent } from "./event.js";

/**
 * AuditSink receives events; write must not block for long and must not throw
 * (errors go to onError). The sinks themselves are in sinks.ts.
 */
export interface AuditSink {
  write(ev: DecisionEvent): void;
  /** Resolves when everything written so far is handed to the OS. */
  flush?(): Promise<void>;
  close?(): Promise<void>;
}

export interface AuditorOptions {
  sink: AuditSink;
  /** Fraction of allow decisions written, 0..1 (default 1: all). Denials, approvals and observe-mode events are always written. */
  sampleAllows?: number;
  /** Random source in [0, 1) for sampling (injectable for tests). */
  random?: () => number;
  onError?: (err: Error) => void;
}

export interface Auditor {
  /** record writes the event if the sampling rules say so; it never throws. Returns whether it was written. */
  record(ev: DecisionEvent): boolean;
  flush(): Promise<void>;
  close(): Promise<void>;
  /** Counts since creation. */
  readonly stats: { written: number; sampledOut: number; errors: number };
}

/** createAuditor applies the sampling policy in front of a sink. */
export function createAuditor(opts: AuditorOptions): Auditor {
  const rate = opts.sampleAllows ?? 1;
  if (!(rate >= 0 && rate <= 1)) throw new MeshguardError(ErrorCode.INVALID_OPTIONS, `createAuditor: sampleAllows must be between 0 and 1, got ${rate}`, { hint: "pass a fraction such as 0.1 (10% of allows written)" });
  const random = opts.random ?? Math.random;
  const stats = { written: 0, sampledOut: 0, errors: 0 };
  return {
    stats,
    record(ev) {
      const always = ev.effect !== "allow" || ev.mode === "observe";
      if (!always && !(rate >= 1 || random() < rate)) {
        stats.sampledOut++;
        return false;
      }
      try {
        opts.sink.write(ev);
        stats.written++;
        return true;
      } catch (err) {
        stats.errors++;
        opts.onError?.(err as Error);
        return false;
      }
    },
    flush: async () => opts.sink.flush?.(),
    close: async () => opts.sink.close?.(),
  };
}
