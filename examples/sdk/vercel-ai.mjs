#!/usr/bin/env node
// The Vercel AI SDK (`ai` with `@ai-sdk/openai`) in a guarded agent on a tailnet.
//
//   llm    (tag:llm)    a tailnet node serving a simulated OpenAI API (the
//                       Responses API the provider uses by default, streamed)
//   agent  (tag:agent)  streamText() through the unchanged SDK; the guard
//                       allows gpt-4o-mini and refuses gpt-4o
//
// Run: node examples/sdk/vercel-ai.mjs   (after `npm run build`; `npm run examples:sdk` runs all)
import { createOpenAI } from "@ai-sdk/openai";
import { generateText, streamText } from "ai";
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
  name: "vercel-ai",
  policy,
  service: { hostname: "llm", tag: "tag:llm", handler: sim.handler },
  agent: { hostname: "agent", tag: "tag:agent" },
  guard: { llm: { providers: { llm: "openai" } } },
});
try {
  const openai = createOpenAI({ baseURL: "http://llm/v1", apiKey: "sk-not-needed", fetch: ex.fetch });
  const seen = (model) => () => sim.requests.filter((r) => r.model === model).length;

  await ex.attempt(
    "allowed",
    "ai streamText({ model: openai('gpt-4o-mini') })",
    async () => {
      const result = streamText({ model: openai("gpt-4o-mini"), prompt: "What is a tailnet?" });
      let text = "";
      for await (const part of result.textStream) text += part;
      return `"${text}" (streamed)`;
    },
    seen("gpt-4o-mini"),
  );
  await ex.attempt("blocked", "ai generateText({ model: openai('gpt-4o') })", () => generateText({ model: openai("gpt-4o"), prompt: "What is a tailnet?" }), seen("gpt-4o"));
} finally {
  await ex.finish();
  await sim.close();
}
