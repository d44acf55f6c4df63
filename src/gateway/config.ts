/**
 * The gateway's configuration file: HuJSON (comments, trailing commas), read
 * with the policy engine's parser so that every problem is reported as
 * `file:line:column: path: message`, then validated with zod.
 *
 * Provider keys are never in the file: a provider names where its key is
 * (an environment variable or a file) and the key is read once at start
 * (./keys.ts). Relative paths in the file are relative to the file's
 * directory, so a config works wherever the gateway is started from.
 */

import { readFile } from "node:fs/promises";
import { dirname, isAbsolute, resolve } from "node:path";
import { z } from "zod";
import { ErrorCode, MeshguardError } from "../errors.js";
import { formatPath, SourceFile, type PolicyIssue } from "../policy/source.js";
import { ConnectorsConfigSchema } from "./connectors/config.js";
import { CREDENTIAL_KINDS } from "./credentials/registry.js";
import { McpConfigSchema } from "./mcp/config.js";
import { KeySourceSchema } from "./keys.js";
import { GATEWAY_PARTS } from "./parts.js";
import { parseDuration } from "./store/config.js";
import { upstreamUrlSchema } from "./url.js";

/** Provider names are words: they appear in `provider/model` and in policy globs. */
const PROVIDER_NAME_RE = /^[a-z0-9][a-z0-9._-]*$/;
const PriceFields = {
  input: z.number().nonnegative(),
  output: z.number().nonnegative(),
  cacheRead: z.number().nonnegative().optional(),
  cacheWrite: z.number().nonnegative().optional(),
};

const PriceSchema = z
  .object({
    ...PriceFields,
    tiers: z
      .array(z.object({ above: z.number().int().positive().describe("prompt tokens (input + cache) above which this tier prices the whole request"), ...PriceFields }).strict())
      .optional(),
  })
  .strict()
  .describe("US dollars per million tokens");

const BaseUrlSchema = upstreamUrlSchema("https://api.openai.com/v1", { noQuery: true });

export const ProviderConfigSchema = z
  .object({
    baseUrl: BaseUrlSchema.describe("the base URL the provider's official SDK takes: https://api.openai.com/v1, https://api.anthropic.com, https://generativelanguage.googleapis.com"),
    format: z.enum(["openai", "anthropic", "gemini"], { errorMap: () => ({ message: 'must be "openai", "anthropic" or "gemini" (OpenAI-compatible servers are "openai")' }) }),
    key: KeySourceSchema.optional(),
    passthroughKey: z.boolean().default(false).describe("send the client's own Authorization / x-api-key / x-goog-api-key instead of the provider key"),
    models: z.array(z.string().min(1)).min(1, "list at least one model name or glob, e.g. [\"gpt-4o*\"]"),
    prices: z.record(z.string().min(1), PriceSchema).optional(),
    /** Milliseconds until the upstream's response headers, and between body chunks. */
    timeout: z.number().int().positive().max(3_600_000).default(600_000),
  })
  .strict();

const PrincipalObjectSchema = z
  .object({
    node: z.string().min(1).optional(),
    tags: z.array(z.string().regex(/^tag:[A-Za-z0-9][A-Za-z0-9_-]*$/, "must look like tag:name")).default([]),
    user: z.string().min(1).optional(),
  })
  .strict();

const LoopbackSchema = z
  .object({
    listen: z.string().regex(/^(127\.\d{1,3}\.\d{1,3}\.\d{1,3}|\[::1\]|localhost):\d{1,5}$/, 'must be a loopback address and port, e.g. "127.0.0.1:8787" (the loopback listener is for local tools only)'),
    principal: z.union([z.string().min(1), PrincipalObjectSchema]).describe('who every loopback request is: "tag:x", "alice@example.com", "node:name", or { node, tags, user }'),
  })
  .strict();

const ApprovalsSchema = z
  .object({
    webhook: z.string().url("must be an http(s) URL").optional(),
    headers: z.record(z.string()).optional(),
    timeoutMs: z.number().int().positive().max(24 * 3600_000).optional(),
  })
  .strict();

const TailnetSchema = z
  .object({
    controlUrl: z.string().regex(/^https?:\/\/[^/\s]+/, "must be an http:// or https:// URL"),
    authKey: KeySourceSchema.optional(),
    hostname: z.string().default("ai-gateway"),
    dir: z.string().optional(),
    ephemeral: z.boolean().default(false),
  })
  .strict();

