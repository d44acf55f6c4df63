// Alerts: each rule fires once when its condition holds, not again for the
// same subject within its cool-down, again after it; webhooks on 127.0.0.1
// receive a Slack-compatible `{ text, blocks }` or the JSON alert, with
// retries when they fail; a guard's decision events feed the denials rule.
// The engine's clock is injected, so windows and periods are exact.
import { afterEach, describe, expect, it } from "vitest";
import { alertAuditSink, createAlertEngine, type AlertEngine, type AlertsConfigInput } from "../../src/gateway/index.js";
import { decisionEvent } from "../../src/policy/event.js";
import type { LogRecord } from "../../src/gateway/types.js";
import { record } from "./fixtures-records.js";
import { hookServer, type Answer, type HookServer } from "./hook-server.js";

const MIN = 60_000;
const HOUR = 60 * MIN;

let servers: HookServer[] = [];
let engines: AlertEngine[] = [];
afterEach(async () => {
  await Promise.all(engines.map((e) => e.close(1000)));
  await Promise.all(servers.map((s) => s.close()));
  servers = [];
  engines = [];
});

async function receiver(answer: (n: number) => Answer = () => ({ raw: "ok" })): Promise<HookServer> {
  const s = await hookServer((_r, n) => answer(n), "/alert");
  servers.push(s);
  return s;
}

/** An engine on a clock the test moves; `t.now` is epoch ms. */
function engine(cfg: AlertsConfigInput, errors: Error[] = []) {
  const clock = { now: Date.UTC(2026, 0, 5, 9, 0, 0) };
  const e = createAlertEngine(cfg, { now: () => clock.now, gateway: "ai-gateway", onError: (err) => errors.push(err) });
  engines.push(e);
  return { e, clock };
}

async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("timed out waiting");
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Lets the background delivery run, then checks that nothing more arrived. */
async function settle(): Promise<void> {
  await new Promise((r) => setTimeout(r, 150));
}

function denied(node: string, over: Partial<LogRecord> = {}): LogRecord {
  return record("alice@example.com", 0, { caller: { node, user: "alice@example.com", tags: ["tag:agent"], addr: "100.64.0.9", via: "tailnet" }, outcome: "denied", status: 403, provider: "openai", model: "o3", reason: "denied by policy: no rule allows it", usage: undefined, ...over });
}

