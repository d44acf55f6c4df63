/**
 * The database gateway's config (HuJSON file or object), validated once with
 * zod: every issue names its field. Relative paths are against the config
 * file. The upstream password is the gateway's, read from an environment
 * variable or a file — never written in the config, never the agent's.
 */

import { readFile } from "node:fs/promises";
import { dirname, isAbsolute, resolve } from "node:path";
import { parse as parseJsonc, type ParseError } from "jsonc-parser";
import { z } from "zod";
import { parseWith } from "../config.js";
import { ErrorCode, MeshguardError } from "../errors.js";

const SecretSourceSchema = z
  .object({ env: z.string().min(1).optional(), file: z.string().min(1).optional() })
  .strict()
  .refine((s) => (s.env === undefined) !== (s.file === undefined), 'give exactly one of "env" (a variable name) or "file" (a path)');

export const DatabaseGatewayConfigSchema = z
  .object({
    /** The policy file (HuJSON) whose `sql` rules judge every statement; reloaded when it changes. */
    policy: z.string().min(1),
    /** The tailnet port the gateway listens on (default 5432). */
    listen: z.number().int().min(1).max(65535).default(5432),
    /** How long close() (SIGTERM, SIGINT) lets sessions finish the statement in flight before ending them (default 10 s). */
    drainTimeoutMs: z.number().int().min(0).max(3600_000).default(10_000),
    upstream: z
      .object({
        host: z.string().min(1).default("127.0.0.1"),
        port: z.number().int().min(1).max(65535).default(5432),
        /** The gateway's own login role: NOINHERIT, no privileges of its own, a member of every caller role (docs/database.md). */
        user: z.string().min(1),
        /** Its password, from { "env": "VAR" } or { "file": "path" }; absent for trust or peer authentication. */
        password: SecretSourceSchema.optional(),
        /** TLS to the upstream server (node-postgres' `ssl: true`). */
        ssl: z.boolean().default(false),
        connectTimeoutMs: z.number().int().positive().max(600_000).default(10_000),
      })
      .strict(),
    tailnet: z
      .object({
        controlUrl: z.string().regex(/^https?:\/\/[^/\s]+/, "must be an http:// or https:// URL"),
        authKey: SecretSourceSchema.optional(),
        hostname: z.string().min(1).default("db-gateway"),
        dir: z.string().optional(),
        ephemeral: z.boolean().default(false),
      })
      .strict()
      .optional(),
    approvals: z
      .object({
        webhook: z.string().url("must be an http(s) URL").optional(),
        headers: z.record(z.string()).optional(),
        timeoutMs: z.number().int().positive().max(24 * 3600_000).optional(),
      })
      .strict()
      .optional(),
    audit: z
      .object({
        /** A JSON-lines file of decision events. */
        file: z.string().min(1),
        /** Fraction of allows written (denials and approvals always are). Default 1. */
        sampleAllows: z.number().min(0).max(1).optional(),
        /** Keep statement texts (literal values included) in events. Default false: accesses and length only. */
        revealSql: z.boolean().optional(),
      })
      .strict()
      .optional(),
  })
  .strict();

export type DatabaseGatewayConfigInput = z.input<typeof DatabaseGatewayConfigSchema>;
export type DatabaseGatewayConfig = z.output<typeof DatabaseGatewayConfigSchema>;
export type SecretSource = z.output<typeof SecretSourceSchema>;

/** validateDatabaseGatewayConfig checks an object config (MESHGUARD_INVALID_OPTIONS naming the field) and makes its paths absolute against `base`. */
export function validateDatabaseGatewayConfig(input: unknown, base: string): DatabaseGatewayConfig {
  const cfg = parseWith(DatabaseGatewayConfigSchema, input, "database gateway config");
  const abs = (p: string) => (isAbsolute(p) ? p : resolve(base, p));
  const out: DatabaseGatewayConfig = { ...cfg, policy: abs(cfg.policy) };
  if (cfg.upstream.password?.file !== undefined) out.upstream = { ...cfg.upstream, password: { file: abs(cfg.upstream.password.file) } };
  if (cfg.tailnet) out.tailnet = { ...cfg.tailnet, ...(cfg.tailnet.dir ? { dir: abs(cfg.tailnet.dir) } : {}), ...(cfg.tailnet.authKey?.file ? { authKey: { file: abs(cfg.tailnet.authKey.file) } } : {}) };
  if (cfg.audit) out.audit = { ...cfg.audit, file: abs(cfg.audit.file) };
  return out;
}

/** loadDatabaseGatewayConfig reads a HuJSON config file. */
export async function loadDatabaseGatewayConfig(file: string): Promise<DatabaseGatewayConfig> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    throw new MeshguardError(ErrorCode.INVALID_OPTIONS, `cannot read the database gateway config ${file}: ${(err as Error).message}`, { cause: err, hint: "pass the path of a HuJSON file: meshguard db-gateway --config db-gateway.hujson" });
  }
  const errors: ParseError[] = [];
  const value: unknown = parseJsonc(text, errors, { allowTrailingComma: true });
  if (errors.length > 0) {
    const at = text.slice(0, errors[0]!.offset).split("\n");
    throw new MeshguardError(ErrorCode.INVALID_OPTIONS, `the database gateway config ${file} is not valid HuJSON (line ${at.length}, column ${at.at(-1)!.length + 1})`, { hint: "check for a missing comma, quote or brace there" });
  }
  return validateDatabaseGatewayConfig(value, dirname(resolve(file)));
}

/** readSecret reads a password or auth key from where the config says; `what` names it in the error (never the value). */
export async function readSecret(src: SecretSource, what: string, env: NodeJS.ProcessEnv): Promise<string> {
  if (src.env !== undefined) {
    const v = env[src.env]?.trim();
    if (!v) throw new MeshguardError(ErrorCode.INVALID_OPTIONS, `${what} is read from the environment variable ${src.env}, which is ${env[src.env] === undefined ? "not set" : "empty"}`, { hint: `set ${src.env} in the gateway's environment, or use { "file": "path" }` });
    return v;
  }
  let text: string;
  try {
    text = await readFile(src.file!, "utf8");
  } catch (err) {
    throw new MeshguardError(ErrorCode.INVALID_OPTIONS, `${what} is read from ${src.file}, which cannot be read (${(err as NodeJS.ErrnoException).code ?? "error"})`, { hint: "check the path (relative to the config file) and that the gateway's user may read it" });
  }
  const v = text.trim();
  if (v === "") throw new MeshguardError(ErrorCode.INVALID_OPTIONS, `the file ${src.file} holding ${what} is empty`);
  return v;
}
