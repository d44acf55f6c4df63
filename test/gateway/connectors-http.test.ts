// HTTP API connectors end to end over a real tailnet (local headscale):
// agents are MeshNodes calling the gateway with their node's fetch; the
// upstream is a simulated third-party REST API on 127.0.0.1
// (bench/lib/rest-sim.mjs) that checks the injected credential and echoes
// it back in headers, the body (also 3 bytes per chunk), an error text and
// a redirect to another origin. No echo may reach the agent, and the
// secrets are searched for in every output: answers, log records, the
// gateway's JSON log, its warnings, what an approver is shown, stderr.
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startRestSim, type RestSim } from "../../bench/lib/rest-sim.mjs";
import type { ApprovalRequest } from "../../src/guard/index.js";
import type { MeshNode } from "../../src/index.js";
import { startGatewayTailnet, type GatewayTailnet } from "./gateway-tailnet.js";

const BEARER = "sk-conn-BEARER-7a1f-5ecret";
const API_KEY = "ak-conn-APIKEY-93cd+5ecret/="; // "+", "/", "=": its query form is percent-encoded
const BASIC_PW = "pw-conn-BASIC-55e0-5ecret";
const BASIC_PAIR = Buffer.from(`svc:${BASIC_PW}`).toString("base64");
const SECRETS = [BEARER, API_KEY, encodeURIComponent(API_KEY), BASIC_PW, BASIC_PAIR];
const REDACTED = "[provider key redacted]";

const HOSTS = { host: ["127.0.0.1"] };
const RULES = [
  { id: "a-all", src: ["tag:agent-a"], http: { ...HOSTS, path: ["/api/**", "/q/**", "/h/**", "/b/**"] } },
  { id: "a-approve", effect: "approve", src: ["tag:agent-a"], http: { ...HOSTS, path: ["/api/held/**"] } },
  { id: "b-echo", src: ["tag:agent-b"], http: { ...HOSTS, method: ["GET"], path: ["/api/echo", "/api/ok"] } },
  { id: "no-admin", effect: "deny", src: ["*"], http: { host: ["*"], path: ["/api/admin/**"] } },
];

let t: GatewayTailnet;
let api: RestSim;
const approvals: ApprovalRequest[] = [];
const stderr: string[] = [];
let restoreStderr: () => void;
const answers: string[] = [];

/** call fetches through the gateway as `node` and keeps the whole answer (headers and body) for the final secret search. */
async function call(node: MeshNode, path: string, init: RequestInit = {}): Promise<{ status: number; headers: Headers; text: string }> {
  const r = await node.fetch(`${t.gw.url}${path}` as never, init as never);
  const text = await r.text();
  answers.push(JSON.stringify([...r.headers]), text);
  return { status: r.status, headers: r.headers as unknown as Headers, text };
}

/** raw sends a request line as written (fetch would resolve ".." itself) over a tailnet connection to the gateway. */
async function raw(node: MeshNode, target: string): Promise<{ status: number; text: string }> {
  const host = new URL(t.gw.ipUrl!).hostname;
  const sock = await node.dial(host, 80);
  sock.write(`GET ${target} HTTP/1.1\r\nHost: ai-gateway\r\nConnection: close\r\n\r\n`);
  const chunks: Buffer[] = [];
  for await (const c of sock) chunks.push(c as Buffer);
  const text = Buffer.concat(chunks).toString("utf8");
  answers.push(text);
  return { status: Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0), text };
}

const reached = (fragment: string) => api.requests.filter((r) => r.url.includes(fragment)).length;

beforeAll(async () => {
  const write = process.stderr.write.bind(process.stderr);
  process.stderr.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
    stderr.push(String(chunk));
    return (write as (...a: unknown[]) => boolean)(chunk, ...rest);
  }) as typeof process.stderr.write;
  restoreStderr = () => (process.stderr.write = write);
  api = await startRestSim({ bearer: BEARER, apiKey: API_KEY, basic: ["svc", BASIC_PW] });
  t = await startGatewayTailnet({
    meshguard: { version: 6, rules: RULES, gateway: { roles: [{ src: ["tag:agent-b"], quotas: "connector-calls" }] } },
    config: (dir) => ({
      log: { level: "debug", access: true, destination: join(dir, "gateway.log") },
      quotas: { "connector-calls": { unit: "calls", capacity: 12, refill: "1/day", per: "node" } },
      connectors: {
        http: {
          api: { baseUrl: `${api.url}/api`, auth: { type: "bearer", token: { env: "API_TOKEN" } } },
          maps: { baseUrl: `${api.url}/q`, auth: { type: "apiKey", key: { env: "API_KEY" }, query: "key" } },
          crm: { baseUrl: `${api.url}/h`, auth: { type: "apiKey", key: { file: writeKeyFile(join(dir, "crm.key")) }, header: "X-Api-Key" } },
          jira: { baseUrl: `${api.url}/b`, auth: { type: "basic", username: "svc", password: { env: "BASIC_PW" } } },
        },
      },
    }),
    gateway: {
      env: { SIM_PROVIDER_KEY: "sk-sim-PROVIDER-5ecret-4f9a", API_TOKEN: BEARER, API_KEY, BASIC_PW },
      approvals: {
        timeoutMs: 10_000,
        callback: async (req) => {
          approvals.push(req);
          return { approved: true, by: "test" };
        },
      },
    },
  });
}, 120_000);

