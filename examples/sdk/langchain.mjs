#!/usr/bin/env node
// LangChain.js (`langchain` + `@langchain/openai`) in a guarded agent on a tailnet.
//
//   llm    (tag:llm)    a tailnet node serving a simulated OpenAI API
//   agent  (tag:agent)  a ChatOpenAI model, used as LangChain apps do; the
//                       guard allows gpt-4o-mini and refuses gpt-4o
//
// LangChain retries failed calls with back-off (its AsyncCaller, 6 tries by
// default); a policy denial is final, so it is not retried: the caller gets
// PolicyDeniedError at once.
//
// Run: node examples/sdk/langchain.mjs   (after `npm run build`; `npm run examples:sdk` runs all)
import { ChatOpenAI } from "@langchain/openai";
import { HumanMessage, SystemMessage } from "@langchain/core/messages";
import { startLlmSim } from "../../bench/lib/llm-sim.mjs";
import { startExample } from "./lib/tailnet.mjs";

const policy = {
  tagOwners: { "tag:llm": ["alice@"], "tag:agent": ["alice@"] },
  grants: [{ src: ["tag:agent"], dst: ["tag:llm"], ip: ["tcp:80"] }],
  meshguard: {
    version: 1,
    rules: [
      { id: "llm-api", src: ["tag:agent"], http: { host: ["llm"], port: [80], method: ["POST"], path: ["/v1/**"] } },
      { id: "small-model", src: ["tag:agent"], llm: { model: ["openai/gpt-4o-mini"] } },
    ],
  },
};

const sim = await startLlmSim({ outputTokens: 8 });
const ex = await startExample({
  name: "langchain",
  policy,
  service: { hostname: "llm", tag: "tag:llm", handler: sim.handler },
  agent: { hostname: "agent", tag: "tag:agent" },
  guard: { llm: { providers: { llm: "openai" } } },
});
try {
  const chat = (model) => new ChatOpenAI({ model, apiKey: "sk-not-needed", configuration: { baseURL: "http://llm/v1", fetch: ex.fetch } });
  const messages = [new SystemMessage("Answer in one line."), new HumanMessage("What is a tailnet?")];
  const seen = (model) => () => sim.requests.filter((r) => r.model === model).length;

  await ex.attempt("allowed", "langchain new ChatOpenAI({ model: 'gpt-4o-mini' }).invoke(messages)", async () => `"${(await chat("gpt-4o-mini").invoke(messages)).content}"`, seen("gpt-4o-mini"));
  await ex.attempt("blocked", "langchain new ChatOpenAI({ model: 'gpt-4o' }).invoke(messages)", () => chat("gpt-4o").invoke(messages), seen("gpt-4o"));
} finally {
  await ex.finish();
  await sim.close();
}
