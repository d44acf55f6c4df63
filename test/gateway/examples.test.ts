// The gateway's examples are documentation: the config and policy load, and
// the runnable example (dist/: build first) does what its header says.
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { expect, it } from "vitest";
import { parseGatewayConfig } from "../../src/gateway/index.js";
import { loadPolicy } from "../../src/policy/index.js";

const example = (name: string) => fileURLToPath(new URL(`../../examples/gateway/${name}`, import.meta.url));

it("examples/gateway: the config and its policy (with its tests) load", () => {
  const cfg = parseGatewayConfig(readFileSync(example("gateway.hujson"), "utf8"), { file: example("gateway.hujson") });
  expect(cfg.policy).toBe(example("policy.hujson"));
  expect(Object.keys(cfg.providers)).toEqual(["openai"]);
  const policy = loadPolicy(readFileSync(cfg.policy, "utf8"));
  expect(policy.gateway?.buckets).toEqual(["daily"]);
  expect(Object.keys(cfg.quotas ?? {})).toEqual(expect.arrayContaining([...policy.gateway!.buckets]));
});

it("docs/gateway.md: its config and policy examples load", () => {
  const doc = readFileSync(fileURLToPath(new URL("../../docs/gateway.md", import.meta.url)), "utf8");
  const blocks = [...doc.matchAll(/```jsonc\n([\s\S]*?)```/g)].map((m) => m[1]!);
  const config = blocks.find((b) => b.includes('"providers"'))!;
  const cfg = parseGatewayConfig(config, { file: "/etc/meshguard/gateway.hujson" });
  expect(Object.keys(cfg.providers)).toEqual(["openai", "anthropic", "gemini", "local"]);
  const policy = loadPolicy(blocks.find((b) => b.includes('"meshguard"'))!);
  expect(policy.version).toBe(3);
  expect(policy.gateway?.buckets).toEqual(["daily"]);
});

it("examples/gateway/run.mjs: the allowed agent is answered, the other refused, the provider saw only the gateway's key", () => {
  const r = spawnSync(process.execPath, [example("run.mjs")], { encoding: "utf8", timeout: 90_000 });
  expect(r.status, r.stderr).toBe(0);
  expect(r.stdout).toMatch(/gateway ready at http:\/\/ai-gateway/);
  expect(r.stdout).toMatch(/research-agent -> gpt-4o-mini: "(\w+ ?){8}" \(\d+ tokens\)/);
  expect(r.stdout).toMatch(/research-agent may list: gpt-4o-mini\n/);
  expect(r.stdout).toMatch(/intern-agent -> gpt-4o-mini: 403 .*denied by policy/);
  expect(r.stdout).toMatch(/the provider saw key: the gateway's/);
  expect(r.stdout).toMatch(/log: research-agent \(tag:research, owner alice@?\) openai\.chat gpt-4o-mini -> 200 ok, \d+\+8 tokens/);
  expect(r.stdout).toMatch(/log: intern-agent \(tag:intern, owner alice@?\) openai\.chat gpt-4o-mini -> 403 denied/);
}, 120_000);
