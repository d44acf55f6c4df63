// The official SDK clients under the guard, each pointed at a local server
// that speaks its wire format: openai, @anthropic-ai/sdk, and the MCP client
// (@modelcontextprotocol/sdk) over streamable HTTP.
import { cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import { createRequire } from "node:module";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { pathToFileURL } from "node:url";
import Anthropic from "@anthropic-ai/sdk";
import OpenAI from "openai";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { z } from "zod";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PolicyDeniedError } from "../../src/guard/index.js";
import { countingServer, denied, guard, type Counting } from "./helpers.js";

let llm: Counting;
beforeAll(async () => {
  llm = await countingServer((req, res, body) => {
    const b = JSON.parse(body || "{}") as { model?: string };
    res.setHeader("content-type", "application/json");
    if (req.url === "/v1/chat/completions") {
      res.end(JSON.stringify({ id: "c1", object: "chat.completion", created: 1, model: b.model, choices: [{ index: 0, message: { role: "assistant", content: "hello from openai" }, finish_reason: "stop" }], usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 } }));
    } else if (req.url === "/v1/messages") {
      res.end(JSON.stringify({ id: "m1", type: "message", role: "assistant", model: b.model, content: [{ type: "text", text: "hello from anthropic" }], stop_reason: "end_turn", stop_sequence: null, usage: { input_tokens: 1, output_tokens: 1 } }));
    } else res.writeHead(404).end("{}");
  });
});
afterAll(() => llm.close());

/** The policy: the LLM endpoint over HTTP, and per provider the models allowed (with a max-tokens cap). */
function llmRules() {
  return [
    { id: "llm-endpoint", src: ["tag:agent"], http: { host: ["127.0.0.1"], port: [llm.port], method: ["POST"] } },
    { id: "small-models", src: ["tag:agent"], llm: { model: ["openai/gpt-4o-mini", "anthropic/claude-haiku-*"], maxTokens: 1000 } },
  ];
}
const providers = () => ({ [`127.0.0.1:${llm.port}`]: "openai" });

describe("openai SDK", () => {
  const client = () => new OpenAI({ baseURL: `${llm.url}/v1`, apiKey: "test" });

  it("an allowed model completes", async () => {
    guard({ rules: llmRules(), llm: { providers: providers() }, intercept: { sdk: true } });
    const r = await client().chat.completions.create({ model: "gpt-4o-mini", max_tokens: 100, messages: [{ role: "user", content: "hi" }] });
    expect(r.choices[0]!.message.content).toBe("hello from openai");
  });

  it("a disallowed model throws PolicyDeniedError at once (no SDK retries) and nothing is sent", async () => {
    const g = guard({ rules: llmRules(), llm: { providers: providers() }, intercept: { sdk: true } });
    expect(g.instrumented.some((s) => s.startsWith("openai"))).toBe(true);
    const hits = llm.hits;
    const t0 = performance.now();
    const err = await client()
      .chat.completions.create({ model: "gpt-4o", max_tokens: 100, messages: [{ role: "user", content: "hi" }] })
      .then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(PolicyDeniedError);
    expect((err as PolicyDeniedError).target).toMatchObject({ kind: "llm", provider: "openai", model: "gpt-4o", maxTokens: 100 });
    expect(performance.now() - t0).toBeLessThan(300);
    expect(llm.hits).toBe(hits);
  });

  it("through a fetch built on node:http (openai 4 sends with node-fetch): an allowed model completes, a disallowed one is refused", async () => {
    // The SDK layer decided the call with its body; node:http, which cannot read the body, does not judge it again.
    const headerObject = (h: unknown): Record<string, string> => {
      const out: Record<string, string> = {};
      new Headers(h as ConstructorParameters<typeof Headers>[0]).forEach((v, k) => (out[k] = v));
      return out;
    };
    const httpFetch = (url: string | URL | Request, init?: RequestInit): Promise<Response> =>
      new Promise((resolve, reject) => {
        const req = http.request(String(url), { method: init?.method ?? "GET", headers: headerObject(init?.headers) }, (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (d: Buffer) => chunks.push(d));
          res.on("end", () => resolve(new Response(Buffer.concat(chunks), { status: res.statusCode ?? 0, headers: res.headers as Record<string, string> })));
        });
        req.on("error", reject);
        req.end(typeof init?.body === "string" ? init.body : undefined);
      });
    guard({ rules: llmRules(), llm: { providers: providers() }, intercept: { sdk: true } });
    const c = new OpenAI({ baseURL: `${llm.url}/v1`, apiKey: "test", fetch: httpFetch as typeof fetch });
    const r = await c.chat.completions.create({ model: "gpt-4o-mini", max_tokens: 100, messages: [{ role: "user", content: "hi" }] });
    expect(r.choices[0]!.message.content).toBe("hello from openai");
    const hits = llm.hits;
    const err = await c.chat.completions.create({ model: "gpt-4o", messages: [{ role: "user", content: "hi" }] }).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(PolicyDeniedError);
    expect(llm.hits).toBe(hits);
  });

  it("max tokens over the rule's cap are denied", async () => {
    guard({ rules: llmRules(), llm: { providers: providers() }, intercept: { sdk: true } });
    const hits = llm.hits;
    await denied(client().chat.completions.create({ model: "gpt-4o-mini", max_tokens: 5000, messages: [{ role: "user", content: "hi" }] }));
    expect(llm.hits).toBe(hits);
  });

  it("without SDK instrumentation the dispatcher still refuses: nothing is sent", async () => {
    guard({ rules: llmRules(), llm: { providers: providers() }, intercept: { sdk: false } });
    const hits = llm.hits;
    const c = new OpenAI({ baseURL: `${llm.url}/v1`, apiKey: "test", maxRetries: 0 });
    await denied(c.chat.completions.create({ model: "gpt-4o", messages: [{ role: "user", content: "hi" }] }));
    expect(llm.hits).toBe(hits);
  });
});

