// Errors as clients see them, through the gateway's loopback listener (a
// configured principal; the tailnet path is the same handler, see
// e2e.test.ts): upstream 4xx/5xx, timeouts, unreachable providers, broken
// streams, malformed and oversized requests, unknown models, approvals, and
// the provider key scrubbed from whatever an upstream echoes.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Anthropic from "@anthropic-ai/sdk";
import { GoogleGenAI } from "@google/genai";
import OpenAI from "openai";
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from "vitest";
import { startLlmSim, type LlmSim } from "../../bench/lib/llm-sim.mjs";
import { startGateway, type GatewayHandle, type LogRecord } from "../../src/gateway/index.js";
import type { ApprovalRequest } from "../../src/guard/index.js";
import { CLIENT_KEY, PROVIDER_KEY, PROVIDERS } from "./gateway-tailnet.js";

let dir: string;
let sim: LlmSim;
let echo: http.Server;
let echoUrl: string;
let gw: GatewayHandle;
let approver: (req: ApprovalRequest) => Promise<boolean>;
const asked: ApprovalRequest[] = [];

const POLICY = {
  version: 1,
  rules: [
    { id: "held", effect: "approve", src: ["tag:local"], llm: { model: ["openai/gpt-4o-mini"], maxTokens: 10 } },
    { id: "rated", effect: "allow", src: ["tag:local"], llm: { model: ["rated/*"] }, when: { rate: { perMinute: 2 } } },
    { id: "local", effect: "allow", src: ["tag:local"], llm: { model: ["openai/*", "anthropic/*", "gemini/*", "slow/*", "gone/*", "echo/*"] } },
  ],
};

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "mg-gwerr-"));
  writeFileSync(join(dir, "policy.hujson"), JSON.stringify(POLICY));
  sim = await startLlmSim({ key: PROVIDER_KEY, outputTokens: 12, chunks: 4 });
  // An upstream that echoes the key it was sent: in an error, in an answer and in a stream.
  echo = http.createServer((req, res) => {
    const key = String(req.headers.authorization ?? "");
    if (req.url!.includes("chat")) {
      let body = "";
      req.on("data", (c) => (body += c));
      req.on("end", () => {
        const b = JSON.parse(body) as { model: string; stream?: boolean };
        if (b.model === "echo-401") {
          res.writeHead(401, { "content-type": "application/json" });
          res.end(JSON.stringify({ error: { message: `Incorrect API key provided: ${key}`, type: "invalid_request_error", code: "invalid_api_key" } }));
        } else if (b.stream) {
          res.writeHead(200, { "content-type": "text/event-stream" });
          res.write(`data: ${JSON.stringify({ id: "x", object: "chat.completion.chunk", choices: [{ index: 0, delta: { content: `your key is ${key}` } }] })}\n\n`);
          res.end("data: [DONE]\n\n");
        } else {
          res.writeHead(200, { "content-type": "application/json", "x-echo": key });
          res.end(JSON.stringify({ id: "x", object: "chat.completion", choices: [{ index: 0, message: { role: "assistant", content: `your key is ${key}` }, finish_reason: "stop" }] }));
        }
      });
    } else res.end();
  });
  await new Promise<void>((r) => echo.listen(0, "127.0.0.1", r));
  echoUrl = `http://127.0.0.1:${(echo.address() as { port: number }).port}`;
  gw = await startGateway({
    config: {
      policy: join(dir, "policy.hujson"),
      dataDir: join(dir, "data"),
      loopback: { listen: "127.0.0.1:0", principal: "tag:local" },
      maxBodyBytes: 64 * 1024,
      providers: {
        ...PROVIDERS(sim.url),
        slow: { baseUrl: `${sim.url}/v1`, format: "openai", key: { env: "SIM_PROVIDER_KEY" }, models: ["slow-*"], timeout: 300 },
        gone: { baseUrl: "http://127.0.0.1:9/v1", format: "openai", models: ["gone-*"] },
        echo: { baseUrl: `${echoUrl}/v1`, format: "openai", key: { env: "SIM_PROVIDER_KEY" }, models: ["echo-*"] },
        rated: { baseUrl: `${sim.url}/v1`, format: "openai", key: { env: "SIM_PROVIDER_KEY" }, models: ["rated-*"] },
      },
    },
    env: { SIM_PROVIDER_KEY: PROVIDER_KEY },
    approvals: { callback: (req) => (asked.push(req), approver(req)), timeoutMs: 2_000 },
  });
});
afterAll(async () => {
  await gw?.close();
  await sim?.close();
  echo?.close();
  rmSync(dir, { recursive: true, force: true });
});
beforeEach(() => {
  sim.reset();
  asked.length = 0;
});

