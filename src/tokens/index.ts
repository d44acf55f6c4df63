/**
 * meshguard/tokens: session-scoped tokens bound to the agent's tailnet
 * identity (issue 10). Re-exports only.
 */
export * from "./types.js";
export { startTokenIssuer, TokenIssuer, type TokenIssuerOptions, type TokenIssuerEvents } from "./issuer.js";
export type { RevokeTarget, RevokeAnswer } from "./revoke-endpoint.js";
export type { EndpointAnswer } from "./token-endpoint.js";
// Verifier side (services): verify.ts; its errors carry status and WWW-Authenticate.
export { createVerifier, verifyRequest, sendTokenError, type TokenVerifier, type VerifiedToken, type RequestContext, type VerifierOptions, type VerifierNode, type HonoMiddleware, type HonoContextLike } from "./verify.js";
export { TokenVerifyError } from "./verify-error.js";
export { DEFAULT_ED25519_BACKEND, type Ed25519Backend } from "./ed25519.js";
// Agent side: a client that obtains, caches, refreshes and attaches tokens; task scope.
export { createTokenClient, TokenClient, MIN_REMAINING_S, type TokenClientOptions, type TargetOptions, type ActionSpec, type IssuedToken, type TokenRequest, type ClientNode, type PolicySource } from "./client.js";
export { withTask, currentTask, Task, type TaskOptions } from "./client-task.js";

// sql rules judge statements with PostgreSQL's parser, a wasm module loaded
// asynchronously (src/policy/sql.ts): importing this entry waits for it, so
// loadPolicy and the guard can parse synchronously from the first call. The
// one exception to "re-exports only"; never in a module the preload loads.
import { sqlParserReady } from "../policy/sql.js";
await sqlParserReady();
