import { describe, expect, it } from "vitest";
import { knobsFor, resolveStartOptions } from "./config.js";
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