export const GatewayConfigSchema = z
  .object({
    providers: z
      .record(z.string().regex(PROVIDER_NAME_RE, "a provider name is lower-case letters, digits, '.', '_' or '-' (no '/')"), ProviderConfigSchema)
      .refine((p) => Object.keys(p).length > 0, "configure at least one provider"),
    policy: z.string().min(1).describe("the policy file (HuJSON, the guard's format); reloaded when it changes"),
    listen: z.number().int().min(1, "must be a port, 1-65535").max(65535, "must be a port, 1-65535").default(80).describe("the tailnet port"),
    tailnet: TailnetSchema.optional(),
    loopback: LoopbackSchema.optional(),
    approvals: ApprovalsSchema.optional(),
    maxBodyBytes: z.number().int().positive().default(32 << 20),
    dataDir: z.string().default("meshguard-gateway").describe("where the store keeps its files (relative to the config file)"),
    sessions: z
      .object({ idleGap: z.string().refine((s) => parseDuration(s) !== undefined, 'must be a duration such as "30m", "2h" or "90s"').default("30m") })
      .strict()
      .optional()
      .describe("requests of a caller without a client session id form one session until the caller is idle this long"),
    quotas: GATEWAY_PARTS.quotas.optional(),
    hooks: GATEWAY_PARTS.hooks.optional(),
    retention: GATEWAY_PARTS.retention.optional(),
    storage: GATEWAY_PARTS.storage.optional(),
    telemetry: GATEWAY_PARTS.telemetry.optional().describe("Prometheus metrics (on by default) and OpenTelemetry spans (off by default)"),
    log: GATEWAY_PARTS.log.optional().describe("the gateway's own JSON log lines (pino); absent: none"),
    alerts: GATEWAY_PARTS.alerts.optional().describe("rules that fire webhooks (Slack or JSON)"),
    console: GATEWAY_PARTS.console.optional(),
    mcp: McpConfigSchema.optional(),
    connectors: ConnectorsConfigSchema.optional(),
  })
  .strict()
  .superRefine((cfg, ctx) => {
    // An upstream's quotas name buckets of this config that count calls (a connector or MCP call has no tokens or dollars).
    const refs: Array<[(string | number)[], string[] | undefined]> = [
      ...Object.entries(cfg.connectors?.http ?? {}).map(([n, c]): [(string | number)[], string[] | undefined] => [["connectors", "http", n, "quotas"], c.quotas]),
      ...Object.entries(cfg.mcp?.servers ?? {}).map(([n, s]): [(string | number)[], string[] | undefined] => [["mcp", "servers", n, "quotas"], s.quotas]),
    ];
    for (const [path, names] of refs) {
      for (const [i, name] of (names ?? []).entries()) {
        const b = cfg.quotas !== undefined && Object.hasOwn(cfg.quotas, name) ? cfg.quotas[name] : undefined;
        const at = names!.length === 1 ? path : [...path, i];
        if (b === undefined) {
          const known = Object.keys(cfg.quotas ?? {});
          ctx.addIssue({ code: "custom", path: at, message: `no quota bucket is named "${name}": ${known.length ? `the buckets are ${known.map((k) => `"${k}"`).join(", ")}` : `define it under "quotas", e.g. "quotas": { "${name}": { "unit": "calls", "capacity": 100, "refill": "100/minute", "per": "node" } }`}` });
        } else if (b.unit !== "calls") {
          ctx.addIssue({ code: "custom", path: at, message: `quota bucket "${name}" counts ${b.unit}, and a connector or MCP call costs none: name a bucket with "unit": "calls"` });
        }
      }
    }
    // Per-user OAuth consent and tokens are kept by name (/meshguard/v1/connectors/<name>/oauth, the token rows): one name, one upstream.
    for (const [name, sc] of Object.entries(cfg.mcp?.servers ?? {})) {
      if (!("url" in sc) || sc.auth === undefined || cfg.connectors?.http[name] === undefined) continue;
      const perUser = (a: { type: string }) => a.type === "oauth2" && (a as { grant?: string }).grant === "authorization_code";
      if (perUser(sc.auth) || perUser(cfg.connectors.http[name].auth)) {
        ctx.addIssue({ code: "custom", path: ["mcp", "servers", name], message: `the HTTP connector "${name}" has the same name, and one of them acts for users (oauth2 authorization_code): their consent pages and tokens would be one; rename one of them` });
      }
    }
  });

export type GatewayConfigInput = z.input<typeof GatewayConfigSchema>;
export type GatewayConfig = z.output<typeof GatewayConfigSchema>;
export type ProviderConfig = z.output<typeof ProviderConfigSchema>;

/** GatewayConfigError is MESHGUARD_GATEWAY_CONFIG_INVALID with every issue (path, line, column). */
export class GatewayConfigError extends MeshguardError {
  readonly issues: PolicyIssue[];
  readonly file?: string;