/** writeKeyFile writes the key the way an admin would (with a newline) and returns the path. */
function writeKeyFile(path: string): string {
  writeFileSync(path, `${API_KEY}\n`, { mode: 0o600 });
  return path;
}

afterAll(async () => {
  await t?.close();
  await api?.close();
  restoreStderr?.();
});

describe("credentials are injected, the caller's own never pass, echoes never come back", () => {
  it("bearer: the upstream gets the connector's token, not the agent's Authorization or cookie; every echo is removed", async () => {
    const r = await call(t.nodes.agentA, "/v1/connectors/api/echo?x=1", { headers: { authorization: "Bearer agent-own-token", cookie: "c=agent-cookie", "x-trace": "t1" } });
    expect(r.status).toBe(200);
    const last = api.requests.at(-1)!;
    expect(last.url).toBe("/api/echo?x=1");
    expect(last.headers.authorization).toBe(`Bearer ${BEARER}`);
    expect(last.headers.cookie).toBeUndefined();
    expect(last.headers["x-trace"]).toBe("t1");
    expect(JSON.stringify(api.requests)).not.toContain("agent-own-token");
    const body = JSON.parse(r.text) as { authorization: string; credential: string; path: string };
    expect(body.authorization).toBe(`Bearer ${REDACTED}`);
    expect(body.credential).toBe(REDACTED);
    expect(body.path).toBe("/api/echo");
    expect(r.headers.get("x-echo-credential")).toBe(REDACTED);
    expect(r.headers.get("set-cookie")).toBeNull();
    expect(r.headers.get("x-meshguard-request-id")).toMatch(/[0-9a-f-]{36}/);
  });

  it("API key in a query parameter: the agent's own `key` is dropped, the connector's sent; the echo is removed", async () => {
    const r = await call(t.nodes.agentA, "/v1/connectors/maps/echo?q=a%20b&key=agent-own-key");
    expect(r.status).toBe(200);
    expect(api.requests.at(-1)!.url).toBe(`/q/echo?q=a%20b&key=${encodeURIComponent(API_KEY)}`);
    expect(r.text).not.toContain("agent-own-key");
    expect(JSON.parse(r.text).credential).toBe(REDACTED);
  });

  it("API key in a header (read from a file) and HTTP Basic", async () => {
    const h = await call(t.nodes.agentA, "/v1/connectors/crm/echo", { headers: { "x-api-key": "agent-own-key" } });
    expect(h.status).toBe(200);
    expect(api.requests.at(-1)!.headers["x-api-key"]).toBe(API_KEY);
    expect(JSON.parse(h.text).credential).toBe(REDACTED);
    const b = await call(t.nodes.agentA, "/v1/connectors/jira/echo", { method: "POST", body: JSON.stringify({ hello: "world" }), headers: { "content-type": "application/json" } });
    expect(b.status).toBe(200);
    expect(api.requests.at(-1)!.headers.authorization).toBe(`Basic ${BASIC_PAIR}`);
    expect(JSON.parse(b.text)).toMatchObject({ method: "POST", authorization: `Basic ${REDACTED}`, body: '{"hello":"world"}' });
  });

  it("a credential echoed 3 bytes per chunk is removed from the streamed answer", async () => {
    const r = await call(t.nodes.agentA, "/v1/connectors/api/drip");
    expect(r.status).toBe(200);
    expect(r.text).toBe(`start ${REDACTED} middle ${REDACTED}${REDACTED} end ${REDACTED}\n`);
    const q = await call(t.nodes.agentA, "/v1/connectors/maps/drip");
    expect(q.text).toBe(`start ${REDACTED} middle ${REDACTED}${REDACTED} end ${REDACTED}\n`);
  });

  it("an upstream error echoing the credential reaches the agent scrubbed, with its status", async () => {
    const r = await call(t.nodes.agentA, "/v1/connectors/jira/fail");
    expect(r.status).toBe(401);
    expect(r.text).toBe(`invalid credential ${REDACTED} for /b/fail`);
  });

  it("a redirect to another origin is not followed and loses its Location; one within the connector is rewritten to the gateway", async () => {
    const away = await call(t.nodes.agentA, "/v1/connectors/api/away", { redirect: "manual" });
    expect(away.status).toBe(302);
    expect(away.headers.get("location")).toBeNull();
    expect(away.headers.get("x-meshguard-redirect")).toMatch(/refused/);
    expect(away.text).toBe(`moved to http://evil.example/cb?stolen=${REDACTED}`);
    const manual = await call(t.nodes.agentA, "/v1/connectors/api/here", { redirect: "manual" });
    expect(manual.status).toBe(302);
    expect(manual.headers.get("location")).toBe("/v1/connectors/api/echo?from=here");
    const followed = await call(t.nodes.agentA, "/v1/connectors/api/here");
    expect(followed.status).toBe(200);
    expect(JSON.parse(followed.text)).toMatchObject({ path: "/api/echo", query: "?from=here" });
  });
});

