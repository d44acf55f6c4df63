/**
 * The checks of a token rule that zod's shape check cannot make: audiences
 * and audience patterns, each action's methods, locations and scope strings,
 * and the effects and conditions that mean something for a token grant.
 */

import type { PathKey } from "./source.js";
import type { Rule } from "./schema.js";
import { audiencePatternError, parseAction, parseScope } from "./token-actions.js";

export interface TokenIssue {
  /** Relative to the rule. */
  path: PathKey[];
  message: string;
  key?: string;
}

export function tokenRuleIssues(r: Rule): TokenIssue[] {
  const t = r.token;
  if (!t) return [];
  const out: TokenIssue[] = [];
  if (r.effect === "approve") {
    out.push({ path: ["effect"], message: 'a token rule allows or denies: a token is issued without a human in the loop, so "approve" has no meaning here (put the approval on the calls the service receives instead)' });
  }
  t.audience.forEach((a, j) => {
    const e = audiencePatternError(a);
    if (e) out.push({ path: ["token", "audience", j], message: e });
  });
  t.actions.forEach((a, j) => {
    const parsed = typeof a === "string" ? parseScope(a) : parseAction(a.methods, a.locations);
    if (typeof parsed === "string") out.push({ path: ["token", "actions", j], message: parsed });
  });
  if (r.effect === "deny" && t.maxTtl !== undefined) out.push({ path: ["token"], message: "a deny rule grants nothing, so maxTtl has no meaning: put it on the allow rule", key: "maxTtl" });
  return out;
}
