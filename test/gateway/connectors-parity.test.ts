// One policy, one answer (issue 14, must-have 4): an agent's own guard and
// the AI gateway judge the same call the same way. A real tailnet (local
// headscale), the real gateway (MCP endpoint with the MCP upstream
// simulator, HTTP connectors with the REST simulator), and three agents,
// each its own process with its own tailnet node and meshguard's guard
// installed with the one policy file and the gateway registered from the
// gateway's own description (gatewayLayout): tag:agent-a, tag:agent-b and
// alice's laptop (a user). Every caller makes every call twice:
//
//   guarded   — the guard decides first. What it allows goes on to the
//               gateway, which decides again in the same run; what it
//               denies must never reach the gateway (no HTTP request at
//               its server, no log record, no upstream request).
//   unguarded — the guard closed, the same call shows what the gateway
//               alone decides.
//
// The guard's decision (effect, rule) must equal the gateway's for every
// caller and call: allow, deny, approve (both approvers asked) and the
// refusals both make before any rule (a tool name that names no server, an
// unknown connector, a resource URI not listed in the session).
//
// Resource reads: the gateway has two MCP servers, github and docs, which
// both list file:///handbook/intro.md (it belongs to github, the first in
// config order). The session lists resources first (in "prepare", not
// counted), and the guard learns each URI's server from the gateway's
// answer. A resource the caller may not read is not listed to it, so the
// guard cannot learn its server and refuses the read: both deny, but the
// guard names no rule (`hidden` calls compare the effect only).
import { fork, type ChildProcess } from "node:child_process";
import dc from "node:diagnostics_channel";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startLlmSim, type LlmSim } from "../../bench/lib/llm-sim.mjs";
import { startMcpUpstream, type McpUpstream } from "../../bench/lib/mcp-upstream.mjs";
import { startRestSim, type RestSim } from "../../bench/lib/rest-sim.mjs";
import { LocalControl } from "../../src/control/index.js";
import { startGateway, type GatewayHandle } from "../../src/gateway/index.js";
import type { ApprovalRequest, DecisionEvent } from "../../src/guard/index.js";
import { MeshNode } from "../../src/index.js";
import { tailnetPart } from "../../src/policy/index.js";
import { policyFile, PROVIDER_KEY, PROVIDERS } from "./gateway-tailnet.js";

const FIXTURE = fileURLToPath(new URL("./fixtures/parity-agent.mjs", import.meta.url));
const BEARER = "sk-parity-BEARER-5ecret-91ab";
const MAPS_KEY = "ak-parity-MAPS-5ecret-c3d0";

const RULES = [
  // The MCP endpoint's own HTTP requests are judged on the gateway's host, as any MCP server's are.
  { id: "mcp-endpoint", src: ["*"], http: { host: ["ai-gateway"], path: ["/v1/mcp"] } },
  // Connector "api" (bearer) is 127.0.0.1:PORT/api upstream, "maps" (?key=) 127.0.0.1:PORT/q.
  { id: "a-api-read", src: ["tag:agent-a"], http: { host: ["127.0.0.1"], method: ["GET"], path: ["/api/repos/acme/**"] } },
  { id: "a-api-issue", effect: "approve", src: ["tag:agent-a"], http: { host: ["127.0.0.1"], method: ["POST"], path: ["/api/repos/acme/*/issues"] } },
  { id: "b-api-ok", src: ["tag:agent-b"], http: { host: ["127.0.0.1"], method: ["GET"], path: ["/api/ok"] } },
  { id: "b-maps", src: ["tag:agent-b"], http: { host: ["127.0.0.1"], method: ["GET"], path: ["/q/**"], query: { q: "ok*" } } },
  { id: "u-api", src: ["alice@"], http: { host: ["127.0.0.1"], path: ["/api/**"] } },
  { id: "no-admin", effect: "deny", src: ["*"], http: { host: ["*"], path: ["/api/admin/**"] } },
  // MCP server "github" of the gateway.
  { id: "a-gh-read", src: ["tag:agent-a"], mcp: { server: ["github"], tool: ["get_*"] } },
  { id: "a-gh-create", effect: "approve", src: ["tag:agent-a"], mcp: { server: ["github"], tool: ["create_issue"], args: { repo: { glob: "acme/*" } } } },
  { id: "b-gh-acme", src: ["tag:agent-b"], mcp: { server: ["github"], tool: ["get_issue"], args: { repo: { glob: "acme/*" } } } },
  { id: "a-gh-prompt", src: ["tag:agent-a"], mcp: { server: ["github"], prompt: ["summarize"] } },
  { id: "u-gh", src: ["alice@"], mcp: { server: ["github"], tool: ["*"] } },
  { id: "no-secret", effect: "deny", src: ["*"], mcp: { server: ["github"], tool: ["*"], args: { repo: { glob: "*/secret" } } } },
  // Resources of github and docs (file:///handbook/intro.md is listed by both: it is github's).
  { id: "a-handbook", src: ["tag:agent-a"], mcp: { server: ["github"], resource: ["file:///handbook/*"] } },
  { id: "b-docs", src: ["tag:agent-b"], mcp: { server: ["docs"], resource: ["file:///docs/*", "file:///handbook/*"] } },
  { id: "u-handbook", src: ["alice@"], mcp: { server: ["github"], resource: ["file:///handbook/intro.md"] } },
  { id: "u-docs", src: ["alice@"], mcp: { server: ["docs"], resource: ["*"] } },
  { id: "no-secret-res", effect: "deny", src: ["*"], mcp: { server: ["*"], resource: ["*secret*"] } },
];
const EFFECT = new Map(RULES.map((r) => [r.id, (r as { effect?: string }).effect ?? "allow"]));

