/**
 * The OAuth 2.0 credential kind of connectors (`"auth": { "type": "oauth2" }`,
 * docs/connectors.md#credentials-oauth-20):
 *
 * - `grant: "client_credentials"` (RFC 6749 §4.4): one token for every
 *   caller, fetched from the token endpoint, kept in memory, renewed ahead of
 *   its expiry; concurrent callers share one request.
 * - `grant: "authorization_code"` with PKCE (RFC 7636, S256): each user
 *   connects once through the gateway's consent page (./oauth-routes.ts);
 *   their tokens are sealed with the keyring (./keyring.ts) and kept apart
 *   per user in the token store (./token-store.ts); a tagged agent (no user)
 *   uses a user's token only through a delegation that user granted to one
 *   of its tags, and only when that user owns the agent (whois `owners`).
 *
 * Nothing here logs or returns a token: errors name connectors, users and
 * endpoints; injections list their token in `secrets` for the scrubber.
 */

import type { KeySource } from "../keys.js";
import { Keyring } from "./keyring.js";
import { ClientCredentialsSource } from "./oauth-client-credentials.js";
import { OAuth2ConfigSchema, type OAuth2Config, type Runtime } from "./oauth-config.js";
import { UserOAuthSource } from "./oauth-user.js";
import { MemoryTokenStore, type OAuthTokenStore } from "./token-store.js";
import type { CredentialEnv, CredentialKind } from "./types.js";

export { ClientCredentialsSource } from "./oauth-client-credentials.js";
export { OAuth2ConfigSchema, type OAuth2Config } from "./oauth-config.js";
export { identityOf, oauthPath, OAuthRouteError, UserOAuthSource } from "./oauth-user.js";

/** oauthOrigins lists the origins the gateway itself must reach for `cfg` (token and revocation endpoints), for its self-guard. The authorization page is the user's browser's to reach, not the gateway's. */
export function oauthOrigins(cfg: OAuth2Config): string[] {
  const urls = [cfg.tokenUrl, ...(cfg.grant === "authorization_code" && cfg.revocationUrl !== undefined ? [cfg.revocationUrl] : [])];
  return [...new Set(urls.map((u) => new URL(u).origin))];
}

/** OAuthEnv is the CredentialEnv plus where per-user tokens are kept (the gateway's store when it has one). */
export interface OAuthEnv extends CredentialEnv {
  tokenStore?: OAuthTokenStore | undefined;
  /** Reads keyring sources (default process.env). */
  processEnv?: NodeJS.ProcessEnv | undefined;
  fetch?: typeof fetch | undefined;
}

/** OAUTH2_KIND is the `oauth2` credential kind (./registry.ts lists it). */
export const OAUTH2_KIND: CredentialKind<OAuth2Config> = {
  schema: OAuth2ConfigSchema,
  async create(cfg, env: OAuthEnv) {
    const rt: Runtime = { now: () => env.now(), fetch: env.fetch };
    const secret = cfg.clientSecret === undefined ? undefined : await env.readSecret(cfg.clientSecret, `the OAuth client secret of connector ${env.connector}`);
    if (cfg.grant === "client_credentials") return new ClientCredentialsSource(env.connector, cfg, secret!, rt);
    const keys = await Keyring.load(cfg.tokenKeys, env.processEnv);
    let store = env.tokenStore;
    if (store === undefined) {
      env.warn(`connector ${env.connector}: the gateway has no store, so users' OAuth tokens are kept in memory only and lost at restart (configure storage)`);
      store = new MemoryTokenStore();
    }
    return new UserOAuthSource(env.connector, cfg, secret, keys, store, rt);
  },
  resolvePaths(cfg, abs) {
    const f = (k: KeySource | undefined) => (k?.file === undefined ? k : { file: abs(k.file) });
    const out = { ...cfg, clientSecret: f(cfg.clientSecret) };
    if (cfg.grant === "authorization_code") return { ...out, tokenKeys: f(cfg.tokenKeys)! } as OAuth2Config;
    return out as OAuth2Config;
  },
};
