#!/usr/bin/env node
// An MCP client calling the tools of an MCP server over the tailnet, with a
// per-tool policy (`@modelcontextprotocol/sdk`, streamable HTTP).
//
//   tools  (tag:tools)  an MCP server on a tailnet node with two tools,
//                       search_docs and delete_doc; it asks the tailnet who
//                       is calling (whois), no API key
//   agent  (tag:agent)  an MCP client; the guard judges every tools/call:
//                       search_docs under /docs is allowed, delete_doc is not
//
// A denied tools/call is refused in the client transport's send: no HTTP
// request is made, the server never sees it.
//
// Run: node examples/sdk/mcp.mjs   (after `npm run build`; `npm run examples:sdk` runs all)
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { z } from "zod";
import { startExample } from "./lib/tailnet.mjs";

const policy = {
  tagOwners: { "tag:tools": ["alice@"], "tag:agent": ["alice@"] },
  grants: [{ src: ["tag:agent"], dst: ["tag:tools"], ip: ["tcp:80"] }],
  meshguard: {
    version: 1,
    rules: [
      // The MCP endpoint over HTTP, and per tool what the agent may call.
      { id: "mcp-endpoint", src: ["tag:agent"], http: { host: ["tools"], port: [80], path: ["/mcp"] } },
      { id: "read-docs", src: ["tag:agent"], mcp: { server: ["docs"], tool: ["search_docs"], args: { path: "/docs/**" } } },
    ],
  },
};

// The MCP server: stateless streamable HTTP, a fresh McpServer per request.
const calls = { search_docs: 0, delete_doc: 0 };
let tailnetNode;
async function handler(req, res) {
  const who = await tailnetNode.whois(req.socket); // the calling node, as the tailnet says
  const caller = `${who.node.hostname} (${who.node.tags.join(",")})`;
  const mcp = new McpServer({ name: "docs", version: "1.0.0" });
  mcp.registerTool("search_docs", { description: "Search the docs", inputSchema: { path: z.string(), q: z.string() } }, async ({ path, q }) => {
    calls.search_docs++;
    return { content: [{ type: "text", text: `2 hits for "${q}" under ${path} (for ${caller})` }] };
  });
  mcp.registerTool("delete_doc", { description: "Delete a doc", inputSchema: { path: z.string() } }, async ({ path }) => {
    calls.delete_doc++;
    return { content: [{ type: "text", text: `deleted ${path}` }] };
  });
  const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined });
  res.on("close", () => void transport.close());
  await mcp.connect(transport);
  await transport.handleRequest(req, res);
}

const ex = await startExample({
  name: "mcp",
  policy,
  service: { hostname: "tools", tag: "tag:tools", handler: (req, res) => void handler(req, res).catch((e) => res.writeHead(500).end(String(e))) },
  agent: { hostname: "agent", tag: "tag:agent" },
  // The server's name in `mcp` rules comes from the app, never from the server itself.
  guard: { mcp: { servers: { docs: "http://tools/mcp" } } },
  onService: (node) => (tailnetNode = node),
});
try {
  const client = new Client({ name: "agent", version: "1.0.0" });
  await client.connect(new StreamableHTTPClientTransport(new URL("http://tools/mcp"), { fetch: ex.fetch }));
  const text = (r) => `"${r.content.map((c) => c.text).join(" ")}"`;

  await ex.attempt("allowed", "mcp callTool search_docs({ path: '/docs/guide', q: 'tailnet' })", async () => text(await client.callTool({ name: "search_docs", arguments: { path: "/docs/guide", q: "tailnet" } })), () => calls.search_docs);
  await ex.attempt("blocked", "mcp callTool delete_doc({ path: '/docs/guide' })", () => client.callTool({ name: "delete_doc", arguments: { path: "/docs/guide" } }), () => calls.delete_doc);
  await client.close();
} finally {
  await ex.finish();
}