describe("repeated policy denials by one identity", () => {
  it("fires once at the Nth denial within the window, is quiet during the cool-down, fires again after it", async () => {
    const hook = await receiver();
    const { e, clock } = engine({ webhooks: [{ name: "ops", url: `${hook.url}/alert`, format: "json" }], rules: [{ name: "denials", kind: "denials", count: 3, window: "10m", cooldown: "1h" }] });
    e.call(denied("agent-a"));
    clock.now += MIN;
    e.call(denied("agent-a"));
    // Another identity's denials do not add up with agent-a's.
    e.call(denied("agent-b"));
    e.call(denied("agent-b"));
    await settle();
    expect(hook.received).toHaveLength(0);
    clock.now += MIN;
    e.call(denied("agent-a"));
    await until(() => hook.received.length === 1);
    const a = hook.received[0]!.body;
    expect(a).toMatchObject({ version: 1, source: "meshguard-gateway", gateway: "ai-gateway", alert: { rule: "denials", kind: "denials", subject: "node:agent-a", severity: "warning" } });
    expect(a.alert.details).toMatchObject({ count: 3, window: "10m", node: "agent-a", user: "alice@example.com", layer: "gateway", lastRequest: "llm openai/o3" });
    expect(a.alert.summary).toContain("agent-a");
    expect(new Date(a.alert.time).getTime()).toBe(clock.now);
    expect(hook.received[0]!.headers["x-meshguard-phase"]).toBe("alert");

    // Three more within the cool-down: de-duplicated.
    for (let i = 0; i < 3; i++) e.call(denied("agent-a"));
    await settle();
    expect(hook.received).toHaveLength(1);
    // Past the cool-down, three more denials fire again.
    clock.now += HOUR;
    for (let i = 0; i < 3; i++) e.call(denied("agent-a"));
    await until(() => hook.received.length === 2);
    expect(e.fired.map((x) => x.subject)).toEqual(["node:agent-a", "node:agent-a"]);
  });

  it("denials spread wider than the window do not fire", async () => {
    const hook = await receiver();
    const { e, clock } = engine({ webhooks: [{ name: "ops", url: `${hook.url}/alert` }], rules: [{ name: "d", kind: "denials", count: 3, window: "10m" }] });
    for (let i = 0; i < 6; i++) {
      e.call(denied("agent-a"));
      clock.now += 6 * MIN;
    }
    await settle();
    expect(hook.received).toHaveLength(0);
  });

  it("a guard's decision events count too (alertAuditSink), per user when the rule says so, and are passed on to the next sink", async () => {
    const hook = await receiver();
    const { e } = engine({ webhooks: [{ name: "ops", url: `${hook.url}/alert` }], rules: [{ name: "guard-denials", kind: "denials", count: 2, per: "user" }] });
    const passed: string[] = [];
    const sink = alertAuditSink(e, { write: (ev) => passed.push(ev.id) });
    const target = { kind: "http" as const, scheme: "https" as const, host: "exfil.example.com", port: 443, method: "POST", path: "/upload", query: "", headers: {} };
    const deny = (node: string) => decisionEvent({ node, user: "bob@example.com", tags: [] }, target, { effect: "deny", reason: "no rule allows it" }, { layer: "fetch", outcome: "deny", latencyUs: 3 });
    const allow = decisionEvent({ node: "bob-laptop", user: "bob@example.com", tags: [] }, target, { effect: "allow", ruleId: "r", reason: "ok" }, { layer: "fetch", outcome: "allow", latencyUs: 3 });
    sink.write(allow);
    sink.write(deny("bob-laptop"));
    sink.write(allow);
    // The same user on another node: one identity per user.
    sink.write(deny("bob-ci"));
    await until(() => hook.received.length === 1);
    expect(hook.received[0]!.body.alert).toMatchObject({ subject: "user:bob@example.com", details: { layer: "fetch", lastRequest: "POST https://exfil.example.com/upload" } });
    expect(passed).toHaveLength(4);
  });
});

describe("a bucket nearly or fully spent", () => {
  const level = (key: string, level: number, refused?: boolean) => ({ key, bucket: key.split("/")[0]!, unit: "usd" as const, level, capacity: 10, ...(refused ? { refused } : {}) });

  it("fires at the threshold (warning) and again when spent (critical), each once per cool-down", async () => {
    const hook = await receiver();
    const { e, clock } = engine({ webhooks: [{ name: "ops", url: `${hook.url}/alert` }], rules: [{ name: "budget", kind: "bucket", percent: 80, buckets: ["daily"], cooldown: "30m" }] });
    e.bucketLevels([level("daily/user:alice@example.com", 5)]);
    e.bucketLevels([level("monthly/user:alice@example.com", 0)]); // not a bucket the rule watches
    await settle();
    expect(hook.received).toHaveLength(0);
    e.bucketLevels([level("daily/user:alice@example.com", 1.5)]);
    e.bucketLevels([level("daily/user:alice@example.com", 1.2)]);
    await until(() => hook.received.length === 1);
    expect(hook.received[0]!.body.alert).toMatchObject({ rule: "budget", kind: "bucket", subject: "daily/user:alice@example.com", severity: "warning", details: { spentPercent: 85, capacity: 10, level: 1.5 } });
    e.bucketLevels([level("daily/user:alice@example.com", 0)]);
    await until(() => hook.received.length === 2);
    expect(hook.received[1]!.body.alert).toMatchObject({ subject: "daily/user:alice@example.com", severity: "critical" });
    e.bucketLevels([level("daily/user:alice@example.com", -0.2)]);
    // Another user's bucket is another subject.
    e.bucketLevels([level("daily/user:bob@example.com", 2, true)]);
    await until(() => hook.received.length === 3);
    expect(hook.received[2]!.body.alert).toMatchObject({ subject: "daily/user:bob@example.com", severity: "critical", details: { refused: true } });
    await settle();
    expect(hook.received).toHaveLength(3);
    clock.now += 31 * MIN;
    e.bucketLevels([level("daily/user:alice@example.com", 0)]);
    await until(() => hook.received.length === 4);
  });
});

