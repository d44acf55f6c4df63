// Calls to a registered AI gateway are judged as the gateway judges them
// (issue 14, must-have 4): a connector call as the upstream request, an MCP
// tools/call or prompts/get at the gateway's endpoint as the namespaced
// server and tool. The "gateway" here is a counting server on 127.0.0.1
// (the real gateway's parity is test/gateway/connectors-parity.test.ts):
// every denial is checked against its byte counter.
import http from "node:http";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { Agent, request as undiciRequest } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { gatewayLayout, installGuard, type DecisionEvent, type GatewaySpec } from "../../src/guard/index.js";
import { decodeGatewayMcp, parseGateway } from "../../src/guard/gateways.js";
import { isMeshguardError } from "../../src/errors.js";
import { AGENT, denied, guard, victim, type Victim } from "./helpers.js";

let gw: Victim;
let spec: GatewaySpec;

const RULES = [
  { id: "gh-read", src: ["tag:agent"], http: { host: ["api.github.com"], method: ["GET"], path: ["/repos/acme/**"] } },
  { id: "gh-issue-q", src: ["tag:agent"], http: { host: ["api.github.com"], method: ["GET"], path: ["/search/issues"], query: { q: "repo:acme/*" } } },
  { id: "crm-read", src: ["tag:agent"], http: { host: ["crm.example.com"], method: ["GET"], path: ["/api/v2/contacts/**"] } },
  { id: "crm-no-trace", effect: "deny", src: ["tag:agent"], http: { host: ["crm.example.com"] }, when: { headers: { "x-trace": "*" } } },
  // The gateway itself: its MCP endpoint and LLM calls (judged as before: http on the gateway's host).
  { id: "gw-self", src: ["tag:agent"], http: { host: ["127.0.0.1"], path: ["/v1/mcp", "/v1/chat/completions"] } },
  { id: "gw-llm", src: ["tag:agent"], llm: { model: ["127.0.0.1/gpt-*"] } },
  { id: "mcp-gh", src: ["tag:agent"], mcp: { server: ["github"], tool: ["get_*"] } },
  { id: "mcp-notes-prompt", src: ["tag:agent"], mcp: { server: ["notes"], prompt: ["summarize"] } },
];

const policyOf6 = async () => (await import("../../src/policy/index.js")).loadPolicy(JSON.stringify({ version: 6, rules: RULES }));

beforeAll(async () => {
  gw = await victim("127.0.0.1");
  spec = {
    url: gw.url,
    mcpServers: ["github", "notes"],
    connectors: {
      github: { baseUrl: "https://api.github.com", credentialQuery: "key" },
      crm: { baseUrl: "https://crm.example.com/api/v2", credentialHeader: "X-Api-Key" },
    },
  };
});
afterAll(async () => gw?.close());

async function guarded(extra: Partial<Parameters<typeof installGuard>[0]> = {}) {
  const g = guard({ policy: await policyOf6(), gateways: [spec], ...extra });
  const events: DecisionEvent[] = [];
  g.on("decision", (e) => events.push(e));
  return { g, events };
}

/** nothing reached the gateway while `fn` ran. */
async function silent(fn: () => Promise<unknown>): Promise<void> {
  const before = gw.snapshot();
  await fn();
  expect(gw.snapshot()).toEqual(before);
}

