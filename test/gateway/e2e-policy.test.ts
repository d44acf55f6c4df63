// One policy language (issue 8 item 2): the same policy file gives the same
// allow/deny for the same caller, provider/model and max tokens in the
// in-process guard (the agent calling the provider directly with the
// official SDK) and at the gateway (the agent calling through it over the
// tailnet). Phase one runs the guard in this process and closes it; phase
// two runs the gateway; the two answer lists must agree with each other and
// with what the policy says.
import Anthropic from "@anthropic-ai/sdk";
import OpenAI from "openai";
import { afterAll, beforeAll, expect, it } from "vitest";
import { startLlmSim, type LlmSim } from "../../bench/lib/llm-sim.mjs";
import { deniedCause, installGuard } from "../../src/guard/index.js";
import { loadPolicy, type Principal } from "../../src/policy/index.js";
import { CLIENT_KEY, PROVIDER_KEY, policyFile, startGatewayTailnet, type GatewayTailnet } from "./gateway-tailnet.js";

const MESHGUARD = {
  version: 1,
  rules: [
    // The guard also judges the HTTP request to the provider: the simulated providers are on 127.0.0.1.
    { id: "providers-http", effect: "allow", src: ["*"], http: { host: ["127.0.0.1"] } },
    { id: "a-openai", effect: "allow", src: ["tag:agent-a"], llm: { model: ["openai/*"], maxTokens: 1000 } },
    { id: "a-haiku", effect: "allow", src: ["tag:agent-a"], llm: { model: ["anthropic/claude-haiku-*"] } },
    { id: "no-pro", effect: "deny", src: ["*"], llm: { model: ["*/*-pro*"] } },
    { id: "b-mini", effect: "allow", src: ["tag:agent-b"], llm: { model: ["openai/gpt-4o-mini", "openai/gpt-4o-pro"] } },
  ],
};

type Case = { provider: "openai" | "anthropic"; model: string; maxTokens?: number };
const CASES: Case[] = [
  { provider: "openai", model: "gpt-4o-mini", maxTokens: 100 },
  { provider: "openai", model: "gpt-4o", maxTokens: 1000 },
  { provider: "openai", model: "gpt-4o", maxTokens: 1001 },
  { provider: "openai", model: "gpt-4o" }, // no max tokens: a maxTokens rule cannot tell, so it denies
  { provider: "openai", model: "gpt-4o-pro", maxTokens: 10 },
  { provider: "anthropic", model: "claude-haiku-4-5", maxTokens: 100 },
  { provider: "anthropic", model: "claude-sonnet-4-5", maxTokens: 100 },
];

/** What the policy says, per caller, in CASES order. */
const EXPECTED = {
  "agent-a": ["allow", "allow", "deny", "deny", "deny", "allow", "deny"],
  "agent-b": ["allow", "deny", "deny", "deny", "deny", "deny", "deny"],
};

let openaiSim: LlmSim;
let anthropicSim: LlmSim;
let t: GatewayTailnet;

beforeAll(async () => {
  openaiSim = await startLlmSim({ key: PROVIDER_KEY, outputTokens: 4 });
  anthropicSim = await startLlmSim({ key: PROVIDER_KEY, outputTokens: 4 });
});
afterAll(async () => {
  await t?.close();
  await openaiSim?.close();
  await anthropicSim?.close();
});

type Clients = { openai: OpenAI; anthropic: Anthropic };

async function outcomes(clients: Clients, isDenied: (err: unknown) => boolean): Promise<string[]> {
  const out: string[] = [];
  for (const c of CASES) {
    const messages = [{ role: "user" as const, content: "x" }];
    try {
      if (c.provider === "openai") await clients.openai.chat.completions.create({ model: c.model, messages, ...(c.maxTokens !== undefined ? { max_tokens: c.maxTokens } : {}) });
      else await clients.anthropic.messages.create({ model: c.model, messages, max_tokens: c.maxTokens! });
      out.push("allow");
    } catch (err) {
      if (!isDenied(err)) throw err;
      out.push("deny");
    }
  }
  return out;
}

it("the guard (direct provider calls) and the gateway (over the tailnet) decide every case alike", async () => {
  const text = policyFile(MESHGUARD);
  const policy = loadPolicy(text);
  const port = (u: string) => new URL(u).port;

  // Phase one: the agent is guarded and calls the providers itself (with the provider key, as an unguarded agent would have to).
  const guarded: Record<string, string[]> = {};
  for (const node of ["agent-a", "agent-b"] as const) {
    const identity: Principal = { node, tags: [node === "agent-a" ? "tag:agent-a" : "tag:agent-b"] };
    const guard = installGuard({
      policy,
      identity,
      llm: { providers: { [`127.0.0.1:${port(openaiSim.url)}`]: "openai", [`127.0.0.1:${port(anthropicSim.url)}`]: "anthropic" } },
    });
    try {
      await guard.ready;
      const clients = {
        openai: new OpenAI({ baseURL: `${openaiSim.url}/v1`, apiKey: PROVIDER_KEY, maxRetries: 0 }),
        anthropic: new Anthropic({ baseURL: anthropicSim.url, apiKey: PROVIDER_KEY, maxRetries: 0 }),
      };
      guarded[node] = await outcomes(clients, (err) => deniedCause(err) !== undefined);
    } finally {
      await guard.close();
    }
  }
  const directCalls = openaiSim.totals.requests + anthropicSim.totals.requests;
  openaiSim.reset();
  anthropicSim.reset();

  // Phase two: the same agents, unguarded, through the gateway with the same policy file.
  t = await startGatewayTailnet({
    meshguard: MESHGUARD,
    config: {
      providers: {
        openai: { baseUrl: `${openaiSim.url}/v1`, format: "openai", key: { env: "SIM_PROVIDER_KEY" }, models: ["gpt-*"] },
        anthropic: { baseUrl: anthropicSim.url, format: "anthropic", key: { env: "SIM_PROVIDER_KEY" }, models: ["claude-*"] },
      },
    },
  });
  const viaGateway: Record<string, string[]> = {};
  for (const [name, node] of [["agent-a", t.nodes.agentA], ["agent-b", t.nodes.agentB]] as const) {
    viaGateway[name] = await outcomes({ openai: t.openai(node), anthropic: t.anthropic(node) }, (err) => (err as { status?: number }).status === 403);
  }

  expect(guarded).toEqual(EXPECTED);
  expect(viaGateway).toEqual(EXPECTED);
  // Each allowed call reached a provider once, in either phase; no denied one did.
  const allowed = Object.values(EXPECTED).flat().filter((e) => e === "allow").length;
  expect(directCalls).toBe(allowed);
  expect(openaiSim.totals.requests + anthropicSim.totals.requests).toBe(allowed);
  expect(JSON.stringify(openaiSim.requests.map((r) => r.headers))).not.toContain(CLIENT_KEY);
}, 120_000);
