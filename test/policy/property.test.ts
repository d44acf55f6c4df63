/**
 * The compiled evaluator agrees with the plain reference evaluator
 * (reference.ts, no shared matching code) on at least 100,000 random
 * policy/request pairs — seeded, so a failure replays — and each
 * deliberately broken evaluator (MUTANTS) makes the same property fail.
 *
 * The broken evaluators are built here, from test code: each takes a freshly
 * compiled rule set and changes it (a rule's host check or conditions, the
 * index) or wraps the evaluator. The engine that ships has no switch for them.
 */

import { readdirSync, readFileSync } from "node:fs";

import fc from "fast-check";
import { describe, expect, test } from "vitest";

import { compileRules, Evaluator, loadPolicy, type CompiledRules, type Rule } from "../../src/policy/index.js";
import type { HostTarget } from "../../src/policy/compile.js";
import { NO, YES, type AnyTarget, type Condition, type EvalContext } from "../../src/policy/conditions.js";
import { srcMatches } from "../../src/policy/identity.js";
import type { DecisionRequest, DnsTarget, HttpTarget, Principal } from "../../src/policy/types.js";
import { GROUPS, policyDoc, requestsFor } from "./gen.js";
import { inCidr, looksLikeAddress, ReferenceEvaluator } from "./reference.js";

/** The seed; MESHGUARD_PROPERTY_SEED overrides it to explore (a failure prints the seed and path to replay). */
const SEED = Number(process.env.MESHGUARD_PROPERTY_SEED ?? 20260308);
const PAIRS = 100_000;
const PER_POLICY = 40;
const CLOCK = () => new Date(0);

type Decider = Pick<Evaluator, "evaluate" | "explain">;

/** A broken evaluator: the compiled rules of `rules`, changed in one place. */
type Mutant = (compiled: CompiledRules, rules: readonly Rule[]) => Decider;

const hostsOf = (r: Rule): string[] => r.http?.host ?? r.tcp?.host ?? r.udp?.host ?? r.dns?.name ?? [];
/** The host a rule's host patterns are matched against (a DNS target's is the name it looks up). */
const hostOf = (t: HostTarget): string => (t.kind === "dns" ? t.name : t.host);
const withCond = (c: Condition<AnyTarget>, test: Condition<AnyTarget>["test"]): Condition<AnyTarget> => ({ what: c.what, test, why: c.why });

