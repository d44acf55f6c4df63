/**
 * Audit: every decision can become a DecisionEvent written to a pluggable
 * sink (JSON lines by default). Denials and approvals are always written;
 * allows are sampled at a configurable rate. The same event format is the
 * observation log of learn mode (`mode: "observe"`: the call went through
 * whatever the policy said), so `meshguard policy learn` reads what the
 * guard writes.
 *
 * Events carry no secrets by design: no header values, no query values, no
 * MCP argument values, no bodies — only their names and sizes.
 */

import { ErrorCode, MeshguardError } from "../errors.js";
import { formatTarget } from "./request.js";
import type { Decision, DecisionRequest, Effect, Principal, Target } from "./types.js";

/** What was called, without values that may hold secrets. */
export type TargetSummary =
  | { kind: "http"; scheme: "http" | "https"; host: string; port: number; method: string; path: string; queryKeys?: string[]; bodySize?: number; peerTags?: string[] }
  | { kind: "tcp"; tls: boolean; host: string; port: number; tailnet?: boolean; peerTags?: string[] }
  | { kind: "mcp"; server: string; tool: string; argKeys?: string[] }
  | { kind: "llm"; provider: string; model: string; maxTokens?: number };

/** DecisionEvent is one line of the audit / observation log (format version 1). */
export interface DecisionEvent {
  v: 1;
  /** ISO 8601 time of the decision. */
  time: string;
  /** "enforce": the decision was applied; "observe": logged only, the call went through. */
  mode: "enforce" | "observe";
  principal: Principal;
  /** The call as one request line (request.ts syntax), without query values or MCP arguments. */
  request: string;
  target: TargetSummary;
  effect: Effect;
  ruleId?: string;
  reason: string;
  /** Time the decision took, in microseconds. */
  latencyUs: number;
  /** Hash of the policy that decided (Policy.hash). */
  policyHash?: string;
}

/** summarizeTarget drops values that may be secret (query values, headers, arguments, bodies). */
export function summarizeTarget(t: Target): TargetSummary {
  switch (t.kind) {
    case "http": {
      const s: TargetSummary = { kind: "http", scheme: t.scheme, host: t.host, port: t.port, method: t.method, path: t.path };
      if (t.query) s.queryKeys = [...new Set([...new URLSearchParams(t.query).keys()])];
      if (t.bodySize !== undefined) s.bodySize = t.bodySize;
      if (t.peer?.tags?.length) s.peerTags = [...t.peer.tags];
      return s;
    }
    case "tcp": {
      const s: TargetSummary = { kind: "tcp", tls: t.tls, host: t.host, port: t.port };
      if (t.tailnet) s.tailnet = true;
      if (t.peer?.tags?.length) s.peerTags = [...t.peer.tags];
      return s;
    }
    case "mcp": {
      const s: TargetSummary = { kind: "mcp", server: t.server, tool: t.tool };
      const keys = Object.keys(t.args ?? {});
      if (keys.length) s.argKeys = keys;
      return s;
    }
    case "llm": {
      const s: TargetSummary = { kind: "llm", provider: t.provider, model: t.model };
      if (t.maxTokens !== undefined) s.maxTokens = t.maxTokens;
      return s;
    }
  }
}

/** toDecisionEvent builds the event for one decision (the guard calls this). */
export function toDecisionEvent(
  req: DecisionRequest,
  decision: Decision,
  info: { latencyUs: number; mode?: "enforce" | "observe"; policyHash?: string; time?: Date },
): DecisionEvent {
  const t = req.target;
  const bare: Target = t.kind === "http" ? { ...t, query: "" } : t.kind === "mcp" ? { ...t, args: {} } : t;
  const ev: DecisionEvent = {
    v: 1,
    time: (info.time ?? req.now ?? new Date()).toISOString(),
    mode: info.mode ?? "enforce",
    principal: { ...req.principal, tags: [...req.principal.tags] },
    request: formatTarget(bare),
    target: summarizeTarget(t),
    effect: decision.effect,
    reason: decision.reason,
    latencyUs: info.latencyUs,
  };
  if (decision.ruleId !== undefined) ev.ruleId = decision.ruleId;
  if (info.policyHash !== undefined) ev.policyHash = info.policyHash;
  return ev;
}

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
