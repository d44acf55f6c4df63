/**
 * What the issuer's endpoints share: its URL, keys, revocation log, the
 * policy in force, lifetimes and clock. One object, built by startTokenIssuer,
 * passed to each endpoint; the endpoints hold no state of their own.
 */

import type { Policy } from "../policy/index.js";
import { BoundedCache } from "./bounded-cache.js";
import type { TokenAuditor } from "./audit.js";
import type { Caller } from "./caller.js";
import type { KeyStore } from "./keys.js";
import type { RevocationLog } from "./revocations.js";

export interface IssuerContext {
  /** `iss`: the issuer's URL, no trailing slash. */
  readonly iss: string;
  readonly keys: KeyStore;
  readonly revocations: RevocationLog;
  /** The policy in force, or why there is none (a policy file that never loaded). */
  policy(): Policy | { error: string };
  /** Epoch milliseconds. */
  readonly clock: () => number;
  /** Lifetime of a token that asks for none (seconds). */
  readonly defaultTtlS: number;
  /** The longest lifetime of any token (seconds). */
  readonly maxTtlS: number;
  /** Tolerance for a subject token's `nbf` (seconds). */
  readonly skewS: number;
  isAdmin(c: Caller): boolean;
  readonly issued: IssuedIndex;
  /** Where issued, refused, exchanged and revoked tokens are recorded (the `audit` option); none: nothing is. */
  readonly audit?: TokenAuditor;
  /** Who revokes through the library call (TokenIssuer.revoke): the issuer's own node. */
  readonly self: { node: string; tags: string[] };
}

/** nowS is the context's time in epoch seconds (JWT NumericDate). */
export function nowS(ctx: Pick<IssuerContext, "clock">): number {
  return Math.floor(ctx.clock() / 1000);
}

/**
 * IssuedIndex remembers the owner and expiry of recently issued tokens, so
 * their owner may revoke one by jti alone. Bounded (the oldest entries go
 * first): a jti it forgot can still be revoked by presenting the token, or
 * by an admin.
 */
export class IssuedIndex {
  // A ring-evicting cache, not Map front-deletes: those cost ~9 µs per insert at 10k entries (bounded-cache.ts).
  private readonly cache: BoundedCache<string, { sub: string; exp: number }>;
  constructor(max = 100_000) {
    this.cache = new BoundedCache(max);
  }

  get size(): number {
    return this.cache.size;
  }

  add(jti: string, sub: string, exp: number): void {
    this.cache.set(jti, { sub, exp });
  }

  get(jti: string): { sub: string; exp: number } | undefined {
    return this.cache.get(jti);
  }

  prune(now: number): void {
    for (const [k, v] of this.cache.entries()) if (v.exp <= now) this.cache.delete(k);
  }
}
