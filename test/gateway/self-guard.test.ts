// The gateway guards itself (issue 8 item 9): with `selfGuard` it installs
// meshguard's guard allowing only the providers, hooks and approval webhook
// its config names; in a process that already has a guard it uses that one.
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startLlmSim, type LlmSim } from "../../bench/lib/llm-sim.mjs";
import { parseGatewayConfig, startGateway } from "../../src/gateway/index.js";
import { selfGuardDatabase, selfGuardOrigins, selfGuardPolicy } from "../../src/gateway/self-guard.js";
import { deniedCause, guardInstalled, installGuard } from "../../src/guard/index.js";
import { loadPolicy, parseRequest } from "../../src/policy/index.js";
import { PROVIDER_KEY } from "./gateway-tailnet.js";
import { postgresUnavailable, startPostgres } from "./pg-server.js";

let dir: string;
let sim: LlmSim;
let other: LlmSim;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "mg-gwsg-"));
  writeFileSync(join(dir, "policy.hujson"), JSON.stringify({ version: 1, rules: [{ id: "all", effect: "allow", src: ["*"], llm: { model: ["*"] } }] }));
  sim = await startLlmSim({ key: PROVIDER_KEY });
  other = await startLlmSim({ key: PROVIDER_KEY });
});
afterAll(async () => {
  await sim?.close();
  await other?.close();
  rmSync(dir, { recursive: true, force: true });
});

const config = (loopbackPort: number, hooks = true) => ({
  policy: join(dir, "policy.hujson"),
  dataDir: join(dir, "data"),
  loopback: { listen: `127.0.0.1:${loopbackPort}`, principal: "tag:local" },
  providers: {
    ok: { baseUrl: `${sim.url}/v1`, format: "openai" as const, key: { env: "K" }, models: ["gpt-4o-mini"] },
    blocked: { baseUrl: `${other.url}/v1`, format: "openai" as const, key: { env: "K" }, models: ["gpt-4o"] },
  },
  ...(hooks ? { hooks: { usage: [{ name: "billing", url: "https://billing.example/usage" }] } } : {}),
});

/** freePort finds a loopback port nobody listens on (the outer guard's policy must name the gateway's port in advance). */
async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

/** A client outside this (guarded) process: a child Node posting one chat request. */
async function chat(url: string, model: string): Promise<{ status: number; body: string }> {
  const script = `fetch(${JSON.stringify(`${url}/v1/chat/completions`)}, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ model: ${JSON.stringify(model)}, messages: [{ role: "user", content: "x" }] }) }).then(async (r) => console.log(JSON.stringify({ status: r.status, body: await r.text() })))`;
  const { stdout } = await promisify(execFile)(process.execPath, ["-e", script]);
  return JSON.parse(stdout) as { status: number; body: string };
}

describe("the self-guard policy", () => {
  it("allows the configured providers and hooks, and nothing else", () => {
    const cfg = parseGatewayConfig(JSON.stringify(config(1)), { baseDir: dir });
    const origins = selfGuardOrigins(cfg, "http://approvals.internal:9000/ask");
    expect(origins).toEqual([`http://127.0.0.1:${sim.port}`, `http://127.0.0.1:${other.port}`, "https://billing.example:443", "http://approvals.internal:9000"]);
    const p = selfGuardPolicy(origins);
    const decide = (line: string) => p.evaluate({ principal: { tags: [] }, target: parseRequest(line) }).effect;
    expect(decide(`POST http://127.0.0.1:${sim.port}/v1/chat/completions`)).toBe("allow");
    expect(decide("POST https://billing.example/usage")).toBe("allow");
    expect(decide("POST http://approvals.internal:9000/ask")).toBe("allow");
    expect(decide("llm openai/gpt-4o")).toBe("allow");
    expect(decide(`tcp 127.0.0.1:${sim.port}`)).toBe("allow");
    expect(decide("dns billing.example")).toBe("allow");
    expect(decide("POST http://billing.example/usage")).toBe("deny"); // https only, as configured
    expect(decide("POST https://exfiltrate.example/keys")).toBe("deny");
    expect(decide("tcp 127.0.0.1:22")).toBe("deny");
    expect(decide(`tcp 127.0.0.1:${sim.port} tailnet`)).toBe("deny");
    expect(decide("dns exfiltrate.example")).toBe("deny");
    expect(decide("udp 127.0.0.1:53")).toBe("deny");
  });

  it("adds the MCP servers' origins (HTTP upstreams; a stdio server is a child process, not a destination), and lets their tool calls through", () => {
    const cfg = parseGatewayConfig(JSON.stringify({ ...config(1), mcp: { servers: { github: { url: "http://mcp-github.internal:3000/mcp" }, notes: { command: "node", args: ["notes.js"] } } } }), { baseDir: dir });
    const origins = selfGuardOrigins(cfg);
    expect(origins).toContain("http://mcp-github.internal:3000");
    expect(origins.some((o) => o.includes("notes"))).toBe(false);
    const p = selfGuardPolicy(origins);
    const decide = (line: string) => p.evaluate({ principal: { tags: [] }, target: parseRequest(line) }).effect;
    expect(decide("POST http://mcp-github.internal:3000/mcp")).toBe("allow");
    // Which tool a caller may use was decided by the gateway's own policy before the call was made.
    expect(decide('mcp github create_issue {"repo":"x"}')).toBe("allow");
    expect(decide("POST http://mcp-github.internal:3001/mcp")).toBe("deny");
  });
});

