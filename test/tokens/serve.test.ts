/**
 * `meshguard tokens serve` in-process against a real headscale: it joins the
 * tailnet, an agent node gets a token from it, the policy file is followed
 * (a change of the token rules changes what is granted; a broken file leaves
 * the last good policy in force), and it stops cleanly on a signal.
 */

import { mkdtempSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { runCli } from "../../src/cli/run.js";
import type { MeshNode } from "../../src/index.js";
import { startTailnet, type Tailnet } from "../integration/tailnet.js";

function io() {
  const out = new PassThrough();
  const err = new PassThrough();
  let o = "";
  let e = "";
  out.on("data", (d) => (o += d));
  err.on("data", (d) => (e += d));
  return { io: { stdout: out, stderr: err }, out: () => o, err: () => e };
}

const policyWith = (locations: string[]) =>
  JSON.stringify({ version: 4, rules: [{ id: "billing", src: ["tag:agent-a"], token: { audience: ["http://billing"], actions: [{ methods: ["GET"], locations }] } }] });

/** Poll until `f` is true or `ms` pass (file reloads are asynchronous). */
async function until(f: () => Promise<boolean>, ms = 10_000): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await f()) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return false;
}

let tn: Tailnet;
let agent: MeshNode;
const dir = mkdtempSync(join(tmpdir(), "mg-tokens-serve-"));

beforeAll(async () => {
  tn = await startTailnet(false);
  agent = await tn.start("agent-a", { tags: ["tag:agent-a"] });
});

afterAll(async () => {
  await agent?.close();
  await tn?.control.close();
});

const ask = async (path: string) => {
  const res = await agent.fetch("http://tokens/token", {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ grant_type: "client_credentials", audience: "http://billing", scope: `http:GET:https://billing${path}` }).toString(),
  });
  return res.status;
};

describe("meshguard tokens serve", () => {
  test("serves tokens on the tailnet, follows the policy file, keeps the last good policy, stops on a signal", async () => {
    const file = join(dir, "policy.json");
    writeFileSync(file, policyWith(["https://billing/v2/*"]));
    const stateDir = join(dir, "state");
    const ac = new AbortController();
    const t = io();
    const running = runCli(["tokens", "serve", "--policy", file, "--control", tn.control.url, "--auth-key", await tn.key(["tag:service"]), "--state-dir", stateDir, "--json"], { ...t.io, signal: ac.signal });
    try {
      expect(await until(async () => t.out().includes("\n"), 30_000)).toBe(true);
      const started = JSON.parse(t.out()) as { issuer: string; keys: string[] };
      expect(started.issuer).toBe("http://tokens");
      expect(started.keys).toHaveLength(1);
      expect(statSync(join(stateDir, "keys", `${started.keys[0]}.json`)).mode & 0o777).toBe(0o600);

      expect(await ask("/v2/x")).toBe(200);
      expect(await ask("/v3/x")).toBe(403);

      writeFileSync(file, policyWith(["https://billing/v3/*"]));
      expect(await until(async () => (await ask("/v3/x")) === 200)).toBe(true);
      expect(await ask("/v2/x")).toBe(403);

      writeFileSync(file, "{ this is not a policy");
      expect(await until(async () => t.err().includes("policy reload failed, the last good policy stays in force"))).toBe(true);
      expect(await ask("/v3/x")).toBe(200);
    } finally {
      ac.abort();
    }
    expect(await running).toBe(0);
    expect(t.err()).toMatch(/stopping \(abort\)/);
  });

  test("usage errors: --policy and --control are required; bad port and durations are named", async () => {
    const a = io();
    expect(await runCli(["tokens", "serve"], a.io)).toBe(2);
    expect(a.err()).toMatch(/expected --policy FILE and --control URL/);
    const b = io();
    expect(await runCli(["tokens", "serve", "--policy", "p", "--control", tn.control.url, "--port", "0"], b.io)).toBe(2);
    expect(b.err()).toMatch(/--port must be 1-65535/);
    const c = io();
    expect(await runCli(["tokens", "serve", "--policy", "p", "--control", tn.control.url, "--max-ttl", "10"], c.io)).toBe(2);
    expect(c.err()).toMatch(/--max-ttl must be a duration/);
  });

  test("stopped before it serves: exit 130, nothing on stdout", async () => {
    const t = io();
    expect(await runCli(["tokens", "serve", "--policy", join(dir, "none.json"), "--control", tn.control.url], { ...t.io, signal: AbortSignal.abort() })).toBe(130);
    expect(t.out()).toBe("");
  });
});
