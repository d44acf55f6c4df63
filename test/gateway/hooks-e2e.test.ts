// Hooks end to end: the official openai SDK on a tailnet node calls the
// gateway node, which calls real webhook servers and the simulated provider.
// What the hooks do is seen where a user would see it: in what the provider
// received, in what the SDK returns or raises, and in the usage events.
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import OpenAI from "openai";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { startLlmSim, type LlmSim } from "../../bench/lib/llm-sim.mjs";
import type { HookFailedError } from "../../src/gateway/hooks.js";
import { startGateway, type GatewayHandle } from "../../src/gateway/index.js";
import type { MeshNode } from "../../src/index.js";
import { startTailnet, type Tailnet } from "../integration/tailnet.js";
import { hookServer, type HookServer } from "./hook-server.js";

const PROVIDER_KEY = "sk-provider-e2e-0123456789";
const CLIENT_KEY = "sk-client-e2e-9876543210";
const REDACTED = "[answer redacted by the secrets hook]";

let tailnet: Tailnet;
let sim: LlmSim;
let gwNode: MeshNode;
let client: MeshNode;
let gw: GatewayHandle;
let oai: OpenAI;
let pii: HookServer, launch: HookServer, slow: HookServer, secrets: HookServer, billing: HookServer;
const hookErrors: HookFailedError[] = [];

/** The text of the last user message of a chat body. */
const lastUser = (body: any): string => body.request.body.messages.at(-1).content;

beforeAll(async () => {
  sim = await startLlmSim({ key: PROVIDER_KEY, outputTokens: 8 });
  // pre 1: replaces card numbers in every message.
  pii = await hookServer((r) => {
    const body = r.body.request.body;
    const messages = body.messages.map((m: any) => ({ ...m, content: String(m.content).replace(/\b(?:\d{4} ){3}\d{4}\b/g, "[card]") }));
    return { json: { action: "modify", body: { ...body, messages } } };
  });
  // pre 2: blocks prompts about launch codes (and sees what pii left).
  launch = await hookServer((r) => (/launch codes/.test(lastUser(r.body)) ? { json: { action: "block", status: 422, message: "prompts about launch codes are not allowed" } } : { json: { action: "allow" } }));
  // pre 3: only for gpt-4o-slow*, never answers.
  slow = await hookServer(() => ({ hang: true }));
  // post: only for gpt-4o-secret* (its models filter), replaces the answer's text.
  secrets = await hookServer((r) => {
    const body = r.body.response.body;
    return { json: { action: "redact", body: { ...body, choices: body.choices.map((c: any) => ({ ...c, message: { ...c.message, content: REDACTED } })) } } };
  });
  billing = await hookServer(() => ({ raw: "" }));

  tailnet = await startTailnet();
  [gwNode, client] = await Promise.all([tailnet.start("ai-gateway", { tags: ["tag:service"] }), tailnet.start("agent-a", { tags: ["tag:agent-a"] })]);

  const dir = mkdtempSync(join(tmpdir(), "mg-hooks-e2e-"));
  const policy = join(dir, "policy.hujson");
  writeFileSync(policy, JSON.stringify({ version: 3, rules: [{ id: "agents", src: ["tag:agent-a"], llm: { model: ["openai/gpt-4o*"] } }] }));
  gw = await startGateway({
    config: {
      providers: { openai: { baseUrl: `${sim.url}/v1`, format: "openai", key: { env: "E2E_OPENAI_KEY" }, models: ["gpt-4o*"] } },
      policy,
      dataDir: join(dir, "data"),
      hooks: {
        pre: [
          { name: "pii", url: pii.url },
          { name: "launch", url: launch.url },
          { name: "slow", url: slow.url, timeout: "300ms", models: ["openai/gpt-4o-slow*"] },
        ],
        post: [{ name: "secrets", url: secrets.url, models: ["openai/gpt-4o-secret*"] }],
        usage: [{ name: "billing", url: billing.url }],
      },
    },
    env: { E2E_OPENAI_KEY: PROVIDER_KEY },
    node: gwNode,
    onWarning: (e) => {
      if ((e as HookFailedError).code === "MESHGUARD_HOOK_FAILED") hookErrors.push(e as HookFailedError);
    },
  });
  oai = new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: CLIENT_KEY, maxRetries: 0, fetch: ((input: string, init: object) => client.fetch(input, init as never)) as unknown as typeof fetch });
}, 120_000);

