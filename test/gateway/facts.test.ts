// The request path's pure parts: which endpoint and model a request names,
// routing by model, usage read from answers and streams, the stream
// rewriting the gateway does when it asked for usage, and key scrubbing.
import { describe, expect, it } from "vitest";
import { bodyFacts, clientSessionId, endpointOf } from "../../src/gateway/facts.js";
import { Router, type Provider } from "../../src/gateway/providers.js";
import { KeyScrubber } from "../../src/gateway/scrub.js";
import { jsonArrayTap, sseTap, stripTap } from "../../src/gateway/stream.js";
import { StreamUsage, usageFromBody } from "../../src/gateway/usage.js";
import { flatGlob, anyOf } from "../../src/policy/glob.js";

describe("endpoints", () => {
  it("names each API's endpoints; GET /v1/models is Anthropic's when the client sends anthropic-version", () => {
    expect(endpointOf("POST", "/v1/chat/completions", {})).toEqual({ operation: "openai.chat", format: "openai" });
    expect(endpointOf("POST", "/v1/responses", {})?.operation).toBe("openai.responses");
    expect(endpointOf("POST", "/v1/embeddings", {})?.operation).toBe("openai.embeddings");
    expect(endpointOf("POST", "/v1/messages", {})?.operation).toBe("anthropic.messages");
    expect(endpointOf("POST", "/v1/messages/count_tokens", {})?.operation).toBe("anthropic.count_tokens");
    expect(endpointOf("GET", "/v1/models", {})?.operation).toBe("openai.models");
    expect(endpointOf("GET", "/v1/models", { "anthropic-version": "2023-06-01" })?.operation).toBe("anthropic.models");
    expect(endpointOf("GET", "/v1beta/models", {})?.operation).toBe("gemini.models");
    expect(endpointOf("POST", "/v1beta/models/gemini-2.5-flash:streamGenerateContent", {})).toEqual({ operation: "gemini.stream", format: "gemini", pathModel: "gemini-2.5-flash" });
    expect(endpointOf("POST", "/v1beta/models/google%2Fgemini-x:countTokens", {})?.pathModel).toBe("google/gemini-x");
    expect(endpointOf("GET", "/v1/models/gpt-4o", {})).toEqual({ operation: "openai.models", format: "openai", pathModel: "gpt-4o" });
    expect(endpointOf("GET", "/v1/models/claude-x", { "anthropic-version": "2023-06-01" })?.format).toBe("anthropic");
    expect(endpointOf("GET", "/v1beta/models/gemini-2.5-flash", {})).toEqual({ operation: "gemini.models", format: "gemini", pathModel: "gemini-2.5-flash" });
    expect(endpointOf("GET", "/v1/models", { "x-goog-api-key": "k" })?.format).toBe("gemini");
    expect(endpointOf("GET", "/v1/chat/completions", {})).toBeUndefined();
    expect(endpointOf("POST", "/v1/completions", {})).toBeUndefined();
  });

  it("reads model, stream and max tokens the way each API names them; unknown fields do not matter", () => {
    const chat = endpointOf("POST", "/v1/chat/completions", {})!;
    expect(bodyFacts(chat, { model: "m", max_completion_tokens: 7, max_tokens: 9, stream: true, whatever: {} })).toEqual({ model: "m", stream: true, maxTokens: 7 });
    expect(bodyFacts(chat, { model: "m", max_tokens: 9 })).toEqual({ model: "m", stream: false, maxTokens: 9 });
    expect(bodyFacts(endpointOf("POST", "/v1/responses", {})!, { model: "m", max_output_tokens: 5 }).maxTokens).toBe(5);
    expect(bodyFacts(endpointOf("POST", "/v1/messages", {})!, { model: "m", max_tokens: 3, stream: true })).toEqual({ model: "m", stream: true, maxTokens: 3 });
    const gem = endpointOf("POST", "/v1beta/models/g:streamGenerateContent", {})!;
    expect(bodyFacts(gem, { model: "ignored", generationConfig: { maxOutputTokens: 11 } })).toEqual({ model: "g", stream: true, maxTokens: 11 });
    // Token counting and embeddings produce no output: 0, not unknown.
    expect(bodyFacts(endpointOf("POST", "/v1/messages/count_tokens", {})!, { model: "m" }).maxTokens).toBe(0);
    expect(bodyFacts(chat, { model: 42, max_tokens: "9" })).toEqual({ model: undefined, stream: false });
  });

  it("a client session id comes from Claude Code's header, or Codex's", () => {
    expect(clientSessionId({ "x-claude-code-session-id": "abc" })).toBe("abc");
    expect(clientSessionId({ session_id: "s1" })).toBe("s1");
    expect(clientSessionId({})).toBeUndefined();
  });
});

describe("routing by model", () => {
  const prov = (name: string, format: Provider["format"], models: string[]) => ({ name, format, matches: anyOf(models.map(flatGlob)) }) as unknown as Provider;
  const router = new Router([prov("openai", "openai", ["gpt-*"]), prov("local", "openai", ["gpt-4o", "meta-llama/*"]), prov("anthropic", "anthropic", ["claude-*"])]);

  it("first provider in config order whose models match; only providers of the request's format", () => {
    expect(router.route("openai", "gpt-4o")?.provider.name).toBe("openai");
    expect(router.route("anthropic", "gpt-4o")).toBeUndefined();
    expect(router.route("openai", "claude-x")).toBeUndefined();
  });

  it('"provider/model" goes to that provider with the bare name; a name whose prefix is no provider is matched whole', () => {
    expect(router.route("openai", "local/gpt-4o")).toMatchObject({ model: "gpt-4o", prefixed: true, provider: { name: "local" } });
    expect(router.route("openai", "meta-llama/Llama-3-8B")).toMatchObject({ model: "meta-llama/Llama-3-8B", prefixed: false, provider: { name: "local" } });
    expect(router.route("openai", "anthropic/claude-x")).toBeUndefined();
  });
});