const oai = () => new OpenAI({ baseURL: `${gw.loopbackUrl}/v1`, apiKey: CLIENT_KEY, maxRetries: 0 });
const ant = () => new Anthropic({ baseURL: gw.loopbackUrl, apiKey: CLIENT_KEY, maxRetries: 0 });
const gem = () => new GoogleGenAI({ apiKey: CLIENT_KEY, httpOptions: { baseUrl: gw.loopbackUrl, apiVersion: "v1beta" } });
const msg = [{ role: "user" as const, content: "x" }];

async function lastRecord(): Promise<LogRecord> {
  await gw.store!.flush();
  return (await gw.store!.queryLogs({ limit: 1 })).records[0]!;
}

describe("upstream errors reach the client in the API's own format", () => {
  it("4xx/5xx pass through with the provider's body and status", async () => {
    const e1 = await oai().chat.completions.create({ model: "gpt-4o-fail-500", messages: msg }).catch((e) => e);
    expect(e1).toBeInstanceOf(OpenAI.InternalServerError);
    expect((await lastRecord()).outcome).toBe("upstream_error");
    const e2 = await ant().messages.create({ model: "claude-x-fail-529", max_tokens: 5, messages: msg }).catch((e) => e);
    expect(e2.status).toBe(529);
    expect(e2.error).toMatchObject({ type: "error", error: { type: "overloaded_error" } });
    const e3 = await oai().chat.completions.create({ model: "gpt-4o-fail-429", messages: msg }).catch((e) => e);
    expect(e3).toBeInstanceOf(OpenAI.RateLimitError);
    expect(e3.headers.get("retry-after")).toBeTruthy();
    const e4 = await gem().models.generateContent({ model: "gemini-fail-400", contents: "x" }).catch((e) => e);
    expect(e4.status).toBe(400);
    expect(e4.message).toContain("INVALID_ARGUMENT");
  });

  it("a provider that does not answer in time is a 504; one that cannot be reached a 502", async () => {
    const e1 = await oai().chat.completions.create({ model: "slow-hang", messages: msg }).catch((e) => e);
    expect(e1.status).toBe(504);
    expect(e1.error).toMatchObject({ type: "api_error", code: "upstream_timeout" });
    expect(await lastRecord()).toMatchObject({ outcome: "upstream_unreachable", status: 504, provider: "slow" });
    const e2 = await oai().chat.completions.create({ model: "gone-model", messages: msg }).catch((e) => e);
    expect(e2.status).toBe(502);
    expect(e2.message).toMatch(/cannot reach provider gone/);
  });

  it("a stream that breaks after it started ends with an error event the SDK raises; usage so far is recorded, estimated", async () => {
    const run = async () => {
      let text = "";
      for await (const c of await oai().chat.completions.create({ model: "gpt-4o-break-stream", stream: true, messages: msg })) text += c.choices[0]?.delta.content ?? "";
      return text;
    };
    const e = await run().catch((err) => err);
    expect(e).toBeInstanceOf(OpenAI.APIError);
    expect(e.message).toMatch(/stream from provider openai broke/);
    const rec = await lastRecord();
    expect(rec.outcome).toBe("upstream_error");
    expect(rec.usage).toMatchObject({ estimated: true });
    expect(rec.usage!.outputTokens).toBeGreaterThan(0);

    const e2 = await ant()
      .messages.stream({ model: "claude-x-break-stream", max_tokens: 50, messages: msg })
      .finalMessage()
      .catch((err) => err);
    expect(e2).toBeInstanceOf(Anthropic.APIError);
  });

  it("an upstream's own in-stream error event passes through", async () => {
    const e = await (async () => {
      for await (const _ of await ant().messages.create({ model: "claude-x-stream-error", max_tokens: 50, stream: true, messages: msg }));
    })().catch((err) => err);
    expect(e).toBeInstanceOf(Anthropic.APIError);
  });

  it("an answer without usage is estimated, and marked so", async () => {
    await oai().chat.completions.create({ model: "gpt-4o-no-usage", messages: [{ role: "user", content: "a".repeat(400) }] });
    const rec = await lastRecord();
    expect(rec.usage).toMatchObject({ estimated: true });
    expect(rec.usage!.inputTokens).toBeGreaterThanOrEqual(100);
    for await (const _ of await oai().chat.completions.create({ model: "gpt-4o-no-usage", stream: true, messages: msg }));
    expect((await lastRecord()).usage).toMatchObject({ estimated: true, outputTokens: expect.any(Number) });
  });
});

