/**
 * The alert rules' state machines, one class per kind. Each is fed events
 * with their time (the engine's clock) and answers the alerts it would
 * fire; de-duplication and cool-down are the engine's, not theirs. All
 * updates are O(1) per event (the upstream window sums a fixed number of
 * slots), and state is per subject, bounded by the tailnet's identities, the
 * configured providers and buckets.
 */

import { parseDuration } from "../../store/duration.js";
import type { AlertRule } from "../config.js";
import type { Alert, BucketLevel, Denial } from "./types.js";

type RuleOf<K extends AlertRule["kind"]> = Extract<AlertRule, { kind: K }>;
/** An alert before the engine stamps it; `dedup` (default: the subject) is what the cool-down is kept per. */
export type Draft = Omit<Alert, "rule" | "kind" | "time"> & { dedup?: string };

const ms = (d: string): number => parseDuration(d)!;

/** identityOf names who a denial or a request is about, per the rule's `per`. */
export function identityOf(per: "node" | "user", who: { node?: string | undefined; user?: string | undefined; tags?: string[] }): string {
  if (per === "user" && who.user) return `user:${who.user}`;
  if (who.node) return `node:${who.node}`;
  if (who.user) return `user:${who.user}`;
  return who.tags?.length ? who.tags.join(",") : "unknown";
}

/** DenialsRule: `count` denials of one identity within `window`. After firing the count starts again. */
export class DenialsRule {
  private readonly windowMs: number;
  private readonly recent = new Map<string, number[]>();
  private sweepAt = 0;
  readonly rule: RuleOf<"denials">;

  constructor(rule: RuleOf<"denials">) {
    this.rule = rule;
    this.windowMs = ms(rule.window);
  }

  denial(d: Denial, now: number): Draft | undefined {
    this.sweep(now);
    const who = identityOf(this.rule.per, d);
    let times = this.recent.get(who);
    if (times === undefined) this.recent.set(who, (times = []));
    times.push(now);
    // Only the newest `count` matter: the oldest of them decides whether they fit the window.
    if (times.length > this.rule.count) times.shift();
    if (times.length < this.rule.count || now - times[0]! > this.windowMs) return undefined;
    this.recent.delete(who);
    const owners = d.user ? ` (${d.user})` : "";
    return {
      subject: who,
      severity: "warning",
      summary: `${who}${owners} was denied ${this.rule.count} time(s) within ${this.rule.window}; last: ${d.request} — ${d.reason}`,
      details: { count: this.rule.count, window: this.rule.window, node: d.node ?? null, user: d.user ?? null, tags: d.tags, layer: d.layer, lastRequest: d.request, lastReason: d.reason, lastRule: d.ruleId ?? null },
    };
  }

  /** Forgets identities with nothing left in the window (at most once a window). */
  private sweep(now: number): void {
    if (now < this.sweepAt) return;
    this.sweepAt = now + this.windowMs;
    for (const [who, times] of this.recent) if (now - times[times.length - 1]! > this.windowMs) this.recent.delete(who);
  }
}

/** BucketRule: a bucket instance `percent` spent ("nearly"), and fully spent or refusing requests ("spent"). */
export class BucketRule {
  private readonly names: Set<string> | undefined;
  readonly rule: RuleOf<"bucket">;

  constructor(rule: RuleOf<"bucket">) {
    this.rule = rule;
    this.names = rule.buckets ? new Set(rule.buckets) : undefined;
  }

  level(b: BucketLevel): Draft | undefined {
    if (this.names !== undefined && !this.names.has(b.bucket)) return undefined;
    if (!(b.capacity > 0)) return undefined;
    const spentPct = Math.min(100, ((b.capacity - b.level) / b.capacity) * 100);
    const show = (n: number) => (b.unit === "usd" ? `$${n.toFixed(2)}` : `${Math.round(n)} ${b.unit}`);
    const details = { bucket: b.bucket, unit: b.unit, capacity: b.capacity, level: b.level, spentPercent: Math.round(spentPct * 10) / 10, refused: b.refused === true };
    // A tiny remainder is spent: float noise must not keep a bucket "nearly" spent forever.
    if (b.level <= b.capacity * 1e-9 || b.refused === true) {
      return {
        subject: b.key,
        dedup: `${b.key}#spent`,
        severity: "critical",
        summary: `quota bucket ${b.key} is spent${b.refused ? ": a request was refused" : ""} (${show(Math.max(0, b.level))} of ${show(b.capacity)} left)`,
        details,
      };
    }
    if (spentPct + 1e-9 >= this.rule.percent) {
      return {
        subject: b.key,
        dedup: `${b.key}#nearly`,
        severity: "warning",
        summary: `quota bucket ${b.key} is ${details.spentPercent}% spent (${show(b.level)} of ${show(b.capacity)} left; the rule fires at ${this.rule.percent}%)`,
        details,
      };
    }
    return undefined;
  }
}