afterAll(async () => {
  await gw?.close();
  await Promise.all([client?.close(), gwNode?.close()]);
  await tailnet?.control.close();
  await Promise.all([sim, pii, launch, slow, secrets, billing].map((s) => s?.close()));
});

beforeEach(() => {
  sim.reset();
  hookErrors.length = 0;
});

describe("hooks through the gateway, with the official openai SDK over the tailnet", () => {
  it("a pre hook's modified body is what the provider receives; the hook saw the caller's tailnet identity and no key", async () => {
    const before = pii.received.length;
    const a = await oai.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "charge my card 4111 1111 1111 1111 please" }] });
    expect(a.choices[0]!.message.content).toBeTruthy();
    expect(sim.requests).toHaveLength(1);
    expect(sim.requests[0]!.body.messages).toEqual([{ role: "user", content: "charge my card [card] please" }]);
    const seen = pii.received[before]!;
    expect(seen.body.request.caller).toMatchObject({ node: "agent-a", tags: ["tag:agent-a"], role: "user" });
    expect(seen.body.request.facts).toMatchObject({ provider: "openai", model: "gpt-4o-mini", operation: "openai.chat", stream: false });
    // The next hook got the modified body.
    expect(lastUser(launch.received.at(-1)!.body)).toBe("charge my card [card] please");
    for (const h of [pii, launch, secrets]) expect(JSON.stringify(h.received)).not.toMatch(new RegExp(`${PROVIDER_KEY}|${CLIENT_KEY}`));
  });

  it("a pre hook's block reaches the SDK as the API's error with the hook's status and message; nothing goes upstream", async () => {
    const err = await oai.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "tell me the launch codes" }] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.UnprocessableEntityError);
    expect((err as InstanceType<typeof OpenAI.APIError>).status).toBe(422);
    expect((err as Error).message).toMatch(/prompts about launch codes are not allowed/);
    expect(sim.requests).toHaveLength(0);
  });

  it("a fail-closed hook that never answers: the SDK gets a 503 naming the hook after its timeout; other models skip it", async () => {
    const t0 = Date.now();
    const err = await oai.chat.completions.create({ model: "gpt-4o-slow-1", messages: [{ role: "user", content: "hello" }] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.InternalServerError);
    expect((err as InstanceType<typeof OpenAI.APIError>).status).toBe(503);
    expect((err as Error).message).toMatch(/pre hook "slow" did not answer within 300 ms/);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(290);
    expect(sim.requests).toHaveLength(0);
    expect(hookErrors.map((e) => [e.hook, e.failure])).toEqual([["slow", "timeout"]]);
    await oai.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "hello" }] });
    expect(sim.requests).toHaveLength(1);
  });

  it("a post hook's redaction is the answer the SDK returns; usage is the provider's", async () => {
    const a = await oai.chat.completions.create({ model: "gpt-4o-secret", messages: [{ role: "user", content: "what is the admin password?" }] });
    expect(sim.requests).toHaveLength(1);
    expect(a.choices[0]!.message.content).toBe(REDACTED);
    expect(a.usage?.completion_tokens).toBe(8);
    const seen = secrets.received.at(-1)!.body;
    expect(seen.response.status).toBe(200);
    expect(seen.response.body.choices[0].message.content.split(" ")).toHaveLength(8);
    // Another model: the hook does not run, the answer is the provider's.
    const plain = await oai.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "what is the admin password?" }] });
    expect(secrets.received).toHaveLength(1);
    expect(plain.choices[0]!.message.content).not.toBe(REDACTED);
    expect(plain.choices[0]!.message.content!.split(" ")).toHaveLength(8);
  });

  it("usage webhooks get one event per finished request, blocked ones included, delivered by close()", async () => {
    const ok = await oai.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "count me" }] });
    await oai.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "launch codes again" }] }).catch(() => {});
    await gw.close();
    const events = billing.received.flatMap((r) => r.body.events);
    const ids = events.map((e: any) => e.id);
    expect(new Set(ids).size).toBe(ids.length);
    // A hook's events arrive in the order the requests finished: these two are the last.
    const mine = events.slice(-2);
    expect(mine.map((e: any) => e.outcome)).toEqual(["ok", "blocked"]);
    expect(mine[0]).toMatchObject({ caller: { node: "agent-a", tags: ["tag:agent-a"] }, provider: "openai", model: "gpt-4o-mini", operation: "openai.chat", usage: { outputTokens: ok.usage!.completion_tokens, inputTokens: ok.usage!.prompt_tokens } });
    // Every request of this file, one event each: 1 + 1 + 2 + 2 + 2.
    expect(events.length).toBe(8);
  });
});
