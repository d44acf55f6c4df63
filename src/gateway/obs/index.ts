/**
 * The gateway's observability, wired from its config: Prometheus metrics,
 * GenAI spans, the JSON log, alerts, and the admin routes that serve
 * metrics and exports. The request path reaches all of it through one call,
 * `observe(record)`, made once per finished request (../record.ts); the
 * other parts report through the callbacks here (hook failures, bucket
 * levels, retention runs).
 */

import type { DestinationStream } from "pino";
import { ErrorCode, MeshguardError } from "../../errors.js";
import type { TracerProvider } from "@opentelemetry/api";
import type { GatewayConfig } from "../config.js";
import type { FetchFn, HookFailedError } from "../hooks/call.js";
import type { KeyScrubber } from "../scrub.js";
import type { AdminRoute, CallFacts, GatewayStore, LogRecord } from "../types.js";
import { createAlertEngine, type Alert, type AlertEngine, type BucketLevel } from "./alerts/engine.js";
import { exportRoutes } from "./export.js";
import { createGatewayLog, type GatewayLog } from "./log.js";
import { GatewayMetrics } from "./metrics.js";
import { GenAiSpans } from "./spans.js";

/** What a library caller (or a test) may give the gateway's observability besides its config. */
export interface TelemetryOptions {
  /** Spans go to this provider (default: the globally registered one). Spans are made only with `telemetry.traces` on. */
  tracerProvider?: TracerProvider;
  /** JSON log lines go here (default: the config's `log.destination`; neither: no JSON log). */
  log?: DestinationStream;
  /** The alert engine's clock (epoch ms). */
  now?: () => number;
  /** The fetch alert webhooks are called with (default the global fetch). */
  fetch?: FetchFn;
}

export interface Observability {
  readonly log: GatewayLog;
  readonly metrics: GatewayMetrics | undefined;
  readonly alerts: AlertEngine | undefined;
  /** One finished request: metrics, span, alerts, access line. Never throws. */
  observe(rec: LogRecord, facts: CallFacts | undefined): void;
  hookFailed(err: HookFailedError): void;
  bucketLevels(levels: readonly BucketLevel[]): void;
  pruned(deleted: number, before: number): void;
  /** GET /metrics and the exports, over the store (undefined: no logs kept). */
  routes(store: GatewayStore | undefined): AdminRoute[];
  close(): Promise<void>;
}

export function createObservability(
  cfg: GatewayConfig,
  scrub: KeyScrubber,
  opts: TelemetryOptions,
  deps: { inflight: () => number; gateway: string; warn: (err: unknown) => void },
): Observability {
  checkAlertRefs(cfg);
  const telemetry = cfg.telemetry ?? { metrics: true, processMetrics: true, traces: false };
  const log = createGatewayLog(cfg.log, scrub, opts.log);
  const metrics = telemetry.metrics ? new GatewayMetrics({ processMetrics: telemetry.processMetrics, inflight: deps.inflight }) : undefined;
  const spans = telemetry.traces ? new GenAiSpans(opts.tracerProvider, cfg.providers) : undefined;
  const alerts =
    cfg.alerts === undefined
      ? undefined
      : createAlertEngine(cfg.alerts, {
          gateway: deps.gateway,
          ...(opts.now ? { now: opts.now } : {}),
          ...(opts.fetch ? { fetch: opts.fetch } : {}),
          onError: (err) => {
            metrics?.hookFailed(err);
            deps.warn(err);
          },
          onAlert: (a: Alert) => {
            metrics?.alertFired(a.rule);
            log.logger.warn({ alert: a }, `alert ${a.rule}: ${a.summary}`);
          },
        });

  return {
    log,
    metrics,
    alerts,
    observe(rec, facts) {
      try {
        metrics?.record(rec);
        spans?.record(rec, facts);
        alerts?.call(rec);
        if (log.access) log.request(rec);
      } catch (err) {
        deps.warn(err);
      }
    },
    hookFailed(err) {
      metrics?.hookFailed(err);
    },
    bucketLevels(levels) {
      alerts?.bucketLevels(levels);
    },
    pruned(deleted, before) {
      metrics?.prunedRecords(deleted);
      // A run that found nothing is routine: debug, so an hourly job does not fill the log.
      const at = new Date(before).toISOString();
      log.logger[deleted > 0 ? "info" : "debug"]({ deleted, before: at }, `retention: deleted ${deleted} log record(s) older than ${at}`);
    },
    routes(store) {
      return [metricsRoute(metrics), ...exportRoutes(store)];
    },
    async close() {
      await alerts?.close();
      await log.close();
    },
  };
}

/** checkAlertRefs: the buckets and providers alert rules name must be configured (a typo would silence a rule for good). */
function checkAlertRefs(cfg: GatewayConfig): void {
  const problems: string[] = [];
  cfg.alerts?.rules.forEach((r, i) => {
    if (r.kind === "bucket") {
      for (const b of r.buckets ?? []) if (!Object.hasOwn(cfg.quotas ?? {}, b)) problems.push(`alerts.rules[${i}].buckets: "${b}" is not a bucket under "quotas"`);
    } else if (r.kind === "upstream_errors") {
      for (const p of r.providers ?? []) if (!Object.hasOwn(cfg.providers, p)) problems.push(`alerts.rules[${i}].providers: "${p}" is not a configured provider`);
    }
  });
  if (problems.length > 0) throw new MeshguardError(ErrorCode.GATEWAY_CONFIG_INVALID, `invalid gateway configuration:\n  ${problems.join("\n  ")}`, { hint: "docs/gateway.md#alerts" });
}

/** GET /metrics (also served at the gateway's /metrics): admins only, like everything that shows every caller's traffic. */
function metricsRoute(metrics: GatewayMetrics | undefined): AdminRoute {
  return {
    method: "GET",
    pattern: "/metrics",
    async handle(req) {
      if (req.caller.role !== "admin") return { status: 403, body: { error: { message: "metrics need the gateway's admin role" } } };
      if (metrics === undefined) return { status: 404, body: { error: { message: 'metrics are off ("telemetry": { "metrics": false })' } } };
      const text = await metrics.text();
      return { status: 200, contentType: metrics.contentType, stream: once(text) };
    },
  };
}

async function* once(text: string): AsyncGenerator<string> {
  yield text;
}

export { alertAuditSink, createAlertEngine, type Alert, type AlertEngine, type AlertEngineOptions, type BucketLevel, type Denial } from "./alerts/engine.js";
