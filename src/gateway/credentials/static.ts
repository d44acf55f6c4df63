/**
 * The static credential kinds: a secret read once at start from an
 * environment variable or a file, injected unchanged into every call.
 *
 *   { "type": "bearer", "token": { "env": "GITHUB_TOKEN" } }                  Authorization: Bearer <token>
 *   { "type": "apiKey", "key": { "file": "keys/crm" }, "header": "X-Api-Key" } X-Api-Key: <key>
 *   { "type": "apiKey", "key": { "env": "MAPS_KEY" }, "query": "key" }         ?key=<key>
 *   { "type": "basic", "username": "svc", "password": { "env": "JIRA_PW" } }   Authorization: Basic base64(svc:pw)
 */

import { z } from "zod";
import { KeySourceSchema, type KeySource } from "../keys.js";
import type { CredentialKind, CredentialSource, InjectedCredential } from "./types.js";

/** RFC 9110 token characters: what a header name may be. */
const HEADER_NAME = z.string().regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, 'must be an HTTP header name, e.g. "X-Api-Key"');

const BearerSchema = z
  .object({
    type: z.literal("bearer"),
    token: KeySourceSchema.describe("where the token is read from"),
    header: HEADER_NAME.default("Authorization").describe("the header that carries it"),
    scheme: z.string().regex(/^[A-Za-z0-9!#$%&'*+.^_`|~-]*$/, 'must be an auth scheme word such as "Bearer" or "token", or "" for the bare token').default("Bearer"),
  })
  .strict();

const ApiKeySchema = z
  .object({
    type: z.literal("apiKey"),
    key: KeySourceSchema.describe("where the key is read from"),
    header: HEADER_NAME.optional().describe("send the key in this header"),
    query: z.string().regex(/^[A-Za-z0-9._~-]+$/, 'must be a query parameter name, e.g. "api_key"').optional().describe("or in this query parameter"),
  })
  .strict()
  .refine((c) => (c.header === undefined) !== (c.query === undefined), { message: 'an apiKey goes in a header or a query parameter: give exactly one of "header": "X-Api-Key" or "query": "api_key"' });

const BasicSchema = z
  .object({
    type: z.literal("basic"),
    username: z.string().min(1, "must be the user name").refine((u) => !u.includes(":"), "a Basic user name cannot contain ':'"),
    password: KeySourceSchema.describe("where the password is read from"),
  })
  .strict();

/** fixed is a source that injects the same thing into every call. */
function fixed(type: string, inject: Omit<InjectedCredential, "secrets">, secrets: string[]): CredentialSource {
  const cred: InjectedCredential = { ...inject, secrets };
  return { type, resolve: () => Promise.resolve(cred), secrets: () => secrets };
}

const abs = (k: KeySource, f: (p: string) => string): KeySource => (k.file !== undefined ? { file: f(k.file) } : k);

const bearer: CredentialKind<z.output<typeof BearerSchema>> = {
  schema: BearerSchema,
  async create(cfg, env) {
    const token = await env.readSecret(cfg.token, `connector ${env.connector}`);
    return fixed("bearer", { headers: { [cfg.header]: cfg.scheme === "" ? token : `${cfg.scheme} ${token}` } }, [token]);
  },
  resolvePaths: (cfg, f) => ({ ...cfg, token: abs(cfg.token, f) }),
};

const apiKey: CredentialKind<z.output<typeof ApiKeySchema>> = {
  schema: ApiKeySchema,
  async create(cfg, env) {
    const key = await env.readSecret(cfg.key, `connector ${env.connector}`);
    return fixed("apiKey", cfg.header !== undefined ? { headers: { [cfg.header]: key } } : { query: { [cfg.query!]: key } }, [key, encodeURIComponent(key)]);
  },
  resolvePaths: (cfg, f) => ({ ...cfg, key: abs(cfg.key, f) }),
};

const basic: CredentialKind<z.output<typeof BasicSchema>> = {
  schema: BasicSchema,
  async create(cfg, env) {
    const password = await env.readSecret(cfg.password, `connector ${env.connector}`);
    const encoded = Buffer.from(`${cfg.username}:${password}`).toString("base64");
    // The encoded pair is what an upstream echoes back most often; the password alone too.
    return fixed("basic", { headers: { Authorization: `Basic ${encoded}` } }, [password, encoded, encodeURIComponent(password)]);
  },
  resolvePaths: (cfg, f) => ({ ...cfg, password: abs(cfg.password, f) }),
};

export const STATIC_KINDS = { bearer, apiKey, basic } as unknown as Record<string, CredentialKind<{ type: string }>>;
