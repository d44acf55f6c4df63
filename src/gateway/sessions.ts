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

/** What this instance knows of one caller's shared session. */
interface Known {
  /** The session id, once the store has named it ("" before). */
  id: string;
  /** The latest request time the store is known to hold for the caller (this instance wrote it). */
  stored: number;
  /** The latest request time of the caller seen here (ahead of `stored` until written). */
  latest: number;
  /** The store's answer being awaited, and the request time it was asked for. */
  asking: Promise<string> | undefined;
  askedAt: number;
  /** A write of `latest` scheduled for later. */
  timer: NodeJS.Timeout | undefined;
}

/**
 * SharedSessions keeps the idle-gap sessions in the store, shared by every
 * gateway instance on it: whether a caller's session goes on or a new one
 * starts is decided by the store, in one atomic statement
 * (GatewayStore.assignSession), so instances never disagree.
 *
 * Asking the store for every request would put a statement (and a row
 * lock every request of a busy caller waits for) on each call, so an
 * instance asks only when it must:
 *
 * - a request within half an idle gap of the last time this instance wrote
 *   for the caller continues the session without asking: no instance can
 *   have started a new one meanwhile (that needs a whole gap without a
 *   request in the store);
 * - the latest time seen is written within a quarter gap (one statement per
 *   caller, not per request), so the store never lags a caller's activity
 *   by more than that, and another instance's next request within the gap
 *   continues the session;
 * - requests arriving while the store is being asked wait for that answer;
 * - when the store cannot answer, the request gets this instance's own
 *   session (as without a shared store) and the failure is reported.
 *
 * Invariant: the store's last time for a caller is at most a quarter gap
 * behind the caller's latest request on any live instance.
 */
export class SharedSessions {
  readonly #store: Required<Pick<GatewayStore, "assignSession" | "forgetSessions">>;
  readonly #local: SessionTracker;
  readonly #onError: (err: MeshguardError) => void;
  readonly #known = new Map<string, Known>();
  /** Store answers not yet received (drain waits for them). */
  readonly #pending = new Set<Promise<unknown>>();
  #assignsSinceSweep = 0;

  constructor(store: Required<Pick<GatewayStore, "assignSession" | "forgetSessions">>, opts: { idleGapMs?: number; onError: (err: MeshguardError) => void }) {
    this.#store = store;
    this.#local = new SessionTracker(opts.idleGapMs === undefined ? {} : { idleGapMs: opts.idleGapMs });
    this.#onError = opts.onError;
  }

  get idleGapMs(): number {
    return this.#local.idleGapMs;
  }

  /** How many statements were sent to the store so far (assignments and later writes). */
  statements = 0;

  /** assign returns the session id of a request of `caller` made at `time`: at once when it is known here, else once the store has answered. */
  assign(caller: { user: string; node: string }, clientSessionId: string | undefined, time: number): string | Promise<string> {
    const who = `${caller.user}\u0000${caller.node}`;
    if (clientSessionId !== undefined && clientSessionId !== "") return clientSession(who, clientSessionId);
    this.#sweep(time);
    // The key is a hash: the store never sees who the caller is, and any user name fits.
    const key = createHash("sha256").update(who).digest("base64url");
    const half = this.#local.idleGapMs / 2;
    const k = this.#known.get(key);
    if (k !== undefined) {
      if (k.asking === undefined && time - k.stored <= half) {
        this.#seen(key, k, time);
        return k.id;
      }
      if (k.asking !== undefined && time - k.askedAt <= half) {
        k.latest = Math.max(k.latest, time);
        return k.asking;
      }
    }
    return this.#ask(key, caller, time);
  }

  /** Asks the store for the session of a request at `time`. */
  #ask(key: string, caller: { user: string; node: string }, time: number): Promise<string> {
    let k = this.#known.get(key);
    if (k === undefined) this.#known.set(key, (k = { id: "", stored: Number.NEGATIVE_INFINITY, latest: time, asking: undefined, askedAt: time, timer: undefined }));
    const known = k;
    known.latest = Math.max(known.latest, time);
    known.askedAt = time;
    this.statements++;
    const p = this.#store.assignSession(key, time, this.#local.idleGapMs, `s-${randomUUID()}`).then(
      (id) => {
        known.id = id;
        known.stored = Math.max(known.stored, time);
        known.asking = undefined;
        // Requests that waited for this answer may be later than it: write their time too.
        if (known.latest > known.stored) this.#seen(key, known, known.latest);
        return id;
      },
      (err: unknown) => {
        this.#onError(asStoreError(err, "could not share a session through the store; this request's session is this instance's own"));
        known.asking = undefined;
        if (known.id === "") this.#known.delete(key);
        return this.#local.assign(caller, undefined, time);
      },
    );
    known.asking = p;
    this.#track(p);
    return p;
  }

  /** Notes a request at `time` of a known session, and schedules writing it to the store within a quarter gap. */
  #seen(key: string, k: Known, time: number): void {
    if (time > k.latest) k.latest = time;
    if (k.latest <= k.stored || k.timer !== undefined) return;
    k.timer = setTimeout(() => {
      k.timer = undefined;
      this.#write(key, k);
    }, this.#local.idleGapMs / 4);
    k.timer.unref();
  }

  /** Writes the latest time seen of `k` (the store continues the session, or names the one another instance started). */
  #write(key: string, k: Known): void {
    const time = k.latest;
    if (time <= k.stored || k.asking !== undefined) return;
    this.statements++;
    const p = this.#store.assignSession(key, time, this.#local.idleGapMs, `s-${randomUUID()}`).then(
      (id) => {
        k.id = id;
        k.stored = Math.max(k.stored, time);
      },
      (err: unknown) => this.#onError(asStoreError(err, "could not write a session's latest request to the store")),
    );
    this.#track(p);
  }

  #track(p: Promise<unknown>): void {
    this.#pending.add(p);
    void p.finally(() => this.#pending.delete(p));
  }

  /**
   * drain writes what is scheduled for later at once, and resolves once
   * every answer asked for so far has come and what each caller did with
   * it has run (they were told first): the gateway closes the store only
   * after it, so no record waiting for its session is lost.
   */
  async drain(): Promise<void> {
    for (const [key, k] of this.#known) {
      if (k.timer === undefined) continue;
      clearTimeout(k.timer);
      k.timer = undefined;
      this.#write(key, k);
    }
    while (this.#pending.size > 0) await Promise.allSettled([...this.#pending]);
  }

  /** Forgets, here and in the store, callers idle for longer than the gap; at most once per SHARED_SWEEP_EVERY assignments. */
  #sweep(now: number): void {
    if (++this.#assignsSinceSweep < SHARED_SWEEP_EVERY) return;
    this.#assignsSinceSweep = 0;
    const before = now - this.#local.idleGapMs;
    for (const [key, k] of this.#known) if (k.latest < before && k.asking === undefined && k.timer === undefined) this.#known.delete(key);
    this.#store.forgetSessions(before).catch((err: unknown) => this.#onError(asStoreError(err, "could not forget idle sessions")));
  }
}