describe("requests the gateway cannot read", () => {
  const post = (path: string, body: string, headers: Record<string, string> = {}) =>
    fetch(`${gw.loopbackUrl}${path}`, { method: "POST", headers: { "content-type": "application/json", ...headers }, body });

  it("malformed JSON is a 400 in the API's format", async () => {
    const r1 = await post("/v1/chat/completions", "{ not json");
    expect(r1.status).toBe(400);
    expect((await r1.json()).error).toMatchObject({ type: "invalid_request_error", message: expect.stringMatching(/not valid JSON/) });
    const r2 = await post("/v1/messages", "[1,2]", { "anthropic-version": "2023-06-01" });
    expect(r2.status).toBe(400);
    expect(await r2.json()).toMatchObject({ type: "error", error: { type: "invalid_request_error" } });
    const r3 = await post("/v1beta/models/gemini-2.5-flash:generateContent", "nope");
    expect((await r3.json()).error).toMatchObject({ code: 400, status: "INVALID_ARGUMENT" });
    expect(sim.requests).toEqual([]);
  });

  it("a body over maxBodyBytes is a 413, declared or streamed", async () => {
    const big = JSON.stringify({ model: "gpt-4o", messages: [{ role: "user", content: "x".repeat(100_000) }] });
    const e = await oai().chat.completions.create({ model: "gpt-4o", messages: [{ role: "user", content: "x".repeat(100_000) }] }).catch((err) => err);
    expect(e.status).toBe(413);
    expect(e.error).toMatchObject({ code: "request_too_large" });
    // Without a content-length (chunked), the gateway stops reading at the limit.
    const chunked = new ReadableStream({
      start(c) {
        c.enqueue(new TextEncoder().encode(big));
        c.close();
      },
    });
    const r = await fetch(`${gw.loopbackUrl}/v1/chat/completions`, { method: "POST", body: chunked, duplex: "half", headers: { "content-type": "application/json" } } as RequestInit);
    expect(r.status).toBe(413);
    expect(sim.requests).toEqual([]);
  });

  it("an unknown model is a 404; a body with no model a 400; an unknown path a 404", async () => {
    const e = await oai().chat.completions.create({ model: "no-such-model", messages: msg }).catch((err) => err);
    expect(e).toBeInstanceOf(OpenAI.NotFoundError);
    expect((await post("/v1/chat/completions", "{}")).status).toBe(400);
    const r = await fetch(`${gw.loopbackUrl}/v2/whatever`);
    expect(r.status).toBe(404);
  });
});

describe("approve rules hold the request until an approver answers", () => {
  it("approved: the call goes on; the approver saw who asks for what", async () => {
    let answer!: (ok: boolean) => void;
    approver = () => new Promise((r) => (answer = r));
    const call = oai().chat.completions.create({ model: "gpt-4o-mini", max_tokens: 5, messages: msg });
    await vi.waitFor(() => expect(asked).toHaveLength(1));
    expect(asked[0]).toMatchObject({ principal: { tags: ["tag:local"] }, request: "llm openai/gpt-4o-mini 5", ruleId: "held" });
    expect(sim.requests).toEqual([]); // held: nothing went upstream
    answer(true);
    expect((await call).choices[0]!.message.content).toBeTruthy();
    expect(sim.requests).toHaveLength(1);
  });

  it("a client that goes away while its call is held: approved later, nothing goes upstream", async () => {
    let answer!: (ok: boolean) => void;
    approver = () => new Promise((r) => (answer = r));
    const ac = new AbortController();
    const call = oai().chat.completions.create({ model: "gpt-4o-mini", max_tokens: 5, messages: msg }, { signal: ac.signal }).catch((e) => e);
    await vi.waitFor(() => expect(asked).toHaveLength(1));
    ac.abort();
    await call;
    answer(true);
    const rec = await vi.waitFor(async () => {
      const r = await lastRecord();
      expect(r.outcome).toBe("client_aborted");
      return r;
    });
    expect(rec.reason).toMatch(/the client closed the connection before/);
    expect(sim.requests).toEqual([]);
  });

  it("refused, or no answer in time: 403", async () => {
    approver = async () => false;
    const e1 = await oai().chat.completions.create({ model: "gpt-4o-mini", max_tokens: 5, messages: msg }).catch((e) => e);
    expect(e1).toBeInstanceOf(OpenAI.PermissionDeniedError);
    expect(e1.message).toMatch(/approval refused/);
    approver = () => new Promise(() => {});
    const e2 = await oai().chat.completions.create({ model: "gpt-4o-mini", max_tokens: 5, messages: msg }).catch((e) => e);
    expect(e2).toBeInstanceOf(OpenAI.PermissionDeniedError);
    expect(e2.message).toMatch(/no answer within 2000 ms/);
    expect(sim.requests).toEqual([]);
  });
});

