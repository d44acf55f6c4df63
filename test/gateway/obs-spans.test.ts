// The gateway's OpenTelemetry GenAI spans against the conventions'
// inference span (gen_ai.client.inference in
// open-telemetry/semantic-conventions-genai): for each API the gateway
// proxies, whole and streamed, called with the official SDKs through the
// loopback listener and captured with the SDK's in-memory exporter. The
// upstream is the simulator; obs-e2e.test.ts covers the rest of the
// observability.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Anthropic from "@anthropic-ai/sdk";
import { GoogleGenAI } from "@google/genai";
import { SpanKind, SpanStatusCode } from "@opentelemetry/api";
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from "@opentelemetry/sdk-trace-base";
import OpenAI from "openai";
import { afterAll, beforeAll, expect, it } from "vitest";
import { startLlmSim, type LlmSim } from "../../bench/lib/llm-sim.mjs";
import { startGateway, type GatewayHandle, type LogRecord } from "../../src/gateway/index.js";
import { CLIENT_KEY, PROVIDER_KEY, PROVIDERS } from "./gateway-tailnet.js";

let dir: string;
let sim: LlmSim;
let gw: GatewayHandle;
const exporter = new InMemorySpanExporter();
const tracerProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "mg-gwspans-"));
  writeFileSync(join(dir, "policy.hujson"), JSON.stringify({ version: 3, rules: [{ id: "local", src: ["tag:local"], llm: { model: ["*"] } }] }));
  sim = await startLlmSim({ key: PROVIDER_KEY, outputTokens: 12, chunks: 3 });
  gw = await startGateway({
    config: {
      policy: join(dir, "policy.hujson"),
      dataDir: join(dir, "data"),
      loopback: { listen: "127.0.0.1:0", principal: "tag:local" },
      providers: PROVIDERS(sim.url),
      telemetry: { traces: true },
    },
    env: { SIM_PROVIDER_KEY: PROVIDER_KEY },
    telemetry: { tracerProvider },
    onWarning: () => {},
  });
});
afterAll(async () => {
  await gw?.close();
  await sim?.close();
  rmSync(dir, { recursive: true, force: true });
});

const oai = () => new OpenAI({ baseURL: `${gw.loopbackUrl}/v1`, apiKey: CLIENT_KEY, maxRetries: 0 });
const ant = () => new Anthropic({ baseURL: gw.loopbackUrl, apiKey: CLIENT_KEY, maxRetries: 0 });
const gem = () => new GoogleGenAI({ apiKey: CLIENT_KEY, httpOptions: { baseUrl: gw.loopbackUrl, apiVersion: "v1beta" } });
const msg = [{ role: "user" as const, content: "tell me a short story" }];

/** The span of the request the gateway answered with `id` (x-meshguard-request-id), and its log record. */
async function spanOf(id: string | null): Promise<{ span: ReadableSpan; rec: LogRecord }> {
  expect(id).toBeTruthy();
  await expect.poll(() => exporter.getFinishedSpans().some((s) => s.attributes["meshguard.request.id"] === id)).toBe(true);
  await gw.store!.flush();
  return { span: exporter.getFinishedSpans().find((s) => s.attributes["meshguard.request.id"] === id)!, rec: (await gw.store!.getLog(id!))! };
}

/** The span of the next request to finish (tests run one request at a time), and its log record. */
async function nextSpan(action: () => Promise<unknown>): Promise<{ span: ReadableSpan; rec: LogRecord }> {
  const before = exporter.getFinishedSpans().length;
  await action();
  await expect.poll(() => exporter.getFinishedSpans().length).toBe(before + 1);
  return spanOf(String(exporter.getFinishedSpans().at(-1)!.attributes["meshguard.request.id"]));
}

