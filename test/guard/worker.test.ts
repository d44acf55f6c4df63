/**
 * Worker threads started after installGuard are guarded like the thread that
 * started them (src/guard/worker.ts, src/guard/preload.ts): same policy,
 * reloads, identity, audit; a worker that cannot be guarded does not start.
 * Each case runs test/guard/fixtures/worker-guard.mjs in its own process
 * (real worker threads need the built package: dist/), which counts the hits
 * on two local servers: "denied" must stay at zero, "allowed" gets its hit.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, test } from "vitest";

const FIXTURE = fileURLToPath(new URL("./fixtures/worker-guard.mjs", import.meta.url));
const DIST = fileURLToPath(new URL("../../dist/guard/preload.js", import.meta.url));
const tmp = mkdtempSync(join(tmpdir(), "meshguard-worker-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

interface Call {
  url: string;
  status?: number;
  error?: string;
}

function scenario(name: string, ...args: string[]): Record<string, unknown> & { hits: { allowed: number; denied: number } } {
  expect(existsSync(DIST), "dist/ is missing: run node test/build.mjs first").toBe(true);
  const r = spawnSync(process.execPath, [FIXTURE, name, ...args], { encoding: "utf8", timeout: 60_000 });
  expect(r.status, `${name}: ${r.stderr}`).toBe(0);
  return JSON.parse(r.stdout) as ReturnType<typeof scenario>;
}

describe("worker threads under the guard", () => {
  test("a worker's fetch to a denied server is refused (zero hits); the allowed one gets its hit; its decisions reach the parent's listeners", () => {
    const r = scenario("fetch");
    const calls = r.calls as Call[];
    expect(calls[0]!.error).toBe("MESHGUARD_POLICY_DENIED");
    expect(calls[1]).toMatchObject({ status: 200, body: "ok" });
    expect(calls[2]!.error).toBe("MESHGUARD_POLICY_DENIED");
    expect(r.hits).toEqual({ allowed: 1, denied: 0 });
    expect((r.decisions as string[]).map((d) => d.split(" ")[0])).toEqual(["deny", "allow", "deny"]);
  });

  test("AI gateways registered with the guard reach its workers: a connector call is judged on the upstream URL there too", () => {
    const r = scenario("gateway");
    const calls = r.calls as Call[];
    expect(calls[0]).toMatchObject({ status: 200 });
    expect(calls[1]!.error).toBe("MESHGUARD_POLICY_DENIED");
    expect(r.hits).toEqual({ allowed: 1, denied: 0 });
  });

  test("setPolicy in the parent reaches a running worker, both ways", () => {
    const r = scenario("reload");
    expect((r.before as Call[])[0]!.error).toBe("MESHGUARD_POLICY_DENIED");
    expect((r.after as Call[])[0]!.status).toBe(200);
    expect((r.again as Call[])[0]!.error).toBe("MESHGUARD_POLICY_DENIED");
    // No hit before the reload; hits only while the wider policy was in force.
    expect(r.deniedHitsBefore).toBe(0);
    expect(r.hits.denied).toBeGreaterThanOrEqual(1);
  });

  test("a worker from a file with its own execArgv and env, and the worker it starts, are guarded from their first line", () => {
    const r = scenario("file-worker");
    expect(r.calls).toMatchObject({
      isMainThread: false,
      denied: "MESHGUARD_POLICY_DENIED",
      allowed: 200,
      // The preload was put in front of the worker's NODE_OPTIONS and taken out again.
      NODE_OPTIONS: "--no-warnings",
      nested: { denied: "MESHGUARD_POLICY_DENIED", allowed: 200, NODE_OPTIONS: "--no-warnings" },
    });
    expect(r.hits).toEqual({ allowed: 2, denied: 0 });
  });

  test("a worker that cannot be guarded throws MESHGUARD_GUARD_WORKER_UNGUARDED at construction and does not start", () => {
    const r = scenario("unguardable");
    const errors = r.errors as Record<string, string>;
    for (const [what, err] of Object.entries(errors)) expect(err, what).toMatch(/^MESHGUARD_GUARD_WORKER_UNGUARDED: new Worker: .*the worker was not started$/);
    expect(Object.keys(errors)).toEqual(["custom evaluator", "execArgv --experimental-loader", "execArgv --allow-child-process", "NODE_OPTIONS --experimental-loader"]);
    // The custom evaluator allowed everything: had a worker started, the denied server would have a hit.
    expect((r.calls as Call[]).map((c) => c.status ?? c.error)).toEqual(["MESHGUARD_POLICY_DENIED", 200]);
    expect(r.hits).toEqual({ allowed: 1, denied: 0 });
  });

  test("audit: a worker appends its decisions to the parent's audit file", () => {
    const file = join(tmp, "audit.jsonl");
    const r = scenario("audit", file);
    expect(r.hits.denied).toBe(0);
    const lines = readFileSync(file, "utf8").trim().split("\n").map((l) => JSON.parse(l) as { outcome: string; request: string; principal: { tags: string[] } });
    // The denial is written before the worker's caller sees it (an allow may wait in the worker's batch).
    expect(lines.find((l) => l.outcome === "deny")).toMatchObject({ principal: { tags: ["tag:agent"] } });
  });

  test("audit: with a sink that is not a file the worker's events come back to it", () => {
    const r = scenario("audit-forward");
    expect((r.forwarded as string[]).map((d) => d.split(" ")[0])).toEqual(["deny", "allow"]);
  });

  test("approve rules: the parent's approval callback answers for the worker", () => {
    const r = scenario("approve");
    expect((r.calls as Call[]).map((c) => c.status ?? c.error)).toEqual([200, "MESHGUARD_POLICY_DENIED"]);
    expect((r.asked as string[]).length).toBe(2);
    expect(r.hits.denied).toBe(1);
  });

  test("close() uninstalls a running worker's guard and gives back Node's Worker (positive control: the same worker code reaches the denied server)", () => {
    const r = scenario("closed");
    expect((r.before as Call[])[0]!.error).toBe("MESHGUARD_POLICY_DENIED");
    expect((r.running as Call[])[0]!.status).toBe(200);
    expect((r.calls as Call[])[0]!.status).toBe(200);
    expect(r.hits.denied).toBe(2);
  });
});