/** How many slots a window is cut into: the window slides in steps of window/SLOTS. */
const SLOTS = 30;

/** UpstreamRule: the share of failed upstream calls per provider over a sliding window. */
export class UpstreamRule {
  private readonly slotMs: number;
  private readonly byProvider = new Map<string, { id: Float64Array; calls: Uint32Array; errors: Uint32Array }>();
  private readonly providers: Set<string> | undefined;
  readonly rule: RuleOf<"upstream_errors">;

  constructor(rule: RuleOf<"upstream_errors">) {
    this.rule = rule;
    this.slotMs = Math.max(1, ms(rule.window) / SLOTS);
    this.providers = rule.providers ? new Set(rule.providers) : undefined;
  }

  call(provider: string, failed: boolean, detail: string, now: number): Draft | undefined {
    if (this.providers !== undefined && !this.providers.has(provider)) return undefined;
    let w = this.byProvider.get(provider);
    if (w === undefined) this.byProvider.set(provider, (w = { id: new Float64Array(SLOTS).fill(-1), calls: new Uint32Array(SLOTS), errors: new Uint32Array(SLOTS) }));
    const slot = Math.floor(now / this.slotMs);
    const i = slot % SLOTS;
    if (w.id[i] !== slot) {
      w.id[i] = slot;
      w.calls[i] = 0;
      w.errors[i] = 0;
    }
    w.calls[i]!++;
    if (failed) w.errors[i]!++;
    if (!failed) return undefined;
    let calls = 0;
    let errors = 0;
    for (let j = 0; j < SLOTS; j++) {
      if (w.id[j]! > slot - SLOTS) {
        calls += w.calls[j]!;
        errors += w.errors[j]!;
      }
    }
    if (calls < this.rule.minRequests || errors / calls + 1e-12 < this.rule.rate) return undefined;
    const pct = Math.round((errors / calls) * 1000) / 10;
    return {
      subject: provider,
      severity: "warning",
      summary: `provider ${provider}: ${errors} of ${calls} upstream calls failed in the last ${this.rule.window} (${pct}%; the rule fires at ${this.rule.rate * 100}%); last: ${detail}`,
      details: { provider, calls, errors, errorRate: errors / calls, window: this.rule.window, threshold: this.rule.rate, lastError: detail },
    };
  }
}

/** Periods of silence folded into the average at most, after a long pause (the average is ~0 by then anyway). */
const MAX_GAP_PERIODS = 1000;

/**
 * SpikeRule: an identity's tokens in the current period against its usual,
 * an exponentially weighted moving average of its past periods (silent
 * periods count as 0). It may fire once `warmup` periods of history exist,
 * when the current period passes factor × max(usual, minTokens). The usual
 * lives in memory: a restarted gateway warms up again.
 */
export class SpikeRule {
  private readonly periodMs: number;
  private readonly state = new Map<string, { period: number; current: number; usual: number; periods: number }>();
  readonly rule: RuleOf<"usage_spike">;

  constructor(rule: RuleOf<"usage_spike">) {
    this.rule = rule;
    this.periodMs = ms(rule.period);
  }

  tokens(who: { node?: string; user?: string }, n: number, now: number): Draft | undefined {
    const id = identityOf(this.rule.per, who);
    const p = Math.floor(now / this.periodMs);
    let s = this.state.get(id);
    if (s === undefined) this.state.set(id, (s = { period: p, current: 0, usual: 0, periods: 0 }));
    if (p > s.period) {
      const a = this.rule.smoothing;
      s.usual = s.periods === 0 ? s.current : a * s.current + (1 - a) * s.usual;
      s.periods++;
      const gap = Math.min(p - s.period - 1, MAX_GAP_PERIODS);
      for (let k = 0; k < gap; k++) s.usual *= 1 - a;
      s.periods += gap;
      s.period = p;
      s.current = 0;
    }
    s.current += n;
    if (s.periods < this.rule.warmup) return undefined;
    const base = Math.max(s.usual, this.rule.minTokens);
    if (s.current <= this.rule.factor * base) return undefined;
    return {
      subject: id,
      severity: "warning",
      summary: `${id} used ${Math.round(s.current)} tokens this ${this.rule.period}, ${(s.current / Math.max(s.usual, 1)).toFixed(1)}× its usual ${Math.round(s.usual)} (the rule fires above ${this.rule.factor}×)`,
      details: { tokens: s.current, usual: s.usual, factor: this.rule.factor, period: this.rule.period, periodsOfHistory: s.periods, minTokens: this.rule.minTokens },
    };
  }
}
