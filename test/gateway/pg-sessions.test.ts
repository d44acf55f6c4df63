// Sessions of callers that send no session id of their own, across two
// gateway instances on one PostgreSQL (issue 9): the instances share the
// session state in the store, so a caller whose requests are spread over
// both is in one session on both, a pause longer than the idle gap starts
// a new one on both, and concurrent requests to both after a pause still
// start only one. Each instance's sessions API shows the same sessions.
// Two real gateways (loopback listeners, the same principal), a real
// PostgreSQL, the OpenAI SDK; the upstream is the simulator.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startLlmSim, type LlmSim } from "../../bench/lib/llm-sim.mjs";
import { startGateway, type GatewayHandle, type LogRecord, type SessionSummary } from "../../src/gateway/index.js";
import { SharedSessions } from "../../src/gateway/sessions.js";
import { openStore } from "../../src/gateway/store/index.js";
import { CLIENT_KEY, PROVIDER_KEY, PROVIDERS } from "./gateway-tailnet.js";
import { postgresUnavailable, startPostgres, type PgServer } from "./pg-server.js";

const unavailable = postgresUnavailable();
if (unavailable) console.warn(`PostgreSQL session tests skipped: ${unavailable}`);

const ENV = "MG_TEST_PG_SESSIONS_URL";
const GAP_MS = 3000;
let server: PgServer;
let sim: LlmSim;
let dir: string;
let a: GatewayHandle;
let b: GatewayHandle;

async function gateway(name: string): Promise<GatewayHandle> {
  return startGateway({
    config: {
      policy: join(dir, "policy.hujson"),
      dataDir: join(dir, name),
      loopback: { listen: "127.0.0.1:0", principal: "tag:local" },
      providers: PROVIDERS(sim.url),
      storage: { engine: "postgres", urlEnv: ENV, schema: "sessions_test", flushIntervalMs: 20 },
      sessions: { idleGap: `${GAP_MS}ms` },
    },
    env: { SIM_PROVIDER_KEY: PROVIDER_KEY, [ENV]: process.env[ENV]! },
    onWarning: () => {},
  });
}

beforeAll(async () => {
  if (unavailable) return;
  server = await startPostgres();
  process.env[ENV] = await server.createDatabase();
  dir = mkdtempSync(join(tmpdir(), "mg-pgsess-"));
  writeFileSync(
    join(dir, "policy.hujson"),
    JSON.stringify({ version: 3, rules: [{ id: "local", src: ["tag:local"], llm: { model: ["*"] } }], gateway: { roles: [{ src: ["tag:local"], role: "admin" }] } }),
  );
  sim = await startLlmSim({ key: PROVIDER_KEY, outputTokens: 3 });
  [a, b] = await Promise.all([gateway("a"), gateway("b")]);
}, 120_000);

afterAll(async () => {
  await a?.close();
  await b?.close();
  await sim?.close();
  await server?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const oai = (gw: GatewayHandle) => new OpenAI({ baseURL: `${gw.loopbackUrl}/v1`, apiKey: CLIENT_KEY, maxRetries: 0 });

/** One chat call through `gw`; resolves with the gateway's request id once its record is stored. */
async function call(gw: GatewayHandle): Promise<string> {
  const r = await oai(gw).chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "hi" }] }).withResponse();
  return r.response.headers.get("x-meshguard-request-id")!;
}

/** The stored records of `ids`, read through the other instance than the one that may have written them. */
async function stored(ids: string[]): Promise<LogRecord[]> {
  const read = async () => {
    await Promise.all([a.store!.flush(), b.store!.flush()]);
    return (await Promise.all(ids.map((id) => b.store!.getLog(id)))).filter((r): r is LogRecord => r !== undefined);
  };
  await expect.poll(async () => (await read()).length, { timeout: 10_000 }).toBe(ids.length);
  return read();
}

async function sessionsOf(gw: GatewayHandle): Promise<SessionSummary[]> {
  const r = await fetch(`${gw.loopbackUrl}/meshguard/v1/sessions`);
  expect(r.status).toBe(200);
  return ((await r.json()) as { sessions: SessionSummary[] }).sessions;
}

const pause = () => new Promise((r) => setTimeout(r, GAP_MS + 300));

