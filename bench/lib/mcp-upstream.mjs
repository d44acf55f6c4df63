// mcp-upstream: an MCP server on 127.0.0.1 built with the official SDK
// (McpServer on the stateful streamable-HTTP transport, one McpServer per
// session), the upstream of the gateway's MCP tests and benchmark.
//
//   const up = await startMcpUpstream();
//   new StreamableHTTPClientTransport(new URL(up.url));
//
// Tools: get_issue({ repo }), create_issue({ repo, title }) (each call is
// recorded in up.ran, in order), ask({ question }) (asks the calling
// session's client to sample — createMessage — and returns its text), and
// whatever addTool registers later (every session is told its tool list
// changed). Resources file:///handbook/intro.md and
// file:///handbook/secret.md, or the `resources` given ({ name, uri, text });
// prompt summarize({ repo }).
//
// With `authorize` (a function of the request's credential: the
// Authorization header's bearer token, or the `api_key` query parameter,
// or the X-Api-Key header), every request whose credential it refuses is
// answered 401 with a body that echoes the credential (an upstream that
// echoes what it refused, for the gateway's scrubbing), and every one is
// recorded in up.credentials. Tool whoami() then answers the credential of
// the request that called it — echoed, as a careless upstream would.
import { randomUUID } from "node:crypto";
import http from "node:http";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { isInitializeRequest } from "@modelcontextprotocol/sdk/types.js";
import { z } from "zod";

const HANDBOOK = [
  { name: "intro", uri: "file:///handbook/intro.md", text: "# Intro" },
  { name: "secret", uri: "file:///handbook/secret.md", text: "the secret" },
];

export async function startMcpUpstream({ host = "127.0.0.1", port = 0, authorize = undefined, resources = HANDBOOK } = {}) {
  /** @type {Array<{ credential: string, accepted: boolean, method: string }>} */
  const credentials = [];
  const credentialOf = (req) => {
    const bearer = /^Bearer (.+)$/.exec(req.headers.authorization ?? "")?.[1];
    if (bearer !== undefined) return bearer;
    if (typeof req.headers["x-api-key"] === "string") return req.headers["x-api-key"];
    const q = new URL(req.url ?? "/", "http://x").searchParams.get("api_key");
    return q ?? req.headers.authorization ?? "";
  };
  /** @type {Map<string, { transport: StreamableHTTPServerTransport, server: McpServer }>} */
  const sessions = new Map();
  const ran = [];
  const extra = [];
  const text = (t) => ({ content: [{ type: "text", text: t }] });

  const build = () => {
    const server = new McpServer({ name: "github-sim", version: "1.0.0" });
    server.registerTool("get_issue", { description: "read an issue", inputSchema: { repo: z.string() } }, async ({ repo }) => {
      ran.push({ tool: "get_issue", repo });
      return text(`issue of ${repo}`);
    });
    server.registerTool("create_issue", { description: "open an issue", inputSchema: { repo: z.string(), title: z.string() } }, async ({ repo, title }) => {
      ran.push({ tool: "create_issue", repo, title });
      return text(`created in ${repo}: ${title}`);
    });
    server.registerTool("ask", { description: "ask the caller's model", inputSchema: { question: z.string() } }, async ({ question }) => {
      const r = await server.server.createMessage({ messages: [{ role: "user", content: { type: "text", text: question } }], maxTokens: 10 });
      return text(`answer: ${r.content.type === "text" ? r.content.text : "?"}`);
    });
    server.registerTool("whoami", { description: "echo the caller's credential" }, async (extra) => text(`you sent ${credentialOf({ headers: extra.requestInfo?.headers ?? {}, url: extra.requestInfo?.url?.toString() ?? "/" })}`));
    for (const t of extra) server.registerTool(t.name, { description: t.name }, async () => text(t.name));
    for (const r of resources) server.registerResource(r.name, r.uri, { mimeType: "text/markdown" }, async (uri) => ({ contents: [{ uri: uri.href, text: r.text }] }));
    server.registerPrompt("summarize", { description: "summarize a repo", argsSchema: { repo: z.string() } }, ({ repo }) => ({ messages: [{ role: "user", content: { type: "text", text: `summarize ${repo}` } }] }));
    return server;
  };

  const srv = http.createServer(async (req, res) => {
    try {
      if (authorize !== undefined) {
        const credential = credentialOf(req);
        const accepted = await authorize(credential);
        credentials.push({ credential, accepted, method: req.method ?? "" });
        if (!accepted) {
          res.writeHead(401, { "content-type": "application/json", "www-authenticate": "Bearer" });
          res.end(JSON.stringify({ error: "invalid_token", error_description: `refused credential ${JSON.stringify(credential)}` }));
          return;
        }
      }
      const sid = req.headers["mcp-session-id"];
      if (typeof sid === "string") {
        const s = sessions.get(sid);
        if (!s) {
          res.writeHead(404).end();
          return;
        }
        await s.transport.handleRequest(req, res);
        return;
      }
      const chunks = [];
      for await (const c of req) chunks.push(c);
      const body = chunks.length ? JSON.parse(Buffer.concat(chunks).toString("utf8")) : undefined;
      if (req.method !== "POST" || !isInitializeRequest(body)) {
        res.writeHead(400).end();
        return;
      }
      const server = build();
      const transport = new StreamableHTTPServerTransport({
        sessionIdGenerator: () => randomUUID(),
        onsessioninitialized: (id) => sessions.set(id, { transport, server }),
      });
      transport.onclose = () => {
        if (transport.sessionId) sessions.delete(transport.sessionId);
      };
      await server.connect(transport);
      await transport.handleRequest(req, res, body);
    } catch (err) {
      if (!res.headersSent) res.writeHead(500).end(String(err));
    }
  });
  await new Promise((r) => srv.listen(port, host, r));
  const addr = srv.address();
  return {
    url: `http://${host}:${addr.port}/mcp`,
    ran,
    sessions,
    credentials,
    /** addTool registers a tool on every session (and on sessions to come): each session's client is told the list changed. */
    addTool(name) {
      extra.push({ name });
      for (const { server } of sessions.values()) server.registerTool(name, { description: name }, async () => text(name));
    },
    async close() {
      for (const { server } of sessions.values()) await server.close().catch(() => {});
      srv.closeAllConnections();
      await new Promise((r) => srv.close(() => r()));
    },
  };
}
