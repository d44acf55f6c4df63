/**
 * The compiled evaluator agrees with the plain reference evaluator
 * (reference.ts, no shared matching code) on at least 100,000 random
 * policy/request pairs — seeded, so a failure replays — and a deliberately
 * broken compiled evaluator (each Mutation) makes the same property fail.
 */

import fc from "fast-check";
import { describe, expect, test } from "vitest";

import { loadPolicy } from "../../src/policy/index.js";
import type { Mutation } from "../../src/policy/compile.js";
import { GROUPS, policyDoc, requestsFor } from "./gen.js";
import { ReferenceEvaluator } from "./reference.js";

/** The seed; MESHGUARD_PROPERTY_SEED overrides it to explore (a failure prints the seed and path to replay). */
const SEED = Number(process.env.MESHGUARD_PROPERTY_SEED ?? 20260308);
const PAIRS = 100_000;
const PER_POLICY = 40;

/** agreement is the property: every request of the sequence gets the same effect and rule from both evaluators. */
interface Counter {
  pairs: number;
  /** How often each kind of outcome occurred: the generators must exercise all of them. */
  outcomes: Record<string, number>;
}

function agreement(mutation: Mutation | undefined, counter: Counter) {
  return fc.property(policyDoc.chain((doc) => fc.tuple(fc.constant(doc), requestsFor(doc))), ([doc, reqs]) => {
    const policy = loadPolicy(JSON.stringify(doc), { runTests: false, clock: () => new Date(0), ...(mutation ? { mutation } : {}) });
    const ref = new ReferenceEvaluator(policy.document.part, GROUPS);
    reqs.forEach((req, i) => {
      // explain must predict evaluate (it peeks at rate buckets without spending).
      const predicted = i % 4 === 0 ? policy.explain(req).decision : undefined;
      const got = policy.evaluate(req);
      const want = ref.evaluate(req);
      counter.pairs++;
      const kind = `${want.effect}${want.ruleId === undefined ? " (default)" : want.reason.includes("rate") ? " (rate)" : ""}`;
      counter.outcomes[kind] = (counter.outcomes[kind] ?? 0) + 1;
      if (got.effect !== want.effect || got.ruleId !== want.ruleId || (predicted && (predicted.effect !== got.effect || predicted.ruleId !== got.ruleId))) {
        throw new Error(
          `disagreement on request ${i}: ${JSON.stringify(req)}\ncompiled: ${JSON.stringify(got)}\nreference: ${JSON.stringify(want)}` +
            (predicted ? `\nexplain: ${JSON.stringify(predicted)}` : ""),
        );
      }
    });
  });
}

describe("compiled evaluator vs reference evaluator", () => {
  test(`agrees on at least ${PAIRS} random policy/request pairs (seed ${SEED})`, () => {
    const counter: Counter = { pairs: 0, outcomes: {} };
    fc.assert(agreement(undefined, counter), { seed: SEED, numRuns: Math.ceil(PAIRS / PER_POLICY), interruptAfterTimeLimit: 50_000, endOnFailure: true });
    expect(counter.pairs).toBeGreaterThanOrEqual(PAIRS);
    // Agreement on "deny by default" alone would prove little: every outcome must be common.
    console.log(`property: ${counter.pairs} pairs, outcomes ${JSON.stringify(counter.outcomes)}`);
    for (const kind of ["allow", "approve", "deny", "deny (default)", "deny (rate)"]) {
      expect(counter.outcomes[kind] ?? 0, `${kind} in ${JSON.stringify(counter.outcomes)}`).toBeGreaterThan(counter.pairs / 200);
    }
  }, 60_000);

  const mutations: Mutation[] = ["suffix-matches-apex", "window-end-inclusive", "allow-beats-deny", "cidr-prefix-short", "path-prefix-only"];
  test.each(mutations)("a broken evaluator (%s) makes the property fail", (mutation) => {
    const r = fc.check(agreement(mutation, { pairs: 0, outcomes: {} }), { seed: SEED, numRuns: 2500, interruptAfterTimeLimit: 8_000, endOnFailure: true });
    expect(r.failed, `mutation ${mutation} went unnoticed after ${r.numRuns} runs`).toBe(true);
    // ...and it failed because the evaluators disagreed, not because something crashed.
    expect(String((r.errorInstance as Error)?.message)).toMatch(/^disagreement on request/);
  }, 20_000);
});
