// What the gateway's rules must hold to end to end, through its loopback
// listener (a configured principal) with the official `openai` client:
//
// - a pre-request hook that changes the model or max tokens gets the request
//   decided again (a hook never widens what policy allowed), and the request
//   decided again is still one request: one approval, one rate count;
// - a provider configured only with globs has its models listed, from the
//   upstream's own listing, filtered by the globs and the policy, in each
//   API's shape (the official openai, @anthropic-ai/sdk and @google/genai
//   clients);
// - a provider key shorter than 8 characters is scrubbed like any other;
// - a quota bucket refills at its configured rate by itself;
// - an embedding counts its input tokens for `maxTokens` and quotas, the same
//   in the gateway and in the guard.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Anthropic from "@anthropic-ai/sdk";
import { GoogleGenAI } from "@google/genai";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startLlmSim, type LlmSim } from "../../bench/lib/llm-sim.mjs";
import { bodyFacts } from "../../src/gateway/facts.js";
import { startGateway, type GatewayHandle, type LogRecord } from "../../src/gateway/index.js";
import { QuotasConfigSchema } from "../../src/gateway/quotas/config.js";
import { createQuotaManager } from "../../src/gateway/quotas/manager.js";
import { llmTarget } from "../../src/guard/targets.js";
import { hookServer, type HookServer } from "./hook-server.js";
import { caller, facts, PRICE, sqliteStore } from "./quota-fixtures.js";

const PROVIDER_KEY = "sk-provider-rules-0123456789";
/** Six characters: shorter than the 8 the scrubber once required. */
const SHORT_KEY = "k3y-z9";

let dir: string;
let sim: LlmSim;
let local: LlmSim;
let echo: http.Server;
let hook: HookServer;
let gw: GatewayHandle;
let oai: OpenAI;
const warnings: Error[] = [];
/** What the approver was asked, in order. */
const approvalsAsked: Array<{ model: unknown; ruleId: unknown }> = [];

