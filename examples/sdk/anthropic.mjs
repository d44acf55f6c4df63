#!/usr/bin/env node
// The official Anthropic SDK (`@anthropic-ai/sdk`) in a guarded agent on a tailnet.
//
//   llm    (tag:llm)    a tailnet node serving a simulated Anthropic Messages
//                       API (the real wire format; nothing leaves 127.0.0.1)
//   agent  (tag:agent)  calls it with the unchanged SDK; the guard allows
//                       claude-haiku-* and refuses every other model
//
// Run: node examples/sdk/anthropic.mjs   (after `npm run build`; `npm run examples:sdk` runs all)
import Anthropic from "@anthropic-ai/sdk";
import { startLlmSim } from "../../bench/lib/llm-sim.mjs";
import { startExample } from "./lib/tailnet.mjs";

const policy = {
  tagOwners: { "tag:llm": ["alice@"], "tag:agent": ["alice@"] },
  grants: [{ src: ["tag:agent"], dst: ["tag:llm"], ip: ["tcp:80"] }],
  meshguard: {
    version: 1,
    rules: [
      { id: "llm-api", src: ["tag:agent"], http: { host: ["llm"], port: [80], method: ["POST"], path: ["/v1/messages"] } },
      { id: "haiku-only", src: ["tag:agent"], llm: { model: ["anthropic/claude-haiku-*"], maxTokens: 1000 } },
    ],
  },
};

const sim = await startLlmSim({ outputTokens: 8 });
const ex = await startExample({
  name: "anthropic",
  policy,
  service: { hostname: "llm", tag: "tag:llm", handler: sim.handler },
  agent: { hostname: "agent", tag: "tag:agent" },
  guard: { llm: { providers: { llm: "anthropic" } } },
});
try {
  const client = new Anthropic({ baseURL: "http://llm", apiKey: "sk-ant-not-needed", fetch: ex.fetch });
  const seen = (model) => () => sim.requests.filter((r) => r.model === model).length;
  const ask = (model) => client.messages.create({ model, max_tokens: 100, messages: [{ role: "user", content: "What is a tailnet?" }] });

  await ex.attempt("allowed", "anthropic messages.create({ model: 'claude-haiku-4-5' })", async () => `"${(await ask("claude-haiku-4-5")).content[0].text}"`, seen("claude-haiku-4-5"));
  await ex.attempt("blocked", "anthropic messages.create({ model: 'claude-opus-4-1' })", () => ask("claude-opus-4-1"), seen("claude-opus-4-1"));
} finally {
  await ex.finish();
  await sim.close();
}