describe("usage", () => {
  it("from whole answers; cache tokens counted apart from input", () => {
    expect(usageFromBody("openai.chat", { usage: { prompt_tokens: 100, completion_tokens: 5, prompt_tokens_details: { cached_tokens: 40 } } })).toEqual({ inputTokens: 60, outputTokens: 5, cacheReadTokens: 40, estimated: false });
    expect(usageFromBody("openai.responses", { usage: { input_tokens: 10, output_tokens: 2 } })).toEqual({ inputTokens: 10, outputTokens: 2, estimated: false });
    expect(usageFromBody("anthropic.messages", { usage: { input_tokens: 3, output_tokens: 4, cache_read_input_tokens: 7, cache_creation_input_tokens: 8 } })).toEqual({ inputTokens: 3, outputTokens: 4, cacheReadTokens: 7, cacheWriteTokens: 8, estimated: false });
    expect(usageFromBody("gemini.generate", { usageMetadata: { promptTokenCount: 9, candidatesTokenCount: 2, thoughtsTokenCount: 3, cachedContentTokenCount: 4 } })).toEqual({ inputTokens: 5, outputTokens: 5, cacheReadTokens: 4, estimated: false });
    expect(usageFromBody("openai.chat", { choices: [] })).toBeUndefined();
  });

  it("an Anthropic stream's usage is split over message_start and message_delta", () => {
    const u = new StreamUsage("anthropic.messages", 100);
    u.event({ type: "message_start", message: { usage: { input_tokens: 20, output_tokens: 1, cache_read_input_tokens: 5 } } });
    u.event({ type: "content_block_delta", delta: { type: "text_delta", text: "hello" } });
    u.event({ type: "message_delta", usage: { output_tokens: 9 } });
    expect(u.result()).toEqual({ inputTokens: 20, outputTokens: 9, cacheReadTokens: 5, estimated: false });
  });

  it("a stream that reports nothing is estimated from the text streamed", () => {
    const u = new StreamUsage("openai.chat", 400);
    u.event({ choices: [{ delta: { content: "a".repeat(40) } }] });
    expect(u.result()).toEqual({ inputTokens: 100, outputTokens: 10, estimated: true });
  });
});

describe("stream taps", () => {
  const enc = (s: string) => Buffer.from(s);
  const chunk = (content: string, usage?: "null") => `data: {"id":"c","choices":[{"index":0,"delta":{"content":${JSON.stringify(content)}}}]${usage ? ',"usage":null' : ""}}\n\n`;
  const usageOnly = 'data: {"id":"c","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}\n\n';

  it("strip: drops the usage-only chunk and the usage:null members, keeps everything else byte for byte, across chunk boundaries", () => {
    const u = new StreamUsage("openai.chat", 0);
    const tap = stripTap(u);
    const stream = chunk("he", "null") + chunk('llo "usage":null', "null") + usageOnly + "data: [DONE]\n\n";
    let out = "";
    // Fed in awkward pieces: an event split in the middle, a boundary split between its two newlines.
    for (const piece of [stream.slice(0, 10), stream.slice(10, 70), stream.slice(70, 71), stream.slice(71)]) out += String(tap.pass(enc(piece)));
    out += tap.end();
    expect(out).toBe(chunk("he") + chunk('llo "usage":null') + "data: [DONE]\n\n");
    expect(u.result()).toEqual({ inputTokens: 3, outputTokens: 2, estimated: false });
  });

  it("strip: CRLF framing", () => {
    const u = new StreamUsage("openai.chat", 0);
    const tap = stripTap(u);
    const crlf = (s: string) => s.replace(/\n/g, "\r\n");
    const out = String(tap.pass(enc(crlf(chunk("a", "null") + usageOnly)))) + tap.end();
    expect(out).toBe(crlf(chunk("a")));
  });

  it("sse: passes chunks through unchanged and reads usage on the side", () => {
    const u = new StreamUsage("openai.chat", 0);
    const tap = sseTap(u);
    const c = enc(chunk("x") + usageOnly);
    expect(tap.pass(c)).toBe(c);
    tap.end();
    expect(u.hasReport).toBe(true);
  });

  it("json array (Gemini without alt=sse): usage from the whole array at the end", () => {
    const u = new StreamUsage("gemini.stream", 0);
    const tap = jsonArrayTap(u);
    const text = JSON.stringify([{ candidates: [{ content: { parts: [{ text: "hi" }] } }] }, { usageMetadata: { promptTokenCount: 4, candidatesTokenCount: 6 } }]);
    tap.pass(enc(text.slice(0, 20)));
    tap.pass(enc(text.slice(20)));
    tap.end();
    expect(u.result()).toEqual({ inputTokens: 4, outputTokens: 6, estimated: false });
  });
});

describe("key scrubbing", () => {
  it("replaces every occurrence in bytes and text; clean data is returned as is", () => {
    const s = new KeyScrubber(["sk-secret-key-1", "short"]);
    const clean = Buffer.from("nothing here");
    expect(s.bytes(clean)).toBe(clean);
    expect(s.bytes(Buffer.from("a sk-secret-key-1 b sk-secret-key-1")).toString()).toBe("a [provider key redacted] b [provider key redacted]");
    expect(s.text("x sk-secret-key-1")).toBe("x [provider key redacted]");
    // A key shorter than 8 characters is a key all the same: removed wherever it appears.
    expect(s.text("a short key")).toBe("a [provider key redacted] key");
    expect(s.bytes(Buffer.from("short")).toString()).toBe("[provider key redacted]");
  });
});
