/**
 * The gateway's Prometheus metrics, in a registry of its own (never
 * prom-client's global one: two gateways in one process, or an application
 * with metrics of its own, do not mix). Everything is updated once per
 * finished request from its log record: the per-request series are plain
 * additions on children looked up once per label set (./series.ts), about a
 * microsecond a request; the rarer events use prom-client's own counters.
 *
 * Labels are bounded: provider names and operations come from the config
 * and the code; model names are capped (./labels.ts); no label holds a user
 * or a node (per-identity figures are what the logs API and the console are
 * for — a label per user would make every scrape as large as the user list).
 */

import { Counter, Gauge, Registry, collectDefaultMetrics, type Metric } from "prom-client";
import type { HookFailedError } from "../hooks.js";
import type { LogRecord } from "../types.js";
import { LabelCap } from "./labels.js";
import { FastCounter, FastHistogram, type CounterChild, type HistogramChild } from "./series.js";

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

/** The children of one (provider, model, operation, outcome): looked up once, then only added to. */
interface CallSeries {
  requests: CounterChild;
  input: CounterChild;
  output: CounterChild;
  cacheRead: CounterChild;
  cacheWrite: CounterChild;
  cost: CounterChild;
}

interface TimeSeries {
  duration: HistogramChild;
  overhead: HistogramChild;
  ttft: HistogramChild;
}

export class GatewayMetrics {
  readonly registry = new Registry();
  private readonly models = new LabelCap(MAX_MODELS);
  /** Children per label set, keyed by the labels joined (bounded like the labels themselves). */
  private readonly calls = new Map<string, CallSeries>();
  private readonly times = new Map<string, TimeSeries>();
  private readonly requests = new FastCounter(`${PREFIX}requests_total`, "LLM requests finished, by how they ended");
  private readonly tokens = new FastCounter(`${PREFIX}tokens_total`, "Tokens of finished requests (type: input, output, cache_read, cache_write)");
  private readonly cost = new FastCounter(`${PREFIX}cost_usd_total`, "Cost of finished requests in US dollars (price table)");
  private readonly duration = new FastHistogram(`${PREFIX}request_duration_seconds`, "Request received to last byte sent", DURATION_BUCKETS);
  private readonly overhead = new FastHistogram(`${PREFIX}added_latency_seconds`, "Time the gateway added: request received to upstream request sent", OVERHEAD_BUCKETS);
  private readonly ttft = new FastHistogram(`${PREFIX}time_to_first_token_seconds`, "Streams: request received to first body byte sent", TTFT_BUCKETS);
  private readonly quota: Counter<"provider" | "status">;
  private readonly upstreamErrors: Counter<"provider" | "status">;
  private readonly denials: Counter<"provider" | "rule">;
  private readonly hookFailures: Counter<"hook" | "phase" | "failure">;
  private readonly alerts: Counter<"rule">;
  private readonly pruned: Counter;

  constructor(opts: MetricsOptions) {
    const registers = [this.registry];
    for (const m of [this.requests, this.tokens, this.cost, this.duration, this.overhead, this.ttft]) this.registry.registerMetric(m as unknown as Metric);
    // The rarer events: prom-client's own counters.
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
    const c = this.callSeries(provider, model, op, rec.outcome);
    c.requests.value++;
    const u = rec.usage;
    if (u !== undefined) {
      c.input.value += u.inputTokens;
      c.output.value += u.outputTokens;
      if (u.cacheReadTokens) c.cacheRead.value += u.cacheReadTokens;
      if (u.cacheWriteTokens) c.cacheWrite.value += u.cacheWriteTokens;
    }
    if (rec.costUsd !== undefined) c.cost.value += rec.costUsd;
    const t = this.timeSeries(provider, op);
    t.duration.observe(rec.durationMs / 1000);
    if (WENT_UPSTREAM.has(rec.outcome)) t.overhead.observe(rec.overheadMs / 1000);
    if (rec.ttftMs !== undefined) t.ttft.observe(rec.ttftMs / 1000);
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

  private callSeries(provider: string, model: string, operation: string, outcome: string): CallSeries {
    const key = `${provider}\u0000${model}\u0000${operation}\u0000${outcome}`;
    let c = this.calls.get(key);
    if (c === undefined) {
      const tok = (type: string) => this.tokens.child({ provider, model, type });
      c = {
        requests: this.requests.child({ provider, model, operation, outcome }),
        input: tok("input"),
        output: tok("output"),
        cacheRead: tok("cache_read"),
        cacheWrite: tok("cache_write"),
        cost: this.cost.child({ provider, model }),
      };
      this.calls.set(key, c);
    }
    return c;
  }

  private timeSeries(provider: string, operation: string): TimeSeries {
    const key = `${provider}\u0000${operation}`;
    let t = this.times.get(key);
    if (t === undefined) {
      const l = { provider, operation };
      t = { duration: this.duration.child(l), overhead: this.overhead.child(l), ttft: this.ttft.child(l) };
      this.times.set(key, t);
    }
    return t;
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