const MUTANTS: Record<string, Mutant> = {
  /** "*.a.com" also matches the apex "a.com" (in the index and in the full host check). */
  "suffix-matches-apex"(compiled, rules) {
    for (const r of compiled.rules) {
      const apexes = hostsOf(rules[r.index]!).flatMap((h) => (h.startsWith("*.") ? [h.slice(2).replace(/\.$/, "")] : []));
      if (!apexes.length) continue;
      const idx = compiled.index[r.kind];
      for (const a of apexes) idx.bucket(idx.exact, a).add(r);
      const hostMatches = r.hostMatches;
      r.hostMatches = (t) => hostMatches(t) || apexes.includes(hostOf(t));
    }
    return new Evaluator(compiled, CLOCK);
  },

  /** A time window also accepts its end minute. */
  "window-end-inclusive"(compiled) {
    const minuteEarlier = (ctx: EvalContext): EvalContext => ({ now: () => ctx.now() - 60_000, minute: () => ctx.minute() - 1, query: (t) => ctx.query(t) });
    for (const r of compiled.rules) {
      r.conds = r.conds.map((c) => (c.what.startsWith("when (time") ? withCond(c, (t, ctx) => (c.test(t, ctx) === YES || c.test(t, minuteEarlier(ctx)) === YES ? YES : NO)) : c));
    }
    return new Evaluator(compiled, CLOCK);
  },

  /** A matching allow rule overrides a matching deny rule (precedence broken). */
  "allow-beats-deny"(compiled) {
    let principal: Principal = { tags: [] };
    const allows = compiled.rules.filter((r) => r.effect === "allow");
    const allowed = (t: AnyTarget, ctx: EvalContext) =>
      allows.some((r) => r.kind === t.kind && srcMatches(r.src, principal) && (!r.hosts || r.hostMatches(t as HostTarget)) && r.conds.every((c) => c.test(t, ctx) === YES));
    const notAllowed: Condition<AnyTarget> = { what: "no allow rule matches", test: (t, ctx) => (allowed(t, ctx) ? NO : YES), why: () => "" };
    for (const r of compiled.rules) if (r.effect === "deny") r.conds = [...r.conds, notAllowed];
    const ev = new Evaluator(compiled, CLOCK);
    return {
      evaluate: (req: DecisionRequest) => ((principal = req.principal), ev.evaluate(req)),
      explain: (req: DecisionRequest) => ((principal = req.principal), ev.explain(req)),
    };
  },

  /** Every CIDR range is one bit wider than written. */
  "cidr-prefix-short"(compiled, rules) {
    for (const r of compiled.rules) {
      const cidrs = hostsOf(rules[r.index]!).filter(looksLikeAddress);
      if (!cidrs.length) continue;
      const hostMatches = r.hostMatches;
      const wider = (ip: string | undefined) => ip !== undefined && cidrs.some((c) => inCidr(c, ip, 1));
      r.hostMatches = (t) => hostMatches(t) || (t.kind !== "dns" && (wider(t.host) || wider(t.resolvedIp)));
    }
    return new Evaluator(compiled, CLOCK);
  },

  /** An address look-up (no record type) passes a record-type list that has A alone. */
  "address-lookup-as-a"(compiled) {
    for (const r of compiled.rules) {
      r.conds = r.conds.map((c) => (c.what === "rrtype" ? withCond(c, (t, ctx) => c.test((t as DnsTarget).rrtype === undefined ? { ...(t as DnsTarget), rrtype: "A" } : t, ctx)) : c));
    }
    return new Evaluator(compiled, CLOCK);
  },

  /** A path glob also matches any path that starts with its literal part ("/a/*" matches "/a/b/c"). */
  "path-prefix-only"(compiled, rules) {
    for (const r of compiled.rules) {
      const lits = (rules[r.index]!.http?.path ?? []).map((p) => p.replace(/[*?[{:].*$/, "")).filter((l) => l.length > 1);
      r.conds = r.conds.map((c) => (c.what === "path" ? withCond(c, (t, ctx) => (c.test(t, ctx) === YES || lits.some((l) => (t as HttpTarget).path.startsWith(l)) ? YES : NO)) : c));
    }
    return new Evaluator(compiled, CLOCK);
  },
};

/** agreement is the property: every request of the sequence gets the same effect and rule from both evaluators. */
interface Counter {
  pairs: number;
  /** How often each kind of outcome occurred: the generators must exercise all of them. */
  outcomes: Record<string, number>;
}

function agreement(mutant: Mutant | undefined, counter: Counter) {
  return fc.property(policyDoc.chain((doc) => fc.tuple(fc.constant(doc), requestsFor(doc))), ([doc, reqs]) => {
    const policy = loadPolicy(JSON.stringify(doc), { runTests: false, clock: CLOCK });
    const ev: Decider = mutant ? mutant(compileRules(policy.rules, { groups: policy.document.groups }), policy.rules) : policy;
    const ref = new ReferenceEvaluator(policy.document.part, GROUPS);
    reqs.forEach((req, i) => {
      // explain must predict evaluate (it peeks at rate buckets without spending).
      const predicted = i % 4 === 0 ? ev.explain(req).decision : undefined;
      const got = ev.evaluate(req);
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
    fc.assert(agreement(undefined, counter), { seed: SEED, numRuns: Math.ceil(PAIRS / PER_POLICY), interruptAfterTimeLimit: 170_000, endOnFailure: true });
    expect(counter.pairs).toBeGreaterThanOrEqual(PAIRS);
    // Agreement on "deny by default" alone would prove little: every outcome must be common.
    console.log(`property: ${counter.pairs} pairs, outcomes ${JSON.stringify(counter.outcomes)}`);
    for (const kind of ["allow", "approve", "deny", "deny (default)", "deny (rate)"]) {
      expect(counter.outcomes[kind] ?? 0, `${kind} in ${JSON.stringify(counter.outcomes)}`).toBeGreaterThan(counter.pairs / 200);
    }
  }, 180_000);

  test.each(Object.keys(MUTANTS))("a broken evaluator (%s) makes the property fail", (name) => {
    const r = fc.check(agreement(MUTANTS[name], { pairs: 0, outcomes: {} }), { seed: SEED, numRuns: 2500, interruptAfterTimeLimit: 8_000, endOnFailure: true });
    expect(r.failed, `mutant ${name} went unnoticed after ${r.numRuns} runs`).toBe(true);
    // ...and it failed because the evaluators disagreed, not because something crashed.
    expect(String((r.errorInstance as Error)?.message)).toMatch(/^disagreement on request/);
  }, 20_000);

  test("the engine that ships has no switch for the broken evaluators", () => {
    const dir = new URL("../../src/policy/", import.meta.url);
    for (const file of readdirSync(dir).filter((f) => f.endsWith(".ts"))) {
      const text = readFileSync(new URL(file, dir), "utf8");
      for (const name of Object.keys(MUTANTS)) expect(text, `src/policy/${file} mentions ${name}`).not.toContain(name);
      expect(text, `src/policy/${file}`).not.toMatch(/\bmutation\b/i);
    }
  });
});
