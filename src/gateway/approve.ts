/**
 * What an `approve` decision becomes at the gateway: the call is held until
 * the configured approver answers. No approver, a refusal, no answer in
 * time, or a client that gave up meanwhile (`cancel`) is a deny naming why.
 * Used by LLM calls (./call.ts) and MCP calls (./mcp/session.ts) alike.
 */

import { requestApproval } from "../guard/approvals.js";
import type { ApprovalOptions } from "../guard/types.js";
import type { Policy } from "../policy/load.js";
import type { Decision, Principal, Target } from "../policy/types.js";

/**
 * How the policy decided a call: kept so that deciding it again (after a
 * pre-request hook changed it) counts the call once, not twice.
 */
export interface Decided {
  /** The policy that decided, and its own decision (before any approval). */
  policy: Policy;
  decision: Decision;
  /** The approve rule whose approver already said yes to this call. */
  approvedRule?: string;
}

/**
 * decideCall asks the policy; an approve rule holds the call until an
 * approver answers (no answer in time, or `cancel` aborted: deny). A call
 * decided again (`before`: a pre-request hook changed it) is one call: the
 * rate-limit token the first decision spent is given back before the
 * policy decides anew, and an approve rule whose approver already said yes
 * to it is not asked again (a different approve rule is asked). `decided`
 * is undefined only when no policy is loaded. Used by LLM calls
 * (./call.ts) and MCP calls (./mcp/session.ts) alike.
 */
export async function decideCall(
  policy: Policy | undefined,
  approvals: ApprovalOptions | undefined,
  principal: Principal,
  target: Target,
  before?: Decided,
  cancel?: AbortSignal,
): Promise<{ d: Decision; decided?: Decided }> {
  if (policy === undefined) return { d: { effect: "deny", reason: "no policy is loaded (the gateway fails closed)" } };
  // A policy reloaded in between has rate buckets of its own: the first token is not its to give back.
  if (before !== undefined && before.policy === policy) policy.giveBack(principal, before.decision);
  const d = policy.evaluate({ principal, target });
  const decided: Decided = { policy, decision: d };
  if (d.effect !== "approve") return { d, decided };
  if (before?.approvedRule !== undefined && before.approvedRule === d.ruleId) {
    decided.approvedRule = before.approvedRule;
    return { d: { effect: "allow", ruleId: d.ruleId, reason: "approved (before a pre-request hook changed the call, under the same rule)" }, decided };
  }
  const out = await approve(approvals, principal, target, d, cancel);
  if (out.effect === "allow" && d.ruleId !== undefined) decided.approvedRule = d.ruleId;
  return { d: out, decided };
}

export async function approve(approvals: ApprovalOptions | undefined, principal: Principal, target: Target, d: Decision, cancel?: AbortSignal): Promise<Decision> {
  const rule = d.ruleId !== undefined ? { ruleId: d.ruleId } : {};
  if (approvals === undefined || (approvals.callback === undefined && approvals.webhook === undefined)) {
    return { effect: "deny", ...rule, reason: `${d.reason}; the rule asks for approval but the gateway has no approver configured ("approvals" in the config)` };
  }
  try {
    const a = await requestApproval(approvals, principal, target, d, undefined, cancel);
    if (a.approved) return { effect: "allow", ...rule, reason: `approved${a.by ? ` by ${a.by}` : ""}` };
    return { effect: "deny", ...rule, reason: `approval refused: ${a.reason ?? "no reason given"}` };
  } catch (err) {
    return { effect: "deny", ...rule, reason: `no approval: ${(err as Error).message}` };
  }
}
