/**
 * meshguard/distribution: getting a policy to the processes that enforce it —
 * signed bundles, the policy server on the tailnet, and reloaders that keep
 * a guard's policy current. Re-exports only.
 */

export { watchPolicyFile, pollPolicyServer, type FileReloader, type WatchPolicyFileOptions, type PolicyServerClient, type PollPolicyServerOptions, type ReloadEvent, type ReloadTarget, type IdentityTarget } from "./reload.js";
export { generateBundleKeys, signBundle, verifyBundle, keyId, type PolicyBundle, type KeyInput } from "./bundle.js";
export { PolicyServer, servePolicy, POLICY_PATH, type PolicyServerOptions, type ServedPolicy } from "./server.js";
