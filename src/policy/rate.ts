/**
 * Calls-per-minute limits, one token bucket per (rule, agent). A bucket holds
 * at most `perMinute` tokens and refills continuously at perMinute/60 000 per
 * millisecond, so a full minute's allowance may be spent at once but never
 * more than perMinute + (elapsed minutes × perMinute) in total. Time comes
 * from the policy's clock, so tests are deterministic.
 */

import type { Principal } from "./types.js";

/**
 * A bucket is [tokens, lastMs]: a Float64Array, because V8 boxes a
 * fractional number stored in an object field (a new heap object per store)
 * but not one stored in a typed array.
 */
type Bucket = Float64Array;
const TOKENS = 0;
const LAST_MS = 1;

/** MAX_BUCKETS bounds memory when agents come and go; full buckets are the ones dropped. */
const MAX_BUCKETS = 100_000;

/** principalKey names "the agent" for a per-agent limit: node name, else user, else the tag set. */
export function principalKey(p: Principal): string {
  if (p.node) return `n:${p.node.toLowerCase()}`;
  if (p.user) return `u:${p.user.toLowerCase()}`;
  return `t:${[...p.tags].sort().join(",")}`;
}

/**
 * AgentKeyMemo remembers the principalKey of the last principal (compared by
 * value: node, user and every tag), so a process deciding for one identity
 * builds the key once instead of on every rate-limited decision.
 */
export class AgentKeyMemo {
  private key: string | undefined;
  private node: string | undefined;
  private user: string | undefined;
  private tags: readonly string[] = [];

  of(p: Principal): string {
    if (this.key !== undefined && p.node === this.node && p.user === this.user && sameTags(p.tags, this.tags)) return this.key;
    const key = principalKey(p);
    this.node = p.node;
    this.user = p.user;
    this.tags = p.tags.slice(); // a copy: the caller may reuse and change its array
    this.key = key;
    return key;
  }
}

function sameTags(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export class RateLimiter {
  /** Buckets by rule index, then by agent (no key string is built per call). */
  private readonly byRule = new Map<number, Map<string, Bucket>>();
  private size = 0;

  /**
   * take spends one token of the bucket (rule, agent) if it has one and tells
   * whether it did; with `peek` it only tells (explain must not spend). The
   * time is now[0], in ms: a number argument would be boxed (see Bucket).
   */
  take(ruleIndex: number, agent: string, perMinute: number, now: Float64Array, peek = false): boolean {
    const nowMs = now[0]!;
    let agents = this.byRule.get(ruleIndex);
    let b = agents?.get(agent);
    if (!b) {
      if (peek) return perMinute >= 1;
      if (this.size >= MAX_BUCKETS) {
        this.evictIdle(nowMs);
        agents = this.byRule.get(ruleIndex);
      }
      if (!agents) this.byRule.set(ruleIndex, (agents = new Map()));
      b = new Float64Array(2);
      b[TOKENS] = perMinute;
      b[LAST_MS] = nowMs;
      agents.set(agent, b);
      this.size++;
    }
    const elapsed = Math.max(0, nowMs - b[LAST_MS]!);
    const tokens = Math.min(perMinute, b[TOKENS]! + (elapsed * perMinute) / 60_000);
    if (tokens < 1) {
      if (!peek) {
        b[TOKENS] = tokens;
        b[LAST_MS] = Math.max(b[LAST_MS]!, nowMs);
      }
      return false;
    }
    if (!peek) {
      b[TOKENS] = tokens - 1;
      b[LAST_MS] = Math.max(b[LAST_MS]!, nowMs);
    }
    return true;
  }

  /**
   * giveBack returns one token to the bucket (rule, agent), never above
   * `perMinute`: for a call that is decided again and must count once.
   * A bucket that is gone (evicted: it had refilled) is left alone.
   */
  giveBack(ruleIndex: number, agent: string, perMinute: number): void {
    const b = this.byRule.get(ruleIndex)?.get(agent);
    if (b !== undefined) b[TOKENS] = Math.min(perMinute, b[TOKENS]! + 1);
  }

  /**
   * evictIdle drops buckets untouched for a minute: they have refilled
   * completely, so forgetting them changes no decision. If every bucket is
   * busy, half of them go, the oldest of each rule first (a bounded map beats
   * unbounded growth).
   */
  private evictIdle(nowMs: number): void {
    for (const [rule, agents] of this.byRule) {
      for (const [k, b] of agents) {
        if (nowMs - b[LAST_MS]! >= 60_000) {
          agents.delete(k);
          this.size--;
        }
      }
      if (agents.size === 0) this.byRule.delete(rule);
    }
    if (this.size < MAX_BUCKETS) return;
    for (const [rule, agents] of this.byRule) {
      let n = agents.size >> 1 || 1;
      for (const k of agents.keys()) {
        if (n-- <= 0) break;
        agents.delete(k);
        this.size--;
      }
      if (agents.size === 0) this.byRule.delete(rule);
    }
  }

  /** reset forgets every bucket (a policy's tests run on a fresh limiter). */
  reset(): void {
    this.byRule.clear();
    this.size = 0;
  }
}
