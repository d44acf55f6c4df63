/**
 * The issuer's audit trail: every token issued, refused, exchanged or
 * revoked becomes a DecisionEvent (layer "tokens", src/policy/event.ts)
 * written to the audit sink the issuer was given (`audit`: the same sinks,
 * and the same auditor, as the guard's: src/policy/sinks.ts, audit.ts).
 *
 * One event per policy decision, as everywhere else: a token request names
 * (method, location) pairs and the policy decides each, so an issue or an
 * exchange writes one event per pair — its target the pair, its effect and
 * rule the policy's, its outcome the request's (granted or refused whole).
 * A refusal that is not the policy's (a malformed form, an invalid subject
 * token, an exchange that would widen) is one event with the OAuth error and
 * its description as the reason. A revocation is one event (target: the
 * revoked token's audience when known, else "*").
 *
 * The `token` field says what happened to which token: op, jti, exp, task,
 * for an exchange the subject token's jti, for a revocation what was named.
 * No event carries a token, a subject token or key material: a jti names a
 * token, and the reasons are the issuer's own words (they never quote a
 * token).
 */

import type { Auditor } from "../policy/audit.js";
import { decisionEvent, type DecisionEvent, type EventPrincipal } from "../policy/event.js";
import type { Decision, TokenTarget } from "../policy/types.js";
import type { Caller } from "./caller.js";

/** What one event says about the token (DecisionEvent.token). */
export type TokenAuditInfo = NonNullable<DecisionEvent["token"]>;

/** One decision to record: the pair (or the request) and what was decided. */
export interface AuditEntry {
  target: TokenTarget;
  decision: Decision;
}

export interface TokenAuditor {
  /** record writes the events of one operation; it never throws (a failing sink is the auditor's onError). */
  record(who: Caller | EventPrincipal, entries: readonly AuditEntry[], outcome: "allow" | "deny", token: TokenAuditInfo, latencyUs: number): void;
}

/** tokenAuditor writes through `auditor` (createAuditor over the issuer's sink); `hash` is the policy in force's. */
export function tokenAuditor(auditor: Auditor, hash: () => string | undefined): TokenAuditor {
  return {
    record(who, entries, outcome, token, latencyUs) {
      const principal: EventPrincipal = "principal" in who ? { ...who.principal, owners: [...who.owners] } : who;
      const policyHash = hash();
      for (const { target, decision } of entries) {
        try {
          auditor.record(decisionEvent(principal, target, decision, { layer: "tokens", outcome, latencyUs, token, ...(policyHash !== undefined ? { policyHash } : {}) }));
        } catch {
          // decisionEvent does not throw on a well-formed target; the auditor counts sink errors itself
        }
      }
    },
  };
}

/** requestTarget is the target of an event about a whole request: its first pair, or what is known of it. */
export function requestTarget(audience: string | undefined, first?: { method: string; location: string }): TokenTarget {
  return { kind: "token", audience: audience ?? "*", method: first?.method ?? "*", location: first?.location ?? "*" };
}