type Call =
  | { id: string; kind: "connector"; method: string; path: string; headers?: Record<string, string>; body?: string; refused?: boolean }
  | { id: string; kind: "tool" | "prompt"; name: string; args: Record<string, unknown>; refused?: boolean }
  | { id: string; kind: "resource"; uri: string; list: boolean; refused?: boolean; hidden?: boolean | string[] };

const CALLS: Call[] = [
  { id: "api-read-acme", kind: "connector", method: "GET", path: "/v1/connectors/api/repos/acme/app?per_page=2" },
  { id: "api-read-other", kind: "connector", method: "GET", path: "/v1/connectors/api/repos/other/app" },
  { id: "api-issue", kind: "connector", method: "POST", path: "/v1/connectors/api/repos/acme/app/issues", headers: { "content-type": "application/json" }, body: JSON.stringify({ title: "t" }) },
  { id: "api-admin", kind: "connector", method: "GET", path: "/v1/connectors/api/admin/users" },
  { id: "api-ok", kind: "connector", method: "GET", path: "/v1/connectors/api/ok", headers: { authorization: "Bearer agent-own" } },
  { id: "maps-ok", kind: "connector", method: "GET", path: "/v1/connectors/maps/ok?q=ok1&key=agent-own" },
  { id: "maps-bad", kind: "connector", method: "GET", path: "/v1/connectors/maps/ok?q=bad" },
  { id: "unknown-connector", kind: "connector", method: "GET", path: "/v1/connectors/nope/x", refused: true },
  { id: "gh-get", kind: "tool", name: "github__get_issue", args: { repo: "acme/app" } },
  { id: "gh-get-other", kind: "tool", name: "github__get_issue", args: { repo: "other/app" } },
  { id: "gh-create", kind: "tool", name: "github__create_issue", args: { repo: "acme/app", title: "parity" } },
  { id: "gh-secret", kind: "tool", name: "github__get_issue", args: { repo: "acme/secret" } },
  { id: "gh-prompt", kind: "prompt", name: "github__summarize", args: { repo: "acme/app" } },
  { id: "no-server", kind: "tool", name: "get_issue", args: { repo: "acme/app" }, refused: true },
  // hidden: the callers the resource is not listed to (denied by a rule: the gateway names it, the guard cannot).
  { id: "res-intro", kind: "resource", uri: "file:///handbook/intro.md", list: true },
  { id: "res-guide", kind: "resource", uri: "file:///docs/guide.md", list: true },
  { id: "res-secret", kind: "resource", uri: "file:///handbook/secret.md", list: true, hidden: true },
  { id: "res-unlisted", kind: "resource", uri: "file:///docs/guide.md", list: false, refused: true },
];

/** prepare's MCP part: a resource read lists resources first (a fresh session when it must not). */
const mcpPrep = (call: Call) => (call.kind === "connector" ? { mcp: false } : call.kind === "resource" ? { mcp: true, fresh: !call.list, list: call.list } : { mcp: true });

