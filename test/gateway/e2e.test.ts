// The gateway end to end over a real tailnet: client nodes call it with the
// official openai, @anthropic-ai/sdk and @google/genai packages (their fetch
// is the client node's), the gateway node identifies them with whois and
// proxies to the simulated provider on 127.0.0.1.
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import Anthropic from "@anthropic-ai/sdk";
import OpenAI from "openai";
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from "vitest";
import type { LogRecord } from "../../src/gateway/index.js";
import { CLIENT_KEY, PROVIDER_KEY, startGatewayTailnet, type GatewayTailnet } from "./gateway-tailnet.js";

let t: GatewayTailnet;
/** Every response body and error the clients saw, searched for the provider key at the end. */
const seen: string[] = [];

const MESHGUARD = {
  version: 3,
  rules: [
    { id: "agent-a-models", effect: "allow", src: ["tag:agent-a"], llm: { model: ["openai/*", "anthropic/*", "gemini/*"], maxTokens: 1000 } },
    { id: "agent-b-mini", effect: "allow", src: ["tag:agent-b"], llm: { model: ["openai/gpt-4o-mini"] } },
    { id: "alice-all", effect: "allow", src: ["alice@"], llm: { model: ["*"] } },
  ],
};

beforeAll(async () => {
  t = await startGatewayTailnet({ meshguard: MESHGUARD, sim: { outputTokens: 12, chunks: 4 } });
});
afterAll(() => t?.close());
beforeEach(() => {
  t.sim.reset();
  t.sim.options.lockstep = false;
});

const last = () => t.sim.requests.at(-1)!;
const note = <T>(v: T): T => (seen.push(JSON.stringify(v)), v);

async function records(filter: (r: LogRecord) => boolean = () => true): Promise<LogRecord[]> {
  await t.gw.store!.flush();
  return (await t.gw.store!.queryLogs({ limit: 1000 })).records.filter(filter);
}

/** The provider saw its own key, and nothing of the client's. */
function expectProviderKeyOnly(header: string, value: string) {
  const r = last();
  expect(r.headers[header]).toBe(value);
  expect(JSON.stringify(r.headers)).not.toContain(CLIENT_KEY);
}