const lastUser = (body: any): string => String(body.messages?.at(-1)?.content ?? "");

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "mg-gwrules-"));
  sim = await startLlmSim({ key: PROVIDER_KEY, outputTokens: 8 });
  // An OpenAI-compatible server (an Ollama, a vLLM) whose models the config names only by glob.
  local = await startLlmSim({
    key: PROVIDER_KEY,
    outputTokens: 8,
    models: { openai: ["llama-3.1-8b", "llama-3.1-70b", "qwen-2.5-7b"], anthropic: ["claude-local-small", "claude-local-large", "mistral-local"], gemini: ["gemma-3-4b", "gemma-3-27b", "phi-4"] },
  });
  // An upstream that refuses every key and echoes the one it was sent.
  echo = http.createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      res.writeHead(401, { "content-type": "application/json" });
      res.end(JSON.stringify({ error: { message: `Incorrect API key provided: ${String(req.headers.authorization)}`, type: "invalid_request_error", code: "invalid_api_key" } }));
    });
  });
  await new Promise<void>((r) => echo.listen(0, "127.0.0.1", r));
  // The hook rewrites what the prompt asks it to.
  hook = await hookServer((r) => {
    const body = r.body.request.body;
    const ask = lastUser(body);
    if (ask === "swap the model") return { json: { action: "modify", body: { ...body, model: "gpt-4o" } } };
    if (ask === "raise max tokens") return { json: { action: "modify", body: { ...body, max_tokens: 5000 } } };
    if (ask === "name the provider") return { json: { action: "modify", body: { ...body, model: "sim/gpt-4o-mini", max_tokens: 20 } } };
    if (ask === "trim the held call") return { json: { action: "modify", body: { ...body, max_tokens: 20 } } };
    if (ask === "redact only") return { json: { action: "modify", body: { ...body, messages: [{ role: "user", content: "[redacted]" }] } } };
    return { json: { action: "allow" } };
  });
  writeFileSync(
    join(dir, "policy.hujson"),
    JSON.stringify({
      version: 1,
      rules: [
        { id: "mini", effect: "allow", src: ["tag:local"], llm: { model: ["sim/gpt-4o-mini"], maxTokens: 100 } },
        { id: "embed", effect: "allow", src: ["tag:local"], llm: { model: ["sim/text-embedding-3-small"], maxTokens: 50 } },
        { id: "local", effect: "allow", src: ["tag:local"], llm: { model: ["local/llama-3.1-8b"] } },
        { id: "short", effect: "allow", src: ["tag:local"], llm: { model: ["short/*"] } },
        // Held for an approver, and at most two calls a minute.
        { id: "held", effect: "approve", src: ["tag:local"], llm: { model: ["sim/gpt-4.1"], maxTokens: 100 }, when: { rate: { perMinute: 2 } } },
        { id: "local-anthropic", effect: "allow", src: ["tag:local"], llm: { model: ["local-anthropic/claude-local-small"] } },
        { id: "local-gemini", effect: "allow", src: ["tag:local"], llm: { model: ["local-gemini/gemma-3-4b"] } },
      ],
    }),
  );
  gw = await startGateway({
    config: {
      policy: join(dir, "policy.hujson"),
      dataDir: join(dir, "data"),
      loopback: { listen: "127.0.0.1:0", principal: "tag:local" },
      providers: {
        sim: { baseUrl: `${sim.url}/v1`, format: "openai", key: { env: "RULES_KEY" }, models: ["gpt-4o-mini", "gpt-4o", "gpt-4.1", "text-embedding-3-small"] },
        local: { baseUrl: `${local.url}/v1`, format: "openai", key: { env: "RULES_KEY" }, models: ["llama-*"] },
        // The same upstream's Anthropic and Gemini APIs, their models named only by glob.
        "local-anthropic": { baseUrl: local.url, format: "anthropic", key: { env: "RULES_KEY" }, models: ["claude-local-*"] },
        "local-gemini": { baseUrl: local.url, format: "gemini", key: { env: "RULES_KEY" }, models: ["gemma-*"] },
        short: { baseUrl: `http://127.0.0.1:${(echo.address() as { port: number }).port}/v1`, format: "openai", key: { env: "RULES_SHORT_KEY" }, models: ["echo-*"] },
      },
      hooks: { pre: [{ name: "rewriter", url: hook.url }] },
    },
    env: { RULES_KEY: PROVIDER_KEY, RULES_SHORT_KEY: SHORT_KEY },
    approvals: {
      callback: (r) => {
        approvalsAsked.push({ model: (r.target as { model?: unknown }).model, ruleId: r.ruleId });
        return { approved: true, by: "test approver" };
      },
    },
    onWarning: (e) => warnings.push(e),
  });
  oai = new OpenAI({ baseURL: `${gw.loopbackUrl}/v1`, apiKey: "sk-client-dropped", maxRetries: 0 });
}, 60_000);

afterAll(async () => {
  await gw?.close();
  await hook?.close();
  await sim?.close();
  await local?.close();
  await new Promise((r) => echo?.close(r));
  rmSync(dir, { recursive: true, force: true });
});

const chat = (content: string, max_tokens = 50, model = "gpt-4o-mini") => oai.chat.completions.create({ model, max_tokens, messages: [{ role: "user", content }] });

/** The stored record of a request, after a flush. */
async function recordOf(id: string | null | undefined): Promise<LogRecord> {
  await gw.store!.flush();
  const r = await gw.store!.getLog(String(id));
  if (!r) throw new Error(`no log record ${id}`);
  return r;
}

