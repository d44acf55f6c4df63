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
 *   starts a new one.
 */
import { createHash, randomUUID } from "node:crypto";

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
    if (clientSessionId !== undefined && clientSessionId !== "") {
      return `c-${createHash("sha256").update(`${who}\u0000${clientSessionId}`).digest("base64url").slice(0, 22)}`;
    }
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
