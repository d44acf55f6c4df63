/**
 * A decision by a rule allocates nothing the garbage collector must chase:
 * a guarded process decides on every outbound call, and garbage made there
 * turns into collector pauses in the tail of its latency (issue 6, item 6).
 *
 * Measured as the growth of V8's young generation over a few thousand
 * decisions, after a full collection so that none happens in between (the
 * median of several rounds, less the cost of measuring an empty round).
 */

import v8 from "node:v8";
import vm from "node:vm";

import { describe, expect, test, vi } from "vitest";

import { loadPolicy, type DecisionRequest } from "../../src/policy/index.js";

v8.setFlagsFromString("--expose-gc");
const gc = vm.runInNewContext("gc") as () => void;

const newSpaceUsed = () => v8.getHeapSpaceStatistics().find((s) => s.space_name === "new_space")!.space_used_size;

/** bytesPerCall is the young-generation bytes one call of `fn` leaves behind (median of rounds). */
async function bytesPerCall(fn: (i: number) => unknown, calls = 2000, rounds = 9): Promise<number> {
  // The steady state is what is measured: if V8 had not installed the
  // optimized code yet (it compiles on another thread, later on a loaded or
  // cold machine), warm up again and measure again — at most three times, so
  // code that allocates in its optimized form still fails.
  let best = Infinity;
  for (let attempt = 0; attempt < 3 && best >= 2; attempt++) best = Math.min(best, await measureOnce(fn, calls, rounds));
  return best;
}

async function measureOnce(fn: (i: number) => unknown, calls: number, rounds: number): Promise<number> {
  // Warm up until the optimized code is in place: V8 compiles it on another
  // thread and installs it while the loop runs, so pause, then call again.
  for (let i = 0; i < 50_000; i++) fn(i);
  await new Promise((resolve) => setTimeout(resolve, 50));
  for (let i = 0; i < 50_000; i++) fn(i);
  const median = (n: number) => {
    const d: number[] = [];
    for (let r = 0; r < rounds; r++) {
      gc();
      const before = newSpaceUsed();
      for (let i = 0; i < n; i++) fn(i);
      d.push(newSpaceUsed() - before);
    }
    return d.sort((a, b) => a - b)[rounds >> 1]!;
  };
  return (median(calls) - median(0)) / calls;
}

// Rules in the shapes a policy uses: exact and wildcard hosts, a CIDR deny
// every request is checked against, a time window, a rate limit, groups.
const policy = loadPolicy(
  JSON.stringify({
    version: 1,
    groups: { "group:eng": ["alice@example.com"] },
    rules: [
      { id: "metadata", effect: "deny", src: ["*"], http: { host: ["169.254.0.0/16"] } },
      { id: "admin", effect: "deny", src: ["*"], http: { host: ["api.example.com"], path: ["/admin/**"] } },
      ...Array.from({ length: 200 }, (_, i) => ({ id: `svc${i}`, src: [`tag:agent-${i % 20}`], http: { host: [`svc-${i}.corp.example`], method: ["GET"], path: [`/v2/r${i}/**`] } })),
      { id: "api", src: ["group:eng", "research-agent"], http: { host: ["api.example.com"], method: ["GET", "POST"], path: ["/v1/**"] }, when: { hours: "00:00-24:00", timeZone: "Europe/Paris" } },
      { id: "zone", src: ["tag:agent-1"], http: { host: ["*.zone.example"] }, when: { rate: { perMinute: 1_000_000_000 } } },
      { id: "db", src: ["tag:agent-1"], tcp: { host: ["tag:db"], port: [5432] } },
      { id: "tools", src: ["tag:agent-1"], mcp: { server: ["files"], tool: ["read_*"] } },
      { id: "llm", src: ["tag:agent-1"], llm: { model: ["openai/gpt-4o*"], maxTokens: 4096 } },
    ],
  }),
  { runTests: false },
);

const http = (host: string, path: string) => ({ kind: "http" as const, scheme: "https" as const, host, port: 443, method: "GET", path, query: "", headers: {} });
const agent = { node: "research-agent.tail0.ts.net", user: "alice@example.com", tags: ["tag:agent-1"] };