describe("a pre-request hook cannot widen what policy allowed", () => {
  it("a hook that swaps in a model the caller may not use: refused, and the provider never sees it", async () => {
    const before = sim.totals.requests;
    const err = await chat("swap the model").catch((e) => e);
    expect(err).toBeInstanceOf(OpenAI.PermissionDeniedError);
    expect(err.message).toMatch(/after a pre-request hook changed the request: denied by policy/);
    expect(sim.totals.requests).toBe(before);
  });

  it("a hook that raises max tokens past the rule's maxTokens: refused", async () => {
    const before = sim.totals.requests;
    const err = await chat("raise max tokens").catch((e) => e);
    expect(err).toBeInstanceOf(OpenAI.PermissionDeniedError);
    expect(err.message).toMatch(/after a pre-request hook changed the request: denied by policy: no rule allows tag:local to llm sim\/gpt-4o-mini 5000 /);
    expect(sim.totals.requests).toBe(before);
  });

  it("a change the policy allows goes through as changed (a provider-prefixed model is routed and sent bare)", async () => {
    const before = sim.totals.requests;
    const r = await chat("name the provider");
    expect(r.choices[0]!.message.content).toBeTruthy();
    expect(sim.totals.requests).toBe(before + 1);
    await gw.store!.flush();
    const last = (await gw.store!.queryLogs({ limit: 1 })).records[0]!;
    expect(last).toMatchObject({ provider: "sim", model: "gpt-4o-mini", outcome: "ok", ruleId: "mini" });
  });

  it("a hook that changes only the messages needs no new decision", async () => {
    const r = await chat("redact only");
    expect(r.choices[0]!.message.content).toBeTruthy();
  });

  it("a call decided again after a hook's change is one call: one approval, one rate count", async () => {
    // The hook lowers max tokens, so each call is decided twice; the rule allows two calls a minute.
    const before = sim.totals.requests;
    for (let i = 0; i < 2; i++) {
      const r = await chat("trim the held call", 50, "gpt-4.1");
      expect(r.choices[0]!.message.content).toBeTruthy();
      await gw.store!.flush();
      expect((await gw.store!.queryLogs({ limit: 1 })).records[0]).toMatchObject({ model: "gpt-4.1", outcome: "ok", ruleId: "held" });
    }
    expect(sim.totals.requests).toBe(before + 2);
    // Asked once per call, about the call as the client sent it.
    expect(approvalsAsked).toEqual([
      { model: "gpt-4.1", ruleId: "held" },
      { model: "gpt-4.1", ruleId: "held" },
    ]);
    // The third call in the minute is over the rule's rate: each call counted once, not twice.
    const err = await chat("trim the held call", 50, "gpt-4.1").catch((e) => e);
    expect(err).toBeInstanceOf(OpenAI.PermissionDeniedError);
    expect(err.message).toMatch(/rule "held" allows 2 calls per minute per agent and tag:local has used them/);
    expect(approvalsAsked).toHaveLength(2);
    expect(sim.totals.requests).toBe(before + 2);
  });
});

