/**
 * Calls-per-minute limits, one token bucket per (rule, agent). A bucket holds
 * at most `perMinute` tokens and refills continuously at perMinute/60 000 per
 * millisecond, so a full minute's allowance may be spent at once but never
 * more than perMinute + (elapsed minutes × perMinute) in total. Time comes
 * from the policy's clock, so tests are deterministic.
 */

import type { Principal } from "./types.js";

interface Bucket {
  tokens: number;
  lastMs: number;
}

/** MAX_BUCKETS bounds memory when agents come and go; full buckets are the ones dropped. */
const MAX_BUCKETS = 100_000;

/** principalKey names "the agent" for a per-agent limit: node name, else user, else the tag set. */
export function principalKey(p: Principal): string {
  if (p.node) return `n:${p.node.toLowerCase()}`;
  if (p.user) return `u:${p.user.toLowerCase()}`;
  return `t:${[...p.tags].sort().join(",")}`;
}

export class RateLimiter {
  private readonly buckets = new Map<string, Bucket>();

  /**
   * take spends one token of the bucket (rule, agent) if it has one and tells
   * whether it did; with `peek` it only tells (explain must not spend).
   */
  take(ruleIndex: number, agent: string, perMinute: number, nowMs: number, peek = false): boolean {
    const key = `${ruleIndex}|${agent}`;
    let b = this.buckets.get(key);
    if (!b) {
      if (peek) return perMinute >= 1;
      if (this.buckets.size >= MAX_BUCKETS) this.evictIdle(nowMs);
      b = { tokens: perMinute, lastMs: nowMs };
      this.buckets.set(key, b);
    }
    const elapsed = Math.max(0, nowMs - b.lastMs);
    const tokens = Math.min(perMinute, b.tokens + (elapsed * perMinute) / 60_000);
    if (tokens < 1) {
      if (!peek) {
        b.tokens = tokens;
        b.lastMs = Math.max(b.lastMs, nowMs);
      }
      return false;
    }
    if (!peek) {
      b.tokens = tokens - 1;
      b.lastMs = Math.max(b.lastMs, nowMs);
    }
    return true;
  }

  /**
   * evictIdle drops buckets untouched for a minute: they have refilled
   * completely, so forgetting them changes no decision. If every bucket is
   * busy, the oldest half goes (a bounded map beats unbounded growth).
   */
  private evictIdle(nowMs: number): void {
    for (const [k, b] of this.buckets) if (nowMs - b.lastMs >= 60_000) this.buckets.delete(k);
    if (this.buckets.size < MAX_BUCKETS) return;
    let n = this.buckets.size >> 1;
    for (const k of this.buckets.keys()) {
      if (n-- <= 0) break;
      this.buckets.delete(k);
    }
  }

  /** reset forgets every bucket (a policy's tests run on a fresh limiter). */
  reset(): void {
    this.buckets.clear();
  }
}
