/**
 * meshguard/guard: the in-process policy guard. Re-exports only.
 */

export { installGuard, type GuardHandle } from "./install.js";
export { PolicyDeniedError, deniedCause } from "./errors.js";
export { DEFAULT_LLM_PROVIDERS, describeTarget } from "./targets.js";
export { jsonLinesSink, memorySink, type ClosableAuditSink, type JsonLinesSinkOptions } from "../policy/sinks.js";
export type { AuditSink, DecisionEvent } from "../policy/audit.js";
export type {
  ApprovalAnswer,
  ApprovalOptions,
  ApprovalRequest,
  Evaluator,
  GuardDecisionEvent,
  GuardLayer,
  GuardMode,
  GuardOptions,
} from "./types.js";