describe("HTTP connectors: judged as the upstream request", () => {
  it("fetch: allowed on the upstream URL, denied one never leaves; the event names the upstream and the gateway", async () => {
    const { events } = await guarded();
    const r = await fetch(`${gw.url}/v1/connectors/github/repos/acme/app?per_page=5&key=mine`);
    expect(r.status).toBe(200);
    expect(gw.requests.at(-1)!.path).toBe("/v1/connectors/github/repos/acme/app?per_page=5&key=mine");
    const ev = events.at(-1)!;
    expect(ev.ruleId).toBe("gh-read");
    expect(ev.target).toMatchObject({ kind: "http", scheme: "https", host: "api.github.com", port: 443, method: "GET", path: "/repos/acme/app" });
    // The credential's own parameter never goes upstream: not judged either.
    expect((ev.target as { queryKeys?: string[] }).queryKeys).toEqual(["per_page"]);
    expect(ev.via).toEqual({ gateway: gw.url, connector: "github" });
    expect(ev.layer).toBe("fetch");

    let err: Error & { reason?: string } = new Error();
    await silent(async () => {
      err = await denied(fetch(`${gw.url}/v1/connectors/github/repos/other/app`));
    });
    expect(err.message).toContain("GET https://api.github.com/repos/other/app");
    expect(err.reason).toContain(`judged as the call the AI gateway ${gw.url} makes through its connector github`);
    expect(events.at(-1)).toMatchObject({ outcome: "deny", via: { gateway: gw.url, connector: "github" } });
  });

  it("a base URL with a path: <baseUrl><path>; headers as the gateway forwards them", async () => {
    const { events } = await guarded();
    expect((await fetch(`${gw.url}/v1/connectors/crm/contacts/42`, { headers: { "x-api-key": "mine" } })).status).toBe(200);
    expect(events.at(-1)!.target).toMatchObject({ host: "crm.example.com", path: "/api/v2/contacts/42" });
    // A header the gateway forwards is judged (a deny rule on it).
    await silent(async () => {
      const e = await denied(fetch(`${gw.url}/v1/connectors/crm/contacts/42`, { headers: { "x-trace": "1" } }));
      expect(e.ruleId).toBe("crm-no-trace");
    });
  });

  it("the query is judged (the gateway passes it upstream)", async () => {
    await guarded();
    expect((await fetch(`${gw.url}/v1/connectors/github/search/issues?q=repo:acme/app`)).status).toBe(200);
    await silent(() => denied(fetch(`${gw.url}/v1/connectors/github/search/issues?q=repo:evil/app`)));
  });

  it("node:http and undici.request with their own dispatcher are judged the same way", async () => {
    await guarded();
    const get = (path: string) =>
      new Promise<number>((resolve, reject) => {
        const req = http.request(`${gw.url}${path}`, (res) => {
          res.resume();
          res.on("end", () => resolve(res.statusCode ?? 0));
        });
        req.on("error", reject);
        req.end();
      });
    expect(await get("/v1/connectors/github/repos/acme/app")).toBe(200);
    await silent(() => denied(get("/v1/connectors/github/repos/other/app")));
    const agent = new Agent();
    try {
      expect((await undiciRequest(`${gw.url}/v1/connectors/github/repos/acme/app`, { dispatcher: agent })).statusCode).toBe(200);
      await silent(() => denied(undiciRequest(`${gw.url}/v1/connectors/github/repos/other/app`, { dispatcher: agent })));
    } finally {
      await agent.close();
    }
  });

  it("refused before the policy, as the gateway refuses them: unknown connector, encoded slash, dot segments", async () => {
    const { events } = await guarded();
    await silent(async () => {
      const e = await denied(fetch(`${gw.url}/v1/connectors/jira/rest/api`));
      expect(e.reason).toContain('has no connector "jira"');
      expect(e.reason).toContain("github, crm");
      expect(events.at(-1)).toMatchObject({ outcome: "deny", via: { gateway: gw.url, connector: "jira" } });
      expect((await denied(fetch(`${gw.url}/v1/connectors/github/repos/acme%2F..%2Fx`))).reason).toContain("encoded slash");
      // fetch resolves "%2e%2e" itself (WHATWG URL); node:http sends the path as written.
      const raw = new Promise((resolve, reject) => {
        const req = http.request({ host: "127.0.0.1", port: gw.port, path: "/v1/connectors/github/repos/acme/%2e%2e/other" }, resolve);
        req.on("error", reject);
        req.end();
      });
      expect((await denied(raw)).reason).toContain('"%2e%2e" segment');
      expect((await denied(fetch(`${gw.url}/v1/connectors`))).reason).toContain("names no connector");
    });
  });

  it("other calls to the gateway are judged as before, on the gateway's host", async () => {
    const { events } = await guarded();
    const r = await fetch(`${gw.url}/v1/chat/completions`, { method: "POST", body: JSON.stringify({ model: "gpt-4o", messages: [] }), headers: { "content-type": "application/json" } });
    expect(r.status).toBe(200);
    expect(events.find((e) => e.target.kind === "http")).toMatchObject({ ruleId: "gw-self", target: { host: "127.0.0.1", path: "/v1/chat/completions" } });
    expect(events.every((e) => e.via === undefined)).toBe(true);
    await silent(() => denied(fetch(`${gw.url}/v1/models`)));
  });

  it("without a registration the same call is judged as what it literally is", async () => {
    guard({ policy: await policyOf6() });
    await silent(() => denied(fetch(`${gw.url}/v1/connectors/github/repos/acme/app`)));
  });

  it("observe mode: a call the gateway would refuse goes on and is recorded", async () => {
    const { events } = await guarded({ mode: "observe" });
    expect((await fetch(`${gw.url}/v1/connectors/jira/x`)).status).toBe(200);
    expect(events.at(-1)).toMatchObject({ mode: "observe", effect: "deny", outcome: "allow", via: { connector: "jira" } });
  });
});

