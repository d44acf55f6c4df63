// Issue 7, items 4 and 6: MCP tool calls are judged at the wire — every
// JSON-RPC `tools/call` a client sends, through any transport or any method
// of the client — under a server name the server does not choose; and
// least exposure: approval requests carry no secrets, a new policy drops
// every grant at once, a policy file watched without signature keys warns.
// Each case counts tool executions on a local MCP server (or requests on a
// local HTTP server) and expects zero where the policy says no, with a
// positive control. The family is the first word of each title ("mcp:").
import http from "node:http";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import net from "node:net";
import dc from "node:diagnostics_channel";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport, getDefaultEnvironment } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { InMemoryTransport } from "@modelcontextprotocol/sdk/inMemory.js";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import { CallToolResultSchema } from "@modelcontextprotocol/sdk/types.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateBundleKeys, signBundle, watchPolicyFile } from "../../src/distribution/index.js";
import type { ApprovalRequest } from "../../src/guard/index.js";
import { allowHttp, guard, httpGet, outcome, policyOf, recorder, settle, settled, until, victim, type Victim } from "./helpers.js";

const root = join(import.meta.dirname, "..", "..");

/** Tool executions on every test server, by tool name. */
const calls: Record<string, number> = { safe: 0, danger: 0 };

/** An MCP server that calls itself `name` (any name it likes) with two tools that count their executions. */
function mcpServer(name = "github"): McpServer {
  const s = new McpServer({ name, version: "1.0.0" });
  for (const tool of ["safe", "danger"]) {
    s.registerTool(tool, { description: tool }, async () => {
      calls[tool]!++;
      return { content: [{ type: "text" as const, text: tool }] };
    });
  }
  return s;
}

let httpServer: http.Server;
let mcpUrl: string;
let mcpPort: number;

beforeAll(async () => {
  httpServer = http.createServer(async (req, res) => {
    // Stateless streamable HTTP: a fresh MCP server per request.
    const mcp = mcpServer("github");
    const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined });
    res.on("close", () => void transport.close());
    await mcp.connect(transport);
    let body = "";
    req.on("data", (d) => (body += d));
    req.on("end", () => void transport.handleRequest(req, res, body ? JSON.parse(body) : undefined));
  });
  await new Promise<void>((r) => httpServer.listen(0, "127.0.0.1", r));
  mcpPort = (httpServer.address() as AddressInfo).port;
  mcpUrl = `http://127.0.0.1:${mcpPort}/mcp`;
});
afterAll(
  () =>
    new Promise<void>((r) => {
      httpServer.closeAllConnections();
      httpServer.close(() => r());
    }),
);

/** The HTTP rule the MCP transport itself needs (its POSTs are HTTP calls too). */
const mcpHttp = () => ({ ...allowHttp("127.0.0.1", { port: [mcpPort], path: ["/mcp"] }), id: "mcp-transport" });
const mcpRule = (server: string, tool: string) => ({ id: `mcp-${tool.replace(/[^A-Za-z0-9]/g, "any")}`, src: ["tag:agent"], mcp: { server: [server], tool: [tool] } });

async function httpClient(): Promise<Client> {
  const c = new Client({ name: "agent", version: "1.0.0" });
  await c.connect(new StreamableHTTPClientTransport(new URL(mcpUrl)));
  return c;
}

async function memoryClient(): Promise<Client> {
  const [ct, st] = InMemoryTransport.createLinkedPair();
  await mcpServer("github").connect(st);
  const c = new Client({ name: "agent", version: "1.0.0" });
  await c.connect(ct);
  return c;
}

let nextId = 90_000;
const toolsCall = (tool: string) => ({ jsonrpc: "2.0" as const, id: nextId++, method: "tools/call", params: { name: tool, arguments: {} } });

/** executes runs `call` and says whether `tool` ran on the server (waiting a little for a call that was sent). */
async function executes(tool: string, call: () => Promise<unknown>): Promise<boolean> {
  const before = calls[tool]!;
  await settled(call());
  if (calls[tool]! > before) return true;
  await settle(100);
  return calls[tool]! > before;
}

