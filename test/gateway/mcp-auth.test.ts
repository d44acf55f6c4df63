// Credentials for streamable-HTTP MCP upstreams (`mcp.servers.X.auth`), end
// to end over a real tailnet (local headscale): official-SDK MCP upstreams
// on 127.0.0.1 (bench/lib/mcp-upstream.mjs) that refuse a request without
// the right credential — and echo what they got — and a real OAuth 2.0
// authorization server (oidc-provider) for the client-credentials and the
// per-user (authorization code with PKCE) kinds. Agents are MeshNodes with
// official SDK clients; they hold no secret and must never see one.
import { randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { McpError } from "@modelcontextprotocol/sdk/types.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startMcpUpstream, type McpUpstream } from "../../bench/lib/mcp-upstream.mjs";
import { fastStats } from "../../src/gateway/mcp/fast.js";
import type { MeshNode } from "../../src/index.js";
import { PROVIDER_KEY, startGatewayTailnet, type GatewayTailnet } from "./gateway-tailnet.js";
import { CC_CLIENT, consent, startOAuthServer, WEB_CLIENT, webAuth, type OAuthServer } from "./oauth-server.js";

const STATIC_TOKEN = "mcp-static-T0KEN-never-shown-81c2";
const QUERY_KEY = "mcp-query-K3Y-never-shown-5d0e";
const BASIC_PASSWORD = "mcp-basic-PW-never-shown-a7f3";
const STDIO_SECRET = "mcp-stdio-SECRET-never-shown-3e6b";
const STDIO_FILE_SECRET = "mcp-stdio-FILE-secret-never-shown-0c4d";
const STDIO_SERVER = fileURLToPath(new URL("./fixtures/mcp-stdio-server.mjs", import.meta.url));
const KEYS = `k1:${randomBytes(32).toString("base64")}`;
const REDIRECT = "http://127.0.0.1:4999/meshguard/v1/connectors/crm/oauth/callback";
const OAUTH_API = "/meshguard/v1/connectors/crm/oauth";

let t: GatewayTailnet;
let srv: OAuthServer;
const ups: Record<"bearer" | "keyed" | "basic" | "billing" | "crm", McpUpstream> = {} as never;
/** Client-credentials tokens the billing upstream is told to refuse from now on (as if revoked upstream). */
const refusedTokens = new Set<string>();
/** Everything an agent or a user received from the gateway: searched for secrets at the end. */
const seen: string[] = [];

const fetchOf = (node: MeshNode) => ((url: string | URL, init?: RequestInit) => node.fetch(url as never, init as never)) as unknown as typeof fetch;

async function connect(node: MeshNode): Promise<{ client: Client; close(): Promise<void> }> {
  const client = new Client({ name: `agent-${node.hostname}`, version: "1.0.0" });
  const transport = new StreamableHTTPClientTransport(new URL(`${t.gw.url}/v1/mcp`), { fetch: fetchOf(node) });
  await client.connect(transport);
  return {
    client,
    async close() {
      await transport.terminateSession().catch(() => {});
      await client.close();
    },
  };
}

/** whoami calls server__whoami and returns its text (what the upstream says it received, scrubbed by the gateway). */
async function whoami(c: Client, server: string): Promise<string> {
  const r = (await c.callTool({ name: `${server}__whoami`, arguments: {} })) as { content: Array<{ text: string }>; isError?: boolean };
  seen.push(JSON.stringify(r));
  expect(r.isError, JSON.stringify(r)).toBeFalsy();
  return r.content[0]!.text;
}

async function refusal(p: Promise<unknown>): Promise<McpError> {
  try {
    await p;
  } catch (err) {
    seen.push(String((err as Error).message), JSON.stringify((err as McpError).data ?? null));
    expect(err).toBeInstanceOf(McpError);
    return err as McpError;
  }
  throw new Error("the call was not refused");
}

const introspects = (client: string) => async (token: string) => {
  if (refusedTokens.has(token)) return false;
  const info = await srv.introspect(token);
  return info.active && info.client_id === client;
};

beforeAll(async () => {
  srv = await startOAuthServer({ redirectUris: [REDIRECT] });
  ups.bearer = await startMcpUpstream({ authorize: (c) => c === STATIC_TOKEN });
  ups.keyed = await startMcpUpstream({ authorize: (c) => c === QUERY_KEY });
  ups.basic = await startMcpUpstream({ authorize: (c) => c === `Basic ${Buffer.from(`svc-agents:${BASIC_PASSWORD}`).toString("base64")}` });
  ups.billing = await startMcpUpstream({ authorize: introspects(CC_CLIENT.id) });
  ups.crm = await startMcpUpstream({ authorize: introspects(WEB_CLIENT.id) });
  t = await startGatewayTailnet({
    // Every identity may call every tool: what differs between them here is the credential.
    meshguard: { version: 6, rules: [{ id: "all-tools", src: ["*"], mcp: { server: ["*"], tool: ["*"] } }] },
    config: (dir: string) => ({
      retention: { mode: "full" },
      // keyed's own bucket: 3 calls per node, whoever the caller (no grant names it).
      quotas: { "keyed-calls": { unit: "calls", capacity: 3, refill: "1/hour", per: "node" } },
      mcp: {
        servers: {
          bearer: { url: ups.bearer.url, auth: { type: "bearer", token: { env: "STATIC_TOKEN" } } },
          keyed: { url: ups.keyed.url, auth: { type: "apiKey", key: { env: "QUERY_KEY" }, query: "api_key" }, quotas: "keyed-calls" },
          basic: { url: ups.basic.url, auth: { type: "basic", username: "svc-agents", password: { env: "BASIC_PASSWORD" } } },
          billing: { url: ups.billing.url, auth: { type: "oauth2", grant: "client_credentials", tokenUrl: srv.tokenUrl, clientId: CC_CLIENT.id, clientSecret: { env: "CC_SECRET" }, scopes: ["api:read"] } },
          crm: { url: ups.crm.url, auth: webAuth(srv, REDIRECT) },
          // A stdio server's secrets from the gateway's environment and from a file; a plain value as written.
          notes: {
            command: process.execPath,
            args: [STDIO_SERVER],
            env: { MCP_STDIO_ENV_TOOL: "1", NOTES_TOKEN: { env: "STDIO_SECRET" }, NOTES_FILE_TOKEN: { file: secretFile(dir) } },
          },
        },
      },
    }),
    gateway: {
      env: { SIM_PROVIDER_KEY: PROVIDER_KEY, STDIO_SECRET, STATIC_TOKEN, QUERY_KEY, BASIC_PASSWORD, CC_SECRET: CC_CLIENT.secret, WEB_SECRET: WEB_CLIENT.secret, OAUTH_KEYS: KEYS },
    },
  });
}, 180_000);

/** secretFile writes the stdio server's file secret as an admin would (mode 0600, a newline) and returns its path. */
function secretFile(dir: string): string {
  const path = join(dir, "notes.key");
  writeFileSync(path, `${STDIO_FILE_SECRET}\n`, { mode: 0o600 });
  return path;
}

afterAll(async () => {
  await t?.close();
  for (const u of Object.values(ups)) await u?.close();
  await srv?.close();
});

describe("static credentials for MCP upstreams", () => {
  it("sends the bearer token, the query key and the Basic pair; the agent sees the tools and never the credential", async () => {
    const a = await connect(t.nodes.agentA);
    try {
      const tools = (await a.client.listTools()).tools.map((x) => x.name);
      for (const s of ["bearer", "keyed", "basic"]) expect(tools).toContain(`${s}__get_issue`);
      for (const s of ["bearer", "keyed", "basic"] as const) {
        expect(await whoami(a.client, s)).toBe(`you sent ${s === "basic" ? "Basic " : ""}[provider key redacted]`);
        expect(ups[s].credentials.length).toBeGreaterThan(0);
        expect(ups[s].credentials.every((c) => c.accepted)).toBe(true);
      }
      const r = await a.client.callTool({ name: "bearer__get_issue", arguments: { repo: "acme/app" } });
      expect(r.content).toEqual([{ type: "text", text: "issue of acme/app" }]);
    } finally {
      await a.close();
    }
    // The session's end reaches the upstream with its credential too (DELETE).
    for (let i = 0; i < 100 && !ups.bearer.credentials.some((c) => c.method === "DELETE"); i++) await new Promise((r) => setTimeout(r, 50));
    expect(ups.bearer.credentials.some((c) => c.method === "DELETE" && c.accepted)).toBe(true);
  });

  it("the test upstream refuses a request without the credential (the injection is what makes the calls above work)", async () => {
    const res = await fetch(ups.bearer.url, { method: "POST", headers: { "content-type": "application/json", accept: "application/json, text/event-stream" }, body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "initialize", params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "x", version: "1" } } }) });
    expect(res.status).toBe(401);
  });
});

