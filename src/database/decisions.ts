/**
 * What the database gateway keeps between statements so that judging one
 * already seen costs a Map lookup:
 *
 *   - DecisionCache: decisions by (caller, database) and statement text,
 *     for the policy in force (a reload starts afresh). Only a policy whose
 *     sql rules decide the same way every time is cached: a rule with a
 *     time window (`when.hours`, `when.weekdays`) or a rate limit makes a
 *     decision depend on the moment, and such a policy is evaluated for
 *     every statement. Bounded per caller; a long text (a generated bulk
 *     INSERT) is never cached.
 *   - DecisionBatch: allow events are built and handed to the sinks off the
 *     statement's path (after the current I/O callback, in one batch);
 *     denials and approvals are recorded at once, after whatever waits, so
 *     every event is recorded, in order. close() flushes.
 */

import { ROWS_WHAT } from "../policy/conditions.js";
import { decisionEvent, type ApprovalOutcome, type DecisionEvent, type EventPrincipal } from "../policy/event.js";
import type { Policy } from "../policy/load.js";
import type { Reveal } from "../policy/request.js";
import type { Decision, SqlTarget } from "../policy/types.js";

/** Statement texts cached per caller and database. */
export const DECISIONS_PER_CALLER = 4096;
/** A text longer than this is judged every time (it is most likely never sent again). */
const MAX_CACHED_TEXT = 8 * 1024;

/** The conditions of a sql rule that depend on the statement and the caller only. */
const STABLE_CONDITIONS = new Set(["operation", "table", "database", "columns", ROWS_WHAT]);

/** stableSqlDecisions says whether every sql rule of the policy decides a given (caller, database, text) the same way every time. */
export function stableSqlDecisions(policy: Policy): boolean {
  return policy.compiled.rules.every((r) => r.kind !== "sql" || (r.perMinute === undefined && r.conds.every((c) => STABLE_CONDITIONS.has(c.what))));
}

export class DecisionCache {
  private policy: Policy | undefined;
  private stable = false;
  private readonly callers = new Map<string, Map<string, Decision>>();

  /** forCaller is the cache of one caller and database under `policy`, or undefined when the policy's decisions cannot be cached. */
  forCaller(policy: Policy, key: string): Map<string, Decision> | undefined {
    if (policy !== this.policy) {
      this.policy = policy;
      this.stable = stableSqlDecisions(policy);
      this.callers.clear();
    }
    if (!this.stable) return undefined;
    let m = this.callers.get(key);
    if (m === undefined) {
      m = new Map();
      this.callers.set(key, m);
    }
    return m;
  }
}

/** remember caches a decision (approve is not cached: every statement asks the approver). */
export function remember(cache: Map<string, Decision>, text: string, d: Decision): void {
  if (d.effect === "approve" || text.length > MAX_CACHED_TEXT) return;
  if (cache.size >= DECISIONS_PER_CALLER) cache.delete(cache.keys().next().value as string);
  cache.set(text, d);
}

/** One decision to record, as the session saw it. */
export interface PendingDecision {
  principal: EventPrincipal;
  target: SqlTarget;
  decision: Decision;
  outcome: "allow" | "deny";
  us: number;
  policy: Policy | undefined;
  approval?: ApprovalOutcome;
  /** When it was decided (ms since the epoch). */
  at: number;
}

export class DecisionBatch {
  private queue: PendingDecision[] = [];
  private scheduled = false;
  private readonly sink: (ev: DecisionEvent) => void;
  private readonly reveal: Reveal | undefined;
  private readonly warn: (err: Error) => void;

  constructor(
    sink: (ev: DecisionEvent) => void,
    reveal: Reveal | undefined,
    warn: (err: Error) => void,
  ) {
    this.sink = sink;
    this.reveal = reveal;
    this.warn = warn;
  }

  /** later records an allow after the current I/O callback. */
  later(p: PendingDecision): void {
    this.queue.push(p);
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.flush());
    }
  }

  /** now records a decision at once (a denial must be on record before the client hears of it), after those waiting. */
  now(p: PendingDecision): void {
    this.flush();
    this.emit(p);
  }

  flush(): void {
    this.scheduled = false;
    if (this.queue.length === 0) return;
    const q = this.queue;
    this.queue = [];
    for (const p of q) this.emit(p);
  }

  private emit(p: PendingDecision): void {
    try {
      this.sink(
        decisionEvent(p.principal, p.target, p.decision, {
          layer: "sql",
          outcome: p.outcome,
          latencyUs: p.us,
          time: new Date(p.at),
          ...(p.policy ? { policyHash: p.policy.hash } : {}),
          ...(p.approval ? { approval: p.approval } : {}),
          ...(this.reveal ? { reveal: this.reveal } : {}),
        }),
      );
    } catch (err) {
      this.warn(err as Error);
    }
  }
}