describe("mcp: every tools/call a client sends is judged (issue 7 item 4)", () => {
  const ways: [string, (c: Client, tool: string) => Promise<unknown>][] = [
    ["client.transport.send (a raw JSON-RPC message)", (c, tool) => (c.transport as Transport).send(toolsCall(tool))],
    ["the base class's request(), below Client", (c, tool) => (Object.getPrototypeOf(Client.prototype) as { request: Function }).request.call(c, { method: "tools/call", params: { name: tool, arguments: {} } }, CallToolResultSchema)],
  ];

  for (const [transport, connect] of [
    ["streamable HTTP", httpClient],
    ["in-memory", memoryClient],
  ] as const) {
    it.each(ways)(`mcp: a tools/call through %s (${transport}) is judged`, async (_how, send) => {
      guard({ rules: [mcpHttp(), mcpRule("*", "safe")], intercept: { sdk: true } });
      const c = await connect();
      try {
        expect(await executes("danger", () => send(c, "danger")), "a tool no rule allows must not run").toBe(false);
        expect(await executes("safe", () => send(c, "safe")), "positive control: the same call to an allowed tool runs").toBe(true);
      } finally {
        await c.close();
      }
    });
  }

  it("mcp: a tools/call inside a JSON-RPC batch (streamable HTTP) is judged", async () => {
    guard({ rules: [mcpHttp(), mcpRule("*", "safe")], intercept: { sdk: true } });
    const c = await httpClient();
    const batch = (tools: string[]) => (c.transport as unknown as { send(m: unknown): Promise<void> }).send(tools.map(toolsCall));
    try {
      expect(await executes("danger", () => batch(["safe", "danger"])), "a tool no rule allows, batched with an allowed one, must not run").toBe(false);
      expect(await executes("safe", () => batch(["safe"])), "positive control: a batch of allowed calls runs").toBe(true);
    } finally {
      await c.close();
    }
  });

  it("mcp: a transport used without a Client is judged too (streamable HTTP)", async () => {
    guard({ rules: [mcpHttp(), mcpRule("*", "safe")], intercept: { sdk: true } });
    const t = new StreamableHTTPClientTransport(new URL(mcpUrl));
    t.onmessage = () => {};
    await t.start();
    try {
      await t.send({ jsonrpc: "2.0", id: nextId++, method: "initialize", params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "raw", version: "1" } } });
      expect(await executes("danger", () => t.send(toolsCall("danger"))), "a tool no rule allows must not run").toBe(false);
      expect(await executes("safe", () => t.send(toolsCall("safe"))), "positive control").toBe(true);
    } finally {
      await t.close();
    }
  });
});

describe("mcp: the server's name is never what the server says about itself (issue 7 item 4)", () => {
  it("mcp: an HTTP server that calls itself \"github\" does not get the github rule; it is named by its URL's host:port", async () => {
    guard({ rules: [mcpHttp(), mcpRule("github", "*")], intercept: { sdk: true } });
    const c = await httpClient();
    try {
      expect(await executes("danger", () => c.callTool({ name: "danger", arguments: {} })), "the server's own name must not match a rule").toBe(false);
    } finally {
      await c.close();
    }
  });

  it("mcp: (control) the same server is allowed by a rule naming its URL's host:port", async () => {
    guard({ rules: [mcpHttp(), mcpRule(`127.0.0.1:${mcpPort}`, "*")], intercept: { sdk: true } });
    const c = await httpClient();
    try {
      expect(await executes("danger", () => c.callTool({ name: "danger", arguments: {} }))).toBe(true);
    } finally {
      await c.close();
    }
  });

  it("mcp: a stdio server that calls itself \"github\" does not get the github rule; it is named by its command's basename", async () => {
    const dir = mkdtempSync(join(tmpdir(), "mg-mcp-"));
    const log = join(dir, "calls.log");
    writeFileSync(log, "");
    const code = `
      import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
      import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";
      import { appendFileSync } from "node:fs";
      const s = new McpServer({ name: "github", version: "1.0.0" });
      for (const t of ["safe", "danger"]) s.registerTool(t, { description: t }, async () => { appendFileSync(process.env.CALLS_LOG, t + "\\n"); return { content: [{ type: "text", text: t }] }; });
      await s.connect(new StdioServerTransport());
    `;
    const ran = (tool: string) => readFileSync(log, "utf8").split("\n").filter((l) => l === tool).length;
    const stdioClient = async () => {
      const c = new Client({ name: "agent", version: "1.0.0" });
      await c.connect(new StdioClientTransport({ command: process.execPath, args: ["--input-type=module", "-e", code], cwd: root, env: { ...getDefaultEnvironment(), CALLS_LOG: log } }));
      return c;
    };
    const command = process.execPath.split("/").pop()!; // "node"
    for (const [server, allowed] of [
      ["github", false],
      [command, true],
    ] as const) {
      const g = guard({ rules: [mcpRule(server, "*")], intercept: { sdk: true } });
      const c = await stdioClient();
      try {
        const before = ran("danger");
        await settled(c.callTool({ name: "danger", arguments: {} }));
        await settle(100);
        expect(ran("danger") - before, allowed ? `positive control: a rule naming the command (${command}) allows it` : "the server's own name must not match a rule").toBe(allowed ? 1 : 0);
      } finally {
        await c.close();
        g.uninstall();
      }
    }
  });
});

