/**
 * The alert engine: the config's rules fed with finished requests, policy
 * decisions (the gateway's own, and a guard's decision events piped in by
 * an application) and bucket levels; an alert fires at most once per
 * (rule, subject) per cool-down, and is delivered to the rule's webhooks in
 * the background with retries (the usage hooks' queue, ../../hooks/usage.ts).
 *
 * Feeding the engine never throws and never waits: it is called on the
 * request path, after the answer has gone.
 */

import { ErrorCode, MeshguardError } from "../../../errors.js";
import type { AuditSink } from "../../../policy/audit.js";
import type { DecisionEvent } from "../../../policy/event.js";
import type { FetchFn, HookFailedError } from "../../hooks/call.js";
import { UsageSink } from "../../hooks/usage.js";
import { parseDuration } from "../../store/duration.js";
import type { LogRecord } from "../../types.js";
import { AlertsConfigSchema, type AlertRule, type AlertsConfig, type AlertsConfigInput } from "../config.js";
import { jsonPayload, slackPayload } from "./payload.js";
import { BucketRule, DenialsRule, identityOf, SpikeRule, UpstreamRule, type Draft } from "./rules.js";
import type { Alert, BucketLevel, Denial } from "./types.js";

export type { Alert, BucketLevel, Denial } from "./types.js";

export interface AlertEngineOptions {
  /** Clock in epoch milliseconds (tests); default Date.now. */
  now?: () => number;
  /** The fetch webhooks are called with; default the global fetch at call time (so a guard applies). */
  fetch?: FetchFn;
  /** A webhook delivery that failed for good (after its retries), or an alert dropped from a full queue. */
  onError?: (err: HookFailedError) => void;
  /** Every alert fired (the gateway logs and counts them). */
  onAlert?: (alert: Alert) => void;
  /** The name alerts give as their source (the gateway's node name). */
  gateway?: string;
}

export interface AlertEngine {
  /** A finished gateway request (its log record). */
  call(rec: LogRecord): void;
  /** A policy decision event (a guard's audit event); only denials count. */
  decision(ev: DecisionEvent): void;
  /** A denial from elsewhere, already in the engine's terms. */
  denial(d: Denial): void;
  /** Bucket levels after a quota transaction. */
  bucketLevels(levels: readonly BucketLevel[]): void;
  /** The alerts fired since start, newest last (at most 100 kept). */
  readonly fired: readonly Alert[];
  /** Delivers what is queued, up to `ms` (default 5 s). Idempotent. */
  close(ms?: number): Promise<void>;
}

/** Upstream answers that count as the provider failing; other 4xx are the client's own mistakes. */
function upstreamFailed(rec: LogRecord): boolean {
  if (rec.outcome === "upstream_unreachable") return true;
  if (rec.outcome !== "upstream_error") return false;
  return rec.status >= 500 || rec.status === 429 || rec.status === 401 || rec.status === 403;
}

/** Outcomes of requests that reached (or tried to reach) the upstream. */
const UPSTREAM_OUTCOMES = new Set<LogRecord["outcome"]>(["ok", "upstream_error", "upstream_unreachable"]);

const KEEP_FIRED = 100;

interface Compiled {
  rule: AlertRule;
  cooldownMs: number;
  targets: Array<{ sink: UsageSink; format: "slack" | "json" }>;
}

/**
 * createAlertEngine validates `cfg` (MESHGUARD_INVALID_OPTIONS listing each
 * issue by path; an `env:NAME` header whose variable is not set) and
 * returns the engine.
 */
