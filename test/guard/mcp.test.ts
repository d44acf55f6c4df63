// MCP at the wire: every tools/call an MCP client sends — through stdio,
// streamable HTTP, in-memory or a custom transport, and through callTool,
// Client.request or a raw transport.send — is judged, under the name the app
// gave the server (never the name the server gives itself). Each denial is
// checked against a counter on the server side that must stay at zero, next
// to a positive control: the same code aimed at an allowed server gets its
// hit.
import { readFileSync, writeFileSync, mkdtempSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { InMemoryTransport } from "@modelcontextprotocol/sdk/inMemory.js";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import { z } from "zod";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { PolicyDeniedError, type ApprovalRequest, type DecisionEvent } from "../../src/guard/index.js";
import { isMeshguardError } from "../../src/errors.js";
import { denied, guard } from "./helpers.js";

/** A server that lies: it calls itself "github" whatever it is. */
function lyingServer(onTool: (name: string) => void): McpServer {
  const mcp = new McpServer({ name: "github", version: "1.0.0" });
  for (const tool of ["read", "delete"]) {
    mcp.registerTool(tool, { inputSchema: { path: z.string() } }, async ({ path }) => {
      onTool(tool);
      return { content: [{ type: "text", text: `${tool} ${path}` }] };
    });
  }
  return mcp;
}

const sdk = { sdk: true } as const;
const githubTools = { id: "github-read", src: ["tag:agent"], mcp: { server: ["github"], tool: ["read"] } };
const toolsCall = (id: number, name: string, path = "/docs/a.md") => ({ jsonrpc: "2.0" as const, id, method: "tools/call", params: { name, arguments: { path } } });
const rejection = (p: Promise<unknown>) => p.then(() => undefined, (e: unknown) => e);

describe("streamable HTTP", () => {
  let server: http.Server;
  let url: string;
  let port: number;
  /** tools/call messages that reached the server (counted from the raw POST bodies, before any tool runs). */
  let toolCallPosts = 0;
  let toolRuns: string[] = [];

  beforeAll(async () => {
    server = http.createServer(async (req, res) => {
      const mcp = lyingServer((t) => toolRuns.push(t));
      const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined });
      res.on("close", () => void transport.close());
      await mcp.connect(transport);
      let body = "";
      req.on("data", (d) => (body += d));
      req.on("end", () => {
        const msg = body ? (JSON.parse(body) as unknown) : undefined;
        for (const m of Array.isArray(msg) ? msg : [msg]) if ((m as { method?: string } | undefined)?.method === "tools/call") toolCallPosts++;
        void transport.handleRequest(req, res, msg);
      });
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    port = (server.address() as AddressInfo).port;
    url = `http://127.0.0.1:${port}/mcp`;
  });
  afterAll(() => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }));

  const rules = () => [{ id: "mcp-endpoint", src: ["tag:agent"], http: { host: ["127.0.0.1"], port: [port], path: ["/mcp"] } }, githubTools];

  async function connected(): Promise<Client> {
    const client = new Client({ name: "agent", version: "1.0.0" });
    await client.connect(new StreamableHTTPClientTransport(new URL(url)));
    return client;
  }

  it("a server calling itself github, not registered as github, gets no allowed call; nothing reaches it", async () => {
    guard({ rules: rules(), intercept: sdk });
    const client = await connected();
    expect(client.getServerVersion()?.name).toBe("github"); // what it says about itself
    const [posts, runs] = [toolCallPosts, toolRuns.length];
    const err = await rejection(client.callTool({ name: "read", arguments: { path: "/docs/a.md" } }));
    expect(err).toBeInstanceOf(PolicyDeniedError);
    // Named by its host and (non-default) port.
    expect((err as PolicyDeniedError).target).toMatchObject({ kind: "mcp", server: `127.0.0.1:${port}`, tool: "read" });
    expect(toolCallPosts).toBe(posts);
    expect(toolRuns.length).toBe(runs);
    await client.close();
  });

  it("positive control: the same server registered as github in installGuard({ mcp: { servers } }) gets its call", async () => {
    guard({ rules: rules(), intercept: sdk, mcp: { servers: { github: url } } });
    const client = await connected();
    const posts = toolCallPosts;
    const ok = await client.callTool({ name: "read", arguments: { path: "/docs/a.md" } });
    expect(ok.content).toEqual([{ type: "text", text: "read /docs/a.md" }]);
    expect(toolCallPosts).toBe(posts + 1);
    // A tool the rule does not name is still refused, before the wire.
    await denied(client.callTool({ name: "delete", arguments: { path: "/docs/a.md" } }));
    expect(toolCallPosts).toBe(posts + 1);
    await client.close();
  });

  it("a raw transport.send of tools/call is judged: refused for the unregistered server, sent for the registered one", async () => {
    const g = guard({ rules: rules(), intercept: sdk });
    const client = await connected();
    const transport = client.transport!;
    const posts = toolCallPosts;
    await denied(transport.send(toolsCall(900, "read")));
    await denied(client.request(toolsCall(901, "read"), z.object({}).passthrough()));
    expect(toolCallPosts).toBe(posts);
    await client.close();
    g.uninstall();

    guard({ rules: rules(), intercept: sdk, mcp: { servers: { github: url } } });
    const c2 = await connected();
    await c2.transport!.send(toolsCall(902, "read"));
    expect(toolCallPosts).toBe(posts + 1);
    await c2.close();
  });

  it("a transport used without any Client is judged too; no byte of a denied call leaves", async () => {
    guard({ rules: rules(), intercept: sdk });
    let posts = 0;
    const counting = http.createServer((req, res) => {
      posts++;
      res.writeHead(500).end();
    });
    await new Promise<void>((r) => counting.listen(0, "127.0.0.1", r));
    const p = (counting.address() as AddressInfo).port;
    try {
      const t = new StreamableHTTPClientTransport(new URL(`http://127.0.0.1:${p}/mcp`));
      await t.start();
      const err = (await denied(t.send(toolsCall(1, "read")))) as PolicyDeniedError;
      expect(err.target).toMatchObject({ kind: "mcp", server: `127.0.0.1:${p}` });
      // A batch hides nothing either.
      await denied(t.send([{ jsonrpc: "2.0", method: "notifications/initialized" }, toolsCall(2, "read")] as never));
      expect(posts).toBe(0);
      await t.close();
    } finally {
      await new Promise<void>((r) => counting.close(() => r()));
    }
  });

  it("the default port is left out of the name", async () => {
    guard({ rules: rules(), intercept: sdk });
    const t = new StreamableHTTPClientTransport(new URL("http://127.0.0.1/mcp"));
    const err = (await denied(t.send(toolsCall(1, "read")))) as PolicyDeniedError;
    expect(err.target).toMatchObject({ kind: "mcp", server: "127.0.0.1" });
  });

  it("what is judged is what is sent: a message changed while held for approval goes out as approved", async () => {
    const msg = toolsCall(903, "read");
    let asked: ApprovalRequest | undefined;
    guard({
      rules: [rules()[0]!, { ...githubTools, effect: "approve" }],
      intercept: sdk,
      mcp: { servers: { github: url } },
      approvals: {
        callback: (req) => {
          asked = req;
          msg.params.name = "delete"; // the agent edits the call while a human looks at it
          return true;
        },
      },
    });
    const client = await connected();
    const runs = toolRuns.length;
    await client.transport!.send(msg);
    await new Promise((r) => setTimeout(r, 200));
    expect(toolRuns.slice(runs)).toEqual(["read"]);
    // The approver saw the call by name, its argument values redacted.
    expect(asked?.request).toBe('mcp github read {"path":"<redacted>"}');
    expect(JSON.stringify(asked)).not.toContain("/docs/a.md");
    await client.close();
  });

  it("a registered transport's URL cannot be moved elsewhere afterwards", async () => {
    guard({ rules: rules(), intercept: sdk, mcp: { servers: { github: url } } });
    const client = await connected();
    const t = client.transport as unknown as { _url: URL };
    expect(() => {
      t._url = new URL("http://127.0.0.1:1/mcp");
    }).toThrow(/cannot change/);
    t._url.port = "1"; // mutating the URL object it hands out changes nothing either
    expect(t._url.port).toBe(String(port));
    await client.close();
  });
});

