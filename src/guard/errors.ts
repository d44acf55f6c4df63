/**
 * PolicyDeniedError: the one error the guard throws for a refused outbound
 * call. Only the enforcing layer throws it; the evaluator returns Decisions.
 */

import { ErrorCode, MeshguardError } from "../errors.js";
import { formatTarget } from "../policy/request.js";
import type { Target } from "../policy/types.js";
import { noteDenied } from "./sdk-context.js";

/**
 * PolicyDeniedError says which call was refused, by which rule, and why.
 * Nothing of the call reached the network.
 *
 * It is final: the same call made again is refused again, so nothing should
 * retry it. Retry layers read that from `status` 403 (LangChain's
 * AsyncCaller, and any helper that stops on a 4xx), and the LLM SDK layer
 * (sdk.ts) stops the openai/Anthropic clients' retry loop: a denial created
 * while such a client's request is in flight, in its async context, is
 * recorded as that request's (sdk-context.ts).
 */
export class PolicyDeniedError extends MeshguardError {
  /** id of the rule that decided; undefined for the default deny or a guard-level refusal (no policy, evaluator error). */
  readonly ruleId: string | undefined;
  readonly target: Target;
  readonly reason: string;
  /** 403, the HTTP status of a refusal (the gateway answers a denied call with it): what retry layers read as "do not retry". */
  readonly status = 403;

  /**
   * The message renders the call with formatTarget, redacted by default
   * (query and MCP argument values left out), exactly as the audit line does.
   */
  constructor(target: Target, reason: string, ruleId?: string, cause?: unknown) {
    super(ErrorCode.POLICY_DENIED, `meshguard policy denied ${formatTarget(target)}: ${reason}${ruleId ? ` (rule "${ruleId}")` : ""}`, {
      hint: ruleId
        ? `the rule "${ruleId}" decides this call; change the policy or run \`meshguard policy explain\` to see why`
        : "nothing in the policy allows this call (deny by default); add a rule or run `meshguard policy explain`",
      cause,
    });
    this.name = "PolicyDeniedError";
    this.ruleId = ruleId;
    this.target = target;
    this.reason = reason;
    noteDenied(this);
  }
}

/**
 * deniedCause finds a PolicyDeniedError in an error or along its `cause`
 * chain (fetch wraps dispatcher errors in `TypeError: fetch failed`, SDKs
 * wrap again). Depth-limited: a cyclic chain must not hang.
 */
export function deniedCause(err: unknown): PolicyDeniedError | undefined {
  let e: unknown = err;
  for (let i = 0; i < 8 && e !== null && typeof e === "object"; i++) {
    if (e instanceof PolicyDeniedError) return e;
    e = (e as { cause?: unknown }).cause;
  }
  return undefined;
}
