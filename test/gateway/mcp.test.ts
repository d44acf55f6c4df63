// The gateway's aggregating MCP endpoint end to end, over a real tailnet
// (local headscale): agents are MeshNodes whose official MCP SDK clients
// use the node's fetch as the streamable-HTTP transport's `fetch`; the
// upstreams are official-SDK MCP servers, one over streamable HTTP on
// 127.0.0.1 (bench/lib/mcp-upstream.mjs) and one over stdio, run by the
// gateway as a child process per session.
//
// agent-a (tag:agent-a) and agent-b (tag:agent-b) have different grants:
// what each is listed, what each may call, a call judged with its
// arguments, approve (given, refused, and a held call the client cancelled
// or timed out on, which must never run), sessions bound to their
// identity, sampling routed to the asking session only, list_changed on
// policy and upstream change, and every call in the gateway's logs.
import { writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { CreateMessageRequestSchema, McpError, ToolListChangedNotificationSchema } from "@modelcontextprotocol/sdk/types.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startMcpUpstream, type McpUpstream } from "../../bench/lib/mcp-upstream.mjs";
import type { ApprovalAnswer, ApprovalRequest } from "../../src/guard/index.js";
import type { MeshNode } from "../../src/index.js";
import { policyFile, startGatewayTailnet, type GatewayTailnet } from "./gateway-tailnet.js";

const STDIO_SERVER = fileURLToPath(new URL("./fixtures/mcp-stdio-server.mjs", import.meta.url));

const RULES = [
  { id: "a-read", src: ["tag:agent-a"], mcp: { server: ["github"], tool: ["get_*", "ask"] } },
  { id: "a-create", effect: "approve", src: ["tag:agent-a"], mcp: { server: ["github"], tool: ["create_issue"], args: { repo: "acme/*" } } },
  { id: "a-notes", src: ["tag:agent-a"], mcp: { server: ["notes"], tool: ["*"] } },
  { id: "a-handbook", src: ["tag:agent-a"], mcp: { server: ["github"], resource: ["file:///handbook/*"] } },
  { id: "no-secret", effect: "deny", src: ["*"], mcp: { server: ["*"], resource: ["file:///handbook/secret*"] } },
  { id: "a-prompts", src: ["tag:agent-a"], mcp: { server: ["github"], prompt: ["summarize"], args: { repo: "acme/*" } } },
  { id: "b-read", src: ["tag:agent-b"], mcp: { server: ["github"], tool: ["get_issue", "ask"] } },
];

/** agent-b's MCP calls are counted in a "calls" bucket of 5 a day (LLM calls would be too). */
const GATEWAY = { roles: [{ src: ["tag:agent-b"], quotas: "tool-calls" }] };

let t: GatewayTailnet;
let up: McpUpstream;
/** What the approver answers; a test replaces it. */
let approver: (req: ApprovalRequest, signal: AbortSignal) => Promise<ApprovalAnswer> = async () => ({ approved: false, reason: "no test asked" });
const approvals: ApprovalRequest[] = [];

const names = (r: { tools?: Array<{ name: string }>; resources?: Array<{ name: string }>; prompts?: Array<{ name: string }> }) => (r.tools ?? r.resources ?? r.prompts ?? []).map((x) => x.name).sort();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const fetchOf = (node: MeshNode) => ((url: string | URL, init?: RequestInit) => node.fetch(url as never, init as never)) as unknown as typeof fetch;

/** A connected client; close() ends the session at the gateway (DELETE), as a well-behaved client does. */
async function connect(node: MeshNode, sampling?: (question: string) => string): Promise<{ client: Client; transport: StreamableHTTPClientTransport; close(): Promise<void> }> {
  const client = new Client({ name: `agent-${node.hostname}`, version: "1.0.0" }, { capabilities: sampling ? { sampling: {} } : {} });
  if (sampling) {
    client.setRequestHandler(CreateMessageRequestSchema, async (req) => {
      const c = req.params.messages[0]!.content as { type: string; text?: string };
      return { role: "assistant", model: "test", content: { type: "text", text: sampling(c.text ?? "") } };
    });
  }
  const transport = new StreamableHTTPClientTransport(new URL(`${t.gw.url}/v1/mcp`), { fetch: fetchOf(node) });
  await client.connect(transport);
  return {
    client,
    transport,
    async close() {
      await transport.terminateSession().catch(() => {});
      await client.close();
    },
  };
}

/** The JSON-RPC error a call was refused with. */
async function refusal(p: Promise<unknown>): Promise<McpError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(McpError);
    return err as McpError;
  }
  throw new Error("the call was not refused");
}

