#!/usr/bin/env node
// The official OpenAI SDK (`openai`) in a guarded agent on a tailnet.
//
//   llm    (tag:llm)    a tailnet node serving a simulated OpenAI API (the
//                       real wire format; no key, nothing leaves 127.0.0.1)
//   agent  (tag:agent)  calls it with the unchanged SDK; the guard checks
//                       every call: gpt-4o-mini is allowed, gpt-4o is not
//
// The blocked call throws meshguard's PolicyDeniedError at once — not the
// SDK's APIConnectionError after its retries — and never reaches the provider.
//
// Run: node examples/sdk/openai.mjs   (after `npm run build`; `npm run examples:sdk` runs all)
import OpenAI from "openai";
import { startLlmSim } from "../../bench/lib/llm-sim.mjs";
import { startExample } from "./lib/tailnet.mjs";

const policy = {
  // The tailnet part (headscale): the agent may reach the provider node on port 80.
  tagOwners: { "tag:llm": ["alice@"], "tag:agent": ["alice@"] },
  grants: [{ src: ["tag:agent"], dst: ["tag:llm"], ip: ["tcp:80"] }],
  // meshguard's part (the agent's guard): the API endpoint, and which models.
  meshguard: {
    version: 1,
    rules: [
      { id: "llm-api", src: ["tag:agent"], http: { host: ["llm"], port: [80], method: ["POST"], path: ["/v1/**"] } },
      { id: "small-model", src: ["tag:agent"], llm: { model: ["openai/gpt-4o-mini"], maxTokens: 1000 } },
    ],
  },
};

const sim = await startLlmSim({ outputTokens: 8 });
const ex = await startExample({
  name: "openai",
  policy,
  service: { hostname: "llm", tag: "tag:llm", handler: sim.handler },
  agent: { hostname: "agent", tag: "tag:agent" },
  guard: { llm: { providers: { llm: "openai" } } },
});
try {
  // The SDK as any app uses it; only its fetch goes over the tailnet (the agent node's).
  const client = new OpenAI({ baseURL: "http://llm/v1", apiKey: "sk-not-needed", fetch: ex.fetch });
  const seen = (model) => () => sim.requests.filter((r) => r.model === model).length;
  const ask = (model) => client.chat.completions.create({ model, max_tokens: 100, messages: [{ role: "user", content: "What is a tailnet?" }] });

  await ex.attempt("allowed", "openai chat.completions.create({ model: 'gpt-4o-mini' })", async () => `"${(await ask("gpt-4o-mini")).choices[0].message.content}"`, seen("gpt-4o-mini"));
  await ex.attempt("blocked", "openai chat.completions.create({ model: 'gpt-4o' })", () => ask("gpt-4o"), seen("gpt-4o"));
} finally {
  await ex.finish();
  await sim.close();
}