export function createAlertEngine(cfg: AlertsConfigInput | AlertsConfig, opts: AlertEngineOptions = {}): AlertEngine {
  const r = AlertsConfigSchema.safeParse(cfg);
  if (!r.success) {
    const lines = r.error.issues.map((i) => `alerts.${i.path.join(".")}: ${i.message}`);
    throw new MeshguardError(ErrorCode.INVALID_OPTIONS, `invalid alerts config:\n  ${lines.join("\n  ")}`, { hint: "docs/gateway.md#alerts describes the section" });
  }
  const c = r.data;
  const now = opts.now ?? Date.now;
  const gateway = opts.gateway ?? "ai-gateway";
  const fetchFn: FetchFn = opts.fetch ?? ((input, init) => globalThis.fetch(input, init));
  const onError = opts.onError ?? ((err: HookFailedError) => process.emitWarning(err));

  const sinks = new Map(
    c.webhooks.map((w, i) => [
      w.name,
      {
        format: w.format,
        sink: new UsageSink(i, { ...w, batch: 1 }, fetchFn, onError, {
          phase: "alert",
          where: `alerts.webhooks[${i}]`,
          label: "alert webhook",
          wrap: (events) => events[0]!,
          answer: false,
        }),
      },
    ]),
  );
  const compiled: Compiled[] = c.rules.map((rule) => ({
    rule,
    cooldownMs: parseDuration(rule.cooldown)!,
    targets: (rule.webhooks ?? [...sinks.keys()]).map((n) => sinks.get(n)!),
  }));
  const denials = compiled.filter((x) => x.rule.kind === "denials").map((x) => ({ x, r: new DenialsRule(x.rule as Extract<AlertRule, { kind: "denials" }>) }));
  const buckets = compiled.filter((x) => x.rule.kind === "bucket").map((x) => ({ x, r: new BucketRule(x.rule as Extract<AlertRule, { kind: "bucket" }>) }));
  const upstream = compiled.filter((x) => x.rule.kind === "upstream_errors").map((x) => ({ x, r: new UpstreamRule(x.rule as Extract<AlertRule, { kind: "upstream_errors" }>) }));
  const spikes = compiled.filter((x) => x.rule.kind === "usage_spike").map((x) => ({ x, r: new SpikeRule(x.rule as Extract<AlertRule, { kind: "usage_spike" }>) }));

  /** When each (rule, subject) last fired. */
  const last = new Map<string, number>();
  const fired: Alert[] = [];
  let sweepAt = 0;
  let closing: Promise<void> | undefined;

  function fire(x: Compiled, d: Draft | undefined, t: number): void {
    if (d === undefined || closing) return;
    const key = `${x.rule.name}\u0000${d.dedup ?? d.subject}`;
    const prev = last.get(key);
    if (prev !== undefined && t - prev < x.cooldownMs) return;
    last.set(key, t);
    if (t >= sweepAt) {
      // Entries past every cool-down can go: memory stays bounded by the subjects of one cool-down.
      sweepAt = t + 60_000;
      const longest = Math.max(...compiled.map((y) => y.cooldownMs));
      for (const [k, at] of last) if (t - at >= longest) last.delete(k);
    }
    const { dedup: _d, ...rest } = d;
    const alert: Alert = { rule: x.rule.name, kind: x.rule.kind, time: t, ...rest };
    fired.push(alert);
    if (fired.length > KEEP_FIRED) fired.shift();
    for (const target of x.targets) target.sink.push(target.format === "slack" ? slackPayload(alert, gateway) : jsonPayload(alert, gateway));
    try {
      opts.onAlert?.(alert);
    } catch {
      // A throwing listener must not stop the engine.
    }
  }

  function denial(d: Denial): void {
    if (denials.length === 0) return;
    const t = now();
    for (const { x, r } of denials) fire(x, r.denial(d, t), t);
  }

  return {
    fired,
    call(rec) {
      try {
        const t = now();
        if (rec.outcome === "denied") {
          denial({
            time: t,
            node: rec.caller.node,
            user: rec.caller.user || undefined,
            tags: rec.caller.tags,
            layer: "gateway",
            request: `llm ${rec.provider}/${rec.model}`,
            reason: rec.reason ?? "denied by policy",
            ruleId: rec.ruleId,
          });
        }
        if (upstream.length > 0 && rec.provider !== "" && UPSTREAM_OUTCOMES.has(rec.outcome)) {
          const failed = upstreamFailed(rec);
          const detail = failed ? `${rec.status} ${rec.reason ?? ""}`.trim() : "";
          for (const { x, r } of upstream) fire(x, r.call(rec.provider, failed, detail, t), t);
        }
        const u = rec.usage;
        if (spikes.length > 0 && u !== undefined) {
          const n = u.inputTokens + u.outputTokens + (u.cacheReadTokens ?? 0) + (u.cacheWriteTokens ?? 0);
          const who = { node: rec.caller.node, user: rec.caller.user };
          if (n > 0) for (const { x, r } of spikes) fire(x, r.tokens(who, n, t), t);
        }
      } catch (err) {
        report(err);
      }
    },
    decision(ev) {
      if (ev.outcome !== "deny") return;
      try {
        const p = ev.principal;
        denial({ time: Date.parse(ev.time), node: p.node, user: p.user, tags: p.tags, layer: ev.layer, request: ev.request, reason: ev.reason, ruleId: ev.ruleId });
      } catch (err) {
        report(err);
      }
    },
    denial(d) {
      try {
        denial(d);
      } catch (err) {
        report(err);
      }
    },
    bucketLevels(levels) {
      if (buckets.length === 0) return;
      try {
        const t = now();
        for (const b of levels) for (const { x, r } of buckets) fire(x, r.level(b), t);
      } catch (err) {
        report(err);
      }
    },
    close(ms = 5_000) {
      closing ??= Promise.all([...sinks.values()].map((s) => s.sink.close(ms))).then(() => {});
      return closing;
    },
  };

  function report(err: unknown): void {
    process.emitWarning(err instanceof Error ? err : new Error(String(err)));
  }
}

/**
 * alertAuditSink makes an alert engine a guard audit sink: pass it as the
 * guard's `audit` option (or as `next`'s companion), and every denial the
 * guard makes counts towards the engine's `denials` rules, by the calling
 * identity. `next`, when given, receives every event too (the audit file an
 * application already writes).
 */
export function alertAuditSink(engine: Pick<AlertEngine, "decision">, next?: AuditSink): AuditSink {
  const sink: AuditSink = {
    write(ev) {
      engine.decision(ev);
      next?.write(ev);
    },
  };
  if (next?.flush) sink.flush = () => next.flush!();
  if (next?.close) sink.close = () => next.close!();
  return sink;
}

export { identityOf };