it("OpenAI chat, whole: required attributes, the request's settings, response id, model and finish reasons, usage, the upstream server", async () => {
  const r = await oai()
    .chat.completions.create({ model: "gpt-4o-mini", max_tokens: 7, temperature: 0.3, top_p: 0.9, stop: "END", seed: 42, frequency_penalty: 0.1, presence_penalty: 0.2, n: 1, response_format: { type: "json_object" }, messages: msg })
    .withResponse();
  const { span, rec } = await spanOf(r.response.headers.get("x-meshguard-request-id"));
  expect(span.name).toBe("chat gpt-4o-mini");
  expect(span.kind).toBe(SpanKind.CLIENT);
  expect(span.status.code).toBe(SpanStatusCode.UNSET);
  expect(span.attributes).toMatchObject({
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o-mini",
    "gen_ai.request.max_tokens": 7,
    "gen_ai.request.temperature": 0.3,
    "gen_ai.request.top_p": 0.9,
    "gen_ai.request.stop_sequences": ["END"],
    "gen_ai.request.seed": 42,
    "gen_ai.request.frequency_penalty": 0.1,
    "gen_ai.request.presence_penalty": 0.2,
    "gen_ai.output.type": "json",
    // The answer's own: the simulator answers with the id and model an OpenAI server sends.
    "gen_ai.response.id": r.data.id,
    "gen_ai.response.model": r.data.model,
    // max_tokens 7 of a 12-token answer: cut at the limit.
    "gen_ai.response.finish_reasons": ["length"],
    "gen_ai.usage.input_tokens": r.data.usage!.prompt_tokens,
    "gen_ai.usage.output_tokens": 7,
    "server.address": "127.0.0.1",
    "server.port": sim.port,
  });
  expect(r.data.choices[0]!.finish_reason).toBe("length");
  // Unset when not streamed; choice.count only when not 1; no made-up conversation id.
  expect(span.attributes["gen_ai.request.stream"]).toBeUndefined();
  expect(span.attributes["gen_ai.request.choice.count"]).toBeUndefined();
  expect(span.attributes["gen_ai.conversation.id"]).toBeUndefined();
  expect(span.attributes["meshguard.session.id"]).toBe(rec.sessionId);
  // The log record keeps what the answer said about itself.
  expect(rec.response).toEqual({ id: r.data.id, model: r.data.model, finishReasons: ["length"] });
});

it("OpenAI chat, streamed: finish reasons from the stream's last chunk, response id and model from its chunks", async () => {
  let id = "";
  let finish: string | null = null;
  const { span } = await nextSpan(async () => {
    for await (const c of await oai().chat.completions.create({ model: "gpt-4o", messages: msg, stream: true })) {
      id = c.id;
      finish = c.choices[0]?.finish_reason ?? finish;
    }
  });
  expect(finish).toBe("stop");
  expect(span.attributes).toMatchObject({
    "gen_ai.request.stream": true,
    "gen_ai.response.id": id,
    "gen_ai.response.model": "gpt-4o",
    "gen_ai.response.finish_reasons": ["stop"],
    "gen_ai.usage.output_tokens": 12,
  });
  expect(span.attributes["gen_ai.response.time_to_first_chunk"]).toBeGreaterThan(0);
});

it("a client's own session id is gen_ai.conversation.id", async () => {
  const r = await oai().chat.completions.create({ model: "gpt-4o", messages: msg }, { headers: { "x-session-id": "conv-1234" } }).withResponse();
  const { span } = await spanOf(r.response.headers.get("x-meshguard-request-id"));
  expect(span.attributes["gen_ai.conversation.id"]).toBe("conv-1234");
});

it("OpenAI Responses, streamed: the response's id, model and status (completed: stop); reasoning effort and the previous response", async () => {
  let id = "";
  const { span } = await nextSpan(async () => {
    const stream = await oai().responses.create({ model: "gpt-4o", input: "hello", stream: true, reasoning: { effort: "low" }, previous_response_id: "resp_prev123" });
    for await (const ev of stream) if (ev.type === "response.completed") id = ev.response.id;
  });
  expect(id).not.toBe("");
  expect(span.attributes).toMatchObject({
    "gen_ai.operation.name": "chat",
    "gen_ai.response.id": id,
    "gen_ai.response.model": "gpt-4o",
    "gen_ai.response.finish_reasons": ["stop"],
    "gen_ai.request.reasoning.level": "low",
    "gen_ai.request.previous_response.id": "resp_prev123",
  });
});

it("Anthropic messages, whole and streamed: the provider's stop_reason, temperature, top_k and stop sequences", async () => {
  // The newest SDK's types have dropped the sampling settings; older SDKs and other clients still send them.
  const body = { model: "claude-haiku-4-5", max_tokens: 5, temperature: 0.7, top_k: 40, stop_sequences: ["\n\nHuman:"], messages: msg };
  const whole = await ant().messages.create(body as Anthropic.MessageCreateParamsNonStreaming).withResponse();
  const a = await spanOf(whole.response.headers.get("x-meshguard-request-id"));
  expect(a.span.attributes).toMatchObject({
    "gen_ai.provider.name": "anthropic",
    "gen_ai.request.temperature": 0.7,
    "gen_ai.request.top_k": 40,
    "gen_ai.request.stop_sequences": ["\n\nHuman:"],
    "gen_ai.response.id": whole.data.id,
    "gen_ai.response.model": whole.data.model,
    "gen_ai.response.finish_reasons": ["max_tokens"],
  });
  expect(whole.data.stop_reason).toBe("max_tokens");

  let final!: Anthropic.Message;
  const s = await nextSpan(async () => {
    final = await ant().messages.stream({ model: "claude-sonnet-4-5", max_tokens: 100, messages: msg }).finalMessage();
  });
  expect(final.stop_reason).toBe("end_turn");
  expect(s.span.attributes).toMatchObject({
    "gen_ai.request.stream": true,
    "gen_ai.response.id": final.id,
    "gen_ai.response.model": "claude-sonnet-4-5",
    "gen_ai.response.finish_reasons": ["end_turn"],
  });
});

