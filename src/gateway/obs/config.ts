/**
 * The observability sections of the gateway config: `telemetry` (Prometheus
 * metrics, OpenTelemetry spans), `log` (the gateway's own JSON log lines)
 * and `alerts` (rules that fire webhooks). Durations stay strings after
 * validation (like `retention.maxAge`), so a validated config validates
 * again to itself; they are turned into milliseconds where they are used.
 */

import { z } from "zod";
import { UsageHookDefSchema } from "../hooks.js";
import { DURATION_HINT, parseDuration } from "../store/duration.js";

const Duration = z.string().refine((s) => parseDuration(s) !== undefined, DURATION_HINT);

export const TelemetryConfigSchema = z
  .object({
    metrics: z.boolean().default(true).describe("serve Prometheus metrics at /metrics and /meshguard/v1/metrics (admins only)"),
    processMetrics: z.boolean().default(true).describe("include Node.js process metrics (CPU, memory, event loop lag) in /metrics"),
    traces: z.boolean().default(false).describe("one OpenTelemetry span per LLM request (GenAI conventions), through @opentelemetry/api: the application registers the SDK and exporter"),
  })
  .strict();

export const LOG_LEVELS = ["trace", "debug", "info", "warn", "error", "fatal", "silent"] as const;

export const LogConfigSchema = z
  .object({
    level: z.enum(LOG_LEVELS, { errorMap: () => ({ message: `must be one of ${LOG_LEVELS.join(", ")}` }) }).default("info"),
    access: z.boolean().default(false).describe("one line per finished LLM request (who, model, status, tokens, cost, latency; never bodies)"),
    destination: z
      .string()
      .min(1, 'must be "stderr", "stdout" or a file path')
      .default("stderr")
      .describe('"stderr", "stdout", or a file (relative to the config file) that lines are appended to'),
  })
  .strict();

/** A webhook alerts are sent to: a usage hook's delivery settings (headers, timeout, retries) plus the payload format. */
export const AlertWebhookSchema = UsageHookDefSchema.pick({ name: true, url: true, headers: true, timeout: true, retries: true, maxQueue: true })
  .extend({
    format: z
      .enum(["slack", "json"], { errorMap: () => ({ message: 'must be "slack" (a Slack incoming webhook: { text, blocks }) or "json" (the alert object)' }) })
      .default("json"),
  })
  .strict();

const RuleName = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, "must be 1-64 of A-Z, a-z, 0-9, '.', '_', '-' (it names the rule in alerts)");

const common = {
  name: RuleName,
  /** Webhook names; absent: every webhook. */
  webhooks: z.array(z.string().min(1)).min(1, "list at least one webhook name, or leave `webhooks` out to send to all").optional(),
  cooldown: Duration.default("1h").describe("after firing for a subject, the rule stays quiet for that subject this long"),
};

const Per = z.enum(["node", "user"], { errorMap: () => ({ message: 'must be "node" (each tailnet node) or "user" (the accountable human)' }) });

const DenialsRule = z
  .object({
    ...common,
    kind: z.literal("denials"),
    count: z.number().int().min(1, "must be at least 1").default(5),
    window: Duration.default("10m"),
    per: Per.default("node"),
  })
  .strict();

const BucketRule = z
  .object({
    ...common,
    kind: z.literal("bucket"),
    percent: z.number().gt(0, "must be more than 0").max(100, "must be at most 100 (100: only when fully spent)").default(80).describe("fires when this share of a bucket's capacity is spent; again when it is fully spent"),
    buckets: z.array(z.string().min(1)).min(1).optional().describe("bucket names (quotas); absent: every bucket"),
  })
  .strict();

const UpstreamRule = z
  .object({
    ...common,
    kind: z.literal("upstream_errors"),
    rate: z.number().gt(0, "must be more than 0").max(1, "is a fraction: at most 1").default(0.5).describe("fraction of upstream calls that failed (5xx, 429, timeouts, unreachable)"),
    window: Duration.default("5m"),
    minRequests: z.number().int().min(1).default(10).describe("no alert on fewer upstream calls than this in the window"),
    providers: z.array(z.string().min(1)).min(1).optional(),
  })
  .strict();

const SpikeRule = z
  .object({
    ...common,
    kind: z.literal("usage_spike"),
    factor: z.number().gt(1, "must be more than 1").default(5).describe("fires when a period's tokens exceed factor × the identity's usual"),
    period: Duration.default("1h"),
    warmup: z.number().int().min(1).default(24).describe("periods of history an identity needs before it can fire"),
    minTokens: z.number().nonnegative().default(10_000).describe("the usual is taken as at least this many tokens a period (a near-idle identity does not fire on its first real use)"),
    smoothing: z.number().gt(0).max(1).default(0.3).describe("weight of the newest period in the usual (an exponentially weighted moving average)"),
    per: Per.default("user"),
  })
  .strict();

export const AlertRuleSchema = z.discriminatedUnion("kind", [DenialsRule, BucketRule, UpstreamRule, SpikeRule], {
  errorMap: (issue, ctx) =>
    issue.code === "invalid_union_discriminator" ? { message: 'kind must be "denials", "bucket", "upstream_errors" or "usage_spike"' } : { message: ctx.defaultError },
});

export const AlertsConfigSchema = z
  .object({
    webhooks: z.array(AlertWebhookSchema).min(1, "alerts need at least one webhook"),
    rules: z.array(AlertRuleSchema).default([]),
  })
  .strict()
  .superRefine((a, ctx) => {
    unique(a.webhooks, ["webhooks"], ctx);
    unique(a.rules, ["rules"], ctx);
    const names = new Set(a.webhooks.map((w) => w.name));
    a.rules.forEach((r, i) =>
      r.webhooks?.forEach((w, j) => {
        if (!names.has(w)) ctx.addIssue({ code: z.ZodIssueCode.custom, path: ["rules", i, "webhooks", j], message: `no webhook is named "${w}" (alerts.webhooks has ${[...names].map((n) => `"${n}"`).join(", ")})` });
      }),
    );
  });

function unique(list: { name: string }[], path: string[], ctx: z.RefinementCtx): void {
  const seen = new Set<string>();
  list.forEach((x, i) => {
    if (seen.has(x.name)) ctx.addIssue({ code: z.ZodIssueCode.custom, path: [...path, i, "name"], message: `"${x.name}" is used twice: names must be unique` });
    seen.add(x.name);
  });
}

export type TelemetryConfig = z.output<typeof TelemetryConfigSchema>;
export type LogConfig = z.output<typeof LogConfigSchema>;
export type AlertsConfig = z.output<typeof AlertsConfigSchema>;
export type AlertsConfigInput = z.input<typeof AlertsConfigSchema>;
export type AlertRule = z.output<typeof AlertRuleSchema>;
export type AlertWebhook = z.output<typeof AlertWebhookSchema>;
