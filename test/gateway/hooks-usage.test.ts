// Usage webhooks against real servers on 127.0.0.1: one event per finished
// request, off the request path, batched, retried, bounded, drained on close.
import { afterEach, describe, expect, it } from "vitest";
import { createHookRunner, type HookFailedError, type HooksConfig } from "../../src/gateway/hooks.js";
import type { UsageEvent } from "../../src/gateway/types.js";
import { hookServer, type Answer, type HookServer } from "./hook-server.js";

const servers: HookServer[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

async function hook(handler: (body: any, n: number) => Answer | Promise<Answer>): Promise<HookServer> {
  const s = await hookServer((r, n) => handler(r.body, n));
  servers.push(s);
  return s;
}

const ok = (): Answer => ({ raw: "" });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function event(i: number): UsageEvent {
  return {
    id: `req-${i}`,
    time: 1_760_000_000_000 + i,
    caller: { node: "research-agent", user: "alice@example.com", tags: ["tag:research"] },
    provider: "openai",
    model: "gpt-4o-mini",
    operation: "openai.chat",
    outcome: "ok",
    usage: { inputTokens: 10 + i, outputTokens: 5, estimated: false },
    costUsd: 0.0001 * i,
    sessionId: "s-1",
  };
}

function runner(cfg: HooksConfig) {
  const errors: HookFailedError[] = [];
  const r = createHookRunner(cfg, { onError: (e) => errors.push(e) });
  return { r, errors };
}

/** Every event id the server received, in arrival order. */
const ids = (s: HookServer) => s.received.flatMap((x) => (x.body.events as UsageEvent[]).map((e) => e.id));

async function until(cond: () => boolean, ms = 5_000) {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error("condition not met in time");
    await sleep(5);
  }
}

