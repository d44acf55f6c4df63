/**
 * Token-bucket arithmetic, pure: a level refills continuously at `perMs` up
 * to `capacity` (a level above capacity — the capacity was lowered — is cut
 * to it; a level below zero — a request cost more than it reserved — refills
 * from there, so the overspend is paid back before anything new is spent).
 */

import type { BucketState } from "../types.js";

export interface Rate {
  capacity: number;
  /** Units per millisecond; 0 for a bucket that only an admin refills. */
  perMs: number;
}

/** levelAt is the level of `state` at `now` (an absent state is a full bucket: buckets start at capacity). */
export function levelAt(state: BucketState | undefined, rate: Rate, now: number): number {
  if (!state) return rate.capacity;
  const elapsed = Math.max(0, now - state.updatedAt); // clocks of two instances may disagree: never drain by refilling
  return Math.min(rate.capacity, state.level + rate.perMs * elapsed);
}

/** Amounts are dollars or tokens; below this a difference is float noise, not money. */
export const EPSILON = 1e-9;

/**
 * waitMs is how long until the levels of a chain, refilling, hold `need`
 * together (each up to its capacity): 0 if they do now, undefined if never
 * (the capacities sum to less, or the missing part cannot refill).
 *
 * The chain's total rises piecewise linearly: each bucket adds its rate until
 * it is full. Walk the moments buckets fill up, in order, and solve the
 * linear piece that reaches `need`.
 */
export function waitMs(levels: readonly number[], rates: readonly Rate[], need: number): number | undefined {
  const parts = levels.map((l, i) => ({ level: Math.min(l, rates[i]!.capacity), ...rates[i]! }));
  let total = parts.reduce((s, p) => s + p.level, 0);
  if (total + EPSILON >= need) return 0;
  const filling = parts.filter((p) => p.perMs > 0 && p.level < p.capacity).map((p) => ({ perMs: p.perMs, fullAt: (p.capacity - p.level) / p.perMs }));
  filling.sort((a, b) => a.fullAt - b.fullAt);
  let t = 0;
  let slope = filling.reduce((s, p) => s + p.perMs, 0);
  for (const p of filling) {
    const reach = total + slope * (p.fullAt - t);
    if (reach + EPSILON >= need) return t + (need - total) / slope;
    total = reach;
    t = p.fullAt;
    slope -= p.perMs;
  }
  return undefined;
}
