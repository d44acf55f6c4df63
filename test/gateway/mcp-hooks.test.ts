// The gateway's pre and post hooks on MCP calls, on a real gateway's
// loopback listener with an official-SDK client and upstream: what a hook is
// sent, a block (the call never runs), a modify (the changed arguments are
// judged again: allowed ones run, others are refused), a redact of the
// result. Real hook endpoints (hook-server.ts) answer.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { McpError } from "@modelcontextprotocol/sdk/types.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startMcpUpstream, type McpUpstream } from "../../bench/lib/mcp-upstream.mjs";
import { startGateway, type GatewayHandle } from "../../src/gateway/index.js";
import { hookServer, type HookServer } from "./hook-server.js";

let dir: string;
let up: McpUpstream;
let pre: HookServer;
let post: HookServer;
let gw: GatewayHandle;
let client: Client;
let transport: StreamableHTTPClientTransport;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "mg-mcp-hooks-"));
  up = await startMcpUpstream();
  pre = await hookServer((r) => {
    const args = (r.body.request.body as { arguments?: { repo?: string } } | null)?.arguments;
    if (args?.repo === "acme/blocked") return { json: { action: "block", status: 422, message: "no blocked repos" } };
    if (args?.repo === "acme/rename") return { json: { action: "modify", body: { name: "get_issue", arguments: { repo: "acme/renamed" } } } };
    if (args?.repo === "rated/one") return { json: { action: "modify", body: { name: "get_issue", arguments: { repo: "rated/changed" } } } };
    if (args?.repo === "acme/escape") return { json: { action: "modify", body: { name: "get_issue", arguments: { repo: "evil/app" } } } };
    return { json: { action: "allow" } };
  });
  post = await hookServer((r) => {
    const text = JSON.stringify(r.body.response.body);
    if (text.includes("acme/secret")) return { json: { action: "redact", body: { content: [{ type: "text", text: "redacted by policy" }] } } };
    return { json: { action: "record" } };
  });
  const policy = join(dir, "policy.hujson");
  writeFileSync(policy, JSON.stringify({ meshguard: { version: 6, rules: [
          { id: "acme", src: ["tag:local"], mcp: { server: ["github"], tool: ["get_issue"], args: { repo: "acme/*" } } },
          { id: "rated", src: ["tag:local"], mcp: { server: ["github"], tool: ["get_issue"], args: { repo: "rated/*" } }, when: { rate: { perMinute: 1 } } },
        ] } }));
  gw = await startGateway({
    config: {
      policy,
      dataDir: join(dir, "data"),
      providers: { o: { baseUrl: "http://127.0.0.1:9/v1", format: "openai", models: ["*"] } },
      loopback: { listen: "127.0.0.1:0", principal: "tag:local" },
      hooks: { pre: [{ name: "pre", url: pre.url }], post: [{ name: "post", url: post.url }] },
      mcp: { servers: { github: { url: up.url } } },
    },
  });
  client = new Client({ name: "hooks-test", version: "1.0.0" });
  transport = new StreamableHTTPClientTransport(new URL(`${gw.loopbackUrl}/v1/mcp`));
  await client.connect(transport);
}, 60_000);

afterAll(async () => {
  await transport?.terminateSession().catch(() => {});
  await client?.close();
  await gw?.close();
  await Promise.all([up?.close(), pre?.close(), post?.close()]);
  rmSync(dir, { recursive: true, force: true });
});

const get = (repo: string) => client.callTool({ name: "github__get_issue", arguments: { repo } }) as Promise<{ content: Array<{ text: string }> }>;

async function refusal(p: Promise<unknown>): Promise<McpError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(McpError);
    return err as McpError;
  }
  throw new Error("the call was not refused");
}

describe("hooks on MCP calls", () => {
  it("sends the pre hook the call (operation, server, tool, arguments, caller) and the post hook its result", async () => {
    expect((await get("acme/app")).content[0]!.text).toBe("issue of acme/app");
    const p = pre.received.at(-1)!.body.request;
    expect(p.facts).toMatchObject({ operation: "mcp.call", provider: "github", model: "get_issue" });
    expect(p.body).toEqual({ name: "get_issue", arguments: { repo: "acme/app" } });
    expect(p.caller.tags).toEqual(["tag:local"]);
    const q = post.received.at(-1)!.body;
    expect(q.response).toEqual({ status: 200, body: { content: [{ type: "text", text: "issue of acme/app" }] } });
  });

  it("a block refuses the call (-32003, the hook named), and it never runs", async () => {
    const e = await refusal(get("acme/blocked"));
    expect(e.code).toBe(-32003);
    expect(e.message).toMatch(/blocked by hook pre: no blocked repos/);
    expect(e.data).toMatchObject({ code: "MESHGUARD_HOOK_BLOCKED", hook: "pre" });
    expect(up.ran.some((r) => r.repo === "acme/blocked")).toBe(false);
  });

  it("a modify sends the changed arguments when the policy allows them, and refuses them when it does not", async () => {
    expect((await get("acme/rename")).content[0]!.text).toBe("issue of acme/renamed");
    expect(up.ran.some((r) => r.repo === "acme/rename")).toBe(false);
    const e = await refusal(get("acme/escape"));
    expect(e.code).toBe(-32003);
    expect(e.message).toMatch(/changed the call's arguments, and the policy does not allow it/);
    expect(up.ran.some((r) => r.repo === "evil/app")).toBe(false);
  });

  it("a call a hook modified is decided again as one call: its rate counted once", async () => {
    // One call a minute under the rule: the first decision's token is given back before the second.
    expect((await get("rated/one")).content[0]!.text).toBe("issue of rated/changed");
    const e = await refusal(get("rated/other"));
    expect(e.message).toMatch(/rate/);
  });

  it("a post hook's redact replaces the result", async () => {
    expect((await get("acme/secret")).content).toEqual([{ type: "text", text: "redacted by policy" }]);
  });

  it("logs the blocked call as blocked with the hook's status", async () => {
    await gw.store!.flush();
    const { records } = await gw.store!.queryLogs({ limit: 100 });
    expect(records.find((r) => r.outcome === "blocked")).toMatchObject({ operation: "mcp.call", provider: "github", status: 422 });
  });
});
