/**
 * Making an access token (claims, then the signature with the active key),
 * and reading one back that this issuer made (for token exchange and
 * revocation). The claims are the wire contract of ./types.ts.
 */

import { randomBytes } from "node:crypto";
import { parseAction, type TokenAction } from "../policy/index.js";
import type { Caller } from "./caller.js";
import { nowS, type IssuerContext } from "./context.js";
import { toDetails } from "./grant.js";
import { readCompact, signCompact } from "./jws-sign.js";
import { CNF_NODE, HTTP_DETAIL_TYPE, TOKEN_TYP, type AccessTokenClaims } from "./types.js";

export interface MintInput {
  audience: string;
  actions: readonly TokenAction[];
  /** Lifetime in seconds (already capped by the caller). */
  ttlS: number;
  task?: string;
  /** For a token exchange: the node acting. */
  act?: { sub: string };
}

/** mint signs a token for `caller`. */
export function mint(ctx: IssuerContext, caller: Caller, input: MintInput): { token: string; claims: AccessTokenClaims } {
  const iat = nowS(ctx);
  const claims: AccessTokenClaims = {
    iss: ctx.iss,
    sub: caller.id,
    aud: input.audience,
    iat,
    nbf: iat,
    exp: iat + input.ttlS,
    jti: randomBytes(16).toString("base64url"),
    cnf: { [CNF_NODE]: caller.id },
    node: caller.name,
    tags: [...caller.tags],
    owners: [...caller.owners],
    authorization_details: toDetails(input.actions),
  };
  if (input.task !== undefined) claims.task = input.task;
  if (input.act !== undefined) claims.act = { sub: input.act.sub };
  const token = signCompact(ctx.keys.active(), TOKEN_TYP, claims);
  ctx.issued.add(claims.jti, claims.sub, claims.exp);
  return { token, claims };
}

/** A token of this issuer, read back: its claims and its actions parsed. */
export interface OwnToken {
  claims: AccessTokenClaims;
  actions: TokenAction[];
}

/**
 * readOwnToken checks that a token is one this issuer signed with a key it
 * still publishes, for this issuer, with the claims of the contract.
 * Expiry, nbf and revocation are left to the caller (revocation of an
 * expired token is a no-op, an exchange of one is refused).
 */
export function readOwnToken(ctx: IssuerContext, token: unknown): OwnToken | { error: string } {
  const r = readCompact(token, TOKEN_TYP, (kid) => ctx.keys.get(kid));
  if (!r.ok) return { error: r.reason };
  const c = r.payload as Partial<AccessTokenClaims>;
  if (c.iss !== ctx.iss) return { error: `iss ${JSON.stringify(c.iss)} is not this issuer (${ctx.iss})` };
  const num = (x: unknown) => typeof x === "number" && Number.isInteger(x);
  if (typeof c.sub !== "string" || typeof c.aud !== "string" || typeof c.jti !== "string" || !num(c.iat) || !num(c.nbf) || !num(c.exp)) return { error: "the token lacks sub, aud, jti, iat, nbf or exp" };
  if (typeof c.cnf?.[CNF_NODE] !== "string") return { error: `the token has no ${CNF_NODE} binding` };
  if (!Array.isArray(c.authorization_details)) return { error: "the token has no authorization_details" };
  const actions: TokenAction[] = [];
  for (const d of c.authorization_details) {
    if (d?.type !== HTTP_DETAIL_TYPE || !Array.isArray(d.actions) || !Array.isArray(d.locations)) return { error: "the token's authorization_details are malformed" };
    const a = parseAction(d.actions, d.locations);
    if (typeof a === "string") return { error: `the token's authorization_details are malformed: ${a}` };
    actions.push(a);
  }
  return { claims: c as AccessTokenClaims, actions };
}