interface Agent {
  name: string;
  child: ChildProcess;
  ask(m: object): Promise<Record<string, unknown>>;
}

interface Verdict {
  effect: "allow" | "deny" | "approve" | "refused";
  ruleId?: string;
}

/** HTTP requests the gateway's server received on its API paths (every one, answered or refused: Node's http.server.request.start channel). */
let gatewayRequests = 0;
const onServerRequest = (m: unknown) => {
  const r = (m as { request?: { url?: string; method?: string } }).request;
  // GET /v1/mcp is the session's server-to-client event stream, which the SDK opens on its own after initialize: it carries no call.
  if (r?.url?.startsWith("/v1/") && !(r.method === "GET" && r.url === "/v1/mcp")) gatewayRequests++;
};

let dir: string;
let control: LocalControl;
let sim: LlmSim;
let up: McpUpstream;
let docs: McpUpstream;
let api: RestSim;
let gwNode: MeshNode;
let gw: GatewayHandle;
const gwApprovals: ApprovalRequest[] = [];
const agents: Agent[] = [];
const layouts: unknown[] = [];
const rows: Array<{ caller: string; call: string; guard: Verdict; gateway: Verdict; gatewaySawGuardDenied: boolean; hidden: boolean }> = [];

function startAgent(name: string): Agent {
  const child = fork(FIXTURE, [], { execArgv: [], stdio: ["ignore", "inherit", "inherit", "ipc"] });
  let pending: ((m: Record<string, unknown>) => void) | undefined;
  child.on("message", (m) => pending?.(m as Record<string, unknown>));
  return {
    name,
    child,
    ask: (m) =>
      new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`agent ${name}: no answer to ${JSON.stringify(m).slice(0, 200)}`)), 60_000);
        pending = (a) => {
          clearTimeout(t);
          if (a.ok !== true) reject(new Error(`agent ${name}: ${String(a.error)}`));
          else resolve(a);
        };
        child.send(m);
      }),
  };
}

/** The gateway's records of `node`, newest first. */
async function recordsOf(node: string) {
  return (await gw.store!.queryLogs({ node, limit: 1000 })).records;
}

/** newRecord waits for a record of `node` not in `seen` (undefined after `ms`). */
async function newRecord(node: string, seen: Set<string>, ms: number) {
  const end = Date.now() + ms;
  for (;;) {
    const r = (await recordsOf(node)).find((x) => !seen.has(x.id));
    if (r !== undefined || Date.now() > end) return r;
    await new Promise((res) => setTimeout(res, 50));
  }
}

function gatewayVerdict(rec: { outcome?: string; ruleId?: string } | undefined): Verdict {
  if (rec === undefined) return { effect: "refused" };
  if (rec.outcome === "denied") return rec.ruleId !== undefined ? { effect: "deny", ruleId: rec.ruleId } : { effect: "deny" };
  return { effect: EFFECT.get(rec.ruleId ?? "") as Verdict["effect"], ...(rec.ruleId !== undefined ? { ruleId: rec.ruleId } : {}) };
}

function guardVerdict(events: DecisionEvent[], call: Call): Verdict {
  const decoded = events.filter((e) => e.via !== undefined);
  expect(decoded, `${call.id}: one decision on the decoded call`).toHaveLength(1);
  const e = decoded[0]!;
  if (call.refused) {
    expect(e.ruleId).toBeUndefined();
    return { effect: e.outcome === "deny" ? "refused" : "allow" };
  }
  return { effect: e.effect, ...(e.ruleId !== undefined ? { ruleId: e.ruleId } : {}) };
}