/** [what, requests, effect, the deciding rule's id (a RegExp source)] */
const cases: Array<[string, DecisionRequest[], string, string]> = [
  ["allow by an indexed rule", [1, 21, 41].map((i) => ({ principal: { tags: ["tag:agent-1"] }, target: http(`svc-${i}.corp.example`, `/v2/r${i}/items/7`) })), "allow", "svc\\d+"],
  ["allow by a rule with a time window, by group and node", [{ principal: agent, target: http("api.example.com", "/v1/models") }], "allow", "api"],
  ["allow by a wildcard rule with a rate limit", [{ principal: agent, target: http("eu.zone.example", "/x") }], "allow", "zone"],
  ["allow a tailnet dial to a tagged peer", [{ principal: agent, target: { kind: "tcp", tls: false, host: "100.101.102.103", port: 5432, tailnet: true, peer: { name: "db-1.tail0.ts.net", tags: ["tag:db"] } } }], "allow", "db"],
  ["allow an MCP tool call", [{ principal: agent, target: { kind: "mcp", server: "files", tool: "read_file", args: { path: "/tmp/x" } } }], "allow", "tools"],
  ["allow an LLM call", [{ principal: agent, target: { kind: "llm", provider: "openai", model: "gpt-4o-mini", maxTokens: 1000 } }], "allow", "llm"],
  ["deny by a rule", [{ principal: agent, target: http("api.example.com", "/admin/users") }], "deny", "admin"],
  ["deny by a CIDR rule", [{ principal: agent, target: http("169.254.169.254", "/latest/meta-data") }], "deny", "metadata"],
];

describe("a decision by a rule allocates nothing", () => {
  test.each(cases)("%s", async (_name, reqs, effect, ruleId) => {
    for (const r of reqs) {
      const d = policy.evaluate(r);
      expect(d.effect).toBe(effect);
      expect(d.ruleId).toMatch(new RegExp(`^${ruleId}$`));
    }
    const bytes = await bytesPerCall((i) => policy.evaluate(reqs[i % reqs.length]!));
    expect(bytes, `${bytes.toFixed(1)} bytes per decision`).toBeLessThan(2);
  });

  test("the decision is the rule's own, shared and frozen", () => {
    const req = cases[0]![1][0]!;
    const d = policy.evaluate(req);
    expect(policy.evaluate(req)).toBe(d);
    expect(Object.isFrozen(d)).toBe(true);
  });

  test("the default deny stays cheap", async () => {
    const req = { principal: agent, target: http("nowhere.example", "/") };
    const d = policy.evaluate(req);
    expect(d.effect).toBe("deny");
    expect(d.ruleId).toBeUndefined();
    expect(await bytesPerCall(() => policy.evaluate(req))).toBeLessThan(1024);
  });
});

describe("the system clock", () => {
  // The engine reads the wall clock through the monotonic clock between
  // readings (Date.now() costs a heap number per call): it must still follow
  // the wall clock, and a step of it, closely.
  test("time windows open and close on the wall clock, and follow a step of it within 100 ms", () => {
    vi.useFakeTimers({ toFake: ["Date", "performance"], now: Date.parse("2026-03-09T08:59:59.950Z") });
    try {
      const p = loadPolicy(JSON.stringify({ version: 1, rules: [{ id: "day", src: ["*"], http: { host: ["a.example"] }, when: { hours: "09:00-17:00" } }] }), { runTests: false });
      const req = { principal: { tags: [] }, target: http("a.example", "/") };
      expect(p.evaluate(req).effect).toBe("deny");
      vi.advanceTimersByTime(50); // 09:00:00.000
      expect(p.evaluate(req).effect).toBe("allow");
      vi.advanceTimersByTime(1000);
      vi.setSystemTime(Date.parse("2026-03-09T17:30:00Z")); // the wall clock steps, the monotonic one does not
      vi.advanceTimersByTime(100);
      expect(p.evaluate(req).effect).toBe("deny");
    } finally {
      vi.useRealTimers();
    }
  });
});
