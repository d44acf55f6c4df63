// Audit and observe mode: every decision reaches the policy engine's audit
// sink (denials always, allows sampled); observe mode lets calls through and
// records them in the format `meshguard policy learn` reads.
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PolicyDeniedError, type DecisionEvent } from "../../src/guard/index.js";
import { jsonLinesSink, learnPolicy, loadPolicy, memorySink, readDecisionEvents } from "../../src/policy/index.js";
import { AGENT, allowHttp, countingServer, denied, guard, type Counting } from "./helpers.js";

let srv: Counting;
beforeAll(async () => {
  srv = await countingServer();
});
afterAll(() => srv.close());

describe("audit", () => {
  it("writes a DecisionEvent per decision: identity, target, effect, rule, latency", async () => {
    const sink = memorySink();
    guard({ rules: [allowHttp("127.0.0.1", { path: ["/ok"] })], audit: sink });
    await fetch(`${srv.url}/ok`);
    await denied(fetch(`${srv.url}/no`));
    expect(sink.events).toHaveLength(2);
    const [allow, deny] = sink.events;
    expect(allow).toMatchObject({ v: 2, layer: "fetch", mode: "enforce", principal: AGENT, effect: "allow", outcome: "allow", ruleId: "http-127.0.0.1", target: { kind: "http", path: "/ok" } });
    expect(deny).toMatchObject({ effect: "deny", outcome: "deny", target: { kind: "http", path: "/no" } });
    expect(allow!.id).not.toBe(deny!.id);
    expect(deny!.ruleId).toBeUndefined();
    expect(typeof allow!.latencyUs).toBe("number");
    expect(Number.isFinite(allow!.latencyUs) && allow!.latencyUs >= 0).toBe(true); // a figure, not a threshold: performance is measured in bench/
    expect(allow!.policyHash).toMatch(/^[0-9a-f]{64}$/);
  });

  it("samples allows but always writes denials", async () => {
    const sink = memorySink();
    guard({ rules: [allowHttp("127.0.0.1", { path: ["/ok"] })], audit: sink, sampleAllows: 0 });
    for (let i = 0; i < 5; i++) await fetch(`${srv.url}/ok`);
    await denied(fetch(`${srv.url}/no`));
    expect(sink.events.map((e) => e.effect)).toEqual(["deny"]);
  });

  it("a sink that throws does not break the call; the guard warns", async () => {
    const warnings: unknown[] = [];
    const g = guard({ rules: [allowHttp("127.0.0.1")], audit: { write: () => { throw new Error("disk full"); } } });
    g.on("warning", (w) => warnings.push(w));
    expect((await fetch(`${srv.url}/ok`)).status).toBe(200);
    expect(String(warnings[0])).toContain("disk full");
  });

  it("'decision' events carry the interception layer", async () => {
    const g = guard({ rules: [allowHttp("127.0.0.1")] });
    const seen: DecisionEvent[] = [];
    g.on("decision", (e: DecisionEvent) => seen.push(e));
    await fetch(`${srv.url}/ok`);
    expect(seen[0]).toMatchObject({ layer: "fetch", outcome: "allow", effect: "allow" });
  });

  it("the 'decision' event and the audit line are one object, and one rendering of the call is in the error, the event and the line", async () => {
    const sink = memorySink();
    const g = guard({ rules: [allowHttp("127.0.0.1", { path: ["/ok"] })], audit: sink });
    const seen: DecisionEvent[] = [];
    g.on("decision", (e: DecisionEvent) => seen.push(e));
    const err = (await denied(fetch(`${srv.url}/no?token=SECRET&page=2`, { headers: { authorization: "Bearer SECRET" } }))) as PolicyDeniedError;
    expect(seen).toHaveLength(1);
    expect(sink.events[0]).toBe(seen[0]);
    const line = `GET ${srv.url}/no?token=<redacted>&page=<redacted>`;
    expect(seen[0]!.request).toBe(line);
    expect(err.message).toContain(`denied ${line}:`);
    expect(JSON.stringify(seen[0])).not.toContain("SECRET");
    expect(err.message).not.toContain("SECRET");
    // The policy hash of the deciding policy is in the event.
    expect(seen[0]!.policyHash).toMatch(/^[0-9a-f]{64}$/);
  });

  it("reveal keeps the values it names, and only those", async () => {
    const sink = memorySink();
    guard({ rules: [allowHttp("127.0.0.1")], audit: sink, reveal: { query: true, headers: ["x-request-id"] } });
    await fetch(`${srv.url}/ok?page=2`, { headers: { "x-request-id": "r-17", authorization: "Bearer SECRET" } });
    expect(sink.events[0]!.request).toBe(`GET ${srv.url}/ok?page=2`);
    expect(sink.events[0]!.target).toMatchObject({ query: "page=2", headers: { "x-request-id": "r-17" } });
    expect(JSON.stringify(sink.events[0])).not.toContain("SECRET");
  });
});

describe("observe mode", () => {
  it("lets denied calls through, records them, and learn proposes a policy that allows exactly them", async () => {
    const dir = mkdtempSync(join(tmpdir(), "mg-observe-"));
    const file = join(dir, "observed.jsonl");
    const sink = jsonLinesSink(file);
    guard({ mode: "observe", audit: sink }); // no policy at all
    const hits = srv.hits;
    expect((await fetch(`${srv.url}/v1/items?page=2`)).status).toBe(200);
    expect((await fetch(`${srv.url}/v1/items`, { method: "POST", body: "{}" })).status).toBe(200);
    expect(srv.hits).toBe(hits + 2);
    await sink.close!();
    const events = readDecisionEvents(readFileSync(file, "utf8"));
    expect(events).toHaveLength(2);
    expect(events.every((e) => e.mode === "observe" && e.effect === "deny")).toBe(true);
    const learned = learnPolicy(events);
    // The proposal is a whole policy file (HuJSON) with tests generated from the observations.
    const p = loadPolicy(learned.text);
    const target = (method: string) => ({ kind: "http" as const, scheme: "http" as const, host: "127.0.0.1", port: srv.port, method, path: "/v1/items", query: "", headers: {} });
    expect(p.evaluate({ principal: AGENT, target: target("GET") }).effect).toBe("allow");
    expect(p.evaluate({ principal: AGENT, target: target("DELETE") }).effect).toBe("deny");
  });
});