describe("usage webhooks", () => {
  it("each finished request is delivered once, in order, as the event the gateway passed", async () => {
    const s = await hook(ok);
    const { r, errors } = runner({ usage: [{ name: "billing", url: s.url, headers: { "x-billing": "1" } }] });
    for (let i = 0; i < 200; i++) r.usage(event(i));
    await r.close();
    expect(ids(s)).toEqual(Array.from({ length: 200 }, (_, i) => `req-${i}`));
    const first = s.received[0]!;
    expect(first.body).toMatchObject({ version: 1, phase: "usage", hook: "billing" });
    expect(first.body.events[0]).toEqual(event(0));
    expect(first.headers["x-billing"]).toBe("1");
    expect(first.headers["x-meshguard-phase"]).toBe("usage");
    expect(errors).toEqual([]);
  });

  it("usage() returns at once, before the hook has answered (never delays the request)", async () => {
    let release!: () => void;
    const gate = new Promise<void>((res) => (release = res));
    const s = await hook(async () => {
      await gate;
      return ok();
    });
    const { r } = runner({ usage: [{ name: "billing", url: s.url }] });
    const t0 = performance.now();
    for (let i = 0; i < 100; i++) r.usage(event(i));
    expect(performance.now() - t0).toBeLessThan(50);
    await until(() => s.received.length === 1);
    release();
    await r.close();
    expect(ids(s)).toHaveLength(100);
  });

  it("events that queue while a POST is in flight go together in the next one, up to batch", async () => {
    let release!: () => void;
    const gate = new Promise<void>((res) => (release = res));
    const s = await hook(async (_b, n) => {
      if (n === 1) await gate;
      return ok();
    });
    const { r } = runner({ usage: [{ name: "billing", url: s.url, batch: 10 }] });
    r.usage(event(0));
    await until(() => s.received.length === 1);
    for (let i = 1; i <= 25; i++) r.usage(event(i));
    release();
    await r.close();
    expect(s.received.map((x) => x.body.events.length)).toEqual([1, 10, 10, 5]);
    expect(ids(s)).toEqual(Array.from({ length: 26 }, (_, i) => `req-${i}`));
  });

  it("a failed POST is retried with backoff and the events arrive once the hook recovers", async () => {
    const s = await hook((_b, n) => (n <= 2 ? { raw: "down", status: 503 } : ok()));
    const { r, errors } = runner({ usage: [{ name: "billing", url: s.url }] });
    r.usage(event(1));
    await r.close(5_000);
    expect(s.received).toHaveLength(3);
    expect(s.received.map((x) => x.body.events[0].id)).toEqual(["req-1", "req-1", "req-1"]);
    // Backoff: the attempts are spread out, not sent back to back.
    expect(s.received[1]!.time - s.received[0]!.time).toBeGreaterThanOrEqual(100);
    expect(s.received[2]!.time - s.received[1]!.time).toBeGreaterThanOrEqual(200);
    expect(errors).toEqual([]);
  });

  it("a hook that never answers is retried after its timeout", async () => {
    const s = await hook((_b, n) => (n === 1 ? { hang: true } : ok()));
    const { r, errors } = runner({ usage: [{ name: "billing", url: s.url, timeout: "200ms" }] });
    r.usage(event(1));
    await r.close(5_000);
    expect(s.received).toHaveLength(2);
    expect(errors).toEqual([]);
  });

  it("after the last retry the events are reported lost; a 4xx other than 408/429 is not retried", async () => {
    const down = await hook(() => ({ raw: "down", status: 500 }));
    const a = runner({ usage: [{ name: "billing", url: down.url, retries: 1 }] });
    a.r.usage(event(1));
    await a.r.close(5_000);
    expect(down.received).toHaveLength(2);
    expect(a.errors).toHaveLength(1);
    expect(a.errors[0]).toMatchObject({ code: "MESHGUARD_HOOK_FAILED", hook: "billing", phase: "usage", failure: "status", status: 500 });
    expect(a.errors[0]!.message).toMatch(/lost 1 event\(s\): 2 attempt\(s\) failed/);

    const refuses = await hook(() => ({ raw: "bad", status: 400 }));
    const b = runner({ usage: [{ name: "billing", url: refuses.url }] });
    b.r.usage(event(1));
    await b.r.close(5_000);
    expect(refuses.received).toHaveLength(1);
    expect(b.errors[0]!.message).toMatch(/lost 1 event\(s\): the hook refused them/);
  });

  it("the queue is bounded: past maxQueue new events are dropped, reported once, then counted", async () => {
    let release!: () => void;
    const gate = new Promise<void>((res) => (release = res));
    const s = await hook(async (_b, n) => {
      if (n === 1) await gate;
      return ok();
    });
    const { r, errors } = runner({ usage: [{ name: "billing", url: s.url, maxQueue: 5 }] });
    for (let i = 0; i < 12; i++) r.usage(event(i));
    expect(errors).toHaveLength(1);
    expect(errors[0]!.message).toMatch(/queue is full \(5 events\)/);
    release();
    await r.close();
    expect(ids(s)).toEqual(["req-0", "req-1", "req-2", "req-3", "req-4"]);
    expect(errors.map((e) => e.message)).toEqual([expect.stringMatching(/queue is full/), expect.stringMatching(/dropped 7 event\(s\) while its queue was full/)]);
  });

  it("close() delivers what is queued before it resolves", async () => {
    const s = await hook(async () => {
      await sleep(30);
      return ok();
    });
    const { r } = runner({ usage: [{ name: "billing", url: s.url, batch: 1 }] });
    for (let i = 0; i < 5; i++) r.usage(event(i));
    await r.close(5_000);
    expect(ids(s)).toHaveLength(5);
  });

  it("close() gives up at its deadline and reports what it could not deliver", async () => {
    const s = await hook(() => ({ hang: true }));
    const { r, errors } = runner({ usage: [{ name: "billing", url: s.url, batch: 2 }] });
    for (let i = 0; i < 5; i++) r.usage(event(i));
    const t0 = Date.now();
    await r.close(300);
    expect(Date.now() - t0).toBeLessThan(1_500);
    // The first usage() starts a POST at once with the one event queued; the other four wait behind it.
    expect(errors.map((e) => e.message)).toEqual([expect.stringMatching(/lost 1 event\(s\): the close deadline passed/), expect.stringMatching(/could not be given 4 event\(s\) before the close deadline/)]);
    // After close, events are refused (reported), not queued forever.
    r.usage(event(9));
    expect(errors.at(-1)!.message).toMatch(/after the gateway closed its hooks/);
  });

  it("every usage hook gets every event; one that is down does not hold back another", async () => {
    const good = await hook(ok);
    const bad = await hook(() => ({ hang: true }));
    const { r } = runner({ usage: [{ name: "billing", url: good.url }, { name: "analytics", url: bad.url }] });
    for (let i = 0; i < 3; i++) r.usage(event(i));
    await until(() => ids(good).length === 3);
    await r.close(100);
    expect(bad.received.length).toBeGreaterThanOrEqual(1);
  });

  it("the event is snapshotted when usage() is called", async () => {
    const s = await hook(ok);
    const { r } = runner({ usage: [{ name: "billing", url: s.url }] });
    const ev = event(1);
    r.usage(ev);
    ev.costUsd = 999;
    await r.close();
    expect(s.received[0]!.body.events[0].costUsd).toBe(0.0001);
  });
});