it("Gemini generateContent and streamGenerateContent (SSE): responseId, modelVersion, finishReason per candidate, generation settings", async () => {
  let whole!: Awaited<ReturnType<GoogleGenAI["models"]["generateContent"]>>;
  const g = await nextSpan(async () => {
    whole = await gem().models.generateContent({ model: "gemini-2.5-flash", contents: "hi", config: { maxOutputTokens: 4, temperature: 0.5, topK: 20, candidateCount: 2, responseMimeType: "application/json" } });
  });
  expect(g.span.name).toBe("generate_content gemini-2.5-flash");
  expect(g.span.attributes).toMatchObject({
    "gen_ai.provider.name": "gcp.gemini",
    "gen_ai.request.temperature": 0.5,
    "gen_ai.request.top_k": 20,
    "gen_ai.request.choice.count": 2,
    "gen_ai.output.type": "json",
    "gen_ai.response.id": whole.responseId,
    "gen_ai.response.model": whole.modelVersion,
    "gen_ai.response.finish_reasons": whole.candidates!.map((c) => c.finishReason),
  });
  expect(whole.candidates![0]!.finishReason).toBe("MAX_TOKENS");

  let last: Awaited<ReturnType<GoogleGenAI["models"]["generateContent"]>> | undefined;
  const s = await nextSpan(async () => {
    for await (const c of await gem().models.generateContentStream({ model: "gemini-2.5-pro", contents: "hi" })) last = c;
  });
  expect(sim.requests.at(-1)!.query).toContain("alt=sse");
  expect(s.span.attributes).toMatchObject({
    "gen_ai.request.stream": true,
    "gen_ai.response.id": last!.responseId,
    "gen_ai.response.model": last!.modelVersion,
    "gen_ai.response.finish_reasons": ["STOP"],
  });
});

it("Gemini streamed as a JSON array (no alt=sse): finish reasons read from the whole array", async () => {
  const res = await fetch(`${gw.loopbackUrl}/v1beta/models/gemini-2.5-flash:streamGenerateContent`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-goog-api-key": CLIENT_KEY },
    body: JSON.stringify({ contents: [{ role: "user", parts: [{ text: "hi" }] }] }),
  });
  const chunks = (await res.json()) as { responseId: string; candidates: { finishReason?: string }[] }[];
  const { span } = await spanOf(res.headers.get("x-meshguard-request-id"));
  expect(span.attributes["gen_ai.response.finish_reasons"]).toEqual([chunks.at(-1)!.candidates[0]!.finishReason]);
  expect(span.attributes["gen_ai.response.id"]).toBe(chunks[0]!.responseId);
});

it('a stream cut short has finish reason "error" for the generation that never finished', async () => {
  const { span, rec } = await nextSpan(async () => {
    const stream = await oai().chat.completions.create({ model: "gpt-4o-break-stream", messages: msg, stream: true });
    await expect(
      (async () => {
        for await (const _ of stream) void _;
      })(),
    ).rejects.toThrow();
  });
  expect(rec.outcome).toBe("upstream_error");
  expect(span.attributes["gen_ai.response.finish_reasons"]).toEqual(["error"]);
  expect(span.attributes["error.type"]).toBe("upstream_error");
  expect(span.status.code).toBe(SpanStatusCode.ERROR);
});

it("finish reasons follow the generations' order; one cut short among several is \"error\" (the reader, on chunks as OpenAI streams them)", async () => {
  const { AnswerReader } = await import("../../src/gateway/answer.js");
  const r = new AnswerReader("openai.chat");
  const chunk = (choices: unknown[]) => ({ id: "chatcmpl-9", model: "gpt-4o-2024-08-06", object: "chat.completion.chunk", choices });
  r.event(chunk([{ index: 0, delta: { role: "assistant", content: "" }, finish_reason: null }, { index: 1, delta: { content: "" }, finish_reason: null }]));
  r.event(chunk([{ index: 1, delta: {}, finish_reason: "length" }]));
  expect(r.result(true)).toEqual({ id: "chatcmpl-9", model: "gpt-4o-2024-08-06", finishReasons: ["error", "length"] });
  r.event(chunk([{ index: 0, delta: {}, finish_reason: "stop" }]));
  expect(r.result()).toEqual({ id: "chatcmpl-9", model: "gpt-4o-2024-08-06", finishReasons: ["stop", "length"] });
  // Nothing seen before the stream broke: one generation that never finished.
  expect(new AnswerReader("anthropic.messages").result(true)).toEqual({ finishReasons: ["error"] });
  expect(new AnswerReader("anthropic.messages").result()).toBeUndefined();
});