describe("MCP at the gateway's endpoint: judged as server__tool", () => {
  const call = (id: number, name: string, method = "tools/call") => ({ jsonrpc: "2.0" as const, id, method, params: { name, arguments: { repo: "acme/app" } } });

  async function transport() {
    const t = new StreamableHTTPClientTransport(new URL(`${gw.url}/v1/mcp`));
    t.onerror = () => {};
    return t;
  }

  it("tools/call github__get_issue is judged as server github, tool get_issue; github__delete_repo never leaves", async () => {
    const { events } = await guarded({ intercept: { sdk: true } });
    const t = await transport();
    const before = gw.requests.length;
    // The counting server does not speak MCP: the send fails after it went out.
    await t.send(call(1, "github__get_issue")).catch(() => {});
    expect(gw.requests.length).toBe(before + 1);
    const ev = events.find((e) => e.layer === "mcp")!;
    expect(ev).toMatchObject({ ruleId: "mcp-gh", target: { kind: "mcp", server: "github", tool: "get_issue" }, via: { gateway: gw.url } });
    await silent(async () => {
      const e = await denied(t.send(call(2, "github__delete_repo")));
      expect(e.message).toContain("mcp github delete_repo");
      expect(e.reason).toContain(`judged as the call the AI gateway ${gw.url} makes`);
    });
  });

  it("a name that does not split, or names a server the gateway lacks, is refused; prompts/get is judged too", async () => {
    await guarded({ intercept: { sdk: true } });
    const t = await transport();
    await silent(async () => {
      expect((await denied(t.send(call(3, "get_issue")))).reason).toContain('names there are "server__tool"');
      expect((await denied(t.send(call(4, "jira__get_issue")))).reason).toContain('has no MCP server "jira"');
      expect((await denied(t.send(call(5, "notes__delete_all", "prompts/get")))).message).toContain("notes");
    });
    const before = gw.requests.length;
    await t.send(call(6, "notes__summarize", "prompts/get")).catch(() => {});
    expect(gw.requests.length).toBe(before + 1);
  });

  it("decodeGatewayMcp splits exactly as the gateway does (first __)", () => {
    const g = parseGateway({ url: "http://ai-gateway" }, "test");
    expect(decodeGatewayMcp(g, "tools/call", "github__create__issue", {})).toEqual({ kind: "mcp", server: "github", tool: "create__issue", args: {} });
    expect(decodeGatewayMcp(g, "prompts/get", "notes__sum", { a: 1 })).toEqual({ kind: "mcp", server: "notes", tool: "", args: { a: 1 }, prompt: "sum" });
    for (const bad of ["__x", "x__", "plain", ""]) expect(decodeGatewayMcp(g, "tools/call", bad, {})).toBeInstanceOf(Error);
  });
});

