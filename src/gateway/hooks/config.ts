/**
 * The `hooks` section of the gateway config: guardrail webhooks that run
 * before (`pre`) and after (`post`) the upstream call, and usage webhooks
 * (`usage`) that receive one event per finished request.
 *
 * Parsing is idempotent: the output of HooksConfigSchema parses again to
 * itself (durations become milliseconds, `env:NAME` header values stay
 * unresolved), so a config validated once by the gateway's HuJSON loader can
 * be handed to createHookRunner, which validates it again at its own public
 * boundary. Secrets are read from the environment only when the runner is
 * created (resolveHeaders), so no parsed config object ever holds them.
 */

import { z } from "zod";
import { ErrorCode, MeshguardError } from "../../errors.js";

/** The default time a hook has to answer, connection and body included. */
export const DEFAULT_HOOK_TIMEOUT_MS = 5_000;
const MAX_TIMEOUT_MS = 10 * 60_000;

const UNITS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000 };

/**
 * A duration as written in a config: a number of milliseconds, or a string
 * "250ms", "5s", "1.5s", "2m".
 */
export const DurationSchema = z.union([z.number(), z.string()]).transform((v, ctx) => {
  let ms: number;
  if (typeof v === "number") ms = v;
  else {
    const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)\s*$/.exec(v);
    if (!m) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: `"${v}" is not a duration: write milliseconds (5000) or a string such as "500ms", "5s", "1m"` });
      return z.NEVER;
    }
    ms = Number(m[1]) * UNITS[m[2]!]!;
  }
  if (!Number.isFinite(ms) || ms < 1 || ms > MAX_TIMEOUT_MS) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: `must be between 1 ms and ${MAX_TIMEOUT_MS / 60_000} minutes, got ${JSON.stringify(v)}` });
    return z.NEVER;
  }
  return Math.round(ms);
});

const NameSchema = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, "must be 1-64 of A-Z, a-z, 0-9, '.', '_', '-' (it names the hook in errors and logs)");

const UrlSchema = z.string().superRefine((s, ctx) => {
  let u: URL;
  try {
    u = new URL(s);
  } catch {
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: `"${s}" is not a URL: write e.g. http://127.0.0.1:9000/guard` });
    return;
  }
  if (u.protocol !== "http:" && u.protocol !== "https:") ctx.addIssue({ code: z.ZodIssueCode.custom, message: `must be an http:// or https:// URL, got ${u.protocol}` });
  // Credentials in a URL end up in error messages and logs; headers with
  // env:NAME values keep them out of both.
  if (u.username || u.password) ctx.addIssue({ code: z.ZodIssueCode.custom, message: 'must not hold credentials (user:password@): send them in `headers`, e.g. { "authorization": "env:HOOK_TOKEN" }' });
});

/** Headers the runner sets itself: a hook config may not override them. */
const RESERVED_HEADERS = new Set(["content-type", "content-length", "host", "connection", "transfer-encoding", "keep-alive", "upgrade", "te", "trailer"]);

const HeadersSchema = z.record(z.string(), z.string()).superRefine((h, ctx) => {
  for (const [name, value] of Object.entries(h)) {
    if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name)) ctx.addIssue({ code: z.ZodIssueCode.custom, path: [name], message: `"${name}" is not a valid header name` });
    else if (RESERVED_HEADERS.has(name.toLowerCase())) ctx.addIssue({ code: z.ZodIssueCode.custom, path: [name], message: `${name} is set by the gateway and cannot be configured` });
    if (/[\r\n\0]/.test(value)) ctx.addIssue({ code: z.ZodIssueCode.custom, path: [name], message: "must not contain line breaks or NUL" });
    if (value.startsWith("env:") && !/^env:[A-Za-z_][A-Za-z0-9_]*$/.test(value)) ctx.addIssue({ code: z.ZodIssueCode.custom, path: [name], message: `"${value}" must be env:NAME with NAME an environment variable name` });
  }
});

