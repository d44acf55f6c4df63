/**
 * The configuration of the `oauth2` credential kind (./oauth.ts): one schema
 * per grant, chosen by `grant`, and what both grants' token sources share
 * (the OAuth client they are, their clock).
 */

import { z } from "zod";
import { KeySourceSchema } from "../keys.js";
import { DURATION_HINT, parseDuration } from "../store/duration.js";
import type { OAuthClient } from "./oauth-token.js";

const httpUrl = (what: string) =>
  z
    .string()
    .url(`must be the ${what} URL`)
    .refine((u) => /^https?:$/.test(new URL(u).protocol), `the ${what} URL must be http:// or https://`)
    .refine((u) => new URL(u).username === "" && new URL(u).password === "", `the ${what} URL must not hold credentials: put the client secret in clientSecret`);
const duration = z.string().refine((s) => parseDuration(s) !== undefined, DURATION_HINT);
const scope = z.string().regex(/^[\x21\x23-\x5b\x5d-\x7e]+$/, "a scope is printable ASCII without spaces, quotes or backslashes");

const Common = {
  type: z.literal("oauth2"),
  tokenUrl: httpUrl("token endpoint"),
  clientId: z.string().min(1, "the client id the authorization server registered the gateway under"),
  clientSecret: KeySourceSchema.optional().describe("where the client secret is: { env } or { file }"),
  authMethod: z.enum(["client_secret_basic", "client_secret_post", "none"]).optional().describe("how the client authenticates at the token endpoint (default client_secret_basic with a secret, none without)"),
  scopes: z.array(scope).default([]),
  refreshBefore: duration.default("60s").describe("renew a token this long before it expires (at most half its life)"),
  timeout: duration.default("15s").describe("how long a token request may take"),
};

const ClientCredentialsSchema = z
  .object({
    ...Common,
    grant: z.literal("client_credentials"),
    /** Extra token-request parameters some servers need (audience, resource). */
    params: z.record(z.string().regex(/^[a-z_]+$/), z.string()).optional(),
  })
  .strict()
  .refine((c) => c.clientSecret !== undefined, { path: ["clientSecret"], message: "the client credentials grant needs a client secret: { env } or { file }" });

const AuthorizationCodeSchema = z
  .object({
    ...Common,
    grant: z.literal("authorization_code"),
    authorizeUrl: httpUrl("authorization endpoint"),
    redirectUri: httpUrl("redirect").describe("the callback URL registered at the provider, as the user's browser reaches the gateway: http://127.0.0.1:PORT/meshguard/v1/connectors/NAME/oauth/callback through `meshguard connect`"),
    tokenKeys: KeySourceSchema.describe("the keyring that seals users' tokens at rest (ID:BASE64 entries, the last one seals new values)"),
    revocationUrl: httpUrl("revocation endpoint").optional().describe("RFC 7009 endpoint told when a user's tokens are revoked"),
    /** Extra authorization-request parameters (access_type, prompt, audience). */
    authorizeParams: z.record(z.string().regex(/^[a-z_]+$/), z.string()).optional(),
    consentTimeout: duration.default("10m").describe("how long a started consent may take"),
  })
  .strict()
  .refine((c) => new URL(c.redirectUri).pathname.endsWith("/oauth/callback"), { path: ["redirectUri"], message: "must end with /meshguard/v1/connectors/NAME/oauth/callback, the gateway's callback" })
  .refine((c) => new URL(c.redirectUri).protocol === "https:" || isLoopbackHost(new URL(c.redirectUri).hostname), {
    path: ["redirectUri"],
    message: "a plain http:// redirect URI must be on loopback (127.0.0.1, [::1], localhost), where `meshguard connect` forwards to the gateway; providers refuse others",
  });

function isLoopbackHost(h: string): boolean {
  return h === "localhost" || h === "[::1]" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

/** OAuth2ConfigSchema picks the grant's schema by `grant`, so each issue is reported against the grant meant. */
export const OAuth2ConfigSchema = z
  .object({
    type: z.literal("oauth2"),
    grant: z.enum(["client_credentials", "authorization_code"], { errorMap: () => ({ message: 'must be "client_credentials" (one token for every caller) or "authorization_code" (each user\'s own token)' }) }),
  })
  .passthrough()
  .transform((v, ctx): z.output<typeof ClientCredentialsSchema> | z.output<typeof AuthorizationCodeSchema> => {
    const r = (v.grant === "client_credentials" ? ClientCredentialsSchema : AuthorizationCodeSchema).safeParse(v);
    if (r.success) return r.data;
    for (const i of r.error.issues) ctx.addIssue({ ...i } as z.IssueData);
    return z.NEVER;
  });
export type OAuth2Config = z.output<typeof OAuth2ConfigSchema>;
export type CcConfig = z.output<typeof ClientCredentialsSchema>;
export type AcConfig = z.output<typeof AuthorizationCodeSchema>;

/** A token whose server gave no `expires_in` is renewed after this long. */
export const UNKNOWN_TTL_MS = 5 * 60_000;

/** The clock and dependencies a source runs with; tests inject `now` and `fetch`. */
export interface Runtime {
  now(): number;
  fetch?: typeof fetch | undefined;
}

export function clientOf(connector: string, c: OAuth2Config, secret: string | undefined, rt: Runtime): OAuthClient {
  return {
    connector,
    tokenUrl: c.tokenUrl,
    clientId: c.clientId,
    clientSecret: secret,
    authMethod: c.authMethod ?? (secret === undefined ? "none" : "client_secret_basic"),
    timeoutMs: parseDuration(c.timeout)!,
    fetch: rt.fetch,
  };
}