describe("OpenAI API over the tailnet", () => {
  it("chat completions: the provider key replaces the client's; unknown fields and headers pass through", async () => {
    const oai = t.openai(t.nodes.agentA);
    const body = { model: "gpt-4o-mini", max_tokens: 100, messages: [{ role: "user" as const, content: "hello gateway" }], some_future_field: { nested: [1, 2] } };
    const { data: r, response } = await oai.chat.completions.create(body as OpenAI.ChatCompletionCreateParamsNonStreaming, { headers: { "openai-beta": "future=v9", "x-trace-id": "trace-42" } }).withResponse();
    note(r);
    expect(r.choices[0]!.message.content!.split(" ")).toHaveLength(12);
    expect(r.usage).toMatchObject({ prompt_tokens: Math.ceil("hello gateway".length / 4), completion_tokens: 12 });
    expectProviderKeyOnly("authorization", `Bearer ${PROVIDER_KEY}`);
    expect(last().body).toEqual(body);
    expect(last().headers).toMatchObject({ "openai-beta": "future=v9", "x-trace-id": "trace-42" });
    const [rec] = await records((x) => x.operation === "openai.chat");
    expect(rec).toMatchObject({ provider: "openai", model: "gpt-4o-mini", status: 200, outcome: "ok", caller: { node: "agent-a", tags: ["tag:agent-a"], via: "tailnet" } });
    // The answer names its log record; the provider's own headers come back too.
    expect(response.headers.get("x-meshguard-request-id")).toBe(rec!.id);
    expect(response.headers.get("x-request-id")).toMatch(/^req_sim/);
    expect(rec!.usage).toEqual({ inputTokens: 4, outputTokens: 12, estimated: false });
    expect(rec!.caller.user).toMatch(/^alice/);
  });

  it("a chat stream: the gateway asks for usage, records it, and strips what the client did not ask for", async () => {
    const oai = t.openai(t.nodes.agentA);
    const chunks: OpenAI.ChatCompletionChunk[] = [];
    for await (const c of await oai.chat.completions.create({ model: "gpt-4o", max_tokens: 100, stream: true, messages: [{ role: "user", content: "stream me" }] })) chunks.push(note(c));
    expect(last().body.stream_options).toEqual({ include_usage: true });
    // The client sees the stream it asked for: no usage-only chunk, no "usage": null members.
    expect(chunks.every((c) => !("usage" in c))).toBe(true);
    expect(chunks.every((c) => c.choices.length === 1)).toBe(true);
    expect(chunks.map((c) => c.choices[0]!.delta.content ?? "").join("").split(" ")).toHaveLength(12);
    const [rec] = await records((x) => x.operation === "openai.chat" && x.stream);
    expect(rec!.usage).toEqual({ inputTokens: Math.ceil("stream me".length / 4), outputTokens: 12, estimated: false });
    expect(rec!.ttftMs).toBeGreaterThan(0);
  });

  it("a chat stream that asked for usage itself gets the usage chunk", async () => {
    const oai = t.openai(t.nodes.laptop);
    const chunks: OpenAI.ChatCompletionChunk[] = [];
    for await (const c of await oai.chat.completions.create({ model: "gpt-4o", stream: true, stream_options: { include_usage: true }, messages: [{ role: "user", content: "x" }] })) chunks.push(c);
    expect(chunks.at(-1)!.usage).toMatchObject({ completion_tokens: 12 });
  });

  it("responses, streamed and not, with usage from the answer", async () => {
    const oai = t.openai(t.nodes.agentA);
    const r = note(await oai.responses.create({ model: "gpt-4o", input: "what is a tailnet", max_output_tokens: 50 }));
    expect(r.output_text.split(" ")).toHaveLength(12);
    expect(last().path).toBe("/v1/responses");
    expectProviderKeyOnly("authorization", `Bearer ${PROVIDER_KEY}`);
    let text = "";
    for await (const ev of await oai.responses.create({ model: "gpt-4o", input: "again", max_output_tokens: 50, stream: true })) {
      note(ev);
      if (ev.type === "response.output_text.delta") text += ev.delta;
    }
    expect(text.split(" ")).toHaveLength(12);
    const recs = await records((x) => x.operation === "openai.responses");
    expect(recs.map((x) => [x.stream, x.usage?.outputTokens, x.usage?.estimated])).toEqual([
      [true, 12, false],
      [false, 12, false],
    ]);
  });

  it("embeddings", async () => {
    const oai = t.openai(t.nodes.agentA);
    const e = note(await oai.embeddings.create({ model: "text-embedding-3-small", input: ["a", "b"] }));
    expect(e.data).toHaveLength(2);
    expect(last().path).toBe("/v1/embeddings");
  });

  it("a model written provider/model goes to that provider with the bare name", async () => {
    const r = await t.openai(t.nodes.laptop).chat.completions.create({ model: "openai/gpt-4o-mini", messages: [{ role: "user", content: "x" }] });
    expect(r.choices[0]!.message.content).toBeTruthy();
    expect(last().body.model).toBe("gpt-4o-mini");
  });
});

