/**
 * A verifier's copy of the issuer's revocation feed: `GET <iss>/revocations
 * ?since=<seq>` answers a JWS signed with the token keys whose payload lists
 * the entries after `since`. The follower polls it every `pollMs`, checks the
 * signature (the same keys and the same hand-read JWS as tokens), and keeps:
 * - revoked jtis;
 * - per agent (`sub`), the latest `before`: its tokens issued (`iat`) before
 *   that instant are revoked.
 *
 * Fail closed: `freshAt` is when the feed was last read successfully; the
 * verifier refuses every token once it is older than `maxStalenessMs`
 * (TOKEN_REVOCATIONS_STALE), since a revocation may then be missing.
 *
 * Memory is bounded by the token lifetime: the verifier refuses tokens that
 * live longer than `maxLifetimeS`, so an entry learned more than that (plus
 * the skew) ago can no longer match a token it would accept, and is dropped.
 *
 * The next read asks from the `seq` the last answer carried, even when it is
 * lower than what we asked from: an issuer that restarted with a fresh feed
 * (its seq reset) is then followed from its new numbering, and what was
 * learned before is kept (a revocation never expires early).
 */

import { decodeJson, JwsRefusal, splitJws } from "./jws.js";
import type { JwksCache, FetchLike } from "./verify-keys.js";
import { REVOCATIONS_TYP, type RevocationFeedPayload } from "./types.js";

export interface RevocationFeedOptions {
  uri: string;
  issuer: string;
  fetch: FetchLike;
  keys: JwksCache;
  pollMs: number;
  maxStalenessMs: number;
  /** Entries older than this (seconds) are dropped (see above). */
  retainS: number;
  now: () => number;
  onError?: (err: unknown) => void;
}

const FEED_TYPS = [REVOCATIONS_TYP] as const;

export class RevocationFeed {
  /** jti → when it was learned (epoch ms). */
  private readonly jtis = new Map<string, number>();
  /** sub → latest `before` (epoch s). */
  private readonly subs = new Map<string, number>();
  private since = 0;
  /** Epoch ms of the last successful read; -Infinity before the first. */
  freshAt = -Infinity;
  private timer: ReturnType<typeof setInterval> | undefined;
  private inflight: Promise<void> | undefined;
  private closed = false;
  private readonly opts: RevocationFeedOptions;

  constructor(opts: RevocationFeedOptions) {
    this.opts = opts;
  }

  /** start reads the feed once (resolves even if that fails: the verifier then fails closed) and starts polling. */
  async start(): Promise<void> {
    this.timer = setInterval(() => void this.poll().catch(() => {}), this.opts.pollMs);
    this.timer.unref?.();
    await this.poll().catch(() => {});
  }

  /** isRevoked says whether a token (jti, sub, iat in epoch s) is revoked by what the feed said so far. */
  isRevoked(jti: string, sub: string, iat: number): boolean {
    if (this.jtis.has(jti)) return true;
    const before = this.subs.get(sub);
    return before !== undefined && iat < before;
  }

  /** stale says whether the last good read is older than maxStalenessMs at `nowMs`. */
  stale(nowMs: number): boolean {
    return nowMs - this.freshAt > this.opts.maxStalenessMs;
  }

  /** poll reads the feed once now (concurrent callers share the request). */
  poll(): Promise<void> {
    this.inflight ??= this.read().then(
      () => {
        this.inflight = undefined;
      },
      (err: unknown) => {
        this.inflight = undefined;
        if (!this.closed) this.opts.onError?.(err);
        throw err;
      },
    );
    return this.inflight;
  }

  private async read(): Promise<void> {
    const started = this.opts.now();
    const res = await this.opts.fetch(`${this.opts.uri}?since=${this.since}`, { headers: { accept: "application/jwt" } });
    if (!res.ok) throw new Error(`GET ${this.opts.uri} answered ${res.status}`);
    const body = (await res.text()).trim();
    const jws = splitJws(body, FEED_TYPS);
    const key = await this.opts.keys.resolve(jws.header.kid);
    if (!key) throw new JwsRefusal(`the revocation feed is signed with key ${jws.header.kid}, which the issuer's JWKS does not have`);
    if (!key(jws.signingInput, jws.signature)) throw new JwsRefusal("the revocation feed's signature does not verify");
    const p = decodeJson(jws.payloadSegment) as Partial<RevocationFeedPayload> | undefined;
    if (!p || p.iss !== this.opts.issuer || typeof p.seq !== "number" || !Array.isArray(p.entries)) throw new JwsRefusal("the revocation feed's payload is not a feed of this issuer");
    for (const e of p.entries as unknown[]) {
      const entry = e as Record<string, unknown>;
      if (typeof entry.jti === "string") this.jtis.set(entry.jti, started);
      else if (typeof entry.sub === "string" && typeof entry.before === "number") {
        if (entry.before > (this.subs.get(entry.sub) ?? -Infinity)) this.subs.set(entry.sub, entry.before);
      }
    }
    this.since = p.seq;
    this.freshAt = started;
    this.prune(started);
  }

  private prune(nowMs: number): void {
    const horizonMs = nowMs - this.opts.retainS * 1000;
    for (const [jti, at] of this.jtis) if (at < horizonMs) this.jtis.delete(jti);
    for (const [sub, before] of this.subs) if (before * 1000 < horizonMs) this.subs.delete(sub);
  }

  close(): void {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
  }
}
