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
 */
export function waitMs(levels: readonly number[], rates: readonly Rate[], need: number): number | undefined {
  const total = (t: number) => levels.reduce((s, l, i) => s + Math.min(Math.max(l, rates[i]!.capacity), l + rates[i]!.perMs * t), 0);
  if (total(0) + EPSILON >= need) return 0;
  // The chain's total rises piecewise linearly until every bucket is full: past that, nothing changes.
  let hi = 0;
  for (let i = 0; i < levels.length; i++) if (rates[i]!.perMs > 0) hi = Math.max(hi, (rates[i]!.capacity - levels[i]!) / rates[i]!.perMs);
  if (total(hi) + EPSILON < need) return undefined;
  let lo = 0;
  // Bisection to well under a second: the answer is rounded up to whole seconds.
  for (let k = 0; k < 64 && hi - lo > 10; k++) {
    const mid = (lo + hi) / 2;
    if (total(mid) + EPSILON >= need) hi = mid;
    else lo = mid;
  }
  return hi;
}