describe("Anthropic API over the tailnet", () => {
  it("messages, count_tokens and a stream; x-api-key is the provider's; beta headers pass", async () => {
    const ant = t.anthropic(t.nodes.agentA);
    const m = note(await ant.messages.create({ model: "claude-haiku-4-5", max_tokens: 200, messages: [{ role: "user", content: "hi" }] }, { headers: { "anthropic-beta": "future-feature-2099-01-01" } }));
    expect(m.usage).toMatchObject({ input_tokens: 1, output_tokens: 12 });
    expectProviderKeyOnly("x-api-key", PROVIDER_KEY);
    expect(last().headers["anthropic-beta"]).toBe("future-feature-2099-01-01");
    expect(last().headers["anthropic-version"]).toBeTruthy();

    const n = note(await ant.messages.countTokens({ model: "claude-sonnet-4-5", messages: [{ role: "user", content: "count these words" }] }));
    expect(n.input_tokens).toBeGreaterThan(0);
    expect(last().path).toBe("/v1/messages/count_tokens");

    const final = await ant.messages.stream({ model: "claude-sonnet-4-5", max_tokens: 200, messages: [{ role: "user", content: "stream" }] }).finalMessage();
    note(final);
    expect(final.usage.output_tokens).toBe(12);
    const recs = await records((x) => x.provider === "anthropic");
    expect(recs.map((x) => [x.operation, x.stream, x.usage?.outputTokens])).toEqual([
      ["anthropic.messages", true, 12],
      ["anthropic.count_tokens", false, 0],
      ["anthropic.messages", false, 12],
    ]);
  });
});

describe("Gemini API over the tailnet", () => {
  it("generateContent, streamGenerateContent and countTokens; x-goog-api-key is the provider's", async () => {
    const gem = t.gemini(t.nodes.agentA);
    const r = note(await gem.models.generateContent({ model: "gemini-2.5-flash", contents: "hello", config: { maxOutputTokens: 100 } }));
    expect(r.text!.split(" ")).toHaveLength(12);
    expectProviderKeyOnly("x-goog-api-key", PROVIDER_KEY);
    let text = "";
    for await (const c of await gem.models.generateContentStream({ model: "gemini-2.5-pro", contents: "hello", config: { maxOutputTokens: 100 } })) text += note(c).text ?? "";
    expect(text.split(" ")).toHaveLength(12);
    expect(last().query).toContain("alt=sse");
    const n = note(await gem.models.countTokens({ model: "gemini-2.5-flash", contents: "count me please" }));
    expect(n.totalTokens).toBeGreaterThan(0);
    const recs = await records((x) => x.provider === "gemini");
    expect(recs.map((x) => [x.operation, x.model, x.usage?.outputTokens])).toEqual([
      ["gemini.count_tokens", "gemini-2.5-flash", 0],
      ["gemini.stream", "gemini-2.5-pro", 12],
      ["gemini.generate", "gemini-2.5-flash", 12],
    ]);
  });
});

describe("streaming is chunk by chunk (lockstep: the provider sends chunk n+1 only after the client holds chunk n)", () => {
  const check = async (n: number) => {
    // The client holds chunk n: the provider has sent exactly n and is parked.
    expect(t.sim.totals.chunksSent).toBe(n);
    await t.sim.waiting();
    expect(t.sim.totals.chunksSent).toBe(n);
    t.sim.next();
  };

  it("openai, anthropic and gemini streams", async () => {
    t.sim.options.lockstep = true;
    let n = 0;
    for await (const c of await t.openai(t.nodes.agentA).chat.completions.create({ model: "gpt-4o", max_tokens: 50, stream: true, messages: [{ role: "user", content: "x" }] })) {
      if (c.choices[0]?.delta.content && ++n < 4) await check(n);
    }
    expect(n).toBe(4);
    t.sim.reset();
    n = 0;
    for await (const e of await t.anthropic(t.nodes.agentA).messages.create({ model: "claude-haiku-4-5", max_tokens: 50, stream: true, messages: [{ role: "user", content: "x" }] })) {
      if (e.type === "content_block_delta" && ++n < 4) await check(n);
    }
    expect(n).toBe(4);
    t.sim.reset();
    n = 0;
    for await (const c of await t.gemini(t.nodes.agentA).models.generateContentStream({ model: "gemini-2.5-flash", contents: "x", config: { maxOutputTokens: 50 } })) {
      if (c.text && ++n < 4) await check(n);
    }
    expect(n).toBe(4);
  });

  it("a client that disconnects mid-stream aborts the upstream request, and its usage so far is recorded", async () => {
    t.sim.options.lockstep = true;
    const ac = new AbortController();
    let n = 0;
    const stream = await t.anthropic(t.nodes.laptop).messages.create({ model: "claude-sonnet-4-5", max_tokens: 50, stream: true, messages: [{ role: "user", content: "long answer" }] }, { signal: ac.signal });
    try {
      for await (const e of stream) {
        if (e.type !== "content_block_delta") continue;
        if (++n === 2) {
          ac.abort();
          break;
        }
        await check(n);
      }
    } catch {
      // the SDK may report the abort as an error
    }
    expect(n).toBe(2);
    // The provider's handler ends only when its connection closes: it was parked waiting for a permit.
    const rec = last();
    await vi.waitFor(() => expect(rec.status).not.toBe(0), { timeout: 10_000 });
    expect(rec.chunksSent).toBe(2);
    const [logged] = await vi.waitFor(async () => {
      const r = await records((x) => x.outcome === "client_aborted");
      expect(r).toHaveLength(1);
      return r;
    });
    // message_start carried the input count; the output so far is what message_delta had not yet said.
    expect(logged!.usage!.inputTokens).toBe(Math.ceil("long answer".length / 4));
    t.sim.options.lockstep = false;
  });
});

