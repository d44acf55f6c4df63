/**
 * The gateway's Prometheus metrics, in a registry of its own (never
 * prom-client's global one: two gateways in one process, or an application
 * with metrics of its own, do not mix). Everything is updated once per
 * finished request from its log record, so the request path pays a few
 * counter increments and three histogram observations, nothing more.
 *
 * Labels are bounded: provider names and operations come from the config
 * and the code; model names are capped (./labels.ts); no label holds a user
 * or a node (per-identity figures are what the logs API and the console are
 * for — a label per user would make every scrape as large as the user list).
 */

import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { HookFailedError } from "../hooks.js";
import type { LogRecord } from "../types.js";
import { LabelCap } from "./labels.js";

const PREFIX = "meshguard_gateway_";

/** Distinct model names kept as label values before the rest count as "other". */
const MAX_MODELS = 200;

/** Seconds. The gateway adds well under a millisecond; the low buckets show it. */
const OVERHEAD_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1];
const DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];
const TTFT_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/** Outcomes whose request reached the upstream: the added latency is measured for them. */
const WENT_UPSTREAM = new Set<LogRecord["outcome"]>(["ok", "upstream_error"]);

export interface MetricsOptions {
  /** Node.js process metrics (CPU, memory, event loop lag) beside the gateway's. */
  processMetrics: boolean;
  /** Requests in flight now (read at scrape time). */
  inflight: () => number;
}

export class GatewayMetrics {
  readonly registry = new Registry();
  private readonly models = new LabelCap(MAX_MODELS);
  private readonly requests: Counter<"provider" | "model" | "operation" | "outcome">;
  private readonly tokens: Counter<"provider" | "model" | "type">;
  private readonly cost: Counter<"provider" | "model">;
  private readonly duration: Histogram<"provider" | "operation">;
  private readonly overhead: Histogram<"provider" | "operation">;
  private readonly ttft: Histogram<"provider" | "operation">;
  private readonly quota: Counter<"provider" | "status">;
  private readonly upstreamErrors: Counter<"provider" | "status">;
  private readonly denials: Counter<"provider" | "rule">;
  private readonly hookFailures: Counter<"hook" | "phase" | "failure">;
  private readonly alerts: Counter<"rule">;
  private readonly pruned: Counter;

  constructor(opts: MetricsOptions) {
    const registers = [this.registry];
    this.requests = new Counter({ name: `${PREFIX}requests_total`, help: "LLM requests finished, by how they ended", labelNames: ["provider", "model", "operation", "outcome"], registers });
    this.tokens = new Counter({ name: `${PREFIX}tokens_total`, help: "Tokens of finished requests (type: input, output, cache_read, cache_write)", labelNames: ["provider", "model", "type"], registers });
    this.cost = new Counter({ name: `${PREFIX}cost_usd_total`, help: "Cost of finished requests in US dollars (price table)", labelNames: ["provider", "model"], registers });
    this.duration = new Histogram({ name: `${PREFIX}request_duration_seconds`, help: "Request received to last byte sent", labelNames: ["provider", "operation"], buckets: DURATION_BUCKETS, registers });
    this.overhead = new Histogram({ name: `${PREFIX}added_latency_seconds`, help: "Time the gateway added: request received to upstream request sent", labelNames: ["provider", "operation"], buckets: OVERHEAD_BUCKETS, registers });
    this.ttft = new Histogram({ name: `${PREFIX}time_to_first_token_seconds`, help: "Streams: request received to first body byte sent", labelNames: ["provider", "operation"], buckets: TTFT_BUCKETS, registers });
    this.quota = new Counter({ name: `${PREFIX}quota_rejections_total`, help: "Requests refused by a quota bucket (429: wait; 403: waiting cannot help)", labelNames: ["provider", "status"], registers });
    this.upstreamErrors = new Counter({ name: `${PREFIX}upstream_errors_total`, help: "Upstream failures: the provider's 4xx/5xx status, 502 unreachable, 504 timed out", labelNames: ["provider", "status"], registers });
    this.denials = new Counter({ name: `${PREFIX}policy_denials_total`, help: "Requests the policy denied, by deciding rule (\"\": the default deny)", labelNames: ["provider", "rule"], registers });
    this.hookFailures = new Counter({ name: `${PREFIX}hook_failures_total`, help: "Webhook calls that failed (hooks, usage events, alerts)", labelNames: ["hook", "phase", "failure"], registers });
    this.alerts = new Counter({ name: `${PREFIX}alerts_fired_total`, help: "Alerts fired, by rule", labelNames: ["rule"], registers });
    this.pruned = new Counter({ name: `${PREFIX}log_records_pruned_total`, help: "Log records deleted by the retention job", registers });
    const inflight = opts.inflight;
    new Gauge({
      name: `${PREFIX}requests_in_flight`,
      help: "Requests being handled now",
      registers,
      collect() {
        this.set(inflight());
      },
    });
    if (opts.processMetrics) collectDefaultMetrics({ register: this.registry });
  }

  /** record counts one finished request. */
  record(rec: LogRecord): void {
    const provider = rec.provider || "none";
    const model = this.models.of(rec.model || "none");
    const op = rec.operation;
    this.requests.labels(provider, model, op, rec.outcome).inc();
    const u = rec.usage;
    if (u !== undefined) {
      if (u.inputTokens > 0) this.tokens.labels(provider, model, "input").inc(u.inputTokens);
      if (u.outputTokens > 0) this.tokens.labels(provider, model, "output").inc(u.outputTokens);
      if (u.cacheReadTokens) this.tokens.labels(provider, model, "cache_read").inc(u.cacheReadTokens);
      if (u.cacheWriteTokens) this.tokens.labels(provider, model, "cache_write").inc(u.cacheWriteTokens);
    }
    if (rec.costUsd !== undefined && rec.costUsd > 0) this.cost.labels(provider, model).inc(rec.costUsd);
    this.duration.labels(provider, op).observe(rec.durationMs / 1000);
    if (WENT_UPSTREAM.has(rec.outcome)) this.overhead.labels(provider, op).observe(rec.overheadMs / 1000);
    if (rec.ttftMs !== undefined) this.ttft.labels(provider, op).observe(rec.ttftMs / 1000);
    switch (rec.outcome) {
      case "quota":
        this.quota.labels(provider, String(rec.status)).inc();
        break;
      case "upstream_error":
      case "upstream_unreachable":
        this.upstreamErrors.labels(provider, String(rec.status)).inc();
        break;
      case "denied":
        this.denials.labels(provider, rec.ruleId ?? "").inc();
        break;
      default:
        break;
    }
  }

  hookFailed(err: HookFailedError): void {
    this.hookFailures.labels(err.hook, err.phase, err.failure).inc();
  }

  alertFired(rule: string): void {
    this.alerts.labels(rule).inc();
  }

  prunedRecords(n: number): void {
    if (n > 0) this.pruned.inc(n);
  }

  /** The exposition text (Prometheus text format 0.0.4). */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