describe("startGateway({ selfGuard: true })", () => {
  it("installs its own guard: the gateway reaches its providers, anything else in the process is refused, close() removes it", async () => {
    const port = await freePort();
    const gw = await startGateway({ config: config(port), env: { K: PROVIDER_KEY }, selfGuard: true });
    try {
      expect(gw.guard).toEqual({ kind: "own", origins: expect.arrayContaining([`http://127.0.0.1:${sim.port}`, "https://billing.example:443"]) });
      expect(guardInstalled()).toBe(true);
      const r = await chat(gw.loopbackUrl!, "gpt-4o-mini");
      expect(r.status).toBe(200);
      // A call the config does not name, made from the gateway's process, never leaves it.
      const err = await fetch(`http://127.0.0.1:${await freePort()}/`).catch((e) => e);
      expect(deniedCause(err)?.message).toMatch(/only the providers, hooks and approval webhook/);
    } finally {
      await gw.close();
    }
    expect(guardInstalled()).toBe(false);
  });

  it("in a process that already has a guard, uses that one (whose policy then decides the gateway's upstream calls)", async () => {
    const port = await freePort();
    // The application's guard allows the gateway's listener and the "ok" provider, not the other one.
    const appPolicy = loadPolicy(
      JSON.stringify({
        version: 1,
        rules: [
          { id: "sim", effect: "allow", src: ["*"], http: { host: ["127.0.0.1"], port: [sim.port, port] } },
          { id: "models", effect: "allow", src: ["*"], llm: { model: ["*"] } },
        ],
      }),
    );
    const app = installGuard({ policy: appPolicy, identity: { tags: ["tag:app"] }, intercept: { worker: false } });
    try {
      const gw = await startGateway({ config: config(port, false), env: { K: PROVIDER_KEY }, selfGuard: true });
      try {
        expect(gw.guard).toEqual({ kind: "existing" });
        expect((await chat(gw.loopbackUrl!, "gpt-4o-mini")).status).toBe(200);
        const blocked = await chat(gw.loopbackUrl!, "gpt-4o");
        expect(blocked.status).toBe(502);
        expect(blocked.body).toMatch(/meshguard policy denied/);
        expect(other.totals.requests).toBe(0);
      } finally {
        await gw.close();
      }
      // The application's guard is its own: the gateway leaves it installed.
      expect(guardInstalled()).toBe(true);
    } finally {
      await app.close();
    }
  });
});

describe("a gateway storing in PostgreSQL", () => {
  it("its self-guard allows the database's host:port (and the look-up of its name), nothing more", () => {
    const pgConfig = (url: string) => parseGatewayConfig(JSON.stringify({ ...config(1, false), storage: { engine: "postgres", urlEnv: "PG_URL" } }), { baseDir: dir });
    const db = (url: string, env: NodeJS.ProcessEnv = {}) => selfGuardDatabase(pgConfig(url), { PG_URL: url, ...env });
    expect(db("postgres://gw:secret@db.internal:6543/logs")).toBe("db.internal:6543");
    expect(db("postgresql://gw@127.0.0.1/logs")).toBe("127.0.0.1:5432");
    expect(db("postgres://gw@[::1]:5433/logs")).toBe("[::1]:5433");
    expect(db("postgres:///logs?host=db2.internal&port=7000")).toBe("db2.internal:7000");
    expect(db("postgres:///logs", { PGHOST: "pghost.internal", PGPORT: "5999" })).toBe("pghost.internal:5999");
    // A Unix socket is no TCP connection; a missing URL is the store's error to report.
    expect(db("postgres:///logs?host=/var/run/postgresql")).toBeUndefined();
    expect(selfGuardDatabase(pgConfig("x"), {})).toBeUndefined();
    expect(selfGuardDatabase(parseGatewayConfig(JSON.stringify(config(1, false)), { baseDir: dir }), { PG_URL: "postgres://h/db" })).toBeUndefined();

    const p = selfGuardPolicy([`http://127.0.0.1:${sim.port}`], ["db.internal:6543"]);
    const decide = (line: string) => p.evaluate({ principal: { tags: [] }, target: parseRequest(line) }).effect;
    expect(decide("tcp db.internal:6543")).toBe("allow");
    expect(decide("dns db.internal")).toBe("allow");
    expect(decide("tcp db.internal:22")).toBe("deny");
    expect(decide("GET http://db.internal:6543/")).toBe("deny"); // the database is reached over its own protocol, not HTTP
  });

  const noPg = postgresUnavailable();
  it.skipIf(Boolean(noPg))("starts with selfGuard on a real PostgreSQL: the store connects through the guard and logs the call", async () => {
    const server = await startPostgres();
    try {
      const url = await server.createDatabase();
      const port = await freePort();
      const gw = await startGateway({ config: { ...config(port, false), storage: { engine: "postgres", urlEnv: "PG_URL" } }, env: { K: PROVIDER_KEY, PG_URL: url }, selfGuard: true });
      try {
        expect(gw.guard).toMatchObject({ kind: "own", database: `127.0.0.1:${new URL(url).port}` });
        const r = await chat(gw.loopbackUrl!, "gpt-4o-mini");
        expect(r.status).toBe(200);
        await gw.store!.flush();
        expect((await gw.store!.queryLogs({ limit: 5 })).records.some((rec) => rec.model === "gpt-4o-mini" && rec.outcome === "ok")).toBe(true);
        // Other ports of the same host stay closed to the process.
        const err = await fetch(`http://127.0.0.1:${await freePort()}/`).catch((e) => e);
        expect(deniedCause(err)).toBeDefined();
      } finally {
        await gw.close();
      }
    } finally {
      await server.stop();
    }
  }, 120_000);
});