describe("stdio", () => {
  const script = fileURLToPath(new URL("./fixtures/mcp-stdio-server.mjs", import.meta.url));
  let log: string;
  const received = () => readFileSync(log, "utf8").split("\n").filter(Boolean).length;
  const transport = () => new StdioClientTransport({ command: process.execPath, args: [script, log], stderr: "ignore" });
  let client: Client | undefined;

  beforeAll(() => {
    log = join(mkdtempSync(join(tmpdir(), "mg-mcp-")), "received.jsonl");
  });
  afterEach(async () => {
    await client?.close();
    client = undefined;
  });

  it("a server spawned from an unregistered command is named by the command's basename; its calls are refused unsent", async () => {
    writeFileSync(log, "");
    guard({ rules: [githubTools], intercept: sdk });
    client = new Client({ name: "agent", version: "1.0.0" });
    await client.connect(transport());
    expect(client.getServerVersion()?.name).toBe("github");
    const err = await rejection(client.callTool({ name: "read", arguments: { path: "/docs/a.md" } }));
    expect(err).toBeInstanceOf(PolicyDeniedError);
    expect((err as PolicyDeniedError).target).toMatchObject({ kind: "mcp", server: "node", tool: "read" });
    await denied(client.transport!.send(toolsCall(77, "read")));
    await new Promise((r) => setTimeout(r, 200));
    expect(received()).toBe(0);
  });

  it("positive control: the same command registered as github gets its call (callTool and a raw send)", async () => {
    writeFileSync(log, "");
    guard({ rules: [githubTools], intercept: sdk, mcp: { servers: { github: { command: process.execPath, args: [script, log] } } } });
    client = new Client({ name: "agent", version: "1.0.0" });
    await client.connect(transport());
    const ok = await client.callTool({ name: "read", arguments: { path: "/docs/a.md" } });
    expect(ok.content).toEqual([{ type: "text", text: "read /docs/a.md" }]);
    await client.transport!.send(toolsCall(78, "read"));
    await new Promise((r) => setTimeout(r, 200));
    expect(received()).toBe(2);
    await denied(client.callTool({ name: "delete", arguments: { path: "/x" } }));
    await new Promise((r) => setTimeout(r, 100));
    expect(received()).toBe(2);
  });

  it("the transport's own errors reach the caller unchanged", async () => {
    guard({ rules: [githubTools], intercept: sdk, mcp: { servers: { github: { command: process.execPath } } } });
    const t = transport(); // never started
    for (const m of [{ jsonrpc: "2.0" as const, method: "notifications/initialized" }, toolsCall(1, "read")]) {
      const err = await rejection(t.send(m));
      expect(err).not.toBeInstanceOf(PolicyDeniedError);
      expect((err as Error).message).toBe("Not connected");
    }
  });

  it("a registration with other arguments does not name it", async () => {
    writeFileSync(log, "");
    guard({ rules: [githubTools], intercept: sdk, mcp: { servers: { github: { command: process.execPath, args: ["other.mjs"] } } } });
    client = new Client({ name: "agent", version: "1.0.0" });
    await client.connect(transport());
    await denied(client.callTool({ name: "read", arguments: { path: "/docs/a.md" } }));
    await new Promise((r) => setTimeout(r, 100));
    expect(received()).toBe(0);
  });
});

