// Per-connector quota buckets (`connectors.http.X.quotas`,
// `mcp.servers.X.quotas`) on a real gateway's loopback listener (the caller
// is the configured principal): the config's errors with their positions,
// a connector's own bucket refusing the call past it (429 with Retry-After,
// never reaching the upstream), a bucket shared by an HTTP connector and an
// MCP server (-32004 with retryAfterS), a call that never reached its
// upstream refunded, and dollar buckets of the caller left alone by
// connector calls. The same over a real tailnet is in mcp-auth.test.ts.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { McpError } from "@modelcontextprotocol/sdk/types.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startMcpUpstream, type McpUpstream } from "../../bench/lib/mcp-upstream.mjs";
import { startRestSim, type RestSim } from "../../bench/lib/rest-sim.mjs";
import { parseGatewayConfig, type GatewayConfigError } from "../../src/gateway/config.js";
import { startGateway, type GatewayHandle } from "../../src/gateway/index.js";

const TOKEN = "sk-quota-TOKEN-77aa-5ecret";

describe("config: an upstream's quotas", () => {
  const base = `{
  "policy": "p.hujson",
  "providers": { "o": { "baseUrl": "http://127.0.0.1:9/v1", "format": "openai", "models": ["*"] } },
  "quotas": { "daily": { "unit": "usd", "capacity": 5, "refill": "5/day" }, "calls": { "unit": "calls", "capacity": 10, "refill": "10/minute", "per": "node" } },
`;
  const errors = (text: string): string[] => {
    try {
      parseGatewayConfig(text, { file: "/etc/gw.hujson" });
    } catch (err) {
      return (err as GatewayConfigError).issues.map((i) => `${i.line}:${i.column} ${i.path}: ${i.message}`);
    }
    return [];
  };

  it("accepts a bucket name or a list of calls buckets, on HTTP connectors and MCP servers", () => {
    const cfg = parseGatewayConfig(
      `${base}  "connectors": { "http": { "api": { "baseUrl": "http://127.0.0.1:9", "auth": { "type": "bearer", "token": { "env": "T" } }, "quotas": "calls" } } },
  "mcp": { "servers": { "tools": { "url": "http://127.0.0.1:9/mcp", "quotas": ["calls"] }, "notes": { "command": "node", "quotas": "calls" } } },
}`,
      { file: "/etc/gw.hujson" },
    );
    expect(cfg.connectors!.http.api!.quotas).toEqual(["calls"]);
    expect(cfg.mcp!.servers.tools!.quotas).toEqual(["calls"]);
    expect(cfg.mcp!.servers.notes!.quotas).toEqual(["calls"]);
  });

  it("refuses a bucket that is not defined, or that does not count calls, at its line and column", () => {
    expect(
      errors(`${base}  "connectors": { "http": { "api": { "baseUrl": "http://127.0.0.1:9", "auth": { "type": "bearer", "token": { "env": "T" } },
    "quotas": ["calls", "nope"] } } },
  "mcp": { "servers": { "tools": { "url": "http://127.0.0.1:9/mcp",
    "quotas": "daily" } } },
}`),
    ).toEqual([
      `6:25 connectors.http.api.quotas[1]: no quota bucket is named "nope": the buckets are "daily", "calls"`,
      `8:15 mcp.servers.tools.quotas: quota bucket "daily" counts usd, and a connector or MCP call costs none: name a bucket with "unit": "calls"`,
    ]);
  });

  it("names what is wrong inside an MCP server's auth, and an auth on a stdio server", () => {
    const e = errors(`${base}  "mcp": { "servers": {
    "tools": { "url": "http://127.0.0.1:9/mcp", "auth": { "type": "bearer", "tokn": { "env": "T" } } },
    "notes": { "command": "node", "auth": { "type": "bearer", "token": { "env": "T" } } },
  } },
}`);
    expect(e).toContainEqual(expect.stringMatching(/^6:\d+ mcp\.servers\.tools\.auth: unknown setting "tokn"/));
    expect(e).toContainEqual(expect.stringMatching(/^7:\d+ mcp\.servers\.notes: unknown setting "auth"/));
  });

  it("takes a stdio server's env values as strings or secrets (a file made absolute), and names a wrong one", () => {
    const cfg = parseGatewayConfig(`${base}  "mcp": { "servers": { "notes": { "command": "node", "env": { "A": "plain", "B": { "env": "B_SECRET" }, "C": { "file": "keys/c" } } } } },
}`, { file: "/etc/meshguard/gw.hujson" });
    expect((cfg.mcp!.servers.notes as { env: unknown }).env).toEqual({ A: "plain", B: { env: "B_SECRET" }, C: { file: "/etc/meshguard/keys/c" } });
    expect(errors(`${base}  "mcp": { "servers": { "notes": { "command": "node", "env": { "A": 5 } } } },
}`)).toEqual([expect.stringMatching(/^5:\d+ mcp\.servers\.notes\.env\.A: must be a string \(passed as written\) or, for a secret, \{ "env": "NAME" \}/)]);
  });

  it("refuses an MCP server and an HTTP connector of one name when either acts for users", () => {
    const e = errors(`${base}  "connectors": { "http": { "crm": { "baseUrl": "http://127.0.0.1:9", "auth": { "type": "bearer", "token": { "env": "T" } } } } },
  "mcp": { "servers": { "crm": { "url": "http://127.0.0.1:9/mcp", "auth": { "type": "oauth2", "grant": "authorization_code", "authorizeUrl": "http://127.0.0.1:9/a", "tokenUrl": "http://127.0.0.1:9/t", "clientId": "c", "redirectUri": "http://127.0.0.1:4000/meshguard/v1/connectors/crm/oauth/callback", "tokenKeys": { "env": "K" } } } } },
}`);
    expect(e).toEqual([expect.stringMatching(/^6:\d+ mcp\.servers\.crm: the HTTP connector "crm" has the same name/)]);
  });
});

