/**
 * meshguard/tokens: session-scoped tokens bound to the agent's tailnet
 * identity (issue 10). Re-exports only.
 */
export * from "./types.js";
export { startTokenIssuer, TokenIssuer, type TokenIssuerOptions, type TokenIssuerEvents } from "./issuer.js";
export type { RevokeTarget, RevokeAnswer } from "./revoke-endpoint.js";
export type { EndpointAnswer } from "./token-endpoint.js";
