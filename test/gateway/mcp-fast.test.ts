// The fast path of the aggregating MCP endpoint (src/gateway/mcp/fast.ts):
// a tools/call on an open session forwarded as raw JSON-RPC. Two gateways
// on loopback listeners, one with the fast path (the default) and one
// without (MESHGUARD_MCP_FAST=0, the SDK path alone), in front of the same
// official-SDK upstream (McpServer over streamable HTTP, defined here so it
// records the JSON-RPC ids it is sent and can stream progress and log
// messages). The fast path must be taken (its counter, and the upstream
// seeing the gateway's string ids) and must answer as the SDK path does:
// the same results and errors (-32003, -32004, an upstream error), the same
// log records, each caller id on its own answer with several calls in
// flight, progress and log messages reaching the caller, sampling mid-call,
// a cancellation aborting the upstream call; and what it cannot serve
// faithfully (an output schema the SDK Client checks) goes the SDK way.
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { CreateMessageRequestSchema, isInitializeRequest, LoggingMessageNotificationSchema, McpError } from "@modelcontextprotocol/sdk/types.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { startGateway, type GatewayHandle } from "../../src/gateway/index.js";
import { fastStats } from "../../src/gateway/mcp/fast.js";

interface Upstream {
  url: string;
  /** Every JSON-RPC message POSTed to it: method and id. */
  seen: Array<{ method?: string; id?: unknown; params?: Record<string, unknown>; credential?: string | string[] }>;
  /** Calls of `slow` whose handler saw its signal abort. */
  aborted: string[];
  /** Calls of `slow` that started. */
  started: string[];
  /** dropSessions forgets every session: their next request is a 404, as from a restarted server. */
  dropSessions(): void;
  close(): Promise<void>;
}