beforeAll(async () => {
  dc.subscribe("http.server.request.start", onServerRequest);
  dir = mkdtempSync(join(tmpdir(), "mg-parity-"));
  const policyText = policyFile({ version: 6, rules: RULES });
  const policyPath = join(dir, "policy.hujson");
  writeFileSync(policyPath, policyText);
  [sim, up, api, docs] = await Promise.all([
    startLlmSim({ key: PROVIDER_KEY }),
    startMcpUpstream(),
    startRestSim({ bearer: BEARER, apiKey: MAPS_KEY }),
    startMcpUpstream({
      resources: [
        { name: "intro", uri: "file:///handbook/intro.md", text: "docs' intro" },
        { name: "guide", uri: "file:///docs/guide.md", text: "# Guide" },
      ],
    }),
  ]);
  control = await LocalControl.start({ policy: tailnetPart(policyText) });
  const alice = await control.createUser("alice");
  await control.createUser("bob");
  const tagKey = (tag: string) => control.createAuthKey({ tags: [tag], reusable: true, ephemeral: true, expiration: "1h" });
  gwNode = await MeshNode.start({ controlUrl: control.url, authKey: await tagKey("tag:gateway"), hostname: "ai-gateway", dir: join(dir, "ai-gateway"), ephemeral: true, timeoutMs: 30_000 });
  gw = await startGateway({
    config: {
      policy: policyPath,
      dataDir: join(dir, "data"),
      providers: PROVIDERS(sim.url),
      mcp: { servers: { github: { url: up.url }, docs: { url: docs.url } } },
      connectors: {
        http: {
          api: { baseUrl: `${api.url}/api`, auth: { type: "bearer", token: { env: "API_TOKEN" } } },
          maps: { baseUrl: `${api.url}/q`, auth: { type: "apiKey", key: { env: "MAPS_KEY" }, query: "key" } },
        },
      },
    },
    node: gwNode,
    env: { SIM_PROVIDER_KEY: PROVIDER_KEY, API_TOKEN: BEARER, MAPS_KEY },
    approvals: {
      timeoutMs: 10_000,
      callback: async (req) => {
        gwApprovals.push(req);
        return { approved: true, by: "parity-test" };
      },
    },
  });
  const keys = { "agent-a": await tagKey("tag:agent-a"), "agent-b": await tagKey("tag:agent-b"), laptop: await control.createAuthKey({ user: alice.id, reusable: true, ephemeral: true, expiration: "1h" }) };
  for (const name of Object.keys(keys)) agents.push(startAgent(name));
  const started = await Promise.all(
    agents.map((a) => a.ask({ op: "start", controlUrl: control.url, authKey: keys[a.name as keyof typeof keys], hostname: a.name, dir: join(dir, a.name), policyPath, gatewayUrl: gw.url })),
  );
  layouts.push(...started.map((s) => s.layout));
  expect(started.map((s) => s.principal)).toEqual([
    { node: "agent-a", tags: ["tag:agent-a"] },
    { node: "agent-b", tags: ["tag:agent-b"] },
    { node: "laptop", tags: [], user: "alice" },
  ]);
}, 180_000);

