/**
 * meshguard/tokens: session-scoped tokens bound to the agent's tailnet
 * identity (issue 10). Re-exports only.
 */
export * from "./types.js";
