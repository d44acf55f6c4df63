// The wasm backend under the guard (issue 12, must-have 5): the core's own
// traffic — control over WebSocket, DERP, its HTTP through fetch, all from
// its worker thread — is the library's, not the agent's. A wasm node starts
// under a deny-all policy, comes up, and a peer talks to it over the
// tailnet, while the agent's own calls (a fetch to the control server's
// URL, a tailnet dial) are refused and audited. Both ways the guard can be
// there: installGuard in the main thread, and meshguard's preload in
// NODE_OPTIONS (which every worker re-reads). Each case runs in its own
// process (test/conformance/fixtures/wasm-guarded.mjs, on dist/).
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { MeshNode } from "../../src/index.js";
import { readAll, startTailnet, type Tailnet } from "../integration/tailnet.js";

const FIXTURE = fileURLToPath(new URL("./fixtures/wasm-guarded.mjs", import.meta.url));
const PRELOAD = fileURLToPath(new URL("../../dist/guard/preload.js", import.meta.url));

let tn: Tailnet;
let peer: MeshNode;
const tmp = mkdtempSync(join(tmpdir(), "mg-wasm-guard-"));

beforeAll(async () => {
  expect(existsSync(PRELOAD), "dist/ is missing: run npx tsup (or node test/build.mjs) first").toBe(true);
  tn = await startTailnet(false);
  // This process has no guard: the peer is another party on the tailnet.
  peer = await tn.start("guard-peer", { tags: ["tag:agent-a"], backend: "native" });
}, 60_000);
afterAll(async () => {
  await peer?.close();
  await tn?.control.close();
});

interface Result {
  agent: { fetch: string; dial: string };
  echoed: number;
}

async function guardedWasmNode(mode: "install" | "preload"): Promise<{ result: Result; audit: { outcome: string; request: string }[] }> {
  const audit = join(tmp, `${mode}-audit.jsonl`);
  const policy = join(tmp, "deny-all.json");
  writeFileSync(policy, JSON.stringify({ version: 1, rules: [] }));
  const env: NodeJS.ProcessEnv = { ...process.env, MODE: mode, CTL: tn.control.url, KEY: await tn.key(["tag:service"]), DIR: join(tmp, `${mode}-state`), PEER: "guard-peer", AUDIT: audit };
  delete env.MESHGUARD_BACKEND;
  if (mode === "preload") Object.assign(env, { NODE_OPTIONS: `--require ${PRELOAD}`, MESHGUARD_POLICY: policy, MESHGUARD_AUDIT: audit, MESHGUARD_AS: "tag:service" });
  const child = spawn(process.execPath, [FIXTURE], { env, stdio: ["pipe", "pipe", "pipe"] });
  let stderr = "";
  child.stderr.setEncoding("utf8").on("data", (s: string) => (stderr += s));
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const next = async () => {
    const r = await lines.next();
    if (r.done) throw new Error(`the fixture ended early: ${stderr}`);
    return JSON.parse(r.value) as Record<string, unknown>;
  };
  try {
    const ready = await next();
    expect(ready).toMatchObject({ ready: true, backend: "wasm" });
    // The peer talks to the guarded wasm node over the tailnet (DERP): inbound, and the node's own traffic carries it.
    const sock = await peer.dial(String(ready.ip), 7400);
    const msg = randomBytes(64 * 1024);
    sock.end(msg);
    expect((await readAll(sock)).equals(msg)).toBe(true);
    child.stdin.end("done\n");
    const { result } = (await next()) as { result: Result };
    const events = readFileSync(audit, "utf8")
      .split("\n")
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { outcome: string; request: string });
    return { result, audit: events };
  } finally {
    child.kill();
  }
}

describe("a wasm node under a deny-all guard", () => {
  it.each(["install", "preload"] as const)(
    "guard from %s: the node comes up and a peer talks to it; the agent's fetch to the control URL and its tailnet dial are denied",
    async (mode) => {
      const { result, audit } = await guardedWasmNode(mode);
      expect(result.echoed).toBe(64 * 1024);
      expect(result.agent).toEqual({ fetch: "MESHGUARD_POLICY_DENIED", dial: "MESHGUARD_POLICY_DENIED" });
      // Exactly the agent's two calls were judged (and denied): none of the core's control, DERP or HTTP requests.
      expect(audit.map((e) => e.outcome)).toEqual(["deny", "deny"]);
      expect(audit[0]!.request).toContain(new URL(tn.control.url).port);
      expect(audit[1]!.request).toContain("guard-peer");
    },
    120_000,
  );
});