describe("registrations", () => {
  const bad = (gateways: unknown[], fragment: string) => {
    let err: unknown;
    try {
      installGuard({ identity: AGENT, gateways: gateways as GatewaySpec[], intercept: { sdk: false } }).uninstall();
    } catch (e) {
      err = e;
    }
    expect(isMeshguardError(err) && err.code).toBe("MESHGUARD_INVALID_OPTIONS");
    expect((err as Error).message).toContain(fragment);
  };

  it("bad registrations are refused, naming what is wrong; nothing is installed", () => {
    bad([{ url: "ftp://gw" }], "gateways.0.url: must be an http(s) URL");
    bad([{ url: "http://user:pw@gw" }], "must not carry credentials");
    bad([{ url: "http://gw", connectors: { GitHub: { baseUrl: "https://api.github.com" } } }], "a connector name is lower-case");
    bad([{ url: "http://gw", connectors: { gh: { baseUrl: "https://api.github.com?x=1" } } }], "must not have a query");
    bad([{ url: "http://gw", connectorsPrefix: "/v1/../c" }], "must not contain");
    bad([{ url: "http://gw", mcpServers: ["a__b"] }], "single");
    bad([{ url: "http://gw", extra: 1 }], 'unknown option(s) "extra"');
    bad([{ url: "http://gw" }, { url: "http://gw:80/other" }], "gw:80 is already the address of the registered gateway http://gw");
    // The failed installs left no guard behind.
    const g = installGuard({ identity: AGENT, intercept: { sdk: false } });
    g.uninstall();
  });

  it("registerGateway adds one at run time; a duplicate address is refused", async () => {
    const g = guard({ policy: await policyOf6() });
    await silent(() => denied(fetch(`${gw.url}/v1/connectors/github/repos/acme/app`)));
    g.registerGateway(spec);
    expect((await fetch(`${gw.url}/v1/connectors/github/repos/acme/app`)).status).toBe(200);
    expect(() => g.registerGateway({ url: gw.url })).toThrow(/already the address/);
  });
});

describe("gatewayLayout reads the registration from the gateway", () => {
  it("maps GET /meshguard/v1/gateway to a registration", async () => {
    const info = {
      hostname: "ai-gateway",
      url: "http://ai-gateway",
      ipUrl: "http://100.64.0.1",
      dnsName: "ai-gateway.tail.example",
      port: 80,
      mcp: { path: "/v1/mcp", servers: ["github"] },
      connectors: { prefix: "/v1/connectors", http: { github: { baseUrl: "https://api.github.com", prefix: "/v1/connectors", credentialHeader: "Authorization" } } },
    };
    const srv = await victim("127.0.0.1", 0, (r) => (r.path === "/meshguard/v1/gateway" ? { headers: { "content-type": "application/json" }, body: JSON.stringify(info) } : { status: 404 }));
    try {
      const s = await gatewayLayout(srv.url);
      expect(s).toEqual({
        url: srv.url,
        aliases: ["http://ai-gateway", "http://100.64.0.1", "http://ai-gateway.tail.example"],
        mcpPath: "/v1/mcp",
        mcpServers: ["github"],
        connectorsPrefix: "/v1/connectors",
        connectors: info.connectors.http,
      });
      await expect(gatewayLayout(`${srv.url}/x`.replace("127.0.0.1", "127.0.0.1"), { fetch: async () => new Response("nope", { status: 403 }) })).rejects.toThrow(/HTTP 403/);
      await expect(gatewayLayout("not a url")).rejects.toThrow(/is not a URL/);
    } finally {
      await srv.close();
    }
  });
});
