// The policy engine's public API (subpath "meshguard/policy"): re-exports only.
export { loadPolicy, parsePolicy, tailnetPart, Policy, type LoadOptions, type TestResult } from "./load.js";
export { compile as compileRules, type CompileOptions, type CompiledRules, type Kind } from "./compile.js";
export { Evaluator, type Explanation, type RuleExplanation } from "./engine.js";
export { PolicyInvalidError, PolicyTestsFailedError, type TestFailure } from "./errors.js";
export { parseRequest, formatTarget, REDACTED, type RequestExtras, type Reveal } from "./request.js";
export { parsePrincipal, describePrincipal } from "./identity.js";
export { compileGatewayRoles, type GatewayGrant, type GatewayRoles } from "./gateway.js";
export { MESHGUARD_KEY, type MeshguardPart, type Rule, type TestCase, type GatewaySection, type TokenMatch } from "./schema.js";
// Token rules (format version 4): locations, their globs and containment, scopes and audiences.
export { globContains, globsOverlap, globMatches, compileGlob, MAX_GLOB_LENGTH, type GlobAnswer } from "./contain.js";
export { parseLocation, locationContains, locationsOverlap, compileLocation, urlParts, type Location, type UrlParts } from "./location.js";
export { parseScope, formatScope, parseAction, parseMethods, actionContains, actionOverlaps, normalizeAudience, audienceMatcher, METHOD_RE, type TokenAction } from "./token-actions.js";
export { tokenActions } from "./compile.js";
export { parseDuration, DURATION_HINT } from "./duration.js";
// sql rules (format version 5): for a program that must know the parser is loaded before judging statements (this entry already waits for it).
export { sqlParserReady, SQL_PARSER_PG_MAJOR } from "./sql.js";
export type { PolicyIssue } from "./source.js";
export type { PolicyDocument } from "./validate.js";
export * from "./types.js";
export { createAuditor, type AuditSink, type Auditor, type AuditorOptions } from "./audit.js";
export { jsonLinesSink, memorySink, type ClosableAuditSink, type JsonLinesSinkOptions } from "./sinks.js";
export {
  DECISION_EVENT_VERSION,
  decisionEvent,
  summarizeTarget,
  mustPersist,
  type DecisionEvent,
  type DecisionLayer,
  type EventInfo,
  type EventPrincipal,
  type TargetSummary,
  type ApprovalOutcome,
  type Usage,
} from "./event.js";
export { learnPolicy, readDecisionEvents, type LearnOptions, type LearnResult } from "./learn.js";

// sql rules judge statements with PostgreSQL's parser, a wasm module loaded
// asynchronously (src/policy/sql.ts): importing this entry waits for it, so
// loadPolicy and the guard can parse synchronously from the first call. The
// one exception to "re-exports only"; never in a module the preload loads.
import { sqlParserReady as ready } from "./sql.js";
await ready();
