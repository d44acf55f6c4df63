#!/usr/bin/env node
// The AI gateway in one process, with no provider key and nothing leaving
// 127.0.0.1: a local tailnet (headscale), a simulated OpenAI-compatible
// provider standing in for api.openai.com, the gateway node, and two agent
// nodes calling it with the official openai SDK.
//
//   research-agent (tag:research)  may use gpt-4o-mini: its call is answered
//   intern-agent   (tag:intern)    may use nothing: 403 from the policy
//
// Run (after `npm run build`): node examples/gateway/run.mjs
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import OpenAI from "openai";
import { startLlmSim } from "../../bench/lib/llm-sim.mjs";
import { LocalControl } from "../../dist/control/index.js";
import { startGateway } from "../../dist/gateway/index.js";
import { MeshNode } from "../../dist/index.js";
import { tailnetPart } from "../../dist/policy/index.js";

const PROVIDER_KEY = "sk-example-provider-key"; // the simulated provider's; only the gateway holds it

// One policy file: the tailnet part (who may reach the gateway) and meshguard's part (who may use which model).
const policy = {
  tagOwners: { "tag:ai-gateway": ["alice@"], "tag:research": ["alice@"], "tag:intern": ["alice@"] },
  grants: [{ src: ["tag:research", "tag:intern"], dst: ["tag:ai-gateway"], ip: ["80"] }],
  meshguard: {
    version: 1,
    rules: [{ id: "research-mini", src: ["tag:research"], llm: { model: ["openai/gpt-4o-mini"], maxTokens: 1000 } }],
  },
};

const dir = mkdtempSync(join(tmpdir(), "meshguard-gateway-example-"));
const closers = [];
try {
  const policyFile = join(dir, "policy.hujson");
  writeFileSync(policyFile, JSON.stringify(policy, null, 2));

  const provider = await startLlmSim({ key: PROVIDER_KEY, outputTokens: 8 });
  closers.push(() => provider.close());
  const control = await LocalControl.start({ policy: tailnetPart(JSON.stringify(policy)) });
  closers.push(() => control.close());
  await control.createUser("alice");
  const node = async (hostname, tag) =>
    MeshNode.start({
      controlUrl: control.url,
      hostname,
      authKey: await control.createAuthKey({ tags: [tag], ephemeral: true }),
      dir: join(dir, hostname),
      ephemeral: true,
    });
  const [gwNode, research, intern] = await Promise.all([node("ai-gateway", "tag:ai-gateway"), node("research-agent", "tag:research"), node("intern-agent", "tag:intern")]);
  closers.push(() => gwNode.close(), () => research.close(), () => intern.close());

  const gw = await startGateway({
    config: {
      policy: policyFile,
      dataDir: join(dir, "data"),
      providers: { openai: { baseUrl: `${provider.url}/v1`, format: "openai", key: { env: "OPENAI_API_KEY" }, models: ["gpt-4o-mini", "gpt-4o"] } },
    },
    node: gwNode,
    env: { OPENAI_API_KEY: PROVIDER_KEY },
  });
  closers.push(() => gw.close());
  console.log(`gateway ready at ${gw.url}`);

  // Each agent: the official SDK, a base URL, any key, and its node's fetch (the call goes over the tailnet).
  const client = (n) => new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: "not-a-real-key", maxRetries: 0, fetch: (url, init) => n.fetch(url, init) });

  const answer = await client(research).chat.completions.create({ model: "gpt-4o-mini", max_tokens: 100, messages: [{ role: "user", content: "What is a tailnet?" }] });
  console.log(`research-agent -> gpt-4o-mini: "${answer.choices[0].message.content}" (${answer.usage.total_tokens} tokens)`);
  console.log(`research-agent may list: ${(await client(research).models.list()).data.map((m) => m.id).join(", ")}`);

  try {
    await client(intern).chat.completions.create({ model: "gpt-4o-mini", max_tokens: 100, messages: [{ role: "user", content: "hi" }] });
  } catch (err) {
    console.log(`intern-agent -> gpt-4o-mini: ${err.status} ${err.message}`);
  }

  // The provider saw the gateway's key, never the agents' "not-a-real-key".
  console.log(`the provider saw key: ${provider.requests[0].headers.authorization === `Bearer ${PROVIDER_KEY}` ? "the gateway's" : "something else"}`);

  // Every call is logged with who made it.
  await gw.store.flush();
  for (const r of (await gw.store.queryLogs({})).records.reverse()) {
    console.log(`log: ${r.caller.node} (${r.caller.tags.join(",")}, owner ${r.caller.user}) ${r.operation} ${r.model} -> ${r.status} ${r.outcome}${r.usage ? `, ${r.usage.inputTokens}+${r.usage.outputTokens} tokens` : ""}`);
  }
} finally {
  for (const c of closers.reverse()) await c().catch(() => {});
  rmSync(dir, { recursive: true, force: true });
}