  constructor(issues: PolicyIssue[], file?: string) {
    const where = file ?? "gateway config";
    // Line 0: a config given as an object has no positions to show.
    const at = (i: PolicyIssue) => (i.line > 0 ? `${where}:${i.line}:${i.column}: ` : "");
    super(ErrorCode.GATEWAY_CONFIG_INVALID, `invalid gateway configuration:\n${issues.map((i) => `  ${at(i)}${i.path ? `${i.path}: ` : ""}${i.message}`).join("\n")}`, {
      hint: "docs/gateway.md lists every setting",
    });
    this.issues = issues;
    this.file = file;
    this.name = "GatewayConfigError";
  }
}

/**
 * parseGatewayConfig reads a config text. Relative paths (policy, dataDir,
 * key files, tailnet dir) are resolved against `baseDir` (the file's
 * directory; default: the working directory). Throws GatewayConfigError.
 */
export function parseGatewayConfig(text: string, opts: { file?: string; baseDir?: string } = {}): GatewayConfig {
  const src = SourceFile.parse(text);
  if (Array.isArray(src)) throw new GatewayConfigError(src, opts.file);
  const cfg = validateGatewayConfig(src.value, (path, key) => src.locate(path, key), opts.file);
  return resolveConfigPaths(cfg, opts.baseDir ?? (opts.file ? dirname(resolve(opts.file)) : process.cwd()));
}

/** validateGatewayConfig validates an already parsed config object (a library caller's). */
export function validateGatewayConfig(value: unknown, locate: (path: (string | number)[], key?: string) => { line: number; column: number } = () => ({ line: 0, column: 0 }), file?: string): GatewayConfig {
  const r = GatewayConfigSchema.safeParse(value);
  if (r.success) return r.data;
  const issues = r.error.issues.map((i): PolicyIssue => {
    const path = i.path as (string | number)[];
    if (i.code === "unrecognized_keys") {
      const keys = (i as { keys: string[] }).keys;
      return { path: formatPath(path), ...locate(path, keys[0]), message: `unknown setting${keys.length > 1 ? "s" : ""} ${keys.map((k) => JSON.stringify(k)).join(", ")}` };
    }
    return { path: formatPath(path), ...locate(path), message: i.message };
  });
  throw new GatewayConfigError(issues, file);
}

/** loadGatewayConfig reads and parses a config file. */
export async function loadGatewayConfig(file: string): Promise<GatewayConfig> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    throw new GatewayConfigError([{ path: "", line: 1, column: 1, message: `cannot read the file: ${(err as Error).message}` }], file);
  }
  return parseGatewayConfig(text, { file });
}

/** resolveConfigPaths makes the config's relative paths absolute against `base`. */
export function resolveConfigPaths(cfg: GatewayConfig, base: string): GatewayConfig {
  const abs = (p: string) => (isAbsolute(p) ? p : resolve(base, p));
  const providers: GatewayConfig["providers"] = {};
  for (const [name, p] of Object.entries(cfg.providers)) providers[name] = p.key?.file !== undefined ? { ...p, key: { file: abs(p.key.file) } } : p;
  const out: GatewayConfig = { ...cfg, providers, policy: abs(cfg.policy), dataDir: abs(cfg.dataDir) };
  if (cfg.log && cfg.log.destination !== "stderr" && cfg.log.destination !== "stdout") out.log = { ...cfg.log, destination: abs(cfg.log.destination) };
  if (cfg.tailnet) {
    const t = { ...cfg.tailnet };
    if (t.dir !== undefined) t.dir = abs(t.dir);
    if (t.authKey?.file !== undefined) t.authKey = { file: abs(t.authKey.file) };
    out.tailnet = t;
  }
  if (cfg.connectors) {
    const http: NonNullable<GatewayConfig["connectors"]>["http"] = {};
    for (const [name, c] of Object.entries(cfg.connectors.http)) {
      const kind = CREDENTIAL_KINDS[c.auth.type];
      http[name] = kind?.resolvePaths ? { ...c, auth: kind.resolvePaths(c.auth, abs) } : c;
    }
    out.connectors = { ...cfg.connectors, http };
  }
  if (cfg.mcp) {
    const servers: NonNullable<GatewayConfig["mcp"]>["servers"] = {};
    for (const [name, sc] of Object.entries(cfg.mcp.servers)) {
      if (!("url" in sc)) {
        // A stdio server's secret env values may name files.
        servers[name] = { ...sc, env: Object.fromEntries(Object.entries(sc.env).map(([k, v]) => [k, typeof v !== "string" && v.file !== undefined ? { file: abs(v.file) } : v])) };
        continue;
      }
      const kind = sc.auth !== undefined ? CREDENTIAL_KINDS[sc.auth.type] : undefined;
      servers[name] = sc.auth !== undefined && kind?.resolvePaths ? { ...sc, auth: kind.resolvePaths(sc.auth, abs) } : sc;
    }
    out.mcp = { ...cfg.mcp, servers };
  }
  return out;
}
