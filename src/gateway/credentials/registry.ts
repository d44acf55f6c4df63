/**
 * The credential kinds a connector's `auth` may name, by `type`. The config
 * schema of `auth` is built from this table, so a new kind is one entry here
 * and a file of its own (./types.ts says what it must keep).
 */

import { z } from "zod";
import { OAUTH2_KIND } from "./oauth.js";
import { readKey } from "../keys.js";
import { STATIC_KINDS } from "./static.js";
import type { CredentialEnv, CredentialKind, CredentialSource } from "./types.js";

/** CREDENTIAL_KINDS lists every kind: the static ones (./static.ts) and OAuth 2.0 (`oauth2`, ./oauth*.ts). */
export const CREDENTIAL_KINDS: Readonly<Record<string, CredentialKind<{ type: string }>>> = {
  ...STATIC_KINDS,
  oauth2: OAUTH2_KIND as unknown as CredentialKind<{ type: string }>,
};

const kindList = () =>
  Object.keys(CREDENTIAL_KINDS)
    .map((k) => JSON.stringify(k))
    .join(", ");

/** AuthConfigSchema validates a connector's `auth` with its kind's schema. */
export const AuthConfigSchema: z.ZodType<{ type: string }, z.ZodTypeDef, unknown> = z
  .object({ type: z.string({ required_error: `must name its kind: "type": one of ${kindList()}` }) }, { invalid_type_error: `must be an object { "type": ..., ... } (one of ${kindList()})` })
  .passthrough()
  .superRefine((v, ctx) => {
    if (!Object.hasOwn(CREDENTIAL_KINDS, v.type)) ctx.addIssue({ code: "custom", path: ["type"], message: `unknown credential type ${JSON.stringify(v.type)}: use one of ${kindList()}` });
  })
  .transform((v, ctx) => {
    const r = CREDENTIAL_KINDS[v.type]!.schema.safeParse(v);
    if (r.success) return r.data;
    for (const i of r.error.issues) ctx.addIssue({ ...i } as z.IssueData);
    return z.NEVER;
  });

export type AuthConfig = z.output<typeof AuthConfigSchema>;

/** What openCredential needs of the gateway (its context, before the connectors are attached). */
export interface CredentialHost {
  cfg: { dataDir: string };
  store?: { oauthTokens?: CredentialEnv["tokenStore"] } | undefined;
  warn(err: unknown): void;
}

/**
 * openCredential makes the credential source of one upstream — an HTTP
 * connector or an MCP server (`what` names it in errors: "connector github",
 * "MCP server tools") — from its validated `auth`. A secret that cannot be
 * read fails here, naming its variable or file, never its value.
 */
export async function openCredential(host: CredentialHost, name: string, baseUrl: string, auth: { type: string }, env: NodeJS.ProcessEnv, now: () => number = Date.now): Promise<CredentialSource> {
  const kind = CREDENTIAL_KINDS[auth.type]!;
  // The keyring of per-user OAuth tokens is read from the same environment as every other secret (processEnv).
  const credEnv: CredentialEnv & { processEnv: NodeJS.ProcessEnv } = {
    processEnv: env,
    connector: name,
    baseUrl,
    readSecret: (src, what) => readKey(src, what, env),
    dataDir: host.cfg.dataDir,
    now,
    // Per-user OAuth tokens are kept in the gateway's store (encrypted), when it has one.
    tokenStore: host.store?.oauthTokens,
    warn: (m) => host.warn(new Error(m)),
  };
  return kind.create(auth, credEnv);
}