// Regression (issue 11): with openai 7 a denied model surfaced as
// `APIConnectionError: Connection error.` after ~1.5 s of the SDK's retries.
// The SDK layer must not depend on which inner method the SDK's retry loop
// awaits, nor on which layer below refuses: each case below puts the denial
// somewhere the old fetchWithAuth patch did not see it as synchronous.
describe("a denial under an LLM SDK reaches the caller as itself, at once, with no retry", () => {
  /** run makes one denied call and returns the error, the time it took, the deny decisions made and what reached the server. */
  async function run(call: () => Promise<unknown>, opts: Partial<Parameters<typeof guard>[0]> = {}) {
    const g = guard({ rules: llmRules(), llm: { providers: providers() }, intercept: { sdk: true }, ...opts });
    let denies = 0;
    g.on("decision", (d) => d.outcome === "deny" && denies++);
    const hits = llm.hits;
    const t0 = performance.now();
    const err = await call().then(() => undefined, (e: unknown) => e);
    return { err, ms: performance.now() - t0, denies, reached: llm.hits - hits };
  }
  const ask = (c: OpenAI, model = "gpt-4o") => c.chat.completions.create({ model, max_tokens: 100, messages: [{ role: "user", content: "hi" }] });

  it("openai: a subclass that wraps fetchWithAuth in its own async method (one more async layer, as a new SDK release may add)", async () => {
    class Traced extends OpenAI {
      override async fetchWithAuth(...a: Parameters<OpenAI["fetchWithAuth"]>) {
        return super.fetchWithAuth(...a);
      }
    }
    const r = await run(() => ask(new Traced({ baseURL: `${llm.url}/v1`, apiKey: "test" })));
    expect(r.err).toBeInstanceOf(PolicyDeniedError);
    expect((r.err as PolicyDeniedError).target).toMatchObject({ kind: "llm", model: "gpt-4o" });
    expect(r.denies).toBe(1); // one decision: the SDK did not try again
    expect(r.ms).toBeLessThan(300); // the SDK's first retry waits ≥ 375 ms
    expect(r.reached).toBe(0);
  });

  it("openai: refused by the fetch dispatcher (the client's fetch sends elsewhere than its baseURL)", async () => {
    const other = await countingServer();
    try {
      // The SDK layer judges the baseURL (allowed); the fetch goes to another port, which the dispatcher refuses.
      const c = new OpenAI({ baseURL: `${llm.url}/v1`, apiKey: "test", fetch: (url, init) => fetch(String(url).replace(llm.url, other.url), init) });
      const r = await run(() => ask(c, "gpt-4o-mini"));
      expect(r.err).toBeInstanceOf(PolicyDeniedError);
      expect((r.err as PolicyDeniedError).target).toMatchObject({ kind: "http", port: other.port });
      expect(r.denies).toBe(1);
      expect(r.ms).toBeLessThan(300);
      expect(other.hits + other.conns).toBe(0);
    } finally {
      await other.close();
    }
  });

  it("anthropic: refused by the fetch dispatcher", async () => {
    const other = await countingServer();
    try {
      const c = new Anthropic({ baseURL: llm.url, apiKey: "test", fetch: (url, init) => fetch(String(url).replace(llm.url, other.url), init) });
      const r = await run(() => c.messages.create({ model: "claude-haiku-4-5", max_tokens: 100, messages: [{ role: "user", content: "hi" }] }), {
        llm: { providers: { [`127.0.0.1:${llm.port}`]: "anthropic" } },
      });
      expect(r.err).toBeInstanceOf(PolicyDeniedError);
      expect(r.denies).toBe(1);
      expect(r.ms).toBeLessThan(300);
      expect(other.hits + other.conns).toBe(0);
    } finally {
      await other.close();
    }
  });

  it("openai: the copy a wrapper package installed for itself (@langchain/openai's nested openai) is patched too", async () => {
    // A project whose @langchain/openai brought its own openai (another major than the app's).
    const dir = mkdtempSync(join(tmpdir(), "mg-nested-sdk-"));
    try {
      const wrapper = join(dir, "node_modules", "@langchain", "openai");
      mkdirSync(wrapper, { recursive: true });
      writeFileSync(join(wrapper, "package.json"), JSON.stringify({ name: "@langchain/openai", version: "0.0.0-fixture", main: "index.js" }));
      writeFileSync(join(wrapper, "index.js"), "module.exports = {};\n");
      const real = dirname(createRequire(import.meta.url).resolve("openai")); // its index.js is at the package root
      const nested = join(wrapper, "node_modules", "openai");
      cpSync(real, nested, { recursive: true, filter: (f) => !/\.(map|d\.m?ts)$/.test(f) && f !== join(real, "src") });
      const { default: Nested } = (await import(pathToFileURL(join(nested, "index.mjs")).href)) as { default: typeof OpenAI };
      expect(Nested).not.toBe(OpenAI); // a second copy of the SDK, found only through the wrapper
      const r = await run(() => ask(new Nested({ baseURL: `${llm.url}/v1`, apiKey: "test" })), { sdkSearchPaths: [dir] });
      expect(r.err).toBeInstanceOf(PolicyDeniedError);
      expect(r.denies).toBe(1);
      expect(r.ms).toBeLessThan(300);
      expect(r.reached).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("LangChain (ChatOpenAI): its AsyncCaller does not retry the denial (it did, for ~90 s)", async () => {
    const { ChatOpenAI } = await import("@langchain/openai");
    const r = await run(() => new ChatOpenAI({ model: "gpt-4o", apiKey: "test", configuration: { baseURL: `${llm.url}/v1` } }).invoke("hi"));
    expect(r.err).toBeInstanceOf(PolicyDeniedError);
    expect(r.denies).toBe(1);
    expect(r.ms).toBeLessThan(300);
    expect(r.reached).toBe(0);
  });

  it("the AI SDK (ai + @ai-sdk/openai): the denial is not retried as a connection error", async () => {
    const [{ generateText }, { createOpenAI }] = await Promise.all([import("ai"), import("@ai-sdk/openai")]);
    const r = await run(() => generateText({ model: createOpenAI({ baseURL: `${llm.url}/v1`, apiKey: "test" }).chat("gpt-4o"), prompt: "hi" }));
    expect(r.err).toBeInstanceOf(PolicyDeniedError);
    expect(r.denies).toBe(1);
    expect(r.ms).toBeLessThan(300);
    expect(r.reached).toBe(0);
  });
});

describe("anthropic SDK", () => {
  const client = () => new Anthropic({ baseURL: llm.url, apiKey: "test" });
  const anthropicProviders = () => ({ [`127.0.0.1:${llm.port}`]: "anthropic" });

  it("an allowed model answers; a disallowed one throws PolicyDeniedError with nothing sent", async () => {
    guard({ rules: llmRules(), llm: { providers: anthropicProviders() }, intercept: { sdk: true } });
    const ok = await client().messages.create({ model: "claude-haiku-4-5", max_tokens: 100, messages: [{ role: "user", content: "hi" }] });
    expect(ok.content[0]).toMatchObject({ type: "text", text: "hello from anthropic" });
    const hits = llm.hits;
    const err = await client()
      .messages.create({ model: "claude-opus-4", max_tokens: 100, messages: [{ role: "user", content: "hi" }] })
      .then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(PolicyDeniedError);
    expect((err as PolicyDeniedError).target).toMatchObject({ kind: "llm", provider: "anthropic", model: "claude-opus-4" });
    expect(llm.hits).toBe(hits);
  });
});

describe("LLM calls over plain fetch", () => {
  it("the model is read from the buffered body", async () => {
    guard({ rules: llmRules(), llm: { providers: providers() } });
    const post = (model: string) => fetch(`${llm.url}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ model, max_tokens: 10, messages: [] }) });
    expect((await post("gpt-4o-mini")).status).toBe(200);
    const hits = llm.hits;
    await denied(post("gpt-4o"));
    expect(llm.hits).toBe(hits);
  });

  it("an OpenAI-compatible path on an unknown host is an LLM call with the host as provider", async () => {
    guard({ rules: [...llmRules(), { id: "any-http", src: ["tag:agent"], http: { host: ["127.0.0.1"] } }] });
    const hits = llm.hits;
    const err = (await denied(fetch(`${llm.url}/v1/chat/completions`, { method: "POST", body: JSON.stringify({ model: "gpt-4o-mini" }) }))) as PolicyDeniedError;
    expect(err.target).toMatchObject({ kind: "llm", provider: "127.0.0.1", model: "gpt-4o-mini" });
    expect(llm.hits).toBe(hits);
  });

  it("a streamed body of unknown size fails closed", async () => {
    guard({ rules: llmRules(), llm: { providers: providers() } });
    const hits = llm.hits;
    const body = new ReadableStream({
      start(c) {
        c.enqueue(new TextEncoder().encode(JSON.stringify({ model: "gpt-4o-mini" })));
        c.close();
      },
    });
    const err = await denied(fetch(`${llm.url}/v1/chat/completions`, { method: "POST", body, duplex: "half" } as RequestInit));
    expect(err.message).toMatch(/unknown size/);
    expect(llm.hits).toBe(hits);
  });

  it("a body over maxBodyBytes fails closed", async () => {
    guard({ rules: llmRules(), llm: { providers: providers() }, maxBodyBytes: 64 });
    const hits = llm.hits;
    const err = await denied(fetch(`${llm.url}/v1/chat/completions`, { method: "POST", body: JSON.stringify({ model: "gpt-4o-mini", pad: "x".repeat(200) }) }));
    expect(err.message).toMatch(/maxBodyBytes/);
    expect(llm.hits).toBe(hits);
  });
});

describe("MCP client", () => {
  let server: http.Server;
  let url: string;
  let toolCalls = 0;

  beforeAll(async () => {
    server = http.createServer(async (req, res) => {
      // Stateless streamable HTTP: a fresh MCP server per request.
      const mcp = new McpServer({ name: "files", version: "1.0.0" });
      mcp.registerTool("read", { inputSchema: { path: z.string() } }, async ({ path }) => {
        toolCalls++;
        return { content: [{ type: "text", text: `read ${path}` }] };
      });
      mcp.registerTool("delete", { inputSchema: { path: z.string() } }, async () => {
        toolCalls++;
        return { content: [{ type: "text", text: "deleted" }] };
      });
      const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined });
      res.on("close", () => void transport.close());
      await mcp.connect(transport);
      let body = "";
      req.on("data", (d) => (body += d));
      req.on("end", () => void transport.handleRequest(req, res, body ? JSON.parse(body) : undefined));
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/mcp`;
  });
  afterAll(() => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }));

  it("tools/call is judged by server name, tool and arguments; a denied call never reaches the server", async () => {
    const g = guard({
      rules: [
        { id: "mcp-http", src: ["tag:agent"], http: { host: ["127.0.0.1"], path: ["/mcp"] } },
        { id: "read-docs", src: ["tag:agent"], mcp: { server: ["files"], tool: ["read"], args: { path: "/docs/**" } } },
      ],
      intercept: { sdk: true },
      // The server calls itself "files" too, but only this registration names it.
      mcp: { servers: { files: url } },
    });
    expect(g.instrumented).toContain("@modelcontextprotocol/sdk (esm)");
    const client = new Client({ name: "agent", version: "1.0.0" });
    await client.connect(new StreamableHTTPClientTransport(new URL(url)));
    const ok = await client.callTool({ name: "read", arguments: { path: "/docs/a.md" } });
    expect(ok.content).toEqual([{ type: "text", text: "read /docs/a.md" }]);
    const calls = toolCalls;
    const e1 = await client.callTool({ name: "delete", arguments: { path: "/docs/a.md" } }).then(() => undefined, (e: unknown) => e);
    expect(e1).toBeInstanceOf(PolicyDeniedError);
    expect((e1 as PolicyDeniedError).target).toMatchObject({ kind: "mcp", server: "files", tool: "delete" });
    await denied(client.callTool({ name: "read", arguments: { path: "/etc/passwd" } }));
    // The raw request layer is covered too.
    await denied(client.request({ method: "tools/call", params: { name: "delete", arguments: {} } }, z.object({}).passthrough()));
    expect(toolCalls).toBe(calls);
    await client.close();
  });
});