describe("models and policy", () => {
  it("/v1/models lists only what the caller may use (OpenAI, Anthropic and Gemini shapes)", async () => {
    const ids = async (node: keyof GatewayTailnet["nodes"]) => (await t.openai(t.nodes[node]).models.list()).data.map((m) => m.id);
    expect(await ids("agentB")).toEqual(["gpt-4o-mini"]);
    expect(await ids("agentA")).toEqual(["gpt-4o-mini", "gpt-4o", "text-embedding-3-small"]);
    expect((await t.anthropic(t.nodes.agentB).models.list()).data).toEqual([]);
    expect((await t.anthropic(t.nodes.laptop).models.list()).data.map((m) => m.id)).toEqual(["claude-sonnet-4-5", "claude-haiku-4-5"]);
    const gem = await t.gemini(t.nodes.agentB).models.list();
    expect(gem.page).toEqual([]);
    // One model: what the caller may use (also one matched by a glob), else a 404.
    expect(await t.openai(t.nodes.agentA).models.retrieve("gpt-4o-2024-08-06")).toMatchObject({ id: "gpt-4o-2024-08-06", owned_by: "openai" });
    expect(await t.openai(t.nodes.agentB).models.retrieve("gpt-4o").catch((e) => e)).toBeInstanceOf(OpenAI.NotFoundError);
    expect(await t.anthropic(t.nodes.laptop).models.retrieve("claude-haiku-4-5")).toMatchObject({ type: "model", id: "claude-haiku-4-5" });
    expect(await t.gemini(t.nodes.agentA).models.get({ model: "gemini-2.5-pro" })).toMatchObject({ name: "models/gemini-2.5-pro" });
  });

  it("a denied call is a 403 in the API's format with the policy's reason, and never reaches the provider", async () => {
    const e1 = await t.openai(t.nodes.agentB).chat.completions.create({ model: "gpt-4o", messages: [{ role: "user", content: "x" }] }).catch((e) => e);
    expect(e1).toBeInstanceOf(OpenAI.PermissionDeniedError);
    expect(e1.message).toMatch(/denied by policy/);
    // agent-a may use up to 1000 max tokens: more, or none declared, is denied.
    const e2 = await t.openai(t.nodes.agentA).chat.completions.create({ model: "gpt-4o", max_tokens: 5000, messages: [{ role: "user", content: "x" }] }).catch((e) => e);
    expect(e2).toBeInstanceOf(OpenAI.PermissionDeniedError);
    const e3 = await t.anthropic(t.nodes.agentB).messages.create({ model: "claude-haiku-4-5", max_tokens: 10, messages: [{ role: "user", content: "x" }] }).catch((e) => e);
    expect(e3).toBeInstanceOf(Anthropic.PermissionDeniedError);
    expect(e3.error).toMatchObject({ type: "error", error: { type: "permission_error" } });
    const e4 = await t.gemini(t.nodes.agentB).models.generateContent({ model: "gemini-2.5-flash", contents: "x" }).catch((e) => e);
    expect(e4.status).toBe(403);
    expect(e4.message).toContain("PERMISSION_DENIED");
    for (const e of [e1, e2, e3, e4]) note(String(e));
    expect(t.sim.requests).toEqual([]);
    const recs = await records((x) => x.outcome === "denied");
    expect(recs.length).toBeGreaterThanOrEqual(4);
  });
});