async function startUpstream(): Promise<Upstream> {
  const sessions = new Map<string, StreamableHTTPServerTransport>();
  const seen: Upstream["seen"] = [];
  const aborted: string[] = [];
  const started: string[] = [];
  const text = (t: string) => ({ content: [{ type: "text" as const, text: t }] });
  const build = () => {
    const server = new McpServer({ name: "fast-sim", version: "1.0.0" }, { capabilities: { logging: {} } });
    server.registerTool("get_issue", { description: "read an issue", inputSchema: { repo: z.string() } }, async ({ repo }) => text(`issue of ${repo}`));
    server.registerTool("fail", { description: "an upstream failure" }, async () => {
      throw new Error("the tool failed upstream");
    });
    server.registerTool("structured", { description: "with an output schema", outputSchema: { n: z.number() } }, async () => ({ ...text("n"), structuredContent: { n: 7 } }));
    server.registerTool("steps", { description: "progress and log messages", inputSchema: { n: z.number() } }, async ({ n }, extra) => {
      for (let i = 1; i <= n; i++) {
        const token = extra._meta?.progressToken;
        if (token !== undefined) await extra.sendNotification({ method: "notifications/progress", params: { progressToken: token, progress: i, total: n } });
        await extra.sendNotification({ method: "notifications/message", params: { level: "info", data: `step ${i}` } });
      }
      return text(`${n} steps`);
    });
    server.registerTool("leak", { description: "logs what it is given", inputSchema: { secret: z.string() } }, async ({ secret }, extra) => {
      await extra.sendNotification({ method: "notifications/message", params: { level: "info", data: `the key is ${secret}` } });
      return text("logged");
    });
    server.registerTool("slow", { description: "waits until cancelled", inputSchema: { tag: z.string() } }, async ({ tag }, extra) => {
      started.push(tag);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 30_000);
        extra.signal.addEventListener("abort", () => {
          aborted.push(tag);
          clearTimeout(t);
          resolve();
        });
      });
      return text(`slow ${tag}`);
    });
    server.registerTool("ask", { description: "samples the caller's model", inputSchema: { question: z.string() } }, async ({ question }) => {
      const r = await server.server.createMessage({ messages: [{ role: "user", content: { type: "text", text: question } }], maxTokens: 10 });
      return text(`answer: ${r.content.type === "text" ? r.content.text : "?"}`);
    });
    return server;
  };
  const srv = http.createServer(async (req, res) => {
    try {
      const chunks: Buffer[] = [];
      for await (const c of req) chunks.push(c as Buffer);
      const body = chunks.length ? (JSON.parse(Buffer.concat(chunks).toString("utf8")) as unknown) : undefined;
      for (const m of Array.isArray(body) ? body : body ? [body] : []) seen.push({ method: m.method, id: m.id, params: m.params, credential: req.headers["x-test-credential"] });
      const sid = req.headers["mcp-session-id"];
      if (typeof sid === "string") {
        const t = sessions.get(sid);
        if (!t) return void res.writeHead(404).end();
        return await t.handleRequest(req, res, body);
      }
      if (req.method !== "POST" || !isInitializeRequest(body)) return void res.writeHead(400).end();
      const transport: StreamableHTTPServerTransport = new StreamableHTTPServerTransport({ sessionIdGenerator: () => randomUUID(), onsessioninitialized: (id) => void sessions.set(id, transport) });
      await build().connect(transport);
      await transport.handleRequest(req, res, body);
    } catch (err) {
      if (!res.headersSent) res.writeHead(500).end(String(err));
    }
  });
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  const port = (srv.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}/mcp`,
    seen,
    aborted,
    started,
    dropSessions: () => sessions.clear(),
    async close() {
      srv.closeAllConnections();
      await new Promise<void>((r) => srv.close(() => r()));
    },
  };
}

const RULES = [
  { id: "allowed", src: ["tag:local"], mcp: { server: ["sim"], tool: ["get_issue", "fail", "structured", "steps", "slow", "ask", "missing", "leak"] } },
  { id: "short", src: ["tag:local"], mcp: { server: ["short"], tool: ["slow"] } },
  { id: "held", effect: "approve", src: ["tag:local"], mcp: { server: ["sim"], tool: ["create_issue"] } },
];

/** A provider key of the gateways': never forwarded to an MCP caller. */
const SECRET = "sk-fast-path-provider-key-7d1e0c9a";

let up: Upstream;
let dir: string;
let fast: GatewayHandle;
let slow: GatewayHandle;

async function gateway(name: string, capacity: number): Promise<GatewayHandle> {
  const policy = join(dir, `${name}.hujson`);
  writeFileSync(policy, JSON.stringify({ meshguard: { version: 6, rules: RULES, gateway: { roles: [{ src: ["tag:local"], quotas: "calls" }] } } }));
  return startGateway({
    config: {
      policy,
      dataDir: join(dir, name),
      providers: { o: { baseUrl: "http://127.0.0.1:9/v1", format: "openai", models: ["*"], key: { env: "FAST_O_KEY" } } },
      loopback: { listen: "127.0.0.1:0", principal: "tag:local" },
      quotas: { calls: { unit: "calls", capacity, refill: "1/day", per: "node" } },
      // "short": the same upstream with a timeout a slow call outlives.
      mcp: { servers: { sim: { url: up.url, timeout: 20_000 }, short: { url: up.url, timeout: 300 } } },
    },
    env: { FAST_O_KEY: SECRET },
    approvals: { timeoutMs: 20_000, callback: async () => ({ approved: false, reason: "nobody approves in this test" }) },
  });
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "mg-mcp-fast-"));
  up = await startUpstream();
  fast = await gateway("fast", 40);
  process.env.MESHGUARD_MCP_FAST = "0";
  try {
    slow = await gateway("slow", 40);
  } finally {
    delete process.env.MESHGUARD_MCP_FAST;
  }
}, 60_000);

afterAll(async () => {
  await fast?.close();
  await slow?.close();
  await up?.close();
  rmSync(dir, { recursive: true, force: true });
});

async function connect(gw: GatewayHandle, sampling = false): Promise<{ client: Client; close(): Promise<void> }> {
  const client = new Client({ name: "fast-test", version: "1.0.0" }, { capabilities: sampling ? { sampling: {} } : {} });
  if (sampling) client.setRequestHandler(CreateMessageRequestSchema, async () => ({ role: "assistant", model: "test", content: { type: "text", text: "forty-two" } }));
  const transport = new StreamableHTTPClientTransport(new URL(`${gw.loopbackUrl}/v1/mcp`));
  await client.connect(transport);
  return {
    client,
    async close() {
      await transport.terminateSession().catch(() => {});
      await client.close();
    },
  };
}

/** What a call answered: its result, or its error's code, message and data. */
async function outcome(p: Promise<unknown>): Promise<unknown> {
  try {
    return { result: await p };
  } catch (err) {
    if (!(err instanceof McpError)) throw err;
    return { code: err.code, message: err.message, data: err.data };
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function records(gw: GatewayHandle) {
  await sleep(400); // the store's flush interval is 100 ms
  return (await gw.store!.queryLogs({ limit: 1000 })).records.filter((r) => r.operation === "mcp.call");
}

describe("the fast path is taken and answers as the SDK path does", () => {
  it("the same calls through both gateways: same results, same errors, same log records; the fast one reaches the upstream with its own ids", async () => {
    const calls: Array<[string, Record<string, unknown>]> = [
      ["sim__get_issue", { repo: "acme/one" }],
      ["sim__fail", {}],
      ["sim__missing", {}], // allowed by policy, unknown upstream: the upstream's JSON-RPC error
      ["sim__create_issue", { repo: "acme/x", title: "t" }], // approve rule, refused: -32003
      ["sim__nope", {}], // no rule: -32003
    ];
    const run = async (gw: GatewayHandle) => {
      const c = await connect(gw);
      try {
        const out: unknown[] = [];
        for (const [name, args] of calls) out.push(await outcome(c.client.callTool({ name, arguments: args })));
        return out;
      } finally {
        await c.close();
      }
    };
    const before = { ...fastStats };
    const seenBefore = up.seen.length;
    const viaFast = await run(fast);
    expect(fastStats.calls - before.calls).toBe(calls.length);
    const upstreamCalls = up.seen.slice(seenBefore).filter((m) => m.method === "tools/call");
    // Refused calls never reach the upstream; the others carry the gateway's string ids, never the SDK client's numbers.
    expect(upstreamCalls.map((m) => m.params?.name)).toEqual(["get_issue", "fail", "missing"]);
    for (const m of upstreamCalls) expect(m.id).toMatch(/^meshguard-[0-9a-f]{8}-\d+$/);

    const mid = { ...fastStats };
    const viaSdk = await run(slow);
    expect(fastStats.calls).toBe(mid.calls);
    expect(viaFast).toEqual(viaSdk);
    expect(viaFast[0]).toEqual({ result: { content: [{ type: "text", text: "issue of acme/one" }] } });
    expect((viaFast[1] as { result: { isError?: boolean } }).result.isError).toBe(true);
    expect(viaFast[3]).toMatchObject({ code: -32003, data: { code: "MESHGUARD_POLICY_DENIED", ruleId: "held" } });
    expect(viaFast[4]).toMatchObject({ code: -32003, data: { code: "MESHGUARD_POLICY_DENIED" } });

    const shape = (rs: Awaited<ReturnType<typeof records>>) =>
      rs
        .map((r) => ({ provider: r.provider, model: r.model, status: r.status, outcome: r.outcome, ruleId: r.ruleId, reason: r.reason, requestBody: r.requestBody, responseBody: r.responseBody, stream: r.stream }))
        .sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b)));
    const [rf, rs] = [await records(fast), await records(slow)];
    expect(rf).toHaveLength(calls.length);
    expect(shape(rf)).toEqual(shape(rs));
    // One client session: one session id on every record, as on the SDK path.
    expect(new Set(rf.map((r) => r.sessionId)).size).toBe(1);
  });

  it("several calls in flight on one session: each answer goes back under its caller's id", async () => {
    const c = await connect(fast);
    try {
      const before = fastStats.calls;
      const repos = Array.from({ length: 12 }, (_, i) => `acme/r${i}`);
      const out = await Promise.all(repos.map((repo) => c.client.callTool({ name: "sim__get_issue", arguments: { repo } })));
      expect(out.map((r) => (r.content as Array<{ text: string }>)[0]!.text)).toEqual(repos.map((r) => `issue of ${r}`));
      expect(fastStats.calls - before).toBe(repos.length);
    } finally {
      await c.close();
    }
  });

  it("progress and log messages of the upstream reach the caller during the call", async () => {
    const c = await connect(fast);
    try {
      const logs: string[] = [];
      c.client.setNotificationHandler(LoggingMessageNotificationSchema, (n) => void logs.push(String(n.params.data)));
      const progress: Array<{ progress: number; total?: number }> = [];
      const before = fastStats.calls;
      const r = await c.client.callTool({ name: "sim__steps", arguments: { n: 3 } }, undefined, { onprogress: (p) => progress.push({ progress: p.progress, total: p.total }) });
      expect(fastStats.calls - before).toBe(1);
      expect((r.content as Array<{ text: string }>)[0]!.text).toBe("3 steps");
      expect(progress).toEqual([
        { progress: 1, total: 3 },
        { progress: 2, total: 3 },
        { progress: 3, total: 3 },
      ]);
      expect(logs).toEqual(["step 1", "step 2", "step 3"]);
    } finally {
      await c.close();
    }
  });

  it("a log message forwarded to the caller is scrubbed of the gateway's secrets", async () => {
    const c = await connect(fast);
    try {
      const logs: string[] = [];
      c.client.setNotificationHandler(LoggingMessageNotificationSchema, (n) => void logs.push(String(n.params.data)));
      const before = fastStats.calls;
      await c.client.callTool({ name: "sim__leak", arguments: { secret: SECRET } });
      expect(fastStats.calls - before).toBe(1);
      expect(logs).toHaveLength(1);
      expect(logs[0]).toMatch(/^the key is /);
      expect(logs[0]).not.toContain(SECRET);
    } finally {
      await c.close();
    }
  });

  it("an upstream's sampling request mid-call is answered by the caller (the session's SDK client routes it)", async () => {
    const c = await connect(fast, true);
    try {
      const before = fastStats.calls;
      const r = await c.client.callTool({ name: "sim__ask", arguments: { question: "what?" } });
      expect((r.content as Array<{ text: string }>)[0]!.text).toBe("answer: forty-two");
      expect(fastStats.calls - before).toBe(1);
    } finally {
      await c.close();
    }
  });

  it("a cancelled call is cancelled upstream, its handler aborted, and logged client_aborted", async () => {
    const c = await connect(fast);
    try {
      const ac = new AbortController();
      const p = outcome(c.client.callTool({ name: "sim__slow", arguments: { tag: "cancel-me" } }, undefined, { signal: ac.signal }));
      for (let i = 0; i < 200 && !up.started.includes("cancel-me"); i++) await sleep(25);
      expect(up.started).toContain("cancel-me");
      ac.abort("the agent changed its mind");
      await p;
      for (let i = 0; i < 200 && !up.aborted.includes("cancel-me"); i++) await sleep(25);
      expect(up.aborted).toContain("cancel-me");
      const rec = (await records(fast)).find((r) => r.requestBody?.includes("cancel-me"));
      expect(rec).toMatchObject({ outcome: "client_aborted", status: 499 });
      // The session still works after it.
      expect((await c.client.callTool({ name: "sim__get_issue", arguments: { repo: "acme/after" } })).isError).toBeFalsy();
    } finally {
      await c.close();
    }
  });

  it("a client that disconnects mid-call aborts the upstream call too", async () => {
    const c = await connect(fast);
    try {
      const ac = new AbortController();
      const body = JSON.stringify({ jsonrpc: "2.0", id: 99, method: "tools/call", params: { name: "sim__slow", arguments: { tag: "disconnect-me" } } });
      const sid = (c.client.transport as StreamableHTTPClientTransport).sessionId!;
      const p = fetch(`${fast.loopbackUrl}/v1/mcp`, { method: "POST", headers: { "content-type": "application/json", accept: "application/json, text/event-stream", "mcp-session-id": sid }, body, signal: ac.signal }).then(
        (r) => r.body?.getReader().read(),
        () => undefined,
      );
      for (let i = 0; i < 200 && !up.started.includes("disconnect-me"); i++) await sleep(25);
      ac.abort();
      await p.catch(() => {});
      for (let i = 0; i < 200 && !up.aborted.includes("disconnect-me"); i++) await sleep(25);
      expect(up.aborted).toContain("disconnect-me");
    } finally {
      await c.close();
    }
  });

  it("the headers the session's SDK transport sends (where credentials go) are the fast path's too", async () => {
    const proto = StreamableHTTPClientTransport.prototype as unknown as { _commonHeaders(): Promise<Headers> };
    const original = proto._commonHeaders;
    proto._commonHeaders = async function (this: unknown) {
      const h = await original.call(this);
      h.set("x-test-credential", "from-the-transport");
      return h;
    };
    const c = await connect(fast);
    try {
      const before = fastStats.calls;
      const n = up.seen.length;
      await c.client.callTool({ name: "sim__get_issue", arguments: { repo: "acme/cred" } });
      expect(fastStats.calls - before).toBe(1);
      const call = up.seen.slice(n).find((m) => m.method === "tools/call");
      expect(call?.id).toMatch(/^meshguard-/);
      expect(call?.credential).toBe("from-the-transport");
    } finally {
      proto._commonHeaders = original;
      await c.close();
    }
  });

  it("a tool whose output schema the SDK client checks takes the SDK path, and gets the same answer", async () => {
    const c = await connect(fast);
    try {
      await c.client.listTools(); // the session's upstream client now knows the output schema
      const before = { ...fastStats };
      const r = await c.client.callTool({ name: "sim__structured", arguments: {} });
      expect(r.structuredContent).toEqual({ n: 7 });
      expect(fastStats.calls).toBe(before.calls);
      expect(fastStats.fallbacks - before.fallbacks).toBe(1);
    } finally {
      await c.close();
    }
  });

  it("a call that outlives the server's timeout is the same error on both paths, and is cancelled upstream", async () => {
    const a = await connect(fast);
    const b = await connect(slow);
    try {
      const before = fastStats.calls;
      const [f, sdk] = await Promise.all([
        outcome(a.client.callTool({ name: "short__slow", arguments: { tag: "timeout-fast" } })),
        outcome(b.client.callTool({ name: "short__slow", arguments: { tag: "timeout-sdk" } })),
      ]);
      expect(fastStats.calls - before).toBe(1);
      expect(f).toEqual(sdk);
      expect(f).toMatchObject({ code: -32001, data: { timeout: 300 } });
      for (let i = 0; i < 200 && !(up.aborted.includes("timeout-fast") && up.aborted.includes("timeout-sdk")); i++) await sleep(25);
      expect(up.aborted).toEqual(expect.arrayContaining(["timeout-fast", "timeout-sdk"]));
      const [rf, rs] = [(await records(fast)).find((r) => r.requestBody?.includes("timeout-fast")), (await records(slow)).find((r) => r.requestBody?.includes("timeout-sdk"))];
      expect(rf).toMatchObject({ status: rs!.status, outcome: rs!.outcome, reason: rs!.reason });
    } finally {
      await a.close();
      await b.close();
    }
  });

  it("an upstream session that is gone (404) is the same error on both paths", async () => {
    const a = await connect(fast);
    const b = await connect(slow);
    try {
      // Both gateways' upstream sessions are open (they open once the caller's initialize is done), then gone.
      await Promise.all([a.client.ping(), b.client.ping(), a.client.listTools(), b.client.listTools()]);
      up.dropSessions();
      const before = fastStats.calls;
      const [f, sdk] = [await outcome(a.client.callTool({ name: "sim__get_issue", arguments: { repo: "acme/gone" } })), await outcome(b.client.callTool({ name: "sim__get_issue", arguments: { repo: "acme/gone" } }))];
      expect(fastStats.calls - before).toBe(1);
      expect(f).toEqual(sdk);
      expect(f).toMatchObject({ code: -32603, message: expect.stringContaining("Error POSTing to endpoint") });
    } finally {
      await a.close();
      await b.close();
    }
  });

  it("a calls bucket refuses with -32004 on both paths alike", async () => {
    const run = async (gw: GatewayHandle) => {
      const c = await connect(gw);
      try {
        const out: unknown[] = [];
        for (let i = 0; i < 45; i++) out.push(await outcome(c.client.callTool({ name: "sim__get_issue", arguments: { repo: `acme/q${i}` } })));
        return out.filter((o) => (o as { code?: number }).code !== undefined);
      } finally {
        await c.close();
      }
    };
    // The two gateways' buckets were drawn on by different numbers of calls before: the refusals, not their count, are compared.
    const [f, s] = [await run(fast), await run(slow)];
    expect(f.length).toBeGreaterThan(0);
    expect(s.length).toBeGreaterThan(0);
    const gist = (o: unknown) => JSON.stringify(o).replace(/\d+(\.\d+)?/g, "N");
    expect(gist(f[0])).toBe(gist(s[0]));
    expect(f[0]).toMatchObject({ code: -32004, data: { code: "MESHGUARD_QUOTA_EXHAUSTED", bucket: expect.stringMatching(/^calls\//) } });
  });
});
