/**
 * `POST <iss>/revoke` (form body), three forms:
 *
 *   token=<jwt>               RFC 7009: by the node the token is bound to, or an admin
 *   jti=<jti>                 one token: an admin, or its owner while the issuer remembers it
 *   sub=<node id>[&before=S]  every token of a node issued before S (epoch seconds; default:
 *                             the end of the current second): an admin, or the node itself
 *
 * Revoking a token revokes every token exchanged from it. An invalid or
 * expired `token=` is answered 200 with nothing revoked (RFC 7009 §2.2:
 * there is nothing to revoke). The answer lists the new feed entries.
 */

import type { RevocationEntry } from "./types.js";
import { requestTarget, type TokenAuditInfo } from "./audit.js";
import type { Caller } from "./caller.js";
import { nowS, type IssuerContext } from "./context.js";
import { readOwnToken } from "./mint.js";
import { refuse } from "./oauth.js";
import type { EndpointAnswer } from "./token-endpoint.js";

export interface RevokeAnswer {
  revoked: RevocationEntry[];
}

/** What a revocation names; the library call (handle.revoke) takes the same. */
export type RevokeTarget = { token: string } | { jti: string; exp?: number } | { sub: string; before?: number };

/** revokeAsAdmin is the library call (TokenIssuer.revoke): applied, and audited as the issuer's own node. */
export function revokeAsAdmin(ctx: IssuerContext, t: RevokeTarget): RevocationEntry[] {
  const t0 = ctx.audit ? performance.now() : 0;
  const entries = applyRevocation(ctx, t);
  if (ctx.audit) auditRevoke(ctx, ctx.self, t, { status: 200, body: { revoked: entries } }, "revoked through the issuer's API", (performance.now() - t0) * 1000);
  return entries;
}

/** applyRevocation applies a revocation: no ownership check (an admin's, or the owner's once checked). */
function applyRevocation(ctx: IssuerContext, t: RevokeTarget): RevocationEntry[] {
  const now = nowS(ctx);
  if ("token" in t) {
    const own = readOwnToken(ctx, t.token);
    if ("error" in own || own.claims.exp <= now) return [];
    return ctx.revocations.revokeJti(own.claims.jti, own.claims.exp);
  }
  if ("jti" in t) return ctx.revocations.revokeJti(t.jti, t.exp ?? ctx.issued.get(t.jti)?.exp ?? now + ctx.maxTtlS);
  const before = t.before ?? now + 1;
  return [ctx.revocations.revokeSubject(t.sub, before, before + ctx.maxTtlS)];
}

/** handleRevoke answers one revocation request from `caller` (and records it in the audit, when there is one). */
export function handleRevoke(ctx: IssuerContext, caller: Caller, body: string): EndpointAnswer<RevokeAnswer> {
  const t0 = ctx.audit ? performance.now() : 0;
  const named: { target?: RevokeTarget; by?: string } = {};
  const a = decideRevoke(ctx, caller, body, named);
  if (ctx.audit) auditRevoke(ctx, caller, named.target, a, named.by ?? "", (performance.now() - t0) * 1000);
  return a;
}

/**
 * auditRevoke writes one event for a revocation (src/tokens/audit.ts): what
 * was named (a token by its jti, never the token), who, and the outcome.
 */
function auditRevoke(ctx: IssuerContext, who: Caller | { node: string; tags: string[] }, t: RevokeTarget | undefined, a: EndpointAnswer<RevokeAnswer>, by: string, latencyUs: number): void {
  const ok = a.status === 200;
  const info: TokenAuditInfo = { op: "revoke" };
  let audience: string | undefined;
  if (t !== undefined && "token" in t) {
    const own = readOwnToken(ctx, t.token);
    if (!("error" in own)) {
      info.jti = own.claims.jti;
      audience = own.claims.aud;
    }
  } else if (t !== undefined && "jti" in t) info.jti = t.jti;
  else if (t !== undefined) {
    info.sub = t.sub;
    if (t.before !== undefined) info.before = t.before;
  }
  if (ok) info.revoked = (a.body as RevokeAnswer).revoked.length;
  const reason = ok ? (info.revoked ? by : `${by}: nothing to revoke (an invalid or expired token)`) : `${(a.body as { error: string }).error}: ${(a.body as { error_description: string }).error_description}`;
  ctx.audit!.record(who, [{ target: requestTarget(audience), decision: { effect: ok ? "allow" : "deny", reason } }], ok ? "allow" : "deny", info, latencyUs);
}

function decideRevoke(ctx: IssuerContext, caller: Caller, body: string, named: { target?: RevokeTarget; by?: string }): EndpointAnswer<RevokeAnswer> {
  const form = new URLSearchParams(body);
  const token = form.get("token");
  const jti = form.get("jti");
  const sub = form.get("sub");
  const given = [token, jti, sub].filter((x) => x !== null).length;
  if (given !== 1) return fail(refuse("invalid_request", "name exactly one of token (RFC 7009), jti, or sub (every token of a node)"));
  const admin = ctx.isAdmin(caller);
  named.by = admin ? "revoked by an admin" : "revoked by its owner";
  const now = nowS(ctx);
  if (token !== null) {
    named.target = { token };
    const own = readOwnToken(ctx, token);
    if ("error" in own || own.claims.exp <= now) return { status: 200, body: { revoked: [] } };
    if (!admin && own.claims.sub !== caller.id) return fail(refuse("access_denied", `the token belongs to node ${own.claims.node}: only it or an admin may revoke it`));
    return { status: 200, body: { revoked: applyRevocation(ctx, { token }) } };
  }
  if (jti !== null) {
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(jti)) return fail(refuse("invalid_request", "jti is not a token id (base64url)"));
    named.target = { jti };
    const known = ctx.issued.get(jti);
    if (!admin && known?.sub !== caller.id) {
      return fail(refuse("access_denied", known ? "the token belongs to another node: only it or an admin may revoke it" : "this issuer does not remember that jti's owner: revoke it with token=<the token>, or ask an admin"));
    }
    return { status: 200, body: { revoked: applyRevocation(ctx, { jti }) } };
  }
  const before = form.get("before");
  // What was named is recorded only when it looks like a node id: the audit never quotes arbitrary input (a pasted token).
  if (/^[A-Za-z0-9_-]{1,64}$/.test(sub!)) named.target = before !== null && /^\d{1,12}$/.test(before) ? { sub: sub!, before: Number(before) } : { sub: sub! };
  if (before !== null && !/^\d{1,12}$/.test(before)) return fail(refuse("invalid_request", "before must be a time in epoch seconds"));
  if (!admin && sub !== caller.id) return fail(refuse("access_denied", "only an admin may revoke another node's tokens (a node may revoke its own: sub=<its node id>)"));
  return { status: 200, body: { revoked: applyRevocation(ctx, before === null ? { sub: sub! } : { sub: sub!, before: Number(before) }) } };
}

function fail(r: ReturnType<typeof refuse>): EndpointAnswer<RevokeAnswer> {
  return { status: r.status, body: r.body() };
}