describe("the one policy decides on the upstream request", () => {
  it("agent-b may GET /api/echo only: other methods, paths and connectors are refused before reaching the upstream", async () => {
    expect((await call(t.nodes.agentB, "/v1/connectors/api/echo")).status).toBe(200);
    const before = api.requests.length;
    const post = await call(t.nodes.agentB, "/v1/connectors/api/echo", { method: "POST", body: "x" });
    expect(post.status).toBe(403);
    expect(JSON.parse(post.text).error).toMatchObject({ code: "policy_denied", connector: "api" });
    expect((await call(t.nodes.agentB, "/v1/connectors/maps/echo")).status).toBe(403);
    expect((await call(t.nodes.agentB, "/v1/connectors/api/drip")).status).toBe(403);
    expect(api.requests.length).toBe(before);
  });

  it("a deny rule wins over agent-a's allow, and names itself", async () => {
    const r = await call(t.nodes.agentA, "/v1/connectors/api/admin/users");
    expect(r.status).toBe(403);
    expect(JSON.parse(r.text).error).toMatchObject({ code: "policy_denied", ruleId: "no-admin" });
    expect(reached("/admin")).toBe(0);
  });

  it("an approve rule holds the call for the approver, who is shown the upstream request without the credential", async () => {
    const r = await call(t.nodes.agentA, "/v1/connectors/api/held/x");
    expect(r.status).toBe(404); // approved, then the upstream has no such route
    expect(approvals.length).toBeGreaterThan(0);
    expect(JSON.stringify(approvals.at(-1))).toContain("/api/held/x");
  });

  it("'..' segments and encoded slashes are refused before any decision, and never reach the upstream", async () => {
    const before = api.requests.length;
    for (const p of ["/v1/connectors/api/../h/echo", "/v1/connectors/api/%2e%2e/h/echo", "/v1/connectors/api/x/%2E./echo", "/v1/connectors/api/."]) {
      const r = await raw(t.nodes.agentA, p);
      expect(r.status, p).toBe(400);
      expect(r.text).toContain("connector_path_refused");
    }
    for (const p of ["/v1/connectors/api/a%2Fb", "/v1/connectors/api/a%2fb", "/v1/connectors/api/a%5Cb"]) {
      const r = await call(t.nodes.agentA, p);
      expect(r.status, p).toBe(400);
      expect(JSON.parse(r.text).error.code).toBe("connector_path_refused");
    }
    expect(api.requests.length).toBe(before);
  });

  it("an unknown connector is a 404 of the gateway", async () => {
    expect((await call(t.nodes.agentA, "/v1/connectors/nowhere/echo")).status).toBe(404);
  });
});

describe("attribution, quotas, logs", () => {
  it("agent-b's calls count in its calls bucket: past it, 429 without reaching the upstream", async () => {
    let status = 200;
    for (let i = 0; i < 14 && status === 200; i++) status = (await call(t.nodes.agentB, "/v1/connectors/api/ok")).status;
    expect(status).toBe(429);
  });

  it("every call is a log record of its caller; no secret is in any output", async () => {
    await t.gw.store!.flush();
    const { records } = await t.gw.store!.queryLogs({ limit: 1000 });
    const conn = records.filter((r) => r.operation === "connector.call");
    expect(conn.find((r) => r.model === "GET /api/echo" && r.caller.node === "agent-a")).toMatchObject({ provider: "api", outcome: "ok", status: 200, caller: { tags: ["tag:agent-a"], via: "tailnet" } });
    expect(conn.find((r) => r.caller.node === "agent-b" && r.model === "POST /api/echo")).toMatchObject({ status: 403, provider: "api", outcome: "denied" });
    expect(conn.find((r) => r.model === "GET /api/admin/users")).toMatchObject({ outcome: "denied", ruleId: "no-admin" });
    expect(conn.some((r) => r.outcome === "quota" && r.status === 429)).toBe(true);
    expect(conn.some((r) => r.outcome === "bad_request" && r.status === 400)).toBe(true);
    expect(conn.find((r) => r.model === "GET /api/drip" && r.caller.node === "agent-a")!.responseBody).toContain(REDACTED);
    // A streamed request body is kept for the log too (full retention).
    expect(conn.find((r) => r.model === "POST /b/echo")).toMatchObject({ provider: "jira", requestBody: '{"hello":"world"}', outcome: "ok" });
    await new Promise((r) => setTimeout(r, 300)); // the JSON log is written asynchronously
    const outputs = {
      answers: answers.join("\n"),
      records: JSON.stringify(records),
      log: readFileSync(join(t.dir, "gateway.log"), "utf8"),
      warnings: t.warnings.join("\n"),
      approvals: JSON.stringify(approvals),
      stderr: stderr.join(""),
    };
    expect(outputs.log).toContain("connector");
    for (const [where, text] of Object.entries(outputs)) for (const s of SECRETS) expect(text.includes(s), `${where} contains a secret`).toBe(false);
  });
});