describe("upstream error rate per provider", () => {
  const up = (provider: string, status: number) =>
    record("alice@example.com", 0, { provider, status, outcome: status === 200 ? "ok" : status === 502 ? "upstream_unreachable" : "upstream_error", reason: status === 200 ? undefined : `upstream answered ${status}` });

  it("fires when failures pass the rate over the window with enough calls, per provider; client mistakes (400) do not count", async () => {
    const hook = await receiver();
    const { e, clock } = engine({ webhooks: [{ name: "ops", url: `${hook.url}/alert` }], rules: [{ name: "upstream", kind: "upstream_errors", rate: 0.5, window: "5m", minRequests: 6 }] });
    for (let i = 0; i < 4; i++) e.call(up("openai", 200));
    for (let i = 0; i < 6; i++) e.call(up("openai", 400));
    e.call(up("openai", 500));
    e.call(up("openai", 429));
    e.call(up("openai", 502));
    // anthropic fails every time but has too few calls.
    for (let i = 0; i < 5; i++) e.call(up("anthropic", 503));
    await settle();
    expect(hook.received).toHaveLength(0); // openai: 3 failures of 13 calls
    // Later in the window the successes slide out.
    clock.now += 4 * MIN;
    e.call(up("openai", 503));
    e.call(up("openai", 503));
    e.call(up("openai", 503));
    await settle();
    expect(hook.received).toHaveLength(0); // 6 of 16
    clock.now += 2 * MIN; // the first calls (at 0) are out of the 5-minute window
    e.call(up("openai", 504));
    e.call(up("openai", 500));
    await settle();
    expect(hook.received).toHaveLength(0); // 5 of 5, but fewer calls than minRequests
    e.call(up("openai", 500));
    await until(() => hook.received.length === 1);
    const a = hook.received[0]!.body.alert;
    expect(a).toMatchObject({ rule: "upstream", subject: "openai", details: { provider: "openai", calls: 6, errors: 6, window: "5m", lastError: "500 upstream answered 500" } });
    // De-duplicated while it keeps failing.
    for (let i = 0; i < 10; i++) e.call(up("openai", 500));
    await settle();
    expect(hook.received).toHaveLength(1);
  });
});

describe("usage far above an identity's usual", () => {
  const used = (user: string, tokens: number) => record(user, 0, { usage: { inputTokens: tokens, outputTokens: 0, estimated: false }, caller: { node: "n", user, tags: [], addr: "127.0.0.1", via: "loopback" } });

  it("learns an hourly usual (silent hours count), fires above factor × usual after the warm-up, once per cool-down", async () => {
    const hook = await receiver();
    const { e, clock } = engine({ webhooks: [{ name: "ops", url: `${hook.url}/alert` }], rules: [{ name: "spike", kind: "usage_spike", factor: 4, period: "1h", warmup: 3, minTokens: 100, smoothing: 0.5, cooldown: "1h" }] });
    // A big first hour is no alert: no history yet.
    e.call(used("alice@example.com", 50_000));
    for (let h = 1; h <= 3; h++) {
      clock.now += HOUR;
      e.call(used("alice@example.com", 1000));
    }
    // History: 50000, 1000, 1000 → usual 50000 → 25500 → 13250; this hour 1000 so far.
    await settle();
    expect(hook.received).toHaveLength(0);
    clock.now += HOUR; // closes 1000: usual 7125
    e.call(used("alice@example.com", 28_000));
    await settle();
    expect(hook.received).toHaveLength(0); // 28000 ≤ 4 × 7125
    e.call(used("alice@example.com", 1000));
    await until(() => hook.received.length === 1);
    expect(hook.received[0]!.body.alert).toMatchObject({ rule: "spike", subject: "user:alice@example.com", details: { tokens: 29_000, usual: 7125, factor: 4, periodsOfHistory: 4 } });
    e.call(used("alice@example.com", 10_000));
    // bob has no history: never fires.
    e.call(used("bob@example.com", 1_000_000));
    await settle();
    expect(hook.received).toHaveLength(1);
  });
});

