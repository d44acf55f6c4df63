// HTTP connectors and the gateway's guardrail hooks, on a real gateway's
// loopback listener (no tailnet needed: the caller is the configured
// principal): what pre and post hooks are sent for a connector call, and
// what their block / modify / redact answers do. Also: the gateway's own
// guard allows the connectors' upstreams.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startRestSim, type RestSim } from "../../bench/lib/rest-sim.mjs";
import { startGateway, type GatewayHandle } from "../../src/gateway/index.js";
import { validateGatewayConfig } from "../../src/gateway/config.js";
import { selfGuardOrigins } from "../../src/gateway/self-guard.js";
import { hookServer, type HookServer } from "./hook-server.js";

const TOKEN = "sk-hooked-TOKEN-0b5e-5ecret";
const REDACTED = "[provider key redacted]";

let api: RestSim;
let pre: HookServer;
let post: HookServer;
let gw: GatewayHandle;
let dir: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "mg-conn-hooks-"));
  api = await startRestSim({ bearer: TOKEN });
  pre = await hookServer((r) => {
    const body = r.body.request.body as { block?: boolean; rewrite?: boolean } | null;
    if (body?.block) return { json: { action: "block", status: 422, message: "no blocking words" } };
    if (body?.rewrite) return { json: { action: "modify", body: { rewritten: true } } };
    return { json: { action: "allow" } };
  });
  post = await hookServer((r) => {
    const b = r.body.response.body as { path?: string };
    return b.path === "/api/echo" && r.body.request.facts.model === "POST /api/echo" ? { json: { action: "redact", body: { redacted: true } } } : { json: { action: "record" } };
  });
  const policy = join(dir, "policy.hujson");
  writeFileSync(policy, JSON.stringify({ meshguard: { version: 6, rules: [{ id: "local", src: ["tag:local"], http: { host: ["127.0.0.1"], path: ["/api/**"] } }] } }));
  gw = await startGateway({
    config: {
      policy,
      dataDir: join(dir, "data"),
      providers: { o: { baseUrl: "http://127.0.0.1:9/v1", format: "openai", models: ["*"] } },
      loopback: { listen: "127.0.0.1:0", principal: "tag:local" },
      hooks: { pre: [{ name: "pre", url: pre.url }], post: [{ name: "post", url: post.url }] },
      connectors: { http: { api: { baseUrl: `${api.url}/api`, auth: { type: "bearer", token: { env: "HOOKED_TOKEN" } } } } },
    },
    env: { HOOKED_TOKEN: TOKEN },
  });
}, 60_000);

afterAll(async () => {
  await gw?.close();
  await Promise.all([api?.close(), pre?.close(), post?.close()]);
  rmSync(dir, { recursive: true, force: true });
});

const post_ = (body: unknown) => fetch(`${gw.loopbackUrl}/v1/connectors/api/echo`, { method: "POST", headers: { "content-type": "application/json", authorization: "Bearer mine" }, body: JSON.stringify(body) });

describe("pre and post hooks see connector calls", () => {
  it("a pre hook is sent the connector, the upstream method and path, the headers without credentials, and the body", async () => {
    const r = await post_({ hello: 1 });
    expect(r.status).toBe(200);
    const sent = pre.received.at(-1)!.body.request;
    expect(sent.facts).toMatchObject({ operation: "connector.call", provider: "api", model: "POST /api/echo" });
    expect(sent.body).toEqual({ hello: 1 });
    expect(sent.headers.authorization).toBeUndefined();
    expect(JSON.stringify(pre.received)).not.toContain(TOKEN);
  });

  it("block refuses the call before it goes upstream; modify replaces the body sent", async () => {
    const before = api.requests.length;
    const b = await post_({ block: true });
    expect(b.status).toBe(422);
    expect(await b.text()).toContain("no blocking words");
    expect(api.requests.length).toBe(before);
    await post_({ rewrite: true });
    expect(post.received.length).toBeGreaterThan(0);
    const last = api.requests.at(-1)!;
    expect(last.headers["content-length"]).toBe(String('{"rewritten":true}'.length));
  });

  it("a post hook sees the JSON answer already scrubbed, and may redact it", async () => {
    const r = await post_({ x: 1 });
    expect(await r.json()).toEqual({ redacted: true });
    const seen = post.received.at(-1)!.body.response.body as { credential: string };
    expect(seen.credential).toBe(REDACTED);
    expect(JSON.stringify(post.received)).not.toContain(TOKEN);
    // A GET answer the hook only records passes unchanged (scrubbed).
    const g = await fetch(`${gw.loopbackUrl}/v1/connectors/api/echo`);
    expect((await g.json()).credential).toBe(REDACTED);
  });
});

describe("the gateway's own guard", () => {
  it("allows the connectors' upstream origins", () => {
    const cfg = validateGatewayConfig({
      policy: "p",
      providers: { o: { baseUrl: "https://api.openai.com/v1", format: "openai", models: ["*"] } },
      connectors: { http: { gh: { baseUrl: "https://api.github.com", auth: { type: "bearer", token: { env: "T" } } }, crm: { baseUrl: "http://crm.internal:8080/api", auth: { type: "basic", username: "u", password: { env: "P" } } } } },
    });
    expect(selfGuardOrigins(cfg)).toEqual(expect.arrayContaining(["https://api.github.com:443", "http://crm.internal:8080"]));
  });
});
