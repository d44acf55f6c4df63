/**
 * meshguard/guard: the in-process policy guard. Re-exports only.
 */

export { installGuard, type GuardHandle } from "./install.js";
// Whether some guard is installed (an embedding app's): the gateway uses that one rather than its own.
export { guardInstalled } from "./state.js";
export { preloadPath } from "./worker.js";
export { PolicyDeniedError, deniedCause } from "./errors.js";
export { DEFAULT_LLM_PROVIDERS } from "./targets.js";
// Calls to a registered AI gateway are judged as the gateway judges them (one policy, one answer).
export { gatewayLayout, type GatewaySpec, type GatewayConnectorSpec, type GatewayVia, type LayoutFetch } from "./gateways.js";
export { jsonLinesSink, memorySink, type ClosableAuditSink, type JsonLinesSinkOptions } from "../policy/sinks.js";
export type { AuditSink } from "../policy/audit.js";
// The decision event and the one rendering of a call belong to the policy
// engine (the gateway writes the same events); re-exported for guard users.
export { formatTarget, type Reveal } from "../policy/request.js";
export type { DecisionEvent, DecisionLayer, TargetSummary, ApprovalOutcome } from "../policy/event.js";
export type {
  ApprovalAnswer,
  ApprovalOptions,
  ApprovalRequest,
  Evaluator,
  GuardEvents,
  GuardLayer,
  GuardMode,
  GuardOptions,
} from "./types.js";

// sql rules judge statements with PostgreSQL's parser, a wasm module loaded
// asynchronously (src/policy/sql.ts): importing this entry waits for it, so
// loadPolicy and the guard can parse synchronously from the first call. The
// one exception to "re-exports only"; never in a module the preload loads.
import { sqlParserReady } from "../policy/sql.js";
await sqlParserReady();