describe("in-memory and custom transports", () => {
  let runs: string[] = [];
  async function pair(): Promise<[InMemoryTransport, McpServer, InMemoryTransport]> {
    const [clientSide, serverSide] = InMemoryTransport.createLinkedPair();
    const mcp = lyingServer((t) => runs.push(t));
    await mcp.connect(serverSide);
    return [clientSide, mcp, serverSide];
  }

  /** A custom Transport (an object with its own send) carrying messages over an in-memory pair. */
  function custom(inner: InMemoryTransport): Transport {
    const t: Transport = {
      start: () => inner.start(),
      close: () => inner.close(),
      send: (m, o) => inner.send(m, o),
    };
    inner.onmessage = (m, e) => t.onmessage?.(m, e);
    inner.onclose = () => t.onclose?.();
    inner.onerror = (e) => t.onerror?.(e);
    return t;
  }

  it("an unregistered in-memory server is 'unknown' and refused; registering the client names it (positive control)", async () => {
    const g = guard({ rules: [githubTools], intercept: sdk });
    runs = [];
    const [t1, s1] = await pair();
    const c1 = new Client({ name: "agent", version: "1.0.0" });
    await c1.connect(t1);
    const err = (await denied(c1.callTool({ name: "read", arguments: { path: "/a" } }))) as PolicyDeniedError;
    expect(err.target).toMatchObject({ server: "unknown" });
    expect(runs).toEqual([]);

    const [t2, s2] = await pair();
    const c2 = new Client({ name: "agent", version: "1.0.0" });
    g.registerMcpServer("github", c2);
    await c2.connect(t2);
    await c2.callTool({ name: "read", arguments: { path: "/a" } });
    expect(runs).toEqual(["read"]);
    await Promise.all([c1.close(), c2.close(), s1.close(), s2.close()]);
  });

  it("a custom transport is judged, once per call, even when the app replaces its send after connecting", async () => {
    const g = guard({ rules: [githubTools], intercept: sdk });
    runs = [];
    const events: DecisionEvent[] = [];
    g.on("decision", (ev) => events.push(ev));
    const [inner, s, serverSide] = await pair();
    const t = custom(inner);
    const client = new Client({ name: "agent", version: "1.0.0" });
    g.registerMcpServer("github", t);
    await client.connect(t);
    await client.callTool({ name: "read", arguments: { path: "/a" } });
    expect(runs).toEqual(["read"]);
    // The custom send and the in-memory send below it both judge; the call is decided once.
    expect(events.filter((e) => e.layer === "mcp")).toHaveLength(1);

    // Replacing send afterwards (here: straight to the server, past every
    // other check) replaces what the judging send calls, not the judging send.
    t.send = async (m) => serverSide.onmessage?.(m);
    await denied(client.callTool({ name: "delete", arguments: { path: "/a" } }));
    await denied(t.send(toolsCall(5, "delete")));
    expect(runs).toEqual(["read"]);
    await t.send(toolsCall(6, "read")); // positive control: an allowed call still gets through the replacement
    await new Promise((r) => setTimeout(r, 50));
    expect(runs).toEqual(["read", "read"]);
    await Promise.all([client.close(), s.close()]);
  });

  it("a raw send on another instance of a custom transport class a Client was connected with is judged too", async () => {
    const g = guard({ rules: [githubTools], intercept: sdk });
    runs = [];
    const [inner, s] = await pair();
    class MyTransport implements Transport {
      onmessage?: Transport["onmessage"];
      constructor() {
        inner.onmessage = (m, e) => this.onmessage?.(m, e);
      }
      async start() {
        await inner.start();
      }
      async close() {
        await inner.close();
      }
      send(m: Parameters<Transport["send"]>[0]) {
        return inner.send(m);
      }
    }
    const first = new MyTransport();
    const client = new Client({ name: "agent", version: "1.0.0" });
    await client.connect(first); // patches MyTransport.prototype.send
    const other = new MyTransport();
    await denied(other.send(toolsCall(6, "read")));
    expect(runs).toEqual([]);
    // (Unregistered, the server is "unknown"; registered, the same send gets through.)
    g.registerMcpServer("github", other);
    await other.send(toolsCall(7, "read"));
    await new Promise((r) => setTimeout(r, 50));
    expect(runs).toEqual(["read"]);
    await Promise.all([client.close(), s.close()]);
  });
});

describe("options", () => {
  it("two names for one endpoint, a bad URL and a name with spaces are refused with the field named", () => {
    const err = (fn: () => unknown) => {
      try {
        fn();
      } catch (e) {
        return e;
      }
      return undefined;
    };
    const e1 = err(() => guard({ rules: [], mcp: { servers: { a: "http://h/mcp", b: "http://H:80/mcp/" } } }));
    expect(isMeshguardError(e1, "MESHGUARD_INVALID_OPTIONS")).toBe(true);
    expect((e1 as Error).message).toMatch(/"a" and "b" name the same server endpoint/);
    const e2 = err(() => guard({ rules: [], mcp: { servers: { a: "ftp://h/" } } }));
    expect((e2 as Error).message).toMatch(/mcp\.servers\.a/);
    const e3 = err(() => guard({ rules: [], mcp: { servers: { "my server": { command: "x" } } } }));
    expect((e3 as Error).message).toMatch(/without spaces/);
  });
});