describe.skipIf(Boolean(unavailable))("postgres: sessions shared by two gateway instances", () => {
  const seen: string[] = [];

  it("a caller's requests spread over both instances within the idle gap are one session, on both", async () => {
    const ids: string[] = [];
    for (const gw of [a, b, a, b, b, a]) ids.push(await call(gw));
    const recs = await stored(ids);
    const sessions = new Set(recs.map((r) => r.sessionId));
    expect(sessions.size).toBe(1);
    const [id] = sessions;
    seen.push(id!);
    // Each instance's sessions API shows the same one session, with every request of it.
    const [onA, onB] = await Promise.all([sessionsOf(a), sessionsOf(b)]);
    expect(onA).toEqual(onB);
    expect(onA).toHaveLength(1);
    expect(onA[0]).toMatchObject({ id, requests: 6, node: "loopback" });
  });

  it("a pause longer than the idle gap starts a new session, whichever instance the next request reaches", async () => {
    await pause();
    const ids = [await call(b), await call(a), await call(b)];
    const recs = await stored(ids);
    const sessions = new Set(recs.map((r) => r.sessionId));
    expect(sessions.size).toBe(1);
    const [id] = sessions;
    expect(seen).not.toContain(id);
    seen.push(id!);
    const [onA, onB] = await Promise.all([sessionsOf(a), sessionsOf(b)]);
    expect(onA).toEqual(onB);
    expect(onA.map((s) => s.id)).toEqual([id, seen[0]]);
  });

  it("after a pause, 20 concurrent requests split over both instances start exactly one new session", async () => {
    await pause();
    const ids = await Promise.all(Array.from({ length: 20 }, (_, i) => call(i % 2 === 0 ? a : b)));
    const recs = await stored(ids);
    const sessions = new Set(recs.map((r) => r.sessionId));
    expect(sessions.size).toBe(1);
    expect(seen).not.toContain([...sessions][0]);
    const [onA, onB] = await Promise.all([sessionsOf(a), sessionsOf(b)]);
    expect(onA).toEqual(onB);
    expect(onA).toHaveLength(3);
    expect(onA[0]!.requests).toBe(20);
    seen.push(onA[0]!.id);
  });

  it("a caller who goes on calling one instance is still in its session when the next request reaches the other one a gap after the first", async () => {
    await pause();
    const t0 = Date.now();
    const ids = [await call(a)];
    // Within half a gap: instance a continues the session without asking the store, and writes the time within a quarter gap.
    await new Promise((r) => setTimeout(r, Math.max(0, t0 + 0.4 * GAP_MS - Date.now())));
    ids.push(await call(a));
    // A gap after the first request, less than a gap after the second: the session goes on, on b too.
    await new Promise((r) => setTimeout(r, Math.max(0, t0 + 1.25 * GAP_MS - Date.now())));
    ids.push(await call(b));
    const recs = await stored(ids);
    expect(recs[2]!.time - recs[0]!.time).toBeGreaterThan(GAP_MS);
    expect(recs[2]!.time - recs[1]!.time).toBeLessThan(GAP_MS);
    expect(new Set(recs.map((r) => r.sessionId)).size).toBe(1);
  });

  it("records waiting for their session when an instance closes are stored all the same", async () => {
    await pause();
    const ids = await Promise.all(Array.from({ length: 5 }, () => call(a)));
    await a.close();
    const recs = await stored(ids);
    expect(new Set(recs.map((r) => r.sessionId)).size).toBe(1);
  });
});

describe.skipIf(Boolean(unavailable))("postgres: what shared sessions cost the store", () => {
  it("a burst of one caller's requests costs each instance one statement, not one per request; the instances agree", async () => {
    const open = () => openStore({ engine: "postgres", urlEnv: ENV, schema: "sessions_cost" }, { dataDir: "", retention: { mode: "metadata" } });
    const [sa, sb] = await Promise.all([open(), open()]);
    try {
      const errors: Error[] = [];
      const shared = (s: typeof sa) => new SharedSessions({ assignSession: s.assignSession!.bind(s), forgetSessions: s.forgetSessions!.bind(s) }, { idleGapMs: 60_000, onError: (e) => errors.push(e) });
      const [x, y] = [shared(sa), shared(sb)];
      const caller = { user: "ann@example.com", node: "laptop" };
      const t = 1_700_000_000_000;
      const onX = await Promise.all(Array.from({ length: 100 }, (_, i) => x.assign(caller, undefined, t + i)));
      const onY = await Promise.all(Array.from({ length: 100 }, (_, i) => y.assign(caller, undefined, t + 100 + i)));
      expect(new Set([...onX, ...onY]).size).toBe(1);
      // One question each; the later times are written once, within a quarter gap (drain writes them at once).
      expect(x.statements).toBe(1);
      expect(y.statements).toBe(1);
      await Promise.all([x.drain(), y.drain()]);
      expect(x.statements + y.statements).toBeLessThanOrEqual(4);
      // Another caller is another session.
      expect(await y.assign({ user: "bob@example.com", node: "laptop" }, undefined, t + 300)).not.toBe(onX[0]);
      expect(errors).toEqual([]);
    } finally {
      await Promise.all([sa.close(), sb.close()]);
    }
  });
});