/** HookDefSchema is one guardrail webhook (a `pre` or `post` entry). */
export const HookDefSchema = z
  .object({
    name: NameSchema,
    url: UrlSchema,
    timeout: DurationSchema.default(DEFAULT_HOOK_TIMEOUT_MS).describe("time to answer, connection and body included"),
    failure: z
      .enum(["open", "closed"], { errorMap: () => ({ message: 'must be "open" (skip the hook when it fails) or "closed" (block the request)' }) })
      .default("closed"),
    headers: HeadersSchema.default({}),
    models: z.array(z.string().min(1, "must not be empty")).min(1, "must list at least one glob; leave `models` out to run on every model").optional(),
  })
  .strict();

/** UsageHookDefSchema is one usage webhook: finished requests, delivered in the background. */
export const UsageHookDefSchema = z
  .object({
    name: NameSchema,
    url: UrlSchema,
    headers: HeadersSchema.default({}),
    timeout: DurationSchema.default(DEFAULT_HOOK_TIMEOUT_MS),
    /** At most this many events in one POST; what has queued while a POST was in flight goes in the next. */
    batch: z.number().int().min(1).max(1000).default(100),
    /** Delivery attempts after the first failed one (network error, timeout, 408, 429, 5xx). */
    retries: z.number().int().min(0).max(10).default(3),
    /** Events held while the hook is slow or down; past this, new events are dropped (and reported). */
    maxQueue: z.number().int().min(1).max(1_000_000).default(10_000),
  })
  .strict();

function uniqueNames(list: { name: string }[], ctx: z.RefinementCtx) {
  const seen = new Set<string>();
  list.forEach((h, i) => {
    if (seen.has(h.name)) ctx.addIssue({ code: z.ZodIssueCode.custom, path: [i, "name"], message: `"${h.name}" is used by another hook of this list: names must be unique` });
    seen.add(h.name);
  });
}

/** HooksConfigSchema validates the gateway config's `hooks` section. */
export const HooksConfigSchema = z
  .object({
    pre: z.array(HookDefSchema).superRefine(uniqueNames).default([]),
    post: z.array(HookDefSchema).superRefine(uniqueNames).default([]),
    usage: z.array(UsageHookDefSchema).superRefine(uniqueNames).default([]),
  })
  .strict();

/** The `hooks` section as written. */
export type HooksConfig = z.input<typeof HooksConfigSchema>;
export type ResolvedHooksConfig = z.output<typeof HooksConfigSchema>;
export type HookDef = z.output<typeof HookDefSchema>;
export type UsageHookDef = z.output<typeof UsageHookDefSchema>;

/** parseHooksConfig validates a `hooks` section, throwing MESHGUARD_INVALID_OPTIONS that lists every issue by path. */
export function parseHooksConfig(cfg: unknown): ResolvedHooksConfig {
  const r = HooksConfigSchema.safeParse(cfg ?? {});
  if (r.success) return r.data;
  const lines = r.error.issues.map((i) => `hooks.${i.path.join(".")}: ${i.message}`);
  throw new MeshguardError(ErrorCode.INVALID_OPTIONS, `invalid hooks config:\n  ${lines.join("\n  ")}`);
}

/**
 * resolveHeaders reads `env:NAME` values from the environment. A missing
 * variable fails at startup rather than sending a hook no credentials.
 */
export function resolveHeaders(where: string, headers: Record<string, string>, env: NodeJS.ProcessEnv = process.env): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (!value.startsWith("env:")) {
      out[name.toLowerCase()] = value;
      continue;
    }
    const v = env[value.slice(4)];
    if (v === undefined || v === "")
      throw new MeshguardError(ErrorCode.INVALID_OPTIONS, `${where}.headers.${name}: environment variable ${value.slice(4)} is not set`, {
        hint: `export ${value.slice(4)}=… before starting the gateway`,
      });
    if (/[\r\n\0]/.test(v)) throw new MeshguardError(ErrorCode.INVALID_OPTIONS, `${where}.headers.${name}: environment variable ${value.slice(4)} contains a line break or NUL`);
    out[name.toLowerCase()] = v;
  }
  return out;
}

/** hookUrls lists every URL the hooks call: what the gateway's self-guard must allow. */
export function hookUrls(cfg: HooksConfig): string[] {
  const c = parseHooksConfig(cfg);
  return [...new Set([...c.pre, ...c.post, ...c.usage].map((h) => h.url))];
}
