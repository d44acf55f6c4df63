/**
 * What an `approve` decision becomes at the gateway: the call is held until
 * the configured approver answers. No approver, a refusal, no answer in
 * time, or a client that gave up meanwhile (`cancel`) is a deny naming why.
 * Used by LLM calls (./call.ts) and MCP calls (./mcp/session.ts) alike.
 */

import { requestApproval } from "../guard/approvals.js";
import type { ApprovalOptions } from "../guard/types.js";
import type { Decision, Principal, Target } from "../policy/types.js";

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