describe("logs API (/meshguard/v1)", () => {
  const api = async (node: keyof GatewayTailnet["nodes"], path: string) => {
    const res = await t.nodes[node].fetch(`${t.gw.url}/meshguard/v1${path}`);
    const body = note(await res.json());
    return { status: res.status, body: body as any };
  };

  it("whoami says who the tailnet says the caller is", async () => {
    expect((await api("agentB", "/whoami")).body).toMatchObject({ node: "agent-b", tags: ["tag:agent-b"], role: "user", via: "tailnet", user: expect.stringMatching(/^bob/) });
    expect((await api("laptop", "/whoami")).body).toMatchObject({ node: "laptop", tags: [], role: "admin", user: expect.stringMatching(/^alice/) });
  });

  it("a user reads only their own logs; an admin reads everyone's", async () => {
    await t.openai(t.nodes.agentB).chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "bob's question" }] });
    await t.gw.store!.flush();
    const bob = await api("agentB", "/logs?limit=1000");
    expect(bob.status).toBe(200);
    expect(bob.body.records.length).toBeGreaterThan(0);
    expect(bob.body.records.every((r: LogRecord) => r.caller.node === "agent-b")).toBe(true);
    // Asking for alice's records by user, or one of them by id, shows nothing.
    const aliceRec = (await records((x) => x.caller.node === "agent-a"))[0]!;
    expect((await api("agentB", `/logs?user=${encodeURIComponent(aliceRec.caller.user)}`)).body.records.every((r: LogRecord) => r.caller.node === "agent-b")).toBe(true);
    expect((await api("agentB", `/logs/${aliceRec.id}`)).status).toBe(404);
    const admin = await api("laptop", "/logs?limit=1000");
    expect(new Set(admin.body.records.map((r: LogRecord) => r.caller.node))).toEqual(new Set(["agent-a", "agent-b", "laptop"]));
  });
});

describe("the provider key never leaves the gateway", () => {
  it("appears in no response a client saw, no log record and no byte of the database files", async () => {
    expect(seen.length).toBeGreaterThan(20);
    for (const s of seen) expect(s).not.toContain(PROVIDER_KEY);
    for (const r of await records()) expect(JSON.stringify(r)).not.toContain(PROVIDER_KEY);
    expect(t.warnings.join("\n")).not.toContain(PROVIDER_KEY);
    const dataDir = join(t.dir, "data");
    const files = readdirSync(dataDir);
    expect(files.some((f) => f.endsWith(".db"))).toBe(true);
    for (const f of files) {
      const bytes = readFileSync(join(dataDir, f));
      expect(bytes.includes(PROVIDER_KEY), f).toBe(false);
      // Not vacuous: the database holds the requests' text.
      if (f.endsWith(".db") || f.endsWith("-wal")) expect(bytes.includes("gpt-4o-mini") || f.endsWith(".db")).toBe(true);
    }
    const all = Buffer.concat(files.map((f) => readFileSync(join(dataDir, f))));
    expect(all.includes("hello gateway")).toBe(true);
    expect(all.includes(CLIENT_KEY)).toBe(false);
  });
});