afterAll(async () => {
  dc.unsubscribe("http.server.request.start", onServerRequest);
  await Promise.all(agents.map((a) => a.ask({ op: "close" }).catch(() => a.child.kill())));
  await gw?.close().catch(() => {});
  await gwNode?.close().catch(() => {});
  await control?.close().catch(() => {});
  await Promise.all([sim?.close(), up?.close(), api?.close(), docs?.close()]);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("the agent's guard and the gateway give one answer", () => {
  it("gatewayLayout: each agent registered the gateway from its own description, which names no secret", () => {
    for (const layout of layouts) {
      expect(layout).toMatchObject({
        url: "http://ai-gateway",
        mcpPath: "/v1/mcp",
        mcpServers: ["github", "docs"],
        connectorsPrefix: "/v1/connectors",
        connectors: {
          api: { baseUrl: `${api.url}/api`, prefix: "/v1/connectors", credentialHeader: "Authorization" },
          maps: { baseUrl: `${api.url}/q`, prefix: "/v1/connectors", credentialQuery: "key" },
        },
      });
      const text = JSON.stringify(layout);
      for (const secret of [BEARER, MAPS_KEY, PROVIDER_KEY]) expect(text).not.toContain(secret);
    }
  });

  it("every caller, every call: the guard's decision equals the gateway's; what the guard denies never reaches the gateway", async () => {
    for (const a of agents) {
      for (const call of CALLS) {
        // Guarded: the guard decides; an allowed call is decided again by the gateway, in the same run.
        let seen = new Set((await recordsOf(a.name)).map((r) => r.id));
        const upBefore = { rest: api.requests.length, mcp: up.ran.length, approvals: gwApprovals.length };
        await a.ask({ op: "prepare", guarded: true, ...mcpPrep(call) });
        const reqBefore = gatewayRequests;
        const g = await a.ask({ op: "call", call });
        if (process.env.PARITY_DEBUG) console.log(a.name, call.id, JSON.stringify(g).slice(0, 1500));
        const guard = guardVerdict(g.events as DecisionEvent[], call);
        const passed = guard.effect === "allow" || guard.effect === "approve";
        const sameRun = await newRecord(a.name, seen, passed ? 5_000 : 400);
        let gatewaySawGuardDenied = false;
        if (passed) {
          // The positive control of the request counter below.
          expect(gatewayRequests, `${a.name} ${call.id}: an allowed call reaches the gateway`).toBeGreaterThan(reqBefore);
          if (!call.refused) expect(gatewayVerdict(sameRun), `${a.name} ${call.id}: the gateway, same run`).toEqual(guard);
        } else {
          gatewaySawGuardDenied = gatewayRequests !== reqBefore || sameRun !== undefined || api.requests.length !== upBefore.rest || up.ran.length !== upBefore.mcp || gwApprovals.length !== upBefore.approvals;
          expect((g.result as { error?: { code?: string } }).error?.code, `${a.name} ${call.id}: refused by the guard`).toBe("MESHGUARD_POLICY_DENIED");
        }
        if (guard.effect === "approve") expect((g.approvals as unknown[]).length, `${a.name} ${call.id}: the agent's approver was asked`).toBe(1);

        // Unguarded: the gateway alone.
        seen = new Set((await recordsOf(a.name)).map((r) => r.id));
        const approvalsBefore = gwApprovals.length;
        await a.ask({ op: "prepare", guarded: false, ...mcpPrep(call) });
        const u = await a.ask({ op: "call", call });
        const rec = await newRecord(a.name, seen, call.refused ? 400 : 5_000);
        const gateway = gatewayVerdict(rec);
        if (gateway.effect === "approve") expect(gwApprovals.length - approvalsBefore, `${a.name} ${call.id}: the gateway's approver was asked`).toBe(1);
        if (call.refused) {
          const res = u.result as { status?: number; error?: { data?: unknown; code?: unknown } };
          expect(res.status === undefined ? res.error : res.status, `${a.name} ${call.id}: the gateway refuses it too`).not.toBe(200);
        }
        const hidden = call.kind === "resource" && call.hidden === true;
        rows.push({ caller: a.name, call: call.id, guard, gateway, gatewaySawGuardDenied, hidden });
      }
    }
    // The table, for the report.
    console.log(rows.map((r) => `${r.caller.padEnd(8)} ${r.call.padEnd(18)} guard ${`${r.guard.effect}/${r.guard.ruleId ?? "-"}`.padEnd(24)} gateway ${r.gateway.effect}/${r.gateway.ruleId ?? "-"}`).join("\n"));
    for (const r of rows) {
      if (r.hidden) {
        // Not listed to the caller: the guard refuses it unplaced, the gateway denies it by its rule.
        expect(r.guard, `${r.caller} ${r.call}`).toEqual({ effect: "deny" });
        expect(r.gateway.effect, `${r.caller} ${r.call}`).toBe("deny");
      } else expect(r.guard, `${r.caller} ${r.call}`).toEqual(r.gateway);
    }
    // Resource reads: decided on the server the URI belongs to (github's intro, not docs').
    const cell = (caller: string, call: string) => rows.find((r) => r.caller === caller && r.call === call)!.gateway;
    expect(cell("agent-a", "res-intro")).toEqual({ effect: "allow", ruleId: "a-handbook" });
    expect(cell("laptop", "res-intro")).toEqual({ effect: "allow", ruleId: "u-handbook" });
    expect(cell("agent-b", "res-guide")).toEqual({ effect: "allow", ruleId: "b-docs" });
    expect(cell("agent-b", "res-secret")).toEqual({ effect: "deny", ruleId: "no-secret-res" });
    expect(cell("agent-b", "res-unlisted")).toEqual({ effect: "refused" });
    for (const r of rows) expect(r.gatewaySawGuardDenied, `${r.caller} ${r.call}: the gateway saw a call the guard denied`).toBe(false);
    // The table covers every kind of answer.
    const effects = new Set(rows.map((r) => r.guard.effect));
    expect([...effects].sort()).toEqual(["allow", "approve", "deny", "refused"]);
  }, 600_000);
});
