// Network safety (DESIGN.md): under CI the tests must run in a fresh network
// namespace that holds only loopback, so no node can reach anything else.
import { networkInterfaces } from "node:os";
import { describe, expect, it } from "vitest";

const isRoot = typeof process.getuid === "function" && process.getuid() === 0;

describe("network namespace", () => {
  it.runIf(process.env.CI === "true" || (isRoot && process.env.MESHGUARD_NETNS === "1"))("only loopback is reachable", () => {
    expect(process.env.MESHGUARD_NETNS, "tests must be started through test/netns.mjs").toBe("1");
    const names = Object.keys(networkInterfaces());
    expect(names).toEqual(["lo"]);
    for (const addr of networkInterfaces().lo ?? []) expect(addr.internal).toBe(true);
  });
});
