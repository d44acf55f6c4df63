// `meshguard gateway` as its own process (the built CLI, dist/: `node
// test/build.mjs` first): `--dev` joins the tailnet of a running `meshguard
// dev`, an agent node on that tailnet calls it with the openai SDK, the
// process guards itself, SIGTERM stops it cleanly — and the provider key
// appears in none of its output.
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import OpenAI from "openai";
import { afterAll, beforeAll, expect, it } from "vitest";
import { spawnCli as cli, type CliProcess } from "../cli-run.js";
import { startLlmSim, type LlmSim } from "../../bench/lib/llm-sim.mjs";
import { MeshNode } from "../../src/index.js";
import { PROVIDER_KEY } from "./gateway-tailnet.js";

const CLI = fileURLToPath(new URL("../../dist/cli/main.js", import.meta.url));


let dir: string;
let sim: LlmSim;
let dev: CliProcess | undefined;
let gw: CliProcess | undefined;
let agent: MeshNode | undefined;

beforeAll(async () => {
  expect(existsSync(CLI), "dist/cli/main.js: build first (node test/build.mjs)").toBe(true);
  dir = mkdtempSync(join(tmpdir(), "mg-gwcli-"));
  sim = await startLlmSim({ key: PROVIDER_KEY, outputTokens: 6 });
});
afterAll(async () => {
  await agent?.close();
  for (const p of [gw, dev]) if (p && p.child.exitCode === null) (p.child.kill("SIGKILL"), await p.exited);
  await sim?.close();
  rmSync(dir, { recursive: true, force: true });
});

it("gateway --dev: joins meshguard dev's tailnet, serves an agent node, guards itself, stops on SIGTERM, prints no key", async () => {
  const env = { MESHGUARD_DEV_STATE: join(dir, "dev.json") };
  dev = cli(["dev", "--json"], env);
  const tailnet = await dev.ready;
  expect(JSON.parse(readFileSync(env.MESHGUARD_DEV_STATE, "utf8"))).toMatchObject({ controlUrl: tailnet.controlUrl, pid: dev.child.pid });

  writeFileSync(join(dir, "policy.hujson"), JSON.stringify({ version: 1, rules: [{ id: "agents", effect: "allow", src: ["tag:agent"], llm: { model: ["openai/*"] } }] }));
  writeFileSync(
    join(dir, "gateway.hujson"),
    `{
  // the gateway of this test
  "policy": "policy.hujson",
  "dataDir": "data",
  "providers": {
    "openai": { "baseUrl": "${sim.url}/v1", "format": "openai", "key": { "env": "SIM_KEY" }, "models": ["gpt-4o-mini"] },
  },
}`,
  );
  gw = cli(["gateway", "--config", join(dir, "gateway.hujson"), "--dev", "--json"], { ...env, SIM_KEY: PROVIDER_KEY });
  const ready = await gw.ready;
  expect(ready).toMatchObject({
    url: "http://ai-gateway",
    providers: [{ name: "openai", format: "openai", models: ["gpt-4o-mini"] }],
    env: { OPENAI_BASE_URL: "http://ai-gateway/v1", ANTHROPIC_BASE_URL: "http://ai-gateway" },
    guard: { kind: "own", origins: [`http://127.0.0.1:${sim.port}`] },
  });
  expect(gw.stderr).toContain("joining the local tailnet of meshguard dev");

  // An agent joins dev's tailnet with the agent key and uses the gateway by its MagicDNS name.
  agent = await MeshNode.start({ controlUrl: tailnet.controlUrl, authKey: tailnet.agentAuthKey, hostname: "cli-agent", dir: join(dir, "agent"), ephemeral: true, timeoutMs: 30_000 });
  const a = agent;
  const oai = new OpenAI({ baseURL: ready.env.OPENAI_BASE_URL, apiKey: "anything", maxRetries: 0, fetch: ((u: string, i: RequestInit) => a.fetch(u, i as never)) as never });
  const r = await oai.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "hi" }] });
  expect(r.choices[0]!.message.content!.split(" ")).toHaveLength(6);
  expect(sim.requests.at(-1)!.headers.authorization).toBe(`Bearer ${PROVIDER_KEY}`);

  gw.child.kill("SIGTERM");
  expect(await gw.exited).toBe(0);
  expect(gw.stderr).toMatch(/stopping \(SIGTERM\)/);
  // The key is in no line the gateway printed, and in no file it wrote.
  expect(gw.stdout + gw.stderr).not.toContain(PROVIDER_KEY);
  const data = join(dir, "data");
  for (const f of readdirSync(data)) expect(readFileSync(join(data, f)).includes(PROVIDER_KEY), f).toBe(false);

  dev.child.kill("SIGTERM");
  expect(await dev.exited).toBe(0);
  expect(existsSync(env.MESHGUARD_DEV_STATE)).toBe(false);
}, 90_000);

it("gateway --dev without a running dev says so (exit 1)", async () => {
  const p = cli(["gateway", "--config", join(dir, "gateway.hujson"), "--dev", "--json"], { MESHGUARD_DEV_STATE: join(dir, "none.json"), SIM_KEY: PROVIDER_KEY });
  expect(await p.exited).toBe(1);
  expect(JSON.parse(p.stdout).error).toMatchObject({ code: "MESHGUARD_CONTROL_UNREACHABLE", message: expect.stringMatching(/no running `meshguard dev`/) });
});