describe("policy at the gateway", () => {
  it("a rule's rate is counted at the gateway: the third call in a minute is denied", async () => {
    const call = () => oai().chat.completions.create({ model: "rated-model", messages: msg });
    await call();
    await call();
    const e = await call().catch((err) => err);
    expect(e).toBeInstanceOf(OpenAI.PermissionDeniedError);
    expect(e.message).toMatch(/rate/);
    expect(sim.requests).toHaveLength(2);
  });

  it("the policy file is reloaded when it changes; a file that does not load leaves the last good policy in force", async () => {
    const file = join(dir, "policy.hujson");
    const reloaded = () => new Promise<void>((resolve) => gw.events.once("reload", () => resolve()));
    const call = () => oai().chat.completions.create({ model: "gpt-4o", messages: msg });
    expect((await call()).choices).toHaveLength(1);
    let next = reloaded();
    writeFileSync(file, JSON.stringify({ ...POLICY, rules: POLICY.rules.filter((r) => r.id !== "local") }));
    await next;
    expect(await call().catch((err) => err)).toBeInstanceOf(OpenAI.PermissionDeniedError);
    const warned = new Promise<Error>((resolve) => gw.events.once("warning", resolve));
    writeFileSync(file, "{ not a policy");
    expect((await warned).message).toMatch(/policy/);
    expect(await call().catch((err) => err)).toBeInstanceOf(OpenAI.PermissionDeniedError);
    next = reloaded();
    writeFileSync(file, JSON.stringify(POLICY));
    await next;
    expect((await call()).choices).toHaveLength(1);
  });
});

describe("the provider key is scrubbed from whatever an upstream echoes", () => {
  it("in an error body, an answer, a header and a stream", async () => {
    const e = await oai().chat.completions.create({ model: "echo-401", messages: msg }).catch((err) => err);
    expect(e.status).toBe(401);
    expect(JSON.stringify(e.error)).not.toContain(PROVIDER_KEY);
    expect(e.message).toContain("[provider key redacted]");
    const raw = await fetch(`${gw.loopbackUrl}/v1/chat/completions`, { method: "POST", body: JSON.stringify({ model: "echo-ok", messages: msg }) });
    const text = await raw.text();
    expect(text).not.toContain(PROVIDER_KEY);
    expect(text).toContain("your key is Bearer [provider key redacted]");
    expect(JSON.stringify([...(raw.headers as unknown as Iterable<[string, string]>)])).not.toContain(PROVIDER_KEY);
    expect(raw.headers.get("x-echo")).toBe("Bearer [provider key redacted]");
    let streamed = "";
    for await (const c of await oai().chat.completions.create({ model: "echo-ok", stream: true, messages: msg })) streamed += c.choices[0]?.delta.content ?? "";
    expect(streamed).toBe("your key is Bearer [provider key redacted]");
    const rec = await lastRecord();
    expect(JSON.stringify(rec)).not.toContain(PROVIDER_KEY);
  });
});

describe("close()", () => {
  it("refuses new requests, lets the one in flight finish, then releases everything", async () => {
    sim.options.lockstep = true;
    const stream = await oai().chat.completions.create({ model: "gpt-4o", stream: true, messages: msg });
    const it = stream[Symbol.asyncIterator]();
    await it.next();
    const closed = gw.close({ drainMs: 10_000 });
    const refused = await fetch(`${gw.loopbackUrl}/v1/models`).catch((err) => err);
    expect(refused instanceof Error || refused.status === 503).toBe(true);
    sim.next(10);
    let rest = 0;
    for (let r = await it.next(); !r.done; r = await it.next()) rest++;
    expect(rest).toBeGreaterThan(2);
    await closed;
    sim.options.lockstep = false;
  });
});