describe("a stdio server's environment", () => {
  it("gets its secrets from the gateway's environment and a file, and its plain values as written; what it echoes is scrubbed", async () => {
    const a = await connect(t.nodes.agentA);
    try {
      const env = async (name: string) => {
        const r = (await a.client.callTool({ name: "notes__env_of", arguments: { name } })) as { content: Array<{ text: string }> };
        seen.push(JSON.stringify(r));
        return r.content[0]!.text;
      };
      expect(await env("MCP_STDIO_ENV_TOOL")).toBe("1");
      expect(await env("NOTES_TOKEN")).toBe("[provider key redacted]");
      expect(await env("NOTES_FILE_TOKEN")).toBe("[provider key redacted]");
      // Nothing else of the gateway's environment reaches the child.
      expect(await env("STATIC_TOKEN")).toBe("(unset)");
    } finally {
      await a.close();
    }
  });
});

describe("OAuth 2.0 client credentials for an MCP upstream", () => {
  it("fetches one token for every session, and renews it once when the upstream answers 401", async () => {
    // Every session so far (the tests above opened some) connected to billing too: one token for all of them.
    const ccGrants = () => srv.tokenRequests.filter((r) => r.grant === "client_credentials").length;
    const fast = fastStats.calls;
    const a = await connect(t.nodes.agentA);
    const b = await connect(t.nodes.agentB);
    try {
      const texts = await Promise.all([whoami(a.client, "billing"), whoami(b.client, "billing"), whoami(a.client, "billing")]);
      expect(texts).toEqual(Array(3).fill("you sent [provider key redacted]"));
      expect(ccGrants()).toBe(1);
      const first = ups.billing.credentials.find((c) => c.accepted)!.credential;
      // The upstream stops accepting that token: the next request gets 401, the gateway fetches a new token and sends it again.
      refusedTokens.add(first);
      expect(await whoami(a.client, "billing")).toBe("you sent [provider key redacted]");
      expect(ccGrants()).toBe(2);
      const last = ups.billing.credentials.at(-1)!;
      expect(last.accepted).toBe(true);
      expect(last.credential).not.toBe(first);
      expect(ups.billing.credentials.some((c) => c.credential === first && !c.accepted)).toBe(true);
      // These calls took the fast path (the credential injected on its own connection, the 401 renewed there too).
      expect(fastStats.calls - fast).toBeGreaterThanOrEqual(4);
      // The other session uses the new token from then on, without another fetch.
      expect(await whoami(b.client, "billing")).toBe("you sent [provider key redacted]");
      expect(ccGrants()).toBe(2);
    } finally {
      await a.close();
      await b.close();
    }
  });
});