describe("delivery", () => {
  it("Slack format: { text, blocks } with the summary escaped; retried when the webhook fails", async () => {
    const hook = await receiver((n) => (n === 1 ? { status: 503 } : { raw: "ok" }));
    const errors: Error[] = [];
    const { e } = engine({ webhooks: [{ name: "slack", url: `${hook.url}/alert`, format: "slack" }], rules: [{ name: "d", kind: "denials", count: 1 }] }, errors);
    e.call(denied("<!channel>&co"));
    await until(() => hook.received.length === 2, 10_000);
    const body = hook.received[1]!.body;
    expect(Object.keys(body).sort()).toEqual(["blocks", "text"]);
    expect(body.text).toContain("&lt;!channel&gt;&amp;co");
    expect(body.text).not.toContain("<!channel>");
    expect(body.blocks[0]).toMatchObject({ type: "section", text: { type: "mrkdwn" } });
    expect(body.blocks[1].type).toBe("context");
    expect(body.blocks[1].elements[0].text).toContain("gateway ai-gateway");
    expect(hook.received[0]!.body).toEqual(body);
    await settle();
    expect(errors).toEqual([]);
  });

  it("a rule sends only to the webhooks it names", async () => {
    const a = await receiver();
    const b = await receiver();
    const { e } = engine({
      webhooks: [
        { name: "a", url: `${a.url}/alert` },
        { name: "b", url: `${b.url}/alert`, format: "slack" },
      ],
      rules: [
        { name: "only-b", kind: "denials", count: 1, webhooks: ["b"] },
        { name: "both", kind: "bucket" },
      ],
    });
    e.call(denied("agent-a"));
    e.bucketLevels([{ key: "daily/global", bucket: "daily", unit: "tokens", level: 0, capacity: 100 }]);
    await until(() => a.received.length === 1 && b.received.length === 2);
    expect(a.received[0]!.body.alert.rule).toBe("both");
  });

  it("a webhook that keeps failing is reported, with the alert webhook named", async () => {
    const hook = await receiver(() => ({ status: 404 }));
    const errors: Error[] = [];
    const { e } = engine({ webhooks: [{ name: "broken", url: `${hook.url}/alert`, retries: 0 }], rules: [{ name: "d", kind: "denials", count: 1 }] }, errors);
    e.call(denied("agent-a"));
    await until(() => errors.length === 1);
    expect(errors[0]!.message).toMatch(/alert webhook "broken" lost 1 event/);
    expect((errors[0] as { code?: string }).code).toBe("MESHGUARD_HOOK_FAILED");
  });
});

describe("config", () => {
  it("refuses rules naming missing webhooks, duplicate names, unknown kinds and bad durations, each by path", () => {
    const webhooks = [{ name: "ops", url: "http://127.0.0.1:9/x" }];
    const refs = () =>
      createAlertEngine({
        webhooks,
        rules: [
          { name: "a", kind: "denials", webhooks: ["pager"] },
          { name: "a", kind: "bucket" },
        ],
      });
    expect(refs).toThrow(/alerts\.rules\.0\.webhooks\.0: no webhook is named "pager"/);
    expect(refs).toThrow(/alerts\.rules\.1\.name: "a" is used twice/);
    const fields = () =>
      createAlertEngine({
        webhooks,
        rules: [
          { name: "b", kind: "bucket", percent: 120 },
          { name: "c", kind: "upstream_errors", window: "5 minutes" },
          { name: "d", kind: "nope" },
        ] as never,
      });
    expect(fields).toThrow(/alerts\.rules\.0\.percent: must be at most 100/);
    expect(fields).toThrow(/alerts\.rules\.1\.window: must be a duration/);
    expect(fields).toThrow(/alerts\.rules\.2\.kind: kind must be "denials", "bucket", "upstream_errors" or "usage_spike"/);
    expect(() => createAlertEngine({ webhooks: [{ name: "x", url: "http://127.0.0.1:9/", format: "teams" as never }] })).toThrow(/format: must be "slack"/);
    expect(() => createAlertEngine({ webhooks: [{ name: "x", url: "http://127.0.0.1:9/", headers: { authorization: "env:MG_TEST_UNSET_ALERT_TOKEN" } }] })).toThrow(/alerts\.webhooks\[0\]\.headers\.authorization: environment variable MG_TEST_UNSET_ALERT_TOKEN is not set/);
  });
});
