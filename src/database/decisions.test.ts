import { describe, expect, test } from "vitest";
import type { DecisionEvent } from "../policy/event.js";
import { loadPolicy } from "../policy/index.js";
import type { Decision } from "../policy/types.js";
import { DECISIONS_PER_CALLER, DecisionBatch, DecisionCache, remember, stableSqlDecisions, type PendingDecision } from "./decisions.js";

const rule = (extra: object = {}) => ({ id: "r", src: ["tag:a"], sql: { database: ["db"], operation: ["select"], table: ["public.t"], rows: "x > 0" }, ...extra });
const policy = (...rules: object[]) => loadPolicy(JSON.stringify({ version: 5, rules }));

describe("which policies' decisions are cached", () => {
  test("rules that depend only on the statement and the caller: cached; a time window or a rate limit: evaluated every time", () => {
    expect(stableSqlDecisions(policy(rule()))).toBe(true);
    expect(stableSqlDecisions(policy(rule({ when: { hours: "09:00-17:00" } })))).toBe(false);
    expect(stableSqlDecisions(policy(rule({ when: { weekdays: ["mon"] } })))).toBe(false);
    expect(stableSqlDecisions(policy(rule({ when: { rate: { perMinute: 10 } } })))).toBe(false);
    // Conditions of other kinds' rules do not matter.
    expect(stableSqlDecisions(policy(rule(), { id: "h", src: ["*"], http: { host: ["example.com"] }, when: { hours: "09:00-17:00" } }))).toBe(true);
  });

  test("DecisionCache: one map per caller for the policy in force; a new policy starts afresh; an unstable one is not cached", () => {
    const c = new DecisionCache();
    const p1 = policy(rule());
    const m = c.forCaller(p1, "db\0a")!;
    m.set("SELECT 1", { effect: "allow", reason: "x" });
    expect(c.forCaller(p1, "db\0a")).toBe(m);
    expect(c.forCaller(p1, "db\0b")).not.toBe(m);
    const p2 = policy(rule());
    expect(c.forCaller(p2, "db\0a")!.size).toBe(0);
    expect(c.forCaller(policy(rule({ when: { hours: "09:00-17:00" } })), "db\0a")).toBeUndefined();
  });

  test("remember: approve is never cached, nor a long text; the cache is bounded", () => {
    const m = new Map<string, Decision>();
    remember(m, "UPDATE t SET x = 1", { effect: "approve", reason: "ask" });
    remember(m, `SELECT '${"x".repeat(9000)}'`, { effect: "allow", reason: "ok" });
    expect(m.size).toBe(0);
    for (let i = 0; i < DECISIONS_PER_CALLER + 10; i++) remember(m, `SELECT ${i}`, { effect: "deny", reason: "no" });
    expect(m.size).toBe(DECISIONS_PER_CALLER);
    expect(m.has("SELECT 0")).toBe(false);
    expect(m.has(`SELECT ${DECISIONS_PER_CALLER + 9}`)).toBe(true);
  });
});

describe("DecisionBatch", () => {
  const pending = (outcome: "allow" | "deny", n: number): PendingDecision => ({
    principal: { node: "a", tags: ["tag:a"] },
    target: { kind: "sql", database: "db", statement: `SELECT ${n}`, rowFilters: true },
    decision: { effect: outcome, reason: String(n) },
    outcome,
    us: 1,
    policy: undefined,
    at: Date.UTC(2026, 0, 1),
  });

  test("allows are handed on after the current callback, denials at once after them: none lost, in order", async () => {
    const seen: DecisionEvent[] = [];
    const b = new DecisionBatch((ev) => seen.push(ev), undefined, (err) => {
      throw err;
    });
    b.later(pending("allow", 1));
    b.later(pending("allow", 2));
    expect(seen).toHaveLength(0);
    b.now(pending("deny", 3));
    expect(seen.map((e) => [e.outcome, e.reason])).toEqual([
      ["allow", "1"],
      ["allow", "2"],
      ["deny", "3"],
    ]);
    b.later(pending("allow", 4));
    await new Promise((r) => setImmediate(r));
    expect(seen).toHaveLength(4);
    expect(seen[3]!.time).toBe("2026-01-01T00:00:00.000Z");
    // Redacted as every event: the statement's literal is not there.
    expect(JSON.stringify(seen)).not.toContain("SELECT 4");
    b.later(pending("allow", 5));
    b.flush();
    expect(seen).toHaveLength(5);
  });
});