describe("per-user OAuth 2.0 for an MCP upstream", () => {
  const call = (node: MeshNode, path: string, init: RequestInit = {}) => node.fetch(`${t.gw.url}${path}` as never, { redirect: "manual", ...init } as never) as unknown as Promise<Response>;

  it("tells a caller without a token how to connect; after alice consents, her open session uses her token; her agent uses it by delegation; bob's agent never", async () => {
    const laptop = await connect(t.nodes.laptop);
    const agentA = await connect(t.nodes.agentA);
    const agentB = await connect(t.nodes.agentB);
    try {
      // Not connected yet: the tools of crm are not listed, and a call says how to connect.
      expect((await laptop.client.listTools()).tools.map((x) => x.name)).not.toContain("crm__whoami");
      const mine = await refusal(laptop.client.callTool({ name: "crm__whoami", arguments: {} }));
      expect(mine.code).toBe(-32005);
      expect(mine.message).toMatch(/alice has not connected/);
      expect(mine.data).toMatchObject({ code: "MESHGUARD_CREDENTIAL_UNAVAILABLE", server: "crm", hint: expect.stringContaining(`${OAUTH_API}/start`) });
      const tagged = await refusal(agentA.client.callTool({ name: "crm__whoami", arguments: {} }));
      expect(tagged.code).toBe(-32005);
      expect((tagged.data as { hint: string }).hint).toContain(`${OAUTH_API}/delegations`);
      expect(ups.crm.credentials).toEqual([]);

      // alice consents from her own node (the gateway's consent routes; the provider's pages driven as her browser).
      const start = await call(t.nodes.laptop, `${OAUTH_API}/start`, { method: "POST" });
      expect(start.status).toBe(303);
      const back = new URL(await consent(start.headers.get("location")!, "alice@", REDIRECT));
      const done = await call(t.nodes.laptop, `${back.pathname}${back.search}`);
      seen.push(await done.text());
      expect(done.status).toBe(200);

      // The session opened before the consent now reaches crm with alice's token.
      expect((await laptop.client.listTools()).tools.map((x) => x.name)).toContain("crm__whoami");
      expect(await whoami(laptop.client, "crm")).toBe("you sent [provider key redacted]");
      const aliceToken = ups.crm.credentials.at(-1)!.credential;
      expect(await srv.introspect(aliceToken)).toMatchObject({ active: true, sub: "alice@" });

      // agent-a (owned by alice) after alice delegates crm to tag:agent-a: her token.
      const d = await call(t.nodes.laptop, `${OAUTH_API}/delegations`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ tag: "tag:agent-a" }) });
      expect(d.status).toBe(201);
      expect(await whoami(agentA.client, "crm")).toBe("you sent [provider key redacted]");
      expect(ups.crm.credentials.at(-1)!.credential).toBe(aliceToken);

      // agent-b is bob's: alice may not delegate to its tag, and it never gets her token.
      const d2 = await call(t.nodes.laptop, `${OAUTH_API}/delegations`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ tag: "tag:agent-b" }) });
      expect(d2.status).toBe(403);
      const n = ups.crm.credentials.length;
      const bob = await refusal(agentB.client.callTool({ name: "crm__whoami", arguments: {} }));
      expect(bob.code).toBe(-32005);
      expect(bob.message).toMatch(/no owner of the tagged node agent-b/);
      expect(ups.crm.credentials.length).toBe(n);

      // alice revokes: her open session is refused from the next call, never sent without a token.
      expect((await call(t.nodes.laptop, `${OAUTH_API}/tokens/alice%40`, { method: "DELETE" })).status).toBe(200);
      const after = await refusal(laptop.client.callTool({ name: "crm__whoami", arguments: {} }));
      expect(after.code).toBe(-32005);
      expect(ups.crm.credentials.length).toBe(n);

      await t.gw.store!.flush();
      const logs = (await t.gw.store!.queryLogs({ limit: 1000 })).records;
      const refused = logs.filter((r) => r.provider === "crm" && r.status === 401);
      expect(refused.length).toBeGreaterThanOrEqual(3);
      expect(refused.every((r) => r.outcome === "denied")).toBe(true);
    } finally {
      await laptop.close();
      await agentA.close();
      await agentB.close();
    }
  });
});