describe("mcp: least exposure (issue 7 item 6)", () => {
  let A: Victim;
  beforeAll(async () => {
    A = await victim("127.0.0.1");
  });
  afterAll(() => A.close());

  const SECRET = "S3CR3T";
  const secretFetch = (url: string) =>
    fetch(`${url}?token=${SECRET}-query`, { method: "POST", headers: { authorization: `Bearer ${SECRET}-auth`, "x-api-key": `${SECRET}-key`, cookie: `sid=${SECRET}-cookie`, "content-type": "text/plain" }, body: `${SECRET}-body` });

  it("mcp: an approval request carries no Authorization, x-api-key, cookie, query value, body or tool argument (webhook and callback)", async () => {
    const hook = await victim("127.0.0.1", 0, () => ({ headers: { "content-type": "application/json" }, body: '{"approved":false}' }));
    const g1 = guard({ rules: [{ id: "ask", src: ["tag:agent"], effect: "approve", http: { host: ["127.0.0.1"], port: [A.port] } }], approvals: { webhook: `${hook.url}/hook` } });
    try {
      await settled(secretFetch(`${A.url}/ask`));
      expect(hook.hits("/hook"), "positive control: the approver was asked").toBe(1);
      expect(hook.requests[0]!.body).toContain("/ask");
      expect(hook.requests[0]!.body, "what the webhook received").not.toContain(SECRET);
    } finally {
      await hook.close();
      g1.uninstall();
    }
    const asked: ApprovalRequest[] = [];
    guard({
      rules: [
        mcpHttp(),
        { id: "ask", src: ["tag:agent"], effect: "approve", http: { host: ["127.0.0.1"], port: [A.port] } },
        { id: "ask-mcp", src: ["tag:agent"], effect: "approve", mcp: { server: ["*"], tool: ["danger"] } },
      ],
      approvals: { callback: (req) => (asked.push(req), false) },
      intercept: { sdk: true },
    });
    await settled(secretFetch(`${A.url}/ask`));
    const c = await httpClient();
    try {
      await settled(c.callTool({ name: "danger", arguments: { password: `${SECRET}-arg` } }));
    } finally {
      await c.close();
    }
    expect(asked.length, "positive control: both calls were held for approval").toBe(2);
    expect(JSON.stringify(asked), "what the callback received").not.toContain(SECRET);
  });

  it("mcp: setPolicy drops every grant at once (keep-alive socket, MCP session, an origin allowed a moment ago)", async () => {
    const g = guard({ rules: [allowHttp("127.0.0.1", { port: [A.port] }), mcpHttp(), mcpRule("*", "*")], intercept: { sdk: true } });
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const c = await httpClient();
    try {
      // Grants in use: a keep-alive socket, an MCP session, an origin fetch just used.
      expect((await httpGet(`${A.url}/before`, { agent })).body).toBe("ok");
      expect(await executes("safe", () => c.callTool({ name: "safe", arguments: {} }))).toBe(true);
      expect(await (await fetch(`${A.url}/before`)).text()).toBe("ok");
      // The new policy keeps the MCP transport's HTTP (so the session survives) and allows nothing else.
      g.setPolicy(policyOf([mcpHttp()]));
      const before = A.snapshot();
      await settled(httpGet(`${A.url}/after`, { agent }));
      await settled(fetch(`${A.url}/after`));
      // An undici-announced raw socket to the origin allowed a moment ago.
      dc.channel("undici:client:beforeConnect").publish({ connectParams: { host: `127.0.0.1:${A.port}`, hostname: "127.0.0.1", protocol: "http:", port: String(A.port) }, connector: () => {} });
      const s = net.connect(A.port, "127.0.0.1");
      s.write("GET /after HTTP/1.1\r\nhost: x\r\n\r\n");
      await outcome(s);
      await settle();
      expect(A.snapshot(), "nothing reaches the origin after setPolicy").toEqual(before);
      expect(await executes("safe", () => c.callTool({ name: "safe", arguments: {} })), "a tool call on the open MCP session").toBe(false);
    } finally {
      agent.destroy();
      await c.close();
    }
  });

  it("mcp: a policy file watched without signature keys warns that the agent can rewrite its own policy", async () => {
    const dir = mkdtempSync(join(tmpdir(), "mg-watch-"));
    const text = JSON.stringify({ version: 1, rules: [allowHttp("127.0.0.1")] });
    // Unsigned: a warning.
    const g = guard({});
    const rec = recorder(g);
    const plain = join(dir, "policy.json");
    writeFileSync(plain, text);
    const w = watchPolicyFile(g, plain);
    await w.ready;
    expect(w.current, "the file loaded").toBeDefined();
    await w.close();
    expect(await until(() => rec.warnings.length > 0, 500), "a warning when watching an unsigned policy file").toBe(true);
    expect(rec.warnings.map((e) => e.message).join("\n")).toMatch(/sign|publicKeys|rewrite/i);
    g.uninstall();
    // Control: signed and watched with keys: no such warning.
    const keys = generateBundleKeys();
    const g2 = guard({});
    const rec2 = recorder(g2);
    const signed = join(dir, "policy.bundle.json");
    writeFileSync(signed, JSON.stringify(signBundle(text, keys.privateKey, { version: 1 })));
    const w2 = watchPolicyFile(g2, signed, { publicKeys: [keys.publicKey] });
    await w2.ready;
    expect(w2.current).toBeDefined();
    await w2.close();
    await settle(100);
    expect(rec2.warnings.map((e) => e.message).filter((m) => /sign|publicKeys|rewrite/i.test(m))).toEqual([]);
  });
});