describe("model listings", () => {
  it("lists a glob-configured provider's models from the upstream's own listing, filtered by the globs and the policy", async () => {
    const ids: string[] = [];
    for await (const m of oai.models.list()) ids.push(m.id);
    // Named models the policy allows; gpt-4o is configured but denied.
    expect(ids).toEqual(expect.arrayContaining(["gpt-4o-mini", "text-embedding-3-small"]));
    expect(ids).not.toContain("gpt-4o");
    // "llama-*": the upstream serves llama-3.1-8b and llama-3.1-70b (only the first allowed) and qwen-2.5-7b (no glob matches).
    expect(ids).toContain("llama-3.1-8b");
    expect(ids).not.toContain("llama-3.1-70b");
    expect(ids).not.toContain("qwen-2.5-7b");
    // "echo-*" of the short-key provider: its upstream refuses to list (401), which is a warning, not a failed listing.
    expect(warnings.some((w) => /provider short: could not list the upstream's models.*HTTP 401/.test(w.message))).toBe(true);
    // The listed model is callable.
    const r = await chat("hello", 10, "llama-3.1-8b");
    expect(r.choices[0]!.message.content).toBeTruthy();
  });

  it("Anthropic's listing of a glob-configured provider (@anthropic-ai/sdk models.list): the upstream's models the globs match and the policy allows", async () => {
    const ant = new Anthropic({ baseURL: gw.loopbackUrl, apiKey: "sk-client-dropped", maxRetries: 0 });
    const ids: string[] = [];
    for await (const m of ant.models.list()) ids.push(m.id);
    // claude-local-large matches the glob but no rule; mistral-local matches no glob.
    expect(ids).toEqual(["claude-local-small"]);
    expect(await ant.models.retrieve("claude-local-small")).toMatchObject({ type: "model", id: "claude-local-small" });
    expect(await ant.models.retrieve("claude-local-large").catch((e) => e)).toBeInstanceOf(Anthropic.NotFoundError);
    // The listed model is callable.
    const msg = await ant.messages.create({ model: "claude-local-small", max_tokens: 10, messages: [{ role: "user", content: "hello" }] });
    expect(msg.content[0]).toMatchObject({ type: "text" });
  });

  it("Gemini's listing of a glob-configured provider (@google/genai models.list): the upstream's models the globs match and the policy allows", async () => {
    const gem = new GoogleGenAI({ apiKey: "client-key-dropped", httpOptions: { baseUrl: gw.loopbackUrl, apiVersion: "v1beta" } });
    const names: string[] = [];
    for await (const m of await gem.models.list()) names.push(String(m.name));
    // gemma-3-27b matches the glob but no rule; phi-4 matches no glob.
    expect(names).toEqual(["models/gemma-3-4b"]);
    expect(await gem.models.get({ model: "gemma-3-4b" })).toMatchObject({ name: "models/gemma-3-4b" });
    expect(await gem.models.get({ model: "gemma-3-27b" }).catch((e) => e)).toMatchObject({ status: 404 });
    const out = await gem.models.generateContent({ model: "gemma-3-4b", contents: "hello" });
    expect(out.text).toBeTruthy();
  });
});

describe("a provider key shorter than 8 characters", () => {
  it("is warned about at start, and appears in no answer, error or log record", async () => {
    expect(warnings.some((w) => /key of provider "short" is shorter than 8 characters/.test(w.message))).toBe(true);
    expect(warnings.some((w) => w.message.includes(SHORT_KEY))).toBe(false);
    const res = await fetch(`${gw.loopbackUrl}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ model: "echo-401", messages: [{ role: "user", content: "hi" }] }) });
    const text = await res.text();
    expect(res.status).toBe(401);
    // The upstream echoed "Bearer k3y-z9": the client sees it scrubbed.
    expect(text).toMatch(/Incorrect API key provided: Bearer \[provider key redacted\]/);
    expect(text).not.toContain(SHORT_KEY);
    const rec = await recordOf(res.headers.get("x-meshguard-request-id"));
    expect(JSON.stringify(rec)).not.toContain(SHORT_KEY);
    expect(rec.outcome).toBe("upstream_error");
  });
});

describe("embeddings count their input tokens", () => {
  it("a rule's maxTokens bounds how much one call may embed (text ~4 characters a token, token ids one each)", async () => {
    const small = await oai.embeddings.create({ model: "text-embedding-3-small", input: "a short text to embed" });
    expect(small.data.length).toBe(1);
    const big = await oai.embeddings.create({ model: "text-embedding-3-small", input: "x".repeat(400) }).catch((e) => e);
    expect(big).toBeInstanceOf(OpenAI.PermissionDeniedError);
    expect(big.message).toMatch(/denied by policy: no rule allows tag:local to llm sim\/text-embedding-3-small 100 /);
    const ids = await oai.embeddings.create({ model: "text-embedding-3-small", input: [Array.from({ length: 60 }, (_, i) => i)] as unknown as number[][] }).catch((e) => e);
    expect(ids).toBeInstanceOf(OpenAI.PermissionDeniedError);
    expect(ids.message).toMatch(/llm sim\/text-embedding-3-small 60 /);
  });

  it("the guard (a direct provider call) counts the same", () => {
    for (const input of ["x".repeat(400), ["ab", "cdefgh"], [1, 2, 3], [[1, 2], [3]]]) {
      const body = { model: "text-embedding-3-small", input };
      expect(llmTarget("openai", body, "/v1/embeddings")!.maxTokens).toBe(bodyFacts({ operation: "openai.embeddings", format: "openai" }, body).maxTokens);
    }
    expect(llmTarget("openai", { model: "m", input: "x".repeat(400) }, "/v1/embeddings")!.maxTokens).toBe(100);
  });

  it("a quota reserves an embedding's input, not an answer it never has", async () => {
    const store = await sqliteStore();
    try {
      const qm = createQuotaManager(store, QuotasConfigSchema.parse({ small: { unit: "tokens", capacity: 100, refill: "1/day" } }), () => [["small"]]);
      // 90 input tokens: within 100. (Counted as 90 in and 90 out before, it was refused as larger than the bucket.)
      const v = await qm.reserve(caller(), facts({ operation: "openai.embeddings", model: "text-embedding-3-small", maxTokens: 90 }), { inputTokens: 90, maxOutputTokens: 0 }, PRICE);
      expect(v).toMatchObject({ ok: true });
      const s = await qm.state("small/user:alice@example.com");
      expect(s!.reserved).toBe(90);
    } finally {
      await store.close();
    }
  });
});

describe("quota buckets refill by themselves", () => {
  let q: GatewayHandle;
  let qsim: LlmSim;
  let qdir: string;
  beforeAll(async () => {
    qdir = mkdtempSync(join(tmpdir(), "mg-gwrefill-"));
    // Every answer costs ~60 output tokens: a 100-token bucket holds one at a time.
    qsim = await startLlmSim({ key: PROVIDER_KEY, outputTokens: 60 });
    writeFileSync(join(qdir, "policy.hujson"), JSON.stringify({ version: 3, rules: [{ id: "all", src: ["tag:local"], llm: { model: ["sim/*"] } }], gateway: { roles: [{ src: ["tag:local"], role: "user", quotas: ["fast"] }] } }));
    q = await startGateway({
      config: {
        policy: join(qdir, "policy.hujson"),
        dataDir: join(qdir, "data"),
        loopback: { listen: "127.0.0.1:0", principal: "tag:local" },
        providers: { sim: { baseUrl: `${qsim.url}/v1`, format: "openai", key: { env: "RULES_KEY" }, models: ["gpt-4o-mini"] } },
        quotas: { fast: { unit: "tokens", capacity: 100, refill: "40/second", per: "global" } },
      },
      env: { RULES_KEY: PROVIDER_KEY },
    });
  }, 60_000);
  afterAll(async () => {
    await q?.close();
    await qsim?.close();
    rmSync(qdir, { recursive: true, force: true });
  });

  it("an exhausted bucket answers 429 with retry-after, and serves again once that much time has passed", async () => {
    const post = () =>
      fetch(`${q.loopbackUrl}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ model: "gpt-4o-mini", max_tokens: 60, messages: [{ role: "user", content: "hi" }] }) });
    const first = await post();
    expect(first.status).toBe(200);
    await first.text();
    const refused = await post();
    expect(refused.status).toBe(429);
    await refused.text();
    const wait = Number(refused.headers.get("retry-after"));
    expect(wait).toBeGreaterThanOrEqual(1);
    expect(wait).toBeLessThanOrEqual(3);
    await new Promise((r) => setTimeout(r, wait * 1000 + 100));
    const again = await post();
    expect(again.status).toBe(200);
    await again.text();
  });
});
