/**
 * `POST <iss>/token`: a fresh token (client_credentials, the client being
 * the caller's tailnet identity) or a narrower one (token exchange,
 * RFC 8693). Either way the answer is a TokenResponse or an OAuth refusal
 * that says why.
 *
 * Lifetime: the requested `ttl`, else the default; capped by the issuer's
 * cap and the `maxTtl` of the rules that granted the actions; for an
 * exchange also by the subject token's remaining life (never longer).
 */

import { requestTarget, type AuditEntry, type TokenAuditInfo } from "./audit.js";
import type { Caller } from "./caller.js";
import { nowS, type IssuerContext } from "./context.js";
import { parseTokenForm, type TokenRequest } from "./form.js";
import { decideByPolicy, decideBySubject, pairs, toDetails, type GrantDecision } from "./grant.js";
import { mint, readOwnToken } from "./mint.js";
import { refuse, type OAuthRefusal } from "./oauth.js";
import { CNF_NODE, GRANT_TOKEN_EXCHANGE, TOKEN_TYPE_ACCESS, type OAuthErrorResponse, type TokenResponse } from "./types.js";

export interface EndpointAnswer<T> {
  status: number;
  body: T | OAuthErrorResponse;
}

function answer(r: OAuthRefusal): EndpointAnswer<never> {
  return { status: r.status, body: r.body() };
}

/**
 * What an answer is audited as: the policy's decisions on the pairs (when
 * it was asked), or the refusal of the request as a whole.
 */
interface Note {
  op: TokenAuditInfo["op"];
  req?: TokenRequest;
  grant?: GrantDecision;
  token?: { jti: string; exp: number; task?: string };
  subject?: string;
}

/** handleTokenRequest answers one token request from `caller` (and records it in the audit, when there is one). */
export function handleTokenRequest(ctx: IssuerContext, caller: Caller, body: string): EndpointAnswer<TokenResponse> {
  const t0 = ctx.audit ? performance.now() : 0;
  const note: Note = { op: "issue" };
  const a = decide(ctx, caller, body, note);
  if (ctx.audit) audit(ctx, caller, note, a, (performance.now() - t0) * 1000);
  return a;
}

function decide(ctx: IssuerContext, caller: Caller, body: string, note: Note): EndpointAnswer<TokenResponse> {
  const req = parseTokenForm(body);
  if (!("grantType" in req)) return answer(req);
  note.req = req;
  if (req.grantType === GRANT_TOKEN_EXCHANGE) note.op = "exchange";
  const policy = ctx.policy();
  if ("error" in policy) return answer(refuse("access_denied", `the issuer has no policy in force, so it grants nothing: ${policy.error}`));
  return req.grantType === GRANT_TOKEN_EXCHANGE ? exchange(ctx, caller, req, policy, note) : fresh(ctx, caller, req, policy, note);
}

/**
 * audit writes the events of one answer (src/tokens/audit.ts): a policy
 * decision per pair when the policy was asked, else one refusal event.
 */
function audit(ctx: IssuerContext, caller: Caller, note: Note, a: EndpointAnswer<TokenResponse>, latencyUs: number): void {
  const ok = a.status === 200;
  const info: TokenAuditInfo = { op: note.op };
  if (note.token) {
    info.jti = note.token.jti;
    info.exp = note.token.exp;
    if (note.token.task !== undefined) info.task = note.token.task;
  } else if (note.req?.task !== undefined) info.task = note.req.task;
  if (note.subject !== undefined) info.subject = note.subject;
  const audience = note.req?.audience;
  let entries: AuditEntry[];
  const why = ok ? "" : `${(a.body as { error: string }).error}: ${(a.body as { error_description: string }).error_description}`;
  if (note.grant && (ok || !note.grant.ok)) {
    // The policy decided: its decision on each pair, the outcome the request's (granted or refused whole).
    entries = note.grant.decisions.map(({ method, location, decision }) => ({
      target: { kind: "token", audience: audience ?? "*", method, location },
      decision: ok || decision.effect !== "allow" ? decision : { ...decision, reason: `${decision.reason}; refused with the rest of the request (${why})` },
    }));
  } else {
    const first = note.req ? pairs(note.req.actions).next().value : undefined;
    entries = [{ target: requestTarget(audience, first ? { method: first[0], location: first[1].text } : undefined), decision: { effect: ok ? "allow" : "deny", reason: why } }];
  }
  ctx.audit!.record(caller, entries, ok ? "allow" : "deny", info, latencyUs);
}

