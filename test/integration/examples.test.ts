// The examples are documentation: each must run and do what it says.
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const run = (name: string) => {
  const r = spawnSync(process.execPath, [fileURLToPath(new URL(`../../examples/${name}`, import.meta.url))], { encoding: "utf8", timeout: 60_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
};

describe("examples", () => {
  it("demo: the allowed agent's call succeeds and is attributed, the other is trimmed out", () => {
    const r = run("demo.mjs");
    expect(r.code, r.err).toBe(0);
    expect(r.out).toMatch(/tools: GET \/search\?q=wireguard from research-agent\.mesh\.internal tags=tag:research owners=alice@/);
    expect(r.out).toMatch(/research-agent -> http:\/\/tools\/search: 200/);
    expect(r.out).toMatch(/rogue-agent peers: \(none\)/);
    expect(r.out).toMatch(/rogue-agent -> http:\/\/tools\/search: refused \(MESHGUARD_NO_PEER\)/);
  });

  it("guarded-agent: one allowed call reaches the service, the denied ones do not", () => {
    const r = run("guarded-agent.mjs");
    expect(r.code, r.err).toBe(0);
    expect(r.out).toMatch(/GET \/v2\/transactions\/7: 200/);
    expect(r.out).toMatch(/DELETE \/v2\/transactions\/7: refused — MESHGUARD_POLICY_DENIED/);
    expect(r.out).toMatch(/the billing service saw 1 request\(s\)/);
  });
});