beforeAll(async () => {
  up = await startMcpUpstream();
  t = await startGatewayTailnet({
    meshguard: { version: 6, rules: RULES, gateway: GATEWAY },
    config: {
      quotas: { "tool-calls": { unit: "calls", capacity: 5, refill: "1/day", per: "node" } },
      mcp: {
        servers: {
          github: { url: up.url },
          notes: { command: process.execPath, args: [STDIO_SERVER] },
        },
        sessionsPerCaller: 3,
      },
    },
    gateway: {
      approvals: {
        timeoutMs: 20_000,
        callback: (req, signal) => {
          approvals.push(req);
          return approver(req, signal);
        },
      },
    },
  });
}, 120_000);

afterAll(async () => {
  await t?.close();
  await up?.close();
});

describe("listing: each caller sees what an allow or approve rule could let it use", () => {
  it("agent-a and agent-b are listed different tools, namespaced server__tool", async () => {
    const a = await connect(t.nodes.agentA);
    const b = await connect(t.nodes.agentB);
    try {
      expect(names(await a.client.listTools())).toEqual(["github__ask", "github__create_issue", "github__get_issue", "notes__echo", "notes__pid"]);
      expect(names(await b.client.listTools())).toEqual(["github__ask", "github__get_issue"]);
      // The upstream's schemas pass through under the namespaced name.
      const create = (await a.client.listTools()).tools.find((x) => x.name === "github__create_issue")!;
      expect(Object.keys(create.inputSchema.properties ?? {}).sort()).toEqual(["repo", "title"]);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it("resources and prompts are trimmed too: a deny rule without args or when hides the item", async () => {
    const a = await connect(t.nodes.agentA);
    const b = await connect(t.nodes.agentB);
    try {
      const listed = await a.client.listResources();
      expect(names(listed)).toEqual(["github__intro"]);
      // Each listed resource names its server (the agent's guard routes a resources/read by it).
      expect(listed.resources[0]!._meta).toEqual({ "dev.meshguard/server": "github" });
      expect(names(await b.client.listResources())).toEqual([]);
      expect(names(await a.client.listPrompts())).toEqual(["github__summarize"]);
      expect(names(await b.client.listPrompts())).toEqual([]);
    } finally {
      await a.close();
      await b.close();
    }
  });
});

describe("calls are judged in full and refused in MCP's error format", () => {
  it("an allowed call reaches the upstream (HTTP and stdio); a denied one never does", async () => {
    const a = await connect(t.nodes.agentA);
    const b = await connect(t.nodes.agentB);
    try {
      const r = await a.client.callTool({ name: "github__get_issue", arguments: { repo: "acme/app" } });
      expect(r.content).toEqual([{ type: "text", text: "issue of acme/app" }]);
      expect((await a.client.callTool({ name: "notes__echo", arguments: { text: "hi" } })).content).toEqual([{ type: "text", text: "echo: hi" }]);

      const before = up.ran.length;
      const e = await refusal(b.client.callTool({ name: "github__create_issue", arguments: { repo: "acme/app", title: "from b" } }));
      expect(e.code).toBe(-32003);
      expect(e.message).toMatch(/denied|no rule allows/i);
      await refusal(b.client.callTool({ name: "notes__echo", arguments: { text: "x" } }));
      // A name of no configured server: refused as well, and nothing ran.
      await refusal(b.client.callTool({ name: "nowhere__tool", arguments: {} }));
      expect(up.ran.length).toBe(before);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it("arguments decide: a listed tool called outside its args constraint is refused without asking the approver", async () => {
    const a = await connect(t.nodes.agentA);
    try {
      const asked = approvals.length;
      const e = await refusal(a.client.callTool({ name: "github__create_issue", arguments: { repo: "evil/app", title: "x" } }));
      expect(e.code).toBe(-32003);
      expect(approvals.length).toBe(asked);
      expect(up.ran.some((r) => r.repo === "evil/app")).toBe(false);
      // Prompts and resources the same way.
      expect((await a.client.getPrompt({ name: "github__summarize", arguments: { repo: "acme/app" } })).messages[0]!.content).toEqual({ type: "text", text: "summarize acme/app" });
      expect((await refusal(a.client.getPrompt({ name: "github__summarize", arguments: { repo: "evil/app" } }))).code).toBe(-32003);
      await a.client.listResources();
      expect((await a.client.readResource({ uri: "file:///handbook/intro.md" })).contents[0]).toMatchObject({ text: "# Intro" });
      expect((await refusal(a.client.readResource({ uri: "file:///handbook/secret.md" }))).code).toBe(-32003);
    } finally {
      await a.close();
    }
  });

  it("approve: the approver sees the call (arguments redacted) and its answer decides", async () => {
    const a = await connect(t.nodes.agentA);
    try {
      approver = async () => ({ approved: true, by: "carol@" });
      const r = await a.client.callTool({ name: "github__create_issue", arguments: { repo: "acme/app", title: "approved one" } });
      expect(r.content).toEqual([{ type: "text", text: "created in acme/app: approved one" }]);
      const req = approvals.at(-1)!;
      expect(req.request).toBe('mcp github create_issue {"repo":"<redacted>","title":"<redacted>"}');
      expect(req.principal.tags).toEqual(["tag:agent-a"]);

      approver = async () => ({ approved: false, reason: "not today" });
      const e = await refusal(a.client.callTool({ name: "github__create_issue", arguments: { repo: "acme/app", title: "refused one" } }));
      expect(e.message).toMatch(/not today/);
      expect(up.ran.some((x) => x.title === "refused one")).toBe(false);
    } finally {
      await a.close();
    }
  });

  it.each([
    ["cancels", (ac: AbortController) => ({ signal: ac.signal })],
    ["times out", () => ({ timeout: 1500 })],
  ])("a held call the client %s on never runs, even when approved afterwards", async (how, options) => {
    const a = await connect(t.nodes.agentA);
    try {
      let release!: (x: ApprovalAnswer) => void;
      let held!: (signal: AbortSignal) => void;
      const isHeld = new Promise<AbortSignal>((r) => (held = r));
      approver = (_req, signal) => {
        held(signal);
        return new Promise((r) => (release = r));
      };
      const ac = new AbortController();
      const title = `held then ${how}`;
      // Settled into a value at once: a time-out may come before the test waits for it.
      const call = a.client.callTool({ name: "github__create_issue", arguments: { repo: "acme/app", title } }, undefined, options(ac)).then(
        () => undefined,
        (err: unknown) => err,
      );
      const approverSignal = await isHeld;
      ac.abort();
      expect(await call).toBeInstanceOf(McpError);
      // The cancellation reaches the gateway (a notification of its own): the approver is told the call is gone.
      await new Promise<void>((r) => (approverSignal.aborted ? r() : approverSignal.addEventListener("abort", () => r(), { once: true })));
      // An approver that answers anyway changes nothing.
      release({ approved: true, by: "late@" });
      await sleep(1000);
      expect(up.ran.some((x) => x.title === title)).toBe(false);
      // The session still works.
      expect((await a.client.callTool({ name: "github__get_issue", arguments: { repo: "acme/after" } })).content).toEqual([{ type: "text", text: "issue of acme/after" }]);
    } finally {
      await a.close();
    }
  });
});

describe("sessions", () => {
  it("a session id is refused from another identity, raw or through the SDK", async () => {
    const a = await connect(t.nodes.agentA);
    try {
      const sid = a.transport.sessionId!;
      expect(sid).toMatch(/^[0-9a-f-]{36}$/);
      const res = await t.nodes.agentB.fetch(`${t.gw.url}/v1/mcp`, {
        method: "POST",
        headers: { "content-type": "application/json", accept: "application/json, text/event-stream", "mcp-session-id": sid, "mcp-protocol-version": "2025-06-18" },
        body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/call", params: { name: "github__create_issue", arguments: { repo: "acme/app", title: "hijack" } } }),
      });
      expect(res.status).toBe(403);
      expect(((await res.json()) as { error: { message: string } }).error.message).toMatch(/belongs to another identity/);

      const stolen = new StreamableHTTPClientTransport(new URL(`${t.gw.url}/v1/mcp`), { fetch: fetchOf(t.nodes.agentB), sessionId: sid });
      const b = new Client({ name: "thief", version: "1.0.0" });
      await b.connect(stolen);
      await expect(b.listTools()).rejects.toThrow(/403|another identity/);
      await b.close().catch(() => {});
      expect(up.ran.some((x) => x.title === "hijack")).toBe(false);
      // The owner's session is untouched.
      expect(names(await a.client.listTools())).toContain("github__create_issue");
      // An unknown id is a 404 (the client must initialize again).
      const gone = await t.nodes.agentA.fetch(`${t.gw.url}/v1/mcp`, {
        method: "POST",
        headers: { "content-type": "application/json", accept: "application/json, text/event-stream", "mcp-session-id": "00000000-0000-0000-0000-000000000000" },
        body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/list" }),
      });
      expect(gone.status).toBe(404);
    } finally {
      await a.close();
    }
  });

  it("an identity holds at most sessionsPerCaller open sessions; ending one (DELETE) makes room", async () => {
    const open = [await connect(t.nodes.agentB), await connect(t.nodes.agentB), await connect(t.nodes.agentB)];
    try {
      await expect(connect(t.nodes.agentB)).rejects.toThrow(/429|already holds 3 open MCP sessions/);
      // Another identity is not affected.
      const a = await connect(t.nodes.agentA);
      await a.close();
      await open.shift()!.close();
      open.push(await connect(t.nodes.agentB));
      expect(names(await open.at(-1)!.client.listTools())).toContain("github__get_issue");
    } finally {
      for (const c of open) await c.close();
    }
  });

  it("sampling from an upstream goes only to the session whose call asked", async () => {
    const seen: string[] = [];
    const a = await connect(t.nodes.agentA, (q) => (seen.push(`a:${q}`), "from A"));
    const b = await connect(t.nodes.agentB, (q) => (seen.push(`b:${q}`), "from B"));
    try {
      expect((await a.client.callTool({ name: "github__ask", arguments: { question: "qa" } })).content).toEqual([{ type: "text", text: "answer: from A" }]);
      expect((await b.client.callTool({ name: "github__ask", arguments: { question: "qb" } })).content).toEqual([{ type: "text", text: "answer: from B" }]);
      expect(seen).toEqual(["a:qa", "b:qb"]);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it("each session has its own upstream sessions: its own stdio child, its own HTTP session; ending it ends them", async () => {
    const a1 = await connect(t.nodes.agentA);
    const a2 = await connect(t.nodes.agentA);
    try {
      const pid = async (c: Client) => ((await c.callTool({ name: "notes__pid", arguments: {} })).content as Array<{ text: string }>)[0]!.text;
      const [p1, p2] = [await pid(a1.client), await pid(a2.client)];
      expect(p1).toMatch(/^\d+$/);
      expect(p1).not.toBe(p2);
      // Ending the session ends its child.
      const alive = (pid: string) => {
        try {
          process.kill(Number(pid), 0);
          return true;
        } catch {
          return false;
        }
      };
      expect(alive(p1)).toBe(true);
      const upstreamSessions = up.sessions.size;
      await a1.close();
      for (let i = 0; i < 50 && alive(p1); i++) await sleep(100);
      expect(alive(p1)).toBe(false);
      expect(alive(p2)).toBe(true);
      // ... and its session at the HTTP upstream.
      for (let i = 0; i < 50 && up.sessions.size >= upstreamSessions; i++) await sleep(100);
      expect(up.sessions.size).toBe(upstreamSessions - 1);
    } finally {
      await a1.close();
      await a2.close();
    }
  });
});

describe("notifications/tools/list_changed", () => {
  const changed = (c: Client) =>
    new Promise<void>((resolve) => {
      c.setNotificationHandler(ToolListChangedNotificationSchema, () => resolve());
    });

  it("is sent when the policy changes, and the new listing follows the new policy", async () => {
    const b = await connect(t.nodes.agentB);
    try {
      await sleep(300); // the client's GET stream, where notifications without a request go
      const note = changed(b.client);
      writeFileSync(t.policyPath, policyFile({ version: 6, gateway: GATEWAY, rules: [...RULES, { id: "b-create", src: ["tag:agent-b"], mcp: { server: ["github"], tool: ["create_issue"] } }] }));
      await note;
      expect(names(await b.client.listTools())).toContain("github__create_issue");
    } finally {
      writeFileSync(t.policyPath, policyFile({ version: 6, gateway: GATEWAY, rules: RULES }));
      await b.close();
    }
  });

  it("is sent when an upstream's tools change", async () => {
    const a = await connect(t.nodes.agentA);
    try {
      await a.client.listTools();
      await sleep(300);
      const note = changed(a.client);
      up.addTool("get_labels");
      await note;
      expect(names(await a.client.listTools())).toContain("github__get_labels");
    } finally {
      await a.close();
    }
  });
});

describe("quotas", () => {
  it("a calls bucket counts MCP calls: the call past it is refused (-32004, retry after) and never runs", async () => {
    const b = await connect(t.nodes.agentB);
    try {
      let ok = 0;
      let refused: McpError | undefined;
      for (let i = 0; i < 7 && refused === undefined; i++) {
        try {
          await b.client.callTool({ name: "github__get_issue", arguments: { repo: `acme/q${i}` } });
          ok++;
        } catch (err) {
          refused = err as McpError;
        }
      }
      expect(refused?.code).toBe(-32004);
      expect(refused?.message).toMatch(/tool-calls\/node:agent-b/);
      expect((refused?.data as { retryAfterS: number }).retryAfterS).toBeGreaterThan(0);
      expect(ok).toBeGreaterThan(0);
      expect(ok).toBeLessThanOrEqual(5);
      expect(up.ran.some((r) => r.repo === `acme/q${ok}`)).toBe(false);
      // agent-a has no bucket: not counted.
      const a = await connect(t.nodes.agentA);
      for (let i = 0; i < 6; i++) await a.client.callTool({ name: "github__get_issue", arguments: { repo: "acme/free" } });
      await a.close();
    } finally {
      await b.close();
    }
  });
});

describe("attribution and logs", () => {
  it("every MCP call is a log record of the caller, like an LLM call", async () => {
    const a = await connect(t.nodes.agentA);
    const b = await connect(t.nodes.agentB);
    try {
      await a.client.callTool({ name: "github__get_issue", arguments: { repo: "acme/logged" } });
      await refusal(b.client.callTool({ name: "notes__echo", arguments: { text: "no" } }));
    } finally {
      await a.close();
      await b.close();
    }
    await t.gw.store!.flush();
    const { records } = await t.gw.store!.queryLogs({ limit: 1000 });
    const ok = records.find((r) => r.operation === "mcp.call" && r.requestBody?.includes("acme/logged"));
    expect(ok).toMatchObject({ provider: "github", model: "get_issue", outcome: "ok", status: 200, caller: { node: "agent-a", tags: ["tag:agent-a"], user: "alice@", via: "tailnet" } });
    expect(ok!.responseBody).toContain("issue of acme/logged");
    const denied = records.find((r) => r.operation === "mcp.call" && r.caller.node === "agent-b" && r.provider === "notes");
    expect(denied).toMatchObject({ model: "echo", outcome: "denied", status: 403 });
    expect(records.some((r) => r.operation === "mcp.read" && r.model === "file:///handbook/secret.md" && r.outcome === "denied" && r.ruleId === "no-secret")).toBe(true);
    expect(records.some((r) => r.operation === "mcp.call" && r.outcome === "client_aborted")).toBe(true);
    expect(records.some((r) => r.operation === "mcp.call" && r.outcome === "quota" && r.status === 429 && r.caller.node === "agent-b")).toBe(true);
  });
});
