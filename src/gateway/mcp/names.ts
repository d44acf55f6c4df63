/**
 * Names at the aggregating endpoint, and what a caller is shown.
 *
 * A tool (or prompt, or resource name) `create_issue` of the server
 * configured as `github` is `github__create_issue`: server names never hold
 * "__" (./config.ts), so the first "__" splits a name back unambiguously,
 * and the result stays within MCP's tool-name characters when the
 * upstream's name does.
 *
 * Trimming: an item is listed for a caller when an allow or approve rule
 * could match it ignoring `args` and `when` (the call is judged in full
 * later), and no deny rule without `args` or `when` matches it — such a
 * rule refuses every call, so the item would only be a trap.
 */

import type { McpTarget } from "../../policy/types.js";
import type { GatewayContext } from "../context.js";
import type { Caller } from "../types.js";

// Shared with the agent-side guard, which splits a call to the gateway the same way.
export { namespaced, SEPARATOR, splitName } from "../../guard/gateway-route.js";

/** Checks that depend on the call's content or time, which listing ignores. */
const IGNORED = (what: string) => what.startsWith("args.") || what.startsWith("when");

/** listable says whether `target` (its args ignored) is shown to `caller`. Spends no rate tokens (explain). */
export function listable(ctx: GatewayContext, caller: Caller, target: McpTarget): boolean {
  const policy = ctx.policy();
  if (policy === undefined) return false;
  const ex = policy.explain({ principal: caller.principal, target });
  let could = false;
  for (const r of ex.rules) {
    if (r.kind !== "mcp") continue;
    if (r.effect === "deny") {
      if (r.checks.every((c) => c.ok === true && !IGNORED(c.what))) return false;
    } else if (r.checks.every((c) => c.ok === true || IGNORED(c.what))) could = true;
  }
  return could;
}