type LoadedPolicy = Exclude<ReturnType<IssuerContext["policy"]>, { error: string }>;

function fresh(ctx: IssuerContext, caller: Caller, req: TokenRequest, policy: LoadedPolicy, note: Note): EndpointAnswer<TokenResponse> {
  const audience = req.audience!;
  const d = decideByPolicy(policy, caller.principal, audience, req.actions, new Date(ctx.clock()));
  note.grant = d;
  if (!d.ok) return answer(refuse("access_denied", `not granted to ${caller.name} for audience ${audience}: ${d.refusals.join("; ")}`));
  const ttlS = Math.max(1, Math.min(req.ttlS ?? ctx.defaultTtlS, ctx.maxTtlS, d.maxTtlMs !== undefined ? Math.floor(d.maxTtlMs / 1000) : Infinity));
  const { token, claims } = mint(ctx, caller, { audience, actions: req.actions, ttlS, ...(req.task !== undefined ? { task: req.task } : {}) });
  note.token = claims;
  return { status: 200, body: { access_token: token, token_type: "Bearer", expires_in: claims.exp - claims.iat, authorization_details: toDetails(req.actions) } };
}

function exchange(ctx: IssuerContext, caller: Caller, req: TokenRequest, policy: LoadedPolicy, note: Note): EndpointAnswer<TokenResponse> {
  const own = readOwnToken(ctx, req.subjectToken);
  if ("error" in own) return answer(refuse("invalid_grant", `subject_token: ${own.error}`));
  const s = own.claims;
  note.subject = s.jti;
  if (req.audience === undefined) note.req = { ...req, audience: s.aud };
  const now = nowS(ctx);
  if (s.exp <= now) return answer(refuse("invalid_grant", `subject_token expired at ${new Date(s.exp * 1000).toISOString()}`));
  if (s.nbf > now + ctx.skewS) return answer(refuse("invalid_grant", "subject_token is not valid yet (nbf)"));
  if (ctx.revocations.isRevoked(s.jti, s.sub, s.iat)) return answer(refuse("invalid_grant", "subject_token has been revoked"));
  // Possession: the tailnet says who holds it. A token taken from its node is useless elsewhere, here too.
  if (s.cnf[CNF_NODE] !== caller.id) return answer(refuse("invalid_grant", `subject_token is bound to another node (${s.node}); only that node may exchange it`));
  const audience = req.audience ?? s.aud;
  if (audience !== s.aud) return answer(refuse("invalid_target", `audience ${audience} differs from the subject token's (${s.aud}): an exchange keeps the audience`));
  if (req.task !== undefined && s.task !== undefined && req.task !== s.task) return answer(refuse("invalid_request", `task ${req.task} differs from the subject token's task (${s.task})`));
  const actions = req.actions.length ? req.actions : own.actions;
  const wider = decideBySubject(own.actions, actions);
  if (wider.length) return answer(refuse("invalid_scope", `an exchange can only narrow the subject token: ${wider.join("; ")}`));
  // The policy still has its say: an exchange does not outlive a permission the policy has since withdrawn.
  const d = decideByPolicy(policy, caller.principal, audience, actions, new Date(ctx.clock()));
  note.grant = d;
  if (!d.ok) return answer(refuse("access_denied", `no longer granted to ${caller.name}: ${d.refusals.join("; ")}`));
  const ttlS = Math.min(req.ttlS ?? ctx.defaultTtlS, ctx.maxTtlS, d.maxTtlMs !== undefined ? Math.floor(d.maxTtlMs / 1000) : Infinity, s.exp - now);
  const task = req.task ?? s.task;
  const { token, claims } = mint(ctx, caller, { audience, actions, ttlS: Math.max(1, ttlS), act: { sub: caller.id }, ...(task !== undefined ? { task } : {}) });
  ctx.revocations.derived(s.jti, claims.jti, claims.exp);
  note.token = claims;
  return {
    status: 200,
    body: { access_token: token, token_type: "Bearer", expires_in: claims.exp - claims.iat, issued_token_type: TOKEN_TYPE_ACCESS, authorization_details: toDetails(actions) },
  };
}