describe("a server's own quota bucket over the tailnet", () => {
  it("counts each node's calls to keyed apart: past 3, -32004 naming the node's instance; another node still has its own", async () => {
    const a = await connect(t.nodes.agentA);
    const b = await connect(t.nodes.agentB);
    try {
      // agent-a called keyed once above (whoami).
      const runs = ups.keyed.ran.length;
      await a.client.callTool({ name: "keyed__get_issue", arguments: { repo: "acme/1" } });
      await a.client.callTool({ name: "keyed__get_issue", arguments: { repo: "acme/2" } });
      const past = await refusal(a.client.callTool({ name: "keyed__get_issue", arguments: { repo: "acme/3" } }));
      expect(past.code).toBe(-32004);
      expect(past.data).toMatchObject({ code: "MESHGUARD_QUOTA_EXHAUSTED", bucket: "keyed-calls/node:agent-a" });
      expect((past.data as { retryAfterS: number }).retryAfterS).toBeGreaterThan(0);
      expect(ups.keyed.ran.length - runs).toBe(2);
      await b.client.callTool({ name: "keyed__get_issue", arguments: { repo: "acme/b" } });
      expect(ups.keyed.ran.length - runs).toBe(3);
      // Other servers are not charged to it.
      expect(await whoami(a.client, "bearer")).toBe("you sent [provider key redacted]");
      // agent-a (not an admin) sees its own instance of the server's bucket, spent, and not agent-b's.
      const listing = await t.nodes.agentA.fetch(`${t.gw.url}/meshguard/v1/buckets` as never);
      const { buckets } = (await listing.json()) as { buckets: Array<{ key: string; level: number }> };
      expect(buckets.map((x) => x.key)).toEqual(["keyed-calls/node:agent-a"]);
      expect(buckets[0]!.level).toBeLessThan(1);
    } finally {
      await a.close();
      await b.close();
    }
  });
});

describe("no secret leaves the gateway", () => {
  it("appears in no answer, no log record and no warning", async () => {
    await t.gw.store!.flush();
    const logs = JSON.stringify(await t.gw.store!.queryLogs({ limit: 1000 }));
    const tokens = [...new Set([...ups.billing.credentials, ...ups.crm.credentials].map((c) => c.credential))];
    expect(tokens.length).toBeGreaterThanOrEqual(3);
    const secrets = [STDIO_SECRET, STDIO_FILE_SECRET, STATIC_TOKEN, QUERY_KEY, BASIC_PASSWORD, Buffer.from(`svc-agents:${BASIC_PASSWORD}`).toString("base64"), CC_CLIENT.secret, WEB_CLIENT.secret, ...tokens];
    // The log holds the upstreams' echoes (full retention), scrubbed: the calls are there.
    expect(logs).toContain("you sent [provider key redacted]");
    for (const [what, text] of [
      ["answers", seen.join("\n")],
      ["log records", logs],
      ["warnings", t.warnings.join("\n")],
    ] as const) {
      for (const s of secrets) expect(text.includes(s), `${what} contain a secret (${s.slice(0, 6)}...)`).toBe(false);
    }
  });
});
