/**
 * Sessions group the requests of one caller (user and node) into what a
 * person would call one conversation or one coding session:
 *
 * - a request carrying a client session id (Claude Code's
 *   x-claude-code-session-id, or one in the body's metadata) belongs to the
 *   session of that id *for that caller*: the id is derived from caller and
 *   client id, so it is the same after a gateway restart, and a client id
 *   sent by another caller never joins someone else's session;
 * - otherwise a caller's requests form one session until the caller is idle
 *   for longer than the idle gap (default 30 minutes); the next request
 *   starts a new one. One gateway process keeps that state in memory
 *   (SessionTracker); gateway instances sharing a PostgreSQL store keep it
 *   in the store (SharedSessions), so that a caller whose requests are
 *   spread over several instances is in one session on all of them.
 */
import { createHash, randomUUID } from "node:crypto";
import type { MeshguardError } from "../errors.js";
import { asStoreError } from "./store/batcher.js";
import type { GatewayStore } from "./types.js";

/** The default idle gap that ends a session without a client session id. */
export const DEFAULT_IDLE_GAP_MS = 30 * 60_000;

interface Open {
  id: string;
  last: number;
}

export class SessionTracker {
  readonly idleGapMs: number;
  /** The open idle-gap session of each caller, keyed by user and node. */
  readonly #open = new Map<string, Open>();
  #assignsSinceSweep = 0;

  constructor(opts: { idleGapMs?: number } = {}) {
    const gap = opts.idleGapMs ?? DEFAULT_IDLE_GAP_MS;
    if (!(gap > 0) || !Number.isFinite(gap)) throw new RangeError(`SessionTracker: idleGapMs must be a positive number of milliseconds, not ${gap}`);
    this.idleGapMs = gap;
  }

  /** assign returns the session id of a request of `caller` made at `time` (epoch ms). */
  assign(caller: { user: string; node: string }, clientSessionId: string | undefined, time: number): string {
    const who = `${caller.user}\u0000${caller.node}`;
    if (clientSessionId !== undefined && clientSessionId !== "") return clientSession(who, clientSessionId);
    this.#sweep(time);
    const open = this.#open.get(who);
    // A request that arrives out of order (an older time than the last one
    // seen, from a concurrent request) stays in the open session.
    if (open && time - open.last <= this.idleGapMs) {
      if (time > open.last) open.last = time;
      return open.id;
    }
    const id = `s-${randomUUID()}`;
    this.#open.set(who, { id, last: time });
    return id;
  }

  /** How many callers have an open idle-gap session (memory stays bounded by the callers active within one gap). */
  get openSessions(): number {
    return this.#open.size;
  }

  /** Forgets sessions idle past the gap, at most once per 1000 assignments, so memory does not grow with every caller ever seen. */
  #sweep(now: number): void {
    if (++this.#assignsSinceSweep < 1000) return;
    this.#assignsSinceSweep = 0;
    for (const [k, s] of this.#open) if (now - s.last > this.idleGapMs) this.#open.delete(k);
  }
}

/** The session of a client's own session id, for one caller: the same on every instance and after a restart. */
function clientSession(who: string, clientSessionId: string): string {
  return `c-${createHash("sha256").update(`${who}\u0000${clientSessionId}`).digest("base64url").slice(0, 22)}`;
}

/** Forgetting idle shared sessions: at most once per this many assignments. */
const SHARED_SWEEP_EVERY = 1000;

/**
 * SharedSessions keeps the idle-gap sessions in the store, shared by every
 * gateway instance on it: each request of a caller without a session id of
 * its own asks the store, in one atomic statement, whether the caller's
 * session goes on or a new one starts (GatewayStore.assignSession). That
 * costs one statement per such request, after its answer has gone. When
 * the store cannot answer, the request gets this instance's own session
 * (as without a shared store) and the failure is reported.
 */
export class SharedSessions {
  readonly #store: Required<Pick<GatewayStore, "assignSession" | "forgetSessions">>;
  readonly #local: SessionTracker;
  readonly #onError: (err: MeshguardError) => void;
  /** Assignments the store has not answered yet (drain waits for them). */
  readonly #pending = new Set<Promise<string>>();
  #assignsSinceSweep = 0;

  constructor(store: Required<Pick<GatewayStore, "assignSession" | "forgetSessions">>, opts: { idleGapMs?: number; onError: (err: MeshguardError) => void }) {
    this.#store = store;
    this.#local = new SessionTracker(opts.idleGapMs === undefined ? {} : { idleGapMs: opts.idleGapMs });
    this.#onError = opts.onError;
  }

  get idleGapMs(): number {
    return this.#local.idleGapMs;
  }

  /** assign returns the session id of a request of `caller` made at `time`: at once for a client session id, else once the store has answered. */
  assign(caller: { user: string; node: string }, clientSessionId: string | undefined, time: number): string | Promise<string> {
    const who = `${caller.user}\u0000${caller.node}`;
    if (clientSessionId !== undefined && clientSessionId !== "") return clientSession(who, clientSessionId);
    // The key is a hash: the store never sees who the caller is, and any user name fits.
    const key = createHash("sha256").update(who).digest("base64url");
    this.#sweep(time);
    const p = this.#store.assignSession(key, time, this.#local.idleGapMs, `s-${randomUUID()}`).catch((err: unknown) => {
      this.#onError(asStoreError(err, "could not share a session through the store; this request's session is this instance's own"));
      return this.#local.assign(caller, undefined, time);
    });
    this.#pending.add(p);
    void p.finally(() => this.#pending.delete(p));
    return p;
  }

  /**
   * drain resolves once every assignment asked for so far is answered, and
   * what each caller did with its answer has run (they were told first):
   * the gateway closes the store only after it, so no record waiting for
   * its session is lost.
   */
  async drain(): Promise<void> {
    while (this.#pending.size > 0) await Promise.allSettled([...this.#pending]);
  }

  #sweep(now: number): void {
    if (++this.#assignsSinceSweep < SHARED_SWEEP_EVERY) return;
    this.#assignsSinceSweep = 0;
    this.#store.forgetSessions(now - this.#local.idleGapMs).catch((err: unknown) => this.#onError(asStoreError(err, "could not forget idle sessions")));
  }
}
