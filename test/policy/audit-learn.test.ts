import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, test } from "vitest";

import { ErrorCode } from "../../src/errors.js";
import {
  createAuditor,
  jsonLinesSink,
  learnPolicy,
  loadPolicy,
  memorySink,
  parseRequest,
  readDecisionEvents,
  decisionEvent,
  formatTarget,
  type DecisionEvent,
  type Principal,
} from "../../src/policy/index.js";
import { generalizePaths } from "../../src/policy/learn.js";

const NOW = new Date("2026-03-09T10:00:00Z");

function observed(principal: Principal, line: string, extras: Parameters<typeof parseRequest>[1] = {}): DecisionEvent {
  return decisionEvent(principal, parseRequest(line, extras), { effect: "deny", reason: "no rule (observe mode)" }, { layer: "fetch", outcome: "allow", latencyUs: 1.5, mode: "observe", time: NOW });
}

describe("audit events and sinks", () => {
  test("an event names the agent, the target without secret values, the decision and the latency", () => {
    const target = parseRequest("POST https://api.example.com/v1/x?token=SECRET&page=2", { headers: { authorization: "Bearer SECRET" }, bodySize: 10 });
    const ev = decisionEvent({ tags: ["tag:a"], node: "agent-1" }, target, { effect: "allow", ruleId: "r1", reason: "allowed" }, { layer: "fetch", outcome: "allow", latencyUs: 0.8, policyHash: "abc", time: NOW });
    expect(ev).toMatchObject({ v: 2, layer: "fetch", time: NOW.toISOString(), mode: "enforce", effect: "allow", outcome: "allow", ruleId: "r1", latencyUs: 0.8, policyHash: "abc", request: "POST https://api.example.com/v1/x?token=<redacted>&page=<redacted>" });
    expect(ev.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(ev.target).toEqual({ kind: "http", scheme: "https", host: "api.example.com", port: 443, method: "POST", path: "/v1/x", queryKeys: ["token", "page"], bodySize: 10 });
    expect(JSON.stringify(ev)).not.toContain("SECRET");
    const mcp = decisionEvent({ tags: [] }, parseRequest('mcp gh create_issue {"body":"SECRET"}'), { effect: "deny", reason: "x" }, { layer: "mcp", outcome: "deny", latencyUs: 1 });
    expect(JSON.stringify(mcp)).not.toContain("SECRET");
    expect(mcp.target).toMatchObject({ argKeys: ["body"] });
    expect(mcp.request).toBe('mcp gh create_issue {"body":"<redacted>"}');
  });

  test("the gateway's fields: principal from whois, request id, usage", () => {
    const ev = decisionEvent(
      { tags: ["tag:coder"], node: "laptop-agent", ip: "100.64.0.7", owners: ["alice@example.com"] },
      parseRequest("llm anthropic/claude-sonnet-4 1024"),
      { effect: "allow", ruleId: "coders", reason: "ok" },
      { layer: "gateway", outcome: "allow", latencyUs: 2, requestId: "req-1", usage: { inputTokens: 10, outputTokens: 20, costUsd: 0.0003 } },
    );
    expect(ev).toMatchObject({ layer: "gateway", requestId: "req-1", principal: { ip: "100.64.0.7", owners: ["alice@example.com"] }, usage: { inputTokens: 10, outputTokens: 20 } });
  });

  test("one rendering: formatTarget redacts query and MCP argument values unless told, and reads back with parseRequest", () => {
    const http = parseRequest("GET https://h.example:8443/a?x=1&y=2&flag");
    expect(formatTarget(http)).toBe("GET https://h.example:8443/a?x=<redacted>&y=<redacted>&flag");
    expect(formatTarget(http, { reveal: { query: true } })).toBe("GET https://h.example:8443/a?x=1&y=2&flag");
    expect(formatTarget({ kind: "tcp", tls: false, host: "fd7a:115c:a1e0::1", port: 22, tailnet: true })).toBe("tcp [fd7a:115c:a1e0::1]:22 tailnet");
    for (const line of ["tls [::1]:5432", "tcp db:5432 tailnet", 'mcp gh create_issue {"repo":"a/b"}', "llm openai/gpt-4o 4096", "POST https://x.example/p?q=1"]) {
      expect(formatTarget(parseRequest(line), { reveal: { query: true, mcpArgs: true } })).toBe(line);
    }
  });

  test("version-1 audit lines (before the unified event) still read, as version-2 events", () => {
    const v1 = { v: 1, time: NOW.toISOString(), mode: "enforce", principal: { tags: ["tag:a"] }, request: "tcp db:5432", target: { kind: "tcp", tls: false, host: "db", port: 5432, peerTags: ["tag:db"] }, effect: "allow", reason: "ok", latencyUs: 1 };
    const [ev] = readDecisionEvents(JSON.stringify(v1));
    expect(ev).toMatchObject({ v: 2, outcome: "allow", layer: "net", target: { kind: "tcp", peer: { tags: ["tag:db"] } } });
    expect(ev!.target).not.toHaveProperty("peerTags");
    const denied = readDecisionEvents(JSON.stringify({ ...v1, effect: "deny" }));
    expect(denied[0]!.outcome).toBe("deny");
  });

  test("denials and approvals are always written; allows are sampled at the configured rate", () => {
    const sink = memorySink();
    let i = 0;
    const rolls = [0.1, 0.9, 0.3, 0.7];
    const auditor = createAuditor({ sink, sampleAllows: 0.5, random: () => rolls[i++ % rolls.length]! });
    const ev = (effect: DecisionEvent["effect"], mode: DecisionEvent["mode"] = "enforce") => ({ ...observed({ tags: [] }, "GET https://a/"), effect, mode });
    for (let k = 0; k < 4; k++) auditor.record(ev("allow"));
    auditor.record(ev("deny"));
    auditor.record(ev("approve"));
    auditor.record(ev("allow", "observe"));
    expect(sink.events.map((e) => e.effect)).toEqual(["allow", "allow", "deny", "approve", "allow"]);
    expect(auditor.stats).toEqual({ written: 5, sampledOut: 2, errors: 0 });
    expect(() => createAuditor({ sink, sampleAllows: 2 })).toThrow(expect.objectContaining({ code: "MESHGUARD_INVALID_OPTIONS" }));
  });

  test("a throwing sink is counted, never thrown to the caller", () => {
    const errors: Error[] = [];
    const auditor = createAuditor({ sink: { write: () => { throw new Error("disk full"); } }, onError: (e) => errors.push(e) });
    expect(auditor.record(observed({ tags: [] }, "GET https://a/"))).toBe(false);
    expect(auditor.stats.errors).toBe(1);
    expect(errors[0]!.message).toBe("disk full");
  });

  test("the JSON-lines file sink appends one event per line, readable by readDecisionEvents", async () => {
    const file = join(mkdtempSync(join(tmpdir(), "mg-audit-")), "audit.jsonl");
    const auditor = createAuditor({ sink: jsonLinesSink(file) });
    auditor.record(observed({ tags: ["tag:a"] }, "GET https://a.example/x"));
    auditor.record(observed({ tags: ["tag:a"] }, "tcp db:5432"));
    await auditor.close();
    const text = readFileSync(file, "utf8");
    expect(text.trim().split("\n")).toHaveLength(2);
    expect(readDecisionEvents(text).map((e) => e.request)).toEqual(["GET https://a.example/x", "tcp db:5432"]);
  });

  test("a malformed log line is an error naming the line", () => {
    const good = JSON.stringify(observed({ tags: [] }, "GET https://a/"));
    expect(() => readDecisionEvents(`${good}\n\n{oops`, "obs.jsonl")).toThrow(expect.objectContaining({ code: ErrorCode.AUDIT_LOG_INVALID, message: expect.stringMatching(/^obs\.jsonl:3: not JSON/) }));
    expect(() => readDecisionEvents(JSON.stringify({ v: 3 }))).toThrow(/unsupported event version/);
  });
});

describe("learn mode", () => {
  const agent: Principal = { tags: ["tag:research"], node: "research-1" };
  const billing: Principal = { tags: ["tag:billing"] };
  const events: DecisionEvent[] = [
    ...[17, 42, 99, 1234].map((id) => observed(agent, `GET https://api.example.com/v2/users/${id}`)),
    ...["alice", "bob", "carol"].map((n) => observed(agent, `GET https://api.example.com/v2/teams/${n}/members`)),
    observed(agent, "POST https://api.example.com/v2/users/42/notes", { bodySize: 200 }),
    observed(agent, "GET https://api.example.com/v2/status?verbose=1"),
    observed(agent, "tls db.internal:5432"),
    observed(agent, 'mcp github list_issues {"repo":"acme/app"}'),
    observed(agent, "mcp github get_issue"),
    observed(agent, "llm openai/gpt-4o-mini 1024"),
    observed(agent, "llm openai/gpt-4o-mini 2048"),
    observed(billing, "POST https://payments.example.com/v1/charges"),
    // Denied in enforce mode: it did not happen, so it is not learned.
    { ...observed(billing, "GET https://evil.example.com/"), mode: "enforce", effect: "deny", outcome: "deny" },
  ];

  test("ids in paths and high-variance segments become *, other segments stay literal", () => {
    const g = generalizePaths(["/v2/users/17", "/v2/users/42", "/v2/teams/alice/members", "/v2/teams/bob/members", "/v2/teams/carol/members", "/v2/status", "/v2/users/4f9c2a1e-0b7d-4c35-9d2e-1a2b3c4d5e6f"]);
    expect(g.get("/v2/users/17")).toBe("/v2/users/*");
    expect(g.get("/v2/users/4f9c2a1e-0b7d-4c35-9d2e-1a2b3c4d5e6f")).toBe("/v2/users/*");
    expect(g.get("/v2/teams/bob/members")).toBe("/v2/teams/*/members");
    expect(g.get("/v2/status")).toBe("/v2/status");
    expect(generalizePaths(["/a/x", "/a/y"]).get("/a/x")).toBe("/a/x");
  });

  test("the proposal groups calls into readable rules, loads, and its generated tests pass", () => {
    const r = learnPolicy(events);
    expect(r.used).toBe(events.length - 1);
    expect(r.skipped).toBe(1);
    const p = loadPolicy(r.text);
    expect(p.runTests().every((t) => t.pass)).toBe(true);
    const rules = p.rules.map((x) => ({ id: x.id, src: x.src, http: x.http, tcp: x.tcp, mcp: x.mcp, llm: x.llm }));
    expect(rules).toContainEqual(expect.objectContaining({ src: ["tag:research"], http: expect.objectContaining({ method: ["GET"], path: ["/v2/status", "/v2/teams/*/members", "/v2/users/*"] }) }));
    expect(rules).toContainEqual(expect.objectContaining({ http: expect.objectContaining({ method: ["POST"], path: ["/v2/users/*/notes"] }) }));
    expect(rules).toContainEqual(expect.objectContaining({ tcp: { host: ["db.internal"], port: [5432], tls: true } }));
    expect(rules).toContainEqual(expect.objectContaining({ mcp: { server: ["github"], tool: ["get_issue", "list_issues"] } }));
    expect(rules).toContainEqual(expect.objectContaining({ llm: { model: ["openai/gpt-4o-mini"], maxTokens: 2048 } }));
    expect(r.text).toMatch(/^\/\/ Proposed by `meshguard policy learn` from 15 observed calls/);
  });

  test("least privilege: every observed call is allowed, and near misses are not", () => {
    const p = loadPolicy(learnPolicy(events).text);
    for (const e of events.slice(0, -1)) {
      expect(p.evaluate({ principal: e.principal, target: parseRequest(e.request, { bodySize: 1 }) }).effect, e.request).toBe("allow");
    }
    for (const line of ["DELETE https://api.example.com/v2/users/17", "GET https://api.example.com/v2/admin", "GET http://api.example.com/v2/status", "tcp db.internal:5432", "mcp github create_issue", "llm openai/gpt-4o 100", "llm openai/gpt-4o-mini 4096", "GET https://evil.example.com/"]) {
      expect(p.evaluate({ principal: agent, target: parseRequest(line) }).effect, line).toBe("deny");
    }
    expect(p.evaluate({ principal: billing, target: parseRequest("GET https://api.example.com/v2/status") }).effect).toBe("deny");
  });

  test("paths with glob characters stay literal", () => {
    const r = learnPolicy([observed(agent, "GET https://a.example/users/@me/[x]"), observed(agent, "GET https://a.example/q*")]);
    const p = loadPolicy(r.text);
    expect(p.evaluate({ principal: agent, target: parseRequest("GET https://a.example/users/@me/[x]") }).effect).toBe("allow");
    expect(p.evaluate({ principal: agent, target: parseRequest("GET https://a.example/users/@me/y") }).effect).toBe("deny");
    expect(p.evaluate({ principal: agent, target: parseRequest("GET https://a.example/qq") }).effect).toBe("deny");
  });
});
