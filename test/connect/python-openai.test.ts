// Issue 8 item 10, last sentence: a Python program that is not a tailnet
// node — the official `openai` package from PyPI, in a virtual environment
// this test (or test/build.mjs) makes — reaches the AI gateway on the
// tailnet through `meshguard connect`, with nothing but OPENAI_BASE_URL.
// Everything is real but the upstream provider (bench/lib/llm-sim.mjs): the
// gateway holds the provider key, and its log attributes the calls to the
// connect node's identity.
import { execFile } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, expect, it } from "vitest";
import { startLlmSim, type LlmSim } from "../../bench/lib/llm-sim.mjs";
import { connect, type Connection } from "../../src/connect/index.js";
import { startGateway, type GatewayHandle } from "../../src/gateway/index.js";
import type { MeshNode } from "../../src/index.js";
import { startTailnet, type Tailnet } from "../integration/tailnet.js";
import * as py from "./py-openai.mjs";

const SCRIPT = fileURLToPath(new URL("./fixtures/openai_client.py", import.meta.url));
const PROVIDER_KEY = "sk-sim-provider-key-7f3a9c";
const MODEL = "gpt-4o-mini";

/** Why the test cannot run here (python3 cannot make a virtual environment), or undefined. */
const unavailable = py.venvUnavailable();
if (unavailable) console.warn(`python-openai.test.ts skipped: ${unavailable}`);

/** python runs the environment's Python with only `env` (nothing else points the client anywhere: the base URL alone). */
function python(args: string[], env: NodeJS.ProcessEnv): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(py.PY_OPENAI_PYTHON, args, { encoding: "utf8", timeout: 60_000, env }, (err, stdout, stderr) => {
      resolve({ status: err ? ((err as { code?: number }).code ?? null) : 0, stdout, stderr: stderr || String(err ?? "") });
    });
  });
}

let tn: Tailnet;
let sim: LlmSim;
let gatewayNode: MeshNode;
let gw: GatewayHandle;
let conn: Connection;

beforeAll(async () => {
  if (unavailable) return;
  if (!py.ready()) {
    // PyPI is out of reach inside the tests' network namespace.
    if (process.env.MESHGUARD_NETNS === "1") throw new Error(`openai==${py.PY_OPENAI_VERSION} is not in ${py.PY_OPENAI_DIR} and PyPI cannot be reached from this network namespace: run \`node test/build.mjs --only py-openai\` first`);
    py.ensure();
  }
  tn = await startTailnet(false);
  sim = await startLlmSim({ key: PROVIDER_KEY });
  const dir = mkdtempSync(join(tmpdir(), "mg-py-openai-"));
  const policy = join(dir, "policy.hujson");
  writeFileSync(policy, JSON.stringify({ version: 1, rules: [{ id: "agents-small-models", src: ["tag:agent-a"], llm: { model: [`sim/${MODEL}`] } }] }));
  gatewayNode = await tn.start("ai-gateway", { tags: ["tag:service"] });
  gw = await startGateway({
    node: gatewayNode,
    config: { providers: { sim: { baseUrl: `${sim.url}/v1`, format: "openai", key: { env: "SIM_KEY" }, models: [MODEL] } }, policy, dataDir: join(dir, "data") },
    env: { SIM_KEY: PROVIDER_KEY },
  });
  conn = await connect({ controlUrl: tn.control.url, authKey: await tn.key(["tag:agent-a"]), hostname: "py-laptop", forwards: [{ target: "ai-gateway:80" }], log: () => {} });
}, 300_000);

afterAll(async () => {
  await conn?.close();
  await gw?.close();
  await gatewayNode?.close();
  await sim?.close();
  await tn?.control.close();
});

it.skipIf(unavailable !== undefined)(`the openai Python package (${py.PY_OPENAI_VERSION}) calls the gateway through meshguard connect, attributed to the connect node`, async () => {
  const baseUrl = `${conn.forwards[0]!.url}/v1`;
  // Asynchronously: the forward and the gateway run in this process's event loop.
  const r = await python([SCRIPT], { PATH: process.env.PATH ?? "", OPENAI_BASE_URL: baseUrl, MODEL, NO_PROXY: "*" });
  expect(r.status, r.stderr).toBe(0);
  const out = JSON.parse(r.stdout) as { base_url: string; text: string; usage: { prompt: number; completion: number }; stream_chunks: number; stream_text: string; models: string[] };
  expect(out.base_url).toBe(`${baseUrl}/`);
  expect(out.text.length).toBeGreaterThan(0);
  expect(out.usage.completion).toBeGreaterThan(0);
  expect(out.stream_chunks).toBeGreaterThan(1); // streamed, chunk by chunk
  expect(out.stream_text).toBe(out.text); // the simulator's answers are deterministic
  expect(out.models).toContain(MODEL);

  // The provider saw the gateway's key, never the client's.
  const calls = sim.requests.filter((q) => q.operation === "openai.chat");
  expect(calls).toHaveLength(2);
  for (const q of calls) expect(q.headers.authorization).toBe(`Bearer ${PROVIDER_KEY}`);

  // The gateway attributes both calls to the connect node: its name and tags, from the tailnet.
  await gw.store!.flush();
  const { records } = await gw.store!.queryLogs({});
  const chats = records.filter((x) => x.operation === "openai.chat");
  expect(chats).toHaveLength(2);
  for (const rec of chats) {
    expect(rec.caller).toMatchObject({ node: "py-laptop", tags: ["tag:agent-a"], addr: conn.node.ips[0], via: "tailnet" });
    expect(rec.outcome).toBe("ok");
    expect(rec.model).toBe(MODEL);
  }
  expect(chats.map((x) => x.stream).sort()).toEqual([false, true]);
});
