/**
 * Deciding what a token may grant: the policy (token rules) for a fresh
 * token, and additionally the subject token for an exchange.
 *
 * A request is granted whole or refused whole. Each requested (method,
 * location) pair is one policy decision (a `token` target); the request is
 * granted when every pair is allowed, and refused otherwise with every pair
 * that was not, each with the policy's reason (the rule that denied it, or
 * "no rule allows"). All-or-nothing because a token with less than the
 * agent asked for fails later, at the service, with a less useful error.
 *
 * The token's lifetime is capped by the `maxTtl` of every rule that allowed
 * one of its pairs (the smallest wins), then by the issuer's cap.
 */

import { actionContains, type Decision, type Location, type Policy, type Principal, type TokenAction } from "../policy/index.js";
import { HTTP_DETAIL_TYPE, type HttpAuthorizationDetail } from "./types.js";

export interface GrantDecision {
  ok: boolean;
  /** The refused pairs with reasons ("GET https://billing/v2/*: no rule allows …"). */
  refusals: string[];
  /** The smallest maxTtl of the deciding rules (ms), when any has one. */
  maxTtlMs?: number;
  /** The ids of the rules that allowed the pairs. */
  ruleIds: string[];
  /** Each pair with the policy's decision on it (what the audit records). */
  decisions: { method: string; location: string; decision: Decision }[];
}

export function* pairs(actions: readonly TokenAction[]): Generator<[string, Location]> {
  for (const a of actions) for (const m of a.methods) for (const l of a.locations) yield [m, l];
}

/** decideByPolicy asks the policy about every pair. */
export function decideByPolicy(policy: Policy, principal: Principal, audience: string, actions: readonly TokenAction[], now: Date): GrantDecision {
  const refusals: string[] = [];
  const ruleIds = new Set<string>();
  let maxTtlMs: number | undefined;
  const decisions: GrantDecision["decisions"] = [];
  for (const [method, loc] of pairs(actions)) {
    const d = policy.evaluate({ principal, target: { kind: "token", audience, method, location: loc.text }, now });
    decisions.push({ method, location: loc.text, decision: d });
    if (d.effect !== "allow") {
      refusals.push(`${method} ${loc.text}: ${d.reason}`);
      continue;
    }
    if (d.ruleId !== undefined) {
      ruleIds.add(d.ruleId);
      const ttl = policy.tokenMaxTtl.get(d.ruleId);
      if (ttl !== undefined) maxTtlMs = Math.min(maxTtlMs ?? Infinity, ttl);
    }
  }
  const out: GrantDecision = { ok: refusals.length === 0, refusals, ruleIds: [...ruleIds], decisions };
  if (maxTtlMs !== undefined) out.maxTtlMs = maxTtlMs;
  return out;
}

/** decideBySubject: is every requested pair contained in the subject token's actions? (An exchange can only narrow.) */
export function decideBySubject(subject: readonly TokenAction[], requested: readonly TokenAction[]): string[] {
  const refusals: string[] = [];
  for (const [method, loc] of pairs(requested)) {
    const r = actionContains(subject, method, loc);
    if (r.answer === true) continue;
    refusals.push(
      r.answer === undefined
        ? `${method} ${loc.text}: too complex to compare with the subject token's actions`
        : `${method} ${loc.text} is not within the subject token's actions${r.witness ? ` (it would cover ${r.witness})` : ""}`,
    );
  }
  return refusals;
}

/** toDetails writes actions as authorization_details: one detail per action, methods and canonical locations. */
export function toDetails(actions: readonly TokenAction[]): HttpAuthorizationDetail[] {
  return actions.map((a) => ({ type: HTTP_DETAIL_TYPE, actions: [...a.methods], locations: a.locations.map((l) => l.text) }));
}