describe("per-connector buckets at a running gateway", () => {
  let dir: string;
  let api: RestSim;
  let up: McpUpstream;
  let gw: GatewayHandle;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "mg-conn-quota-"));
    api = await startRestSim({ bearer: TOKEN });
    up = await startMcpUpstream();
    const policy = join(dir, "policy.hujson");
    writeFileSync(
      policy,
      JSON.stringify({
        meshguard: {
          version: 6,
          rules: [
            { id: "api", src: ["tag:local"], http: { host: ["127.0.0.1"], path: ["/api/**"] } },
            { id: "github", src: ["tag:local"], mcp: { server: ["github"], tool: ["*"] } },
          ],
          // The caller's own chain: dollars (an LLM budget), which connector and MCP calls must not touch.
          // (Admin: the test reads bucket levels over the API.)
          gateway: { roles: [{ src: ["tag:local"], role: "admin", quotas: "dollars" }] },
        },
      }),
    );
    gw = await startGateway({
      config: {
        policy,
        dataDir: join(dir, "data"),
        providers: { o: { baseUrl: "http://127.0.0.1:9/v1", format: "openai", models: ["*"] } },
        loopback: { listen: "127.0.0.1:0", principal: { node: "local-agent", tags: ["tag:local"] } },
        quotas: {
          dollars: { unit: "usd", capacity: 1, refill: "1/day", per: "node" },
          "api-calls": { unit: "calls", capacity: 3, refill: "1/minute", per: "node" },
          shared: { unit: "calls", capacity: 5, refill: "1/hour", per: "global" },
          "down-calls": { unit: "calls", capacity: 1, refill: "1/day", per: "node" },
        },
        connectors: {
          http: {
            api: { baseUrl: `${api.url}/api`, auth: { type: "bearer", token: { env: "API_TOKEN" } }, quotas: ["api-calls", "shared"] },
            // Nothing listens on port 9: its calls never reach an upstream.
            down: { baseUrl: "http://127.0.0.1:9/api", auth: { type: "bearer", token: { env: "API_TOKEN" } }, quotas: "down-calls" },
          },
        },
        mcp: { servers: { github: { url: up.url, quotas: "shared" } } },
      },
      env: { API_TOKEN: TOKEN },
    });
  }, 60_000);

  afterAll(async () => {
    await gw?.close();
    await Promise.all([api?.close(), up?.close()]);
    rmSync(dir, { recursive: true, force: true });
  });

  const level = async (key: string) => {
    const r = await fetch(`${gw.loopbackUrl}/meshguard/v1/buckets/${encodeURIComponent(key)}`);
    expect(r.status, key).toBe(200);
    return ((await r.json()) as { level: number }).level;
  };

  it("a connector's own bucket refuses the call past it: 429 with Retry-After, the upstream never reached", async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 3; i++) statuses.push((await fetch(`${gw.loopbackUrl}/v1/connectors/api/ok`)).status);
    expect(statuses).toEqual([200, 200, 200]);
    const reached = api.requests.length;
    const r = await fetch(`${gw.loopbackUrl}/v1/connectors/api/ok`);
    expect(r.status).toBe(429);
    expect(r.headers.get("x-meshguard-error")).toBe("quota_exhausted");
    // One call refills every 60 s.
    expect(Number(r.headers.get("retry-after"))).toBeGreaterThan(40);
    expect(Number(r.headers.get("retry-after"))).toBeLessThanOrEqual(60);
    const body = (await r.json()) as { error: { bucket: string; retryAfterS: number; connector: string } };
    expect(body.error).toMatchObject({ bucket: "api-calls/node:local-agent", connector: "api" });
    expect(api.requests.length).toBe(reached);
    // The refused call was charged nowhere: the shared bucket holds the three that went.
    expect(await level("shared/global")).toBeCloseTo(2, 1);
    // And the caller's dollar bucket is untouched by connector calls.
    expect(await level("dollars/node:local-agent")).toBeCloseTo(1, 5);
  });

  it("an MCP server charges the same shared bucket: past it, -32004 with retryAfterS, and the tool does not run", async () => {
    const client = new Client({ name: "quota-test", version: "1.0.0" });
    const transport = new StreamableHTTPClientTransport(new URL(`${gw.loopbackUrl}/v1/mcp`));
    await client.connect(transport);
    try {
      await client.callTool({ name: "github__get_issue", arguments: { repo: "acme/1" } });
      await client.callTool({ name: "github__get_issue", arguments: { repo: "acme/2" } });
      let refused: McpError | undefined;
      try {
        await client.callTool({ name: "github__get_issue", arguments: { repo: "acme/3" } });
      } catch (err) {
        refused = err as McpError;
      }
      expect(refused).toBeInstanceOf(McpError);
      expect(refused!.code).toBe(-32004);
      expect(refused!.data).toMatchObject({ code: "MESHGUARD_QUOTA_EXHAUSTED", bucket: "shared/global" });
      expect((refused!.data as { retryAfterS: number }).retryAfterS).toBeGreaterThan(0);
      expect(up.ran.map((r) => r.repo)).toEqual(["acme/1", "acme/2"]);
      expect(await level("dollars/node:local-agent")).toBeCloseTo(1, 5);
    } finally {
      await transport.terminateSession().catch(() => {});
      await client.close();
    }
  });

  it("a call that never reached its upstream is refunded", async () => {
    // down-calls holds one call: two calls that cannot connect are both tried (502), neither spends it.
    for (let i = 0; i < 2; i++) {
      const r = await fetch(`${gw.loopbackUrl}/v1/connectors/down/ok`);
      expect(r.status).toBe(502);
      expect(r.headers.get("x-meshguard-error")).toBe("upstream_unreachable");
    }
    await new Promise((r) => setTimeout(r, 200)); // settling runs after the answer
    expect(await level("down-calls/node:local-agent")).toBeCloseTo(1, 5);
  });

  it("logs the refusals as quota records of the connector and the server", async () => {
    await gw.store!.flush();
    const { records } = await gw.store!.queryLogs({ limit: 1000 });
    expect(records.find((r) => r.provider === "api" && r.outcome === "quota")).toMatchObject({ operation: "connector.call", status: 429, caller: { node: "local-agent" } });
    expect(records.find((r) => r.provider === "github" && r.outcome === "quota")).toMatchObject({ operation: "mcp.call", status: 429 });
    expect(records.filter((r) => r.provider === "down").map((r) => r.outcome)).toEqual(["upstream_unreachable", "upstream_unreachable"]);
  });
});
