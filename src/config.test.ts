import { describe, expect, it } from "vitest";
import { configSchemas, knobsFor, quickStartOptions, resolveStartOptions } from "./config.js";
import { memoryStateStore } from "./state-store.js";
import { MeshguardError } from "./errors.js";

const ok = { controlUrl: "http://127.0.0.1:8080", hostname: "agent-1" };

function message(input: unknown): string {
  try {
    resolveStartOptions(input);
  } catch (e) {
    expect(e).toBeInstanceOf(MeshguardError);
    expect((e as MeshguardError).code).toBe("MESHGUARD_INVALID_OPTIONS");
    return (e as Error).message;
  }
  throw new Error("expected a rejection");
}

describe("start options", () => {
  it("fills defaults", () => {
    const o = resolveStartOptions(ok);
    expect(o.ephemeral).toBe(false);
    expect(o.timeoutMs).toBe(60_000);
    expect(o.dir).toContain("agent-1");
  });

  it.each([
    [{ ...ok, controlUrl: "127.0.0.1:8080" }, "controlUrl"],
    [{ ...ok, hostname: "Agent_1" }, "hostname"],
    [{ ...ok, hostname: "-x" }, "hostname"],
    [{ ...ok, tags: ["research"] }, "tags.0"],
    [{ ...ok, timeoutMs: -1 }, "timeoutMs"],
    [{ ...ok, authKey: "" }, "authKey"],
    [{ ...ok, onProgress: 3 }, "onProgress"],
    [{ ...ok, hostnmae: "typo" }, "hostnmae"],
    [null, "controlUrl"],
    ["nonsense", "(options)"],
  ])("rejects %j naming %s", (input, field) => {
    expect(message(input)).toContain(field);
  });

  it("keeps every node off Tailscale's public services, more so for a loopback control", () => {
    expect(knobsFor("https://headscale.example.net")).toMatchObject({ TS_NO_LOGS_NO_SUPPORT: "true", TS_DISABLE_PORTMAPPER: "1" });
    expect(knobsFor("https://headscale.example.net").TS_DEBUG_USE_DERP_HTTP).toBeUndefined();
    expect(knobsFor("http://127.0.0.1:1")).toMatchObject({ TS_DEBUG_USE_DERP_HTTP: "1", TS_PANIC_IF_HIT_MAIN_CONTROL: "1", TS_ASSUME_NETWORK_UP_FOR_TEST: "1" });
  });
});

describe("quickStartOptions (the zod-free path of MeshNode.start)", () => {
  // Every value a start option might be given: valid ones of each key, and
  // the wrong kinds. Each key is tried with each value on top of a valid base,
  // and pairs of keys too: wherever quickStartOptions answers, zod must have
  // accepted the same options and returned the same object; everything it
  // does not answer goes to zod (and zod's messages).
  const store = memoryStateStore();
  const signal = new AbortController().signal;
  const fn = () => {};
  const values: unknown[] = [
    undefined, null, true, false, 0, -0, 1, 1.5, -1, 60_000, 600_000, 600_001, NaN, Infinity, "", "x", "http://127.0.0.1:8080", "https://h.example:443/p",
    "127.0.0.1:8080", "http:// x", "agent-1", "Agent_1", "-x", "a".repeat(63), "a".repeat(64), "auto", "native", "wasm", "other", "/tmp/s.sock",
    [], ["tag:a"], ["tag:a", "tag:b-c_d"], ["research"], [1], [undefined], new Array(2), Object.assign(["tag:a"], { extra: 1 }), {}, { "tag:a": ["u@"] },
    { "group:g": ["u@"] }, { ca: "x" }, Buffer.from("x"), store, { get: fn }, fn, signal, new (class {})(), Object.create(null), new String("x"), Symbol("s"),
  ];
  const keys = ["controlUrl", "authKey", "hostname", "dir", "ephemeral", "state", "tags", "timeoutMs", "tagOwners", "groups", "verbose", "addonPath", "backend", "controlSocket", "tls", "onProgress", "signal", "hostnmae", "__proto__"];
  const base = { controlUrl: "http://127.0.0.1:8080", hostname: "agent-1" };
  const inputs: unknown[] = [base, { ...base, authKey: "k", dir: "/d", ephemeral: true, timeoutMs: 45_000 }, {}, { controlUrl: base.controlUrl }, Object.assign(Object.create(null), base), Object.assign(new (class {})(), base), ...values];
  for (const k of keys) {
    for (const v of values) {
      inputs.push({ ...base, [k]: v });
      const without: Record<string, unknown> = { ...base, [k]: v };
      delete without.hostname;
      inputs.push(without);
    }
  }
  for (const k1 of keys) for (const k2 of keys) if (k1 < k2) for (const v of [true, "x", 1, ["tag:a"], store, fn, signal]) inputs.push({ ...base, [k1]: v, [k2]: v });
  inputs.push(JSON.parse('{"controlUrl":"http://127.0.0.1:1","hostname":"a","__proto__":{"x":1}}'));

  it("answers only what zod accepts, with what zod returns", () => {
    const { StartOptionsSchema } = configSchemas();
    let answered = 0;
    for (const input of inputs) {
      const quick = quickStartOptions(input);
      if (quick === undefined) continue;
      answered++;
      const z = StartOptionsSchema.safeParse(input);
      expect(z.success, `zod refused what quickStartOptions accepted: ${String(input && Object.keys(input))}`).toBe(true);
      expect(quick).toStrictEqual(z.data);
      if (Array.isArray((input as { tags?: unknown }).tags)) expect(quick.tags).not.toBe((input as { tags: unknown }).tags);
    }
    expect(answered).toBeGreaterThan(100);
  });

  it("answers the common options (so a node's start loads no zod)", () => {
    expect(quickStartOptions({ controlUrl: "http://127.0.0.1:8080", authKey: "k", dir: "/d", hostname: "agent-1", ephemeral: true, timeoutMs: 45_000 })).toBeDefined();
    expect(quickStartOptions({ controlUrl: "http://127.0.0.1:8080", hostname: "agent-1", state: memoryStateStore(), tags: ["tag:agent"], onProgress: () => {}, signal: AbortSignal.timeout(1000) })).toBeDefined();
  });
});
