/** The gateway config's `quotas` section: buckets, refill rates and overdraft chains, with messages a person can act on. */

import { describe, expect, test } from "vitest";

import { QuotasConfigSchema, refillPerMs } from "../../src/gateway/quotas/config.js";

const messages = (input: unknown): string[] => {
  const r = QuotasConfigSchema.safeParse(input);
  if (r.success) throw new Error("the config was accepted");
  return r.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`);
};

describe("quotas config", () => {
  test("a bucket per user by default; refill rates in units per period", () => {
    const c = QuotasConfigSchema.parse({ daily: { unit: "usd", capacity: 5, refill: "$5/day", overdraft: "extra" }, extra: { unit: "usd", capacity: 20, refill: "20/month", per: "group" } });
    expect(c["daily"]!.per).toBe("user");
    expect(c["extra"]!.per).toBe("group");
    expect(refillPerMs("5/day")).toBeCloseTo(5 / 86_400_000, 18);
    expect(refillPerMs("100000/hour")).toBeCloseTo(100_000 / 3_600_000, 12);
    expect(refillPerMs("0.5/minute")).toBeCloseTo(0.5 / 60_000, 15);
    expect(refillPerMs("30/month")).toBeCloseTo(1 / 86_400_000, 18);
    expect(refillPerMs("5 per day")).toBeUndefined();
    expect(refillPerMs("-1/day")).toBeUndefined();
  });

  test("wrong units, capacities, rates and keys are named with what would be valid", () => {
    const m = messages({ a: { unit: "eur", capacity: 0, refill: "lots", per: "team", colour: "red" }, "b/c": { unit: "tokens", capacity: 1, refill: "1/day" } });
    expect(m).toContainEqual(expect.stringMatching(/^a\.unit: must be "usd".*"tokens" or "calls"/));
    expect(m).toContainEqual(expect.stringMatching(/^a\.capacity: must be more than 0/));
    expect(m).toContainEqual(expect.stringMatching(/^a\.refill: must be AMOUNT\/PERIOD, e\.g\. "5\/day"/));
    expect(m).toContainEqual(expect.stringMatching(/^a\.per: must be "user", "node", "tag", "group" or "global"/));
    expect(m).toContainEqual("a: valid keys of a bucket are: unit, capacity, refill, per, overdraft");
    expect(m).toContainEqual(expect.stringMatching(/^b\/c: a bucket name uses letters, digits/));
  });

  test("an overdraft must name a bucket of the same unit", () => {
    expect(messages({ a: { unit: "usd", capacity: 1, refill: "1/day", overdraft: "nope" }, b: { unit: "usd", capacity: 1, refill: "1/day" } })).toEqual([
      'a.overdraft: no bucket is named "nope": the buckets are "b"',
    ]);
    expect(messages({ a: { unit: "usd", capacity: 1, refill: "1/day", overdraft: "b" }, b: { unit: "tokens", capacity: 1, refill: "1/day" } })).toEqual([
      'a.overdraft: "a" counts usd but its overdraft "b" counts tokens: a chain spills one unit',
    ]);
  });

  test("an overdraft chain that loops is rejected once, naming the loop", () => {
    expect(
      messages({
        a: { unit: "usd", capacity: 1, refill: "1/day", overdraft: "b" },
        b: { unit: "usd", capacity: 1, refill: "1/day", overdraft: "c" },
        c: { unit: "usd", capacity: 1, refill: "1/day", overdraft: "a" },
        d: { unit: "usd", capacity: 1, refill: "1/day", overdraft: "a" },
        self: { unit: "usd", capacity: 1, refill: "1/day", overdraft: "self" },
      }),
    ).toEqual(["a.overdraft: overdraft chain loops: a → b → c → a; end it at a bucket without overdraft", "self.overdraft: overdraft chain loops: self → self; end it at a bucket without overdraft"]);
  });
});
