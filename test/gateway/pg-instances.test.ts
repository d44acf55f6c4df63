// Several gateway instances on one PostgreSQL (issue 9): each instance is a
// store with its own pool of connections (the SIGKILL test: its own
// process), sharing one database.
//
// - 200 concurrent reserves split across two instances never overspend;
// - every log record is stored exactly once when both flush at once and one
//   instance's batch is written again after losing the database's answer;
// - each instance reads what the other wrote;
// - an instance SIGKILLed mid-load loses no settled charge, and the
//   survivor's recover() takes that instance's reservations — only once its
//   heartbeat is stale, and never a live instance's.
import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isMeshguardError, ErrorCode } from "../../src/errors.js";
import { QuotasConfigSchema, type QuotasConfigInput } from "../../src/gateway/quotas/config.js";
import { createQuotaManager, type QuotaManagerHandle } from "../../src/gateway/quotas/manager.js";
import { openStore } from "../../src/gateway/store/index.js";
import type { GatewayStore, LogRecord, Reservation, Retention } from "../../src/gateway/types.js";
import { record, uniqueUser } from "./fixtures-records.js";
import { startCutProxy } from "./pg-cut-proxy.js";
import { postgresUnavailable, startPostgres, type PgServer } from "./pg-server.js";
import { caller, facts, usage } from "./quota-fixtures.js";

const unavailable = postgresUnavailable();
if (unavailable) console.warn(`PostgreSQL multi-instance tests skipped: ${unavailable}`);

const ENV = "MG_TEST_PG_URL";
let server: PgServer;
let db: string;
beforeAll(async () => {
  if (unavailable) return;
  server = await startPostgres();
  process.env[ENV] = await server.createDatabase();
  db = new URL(process.env[ENV]!).pathname.slice(1);
}, 120_000);

const opened: GatewayStore[] = [];
afterAll(async () => {
  await Promise.all(opened.map((s) => s.close()));
  await server?.stop();
});

const NOW = 1_700_000_000_000;
const REQ = { inputTokens: 1000, maxOutputTokens: 1000 };
const F = facts({ maxTokens: 1000 });

interface InstanceOptions {
  schema: string;
  url?: string;
  instanceTimeoutMs?: number;
  retention?: Retention;
}

/** One gateway instance: a store of its own (its own connections) on the shared database. */
async function instance(o: InstanceOptions): Promise<GatewayStore & { instanceId: string }> {
  const s = await openStore(
    { engine: "postgres", ...(o.url ? { url: o.url } : { urlEnv: ENV }), schema: o.schema, flushIntervalMs: 10_000, ...(o.instanceTimeoutMs ? { instanceTimeoutMs: o.instanceTimeoutMs } : {}) },
    { dataDir: "", retention: o.retention ?? { mode: "metadata" } },
  );
  opened.push(s);
  return s as GatewayStore & { instanceId: string };
}

function manager(store: GatewayStore, buckets: QuotasConfigInput): QuotaManagerHandle {
  return createQuotaManager(store, QuotasConfigSchema.parse(buckets), () => [["pool"]], { now: () => NOW });
}

const held = (v: Awaited<ReturnType<QuotaManagerHandle["reserve"]>>): Reservation => {
  if (!v.ok || !v.reservation) throw new Error(`expected a reservation, got ${JSON.stringify(v)}`);
  return v.reservation;
};

const newSchema = () => `mg_${randomUUID().slice(0, 8)}`;

describe.skipIf(Boolean(unavailable))("postgres: two gateway instances on one database", () => {
  it("200 concurrent reserves split across two instances against a bucket that fits 37: exactly 37 pass; settling on each leaves the right level", async () => {
    const schema = newSchema();
    const [a, b] = await Promise.all([instance({ schema }), instance({ schema })]);
    const buckets = { pool: { unit: "tokens", capacity: 37 * 2000, refill: "1000/day", per: "global" } } as const;
    const [qa, qb] = [manager(a, buckets), manager(b, buckets)];
    const verdicts = await Promise.all(Array.from({ length: 200 }, (_, i) => (i % 2 === 0 ? qa : qb).reserve(caller({ user: `u${i % 7}@example.com` }), F, REQ, undefined)));
    const byA = verdicts.filter((v, i) => v.ok && i % 2 === 0).length;
    const byB = verdicts.filter((v, i) => v.ok && i % 2 === 1).length;
    expect(byA + byB).toBe(37);
    // Not vacuous: both instances really competed for the bucket.
    expect(byA).toBeGreaterThan(0);
    expect(byB).toBeGreaterThan(0);
    expect((await qa.state("pool/global"))!.level).toBe(0);
    expect((await qb.state("pool/global"))!.reserved).toBe(37 * 2000);

    // Each settles its own: 1500 charged of each 2000 held.
    await Promise.all(verdicts.map((v, i) => (v.ok ? (i % 2 === 0 ? qa : qb).settle(held(v), usage(1000, 500), undefined) : undefined)));
    const after = (await qb.state("pool/global"))!;
    expect(after.level).toBe(37 * 500);
    expect(after.reserved).toBe(0);
  });

  it("every log record is stored exactly once when both flush at once and one's batch is written again after its answer was lost", async () => {
    const schema = newSchema();
    const proxy = await startCutProxy(server.port);
    const viaProxy = process.env[ENV]!.replace(`:${server.port}/`, `:${proxy.port}/`);
    const [a, b] = await Promise.all([instance({ schema, url: viaProxy, retention: { mode: "full" } }), instance({ schema, retention: { mode: "full" } })]);
    try {
      const u = uniqueUser();
      const recsA = Array.from({ length: 500 }, (_, i) => record(u, NOW + 2 * i));
      const recsB = Array.from({ length: 500 }, (_, i) => record(u, NOW + 2 * i + 1));
      for (const r of recsA) a.appendLog(r);
      for (const r of recsB) b.appendLog(r);
      const cut = proxy.cutAnswerTo(`.logs (id, time, "user"`);
      const [fa, fb] = await Promise.allSettled([a.flush(), b.flush()]);
      await cut;
      expect(fb.status).toBe("fulfilled");
      // A does not know its batch was stored: its flush failed, the records are kept.
      expect(fa.status).toBe("rejected");
      expect(isMeshguardError((fa as PromiseRejectedResult).reason, ErrorCode.STORE_FAILED)).toBe(true);
      // But the database has them: writing the batch again is the dangerous case.
      const count = async () => (await server.sql<{ n: number; ids: number }>(db, `SELECT count(*)::int AS n, count(DISTINCT id)::int AS ids FROM ${schema}.logs`))[0]!;
      expect(await count()).toEqual({ n: 1000, ids: 1000 });
      // More records arrive before the retry, which writes them with the kept batch.
      const later = Array.from({ length: 50 }, (_, i) => record(u, NOW + 5000 + i));
      for (const r of later) a.appendLog(r);
      await a.flush();
      expect(await count()).toEqual({ n: 1050, ids: 1050 });
      // Each instance reads all of it (each gateway's console shows every request).
      const all = new Set([...recsA, ...recsB, ...later].map((r) => r.id));
      for (const s of [a, b]) {
        const seen: LogRecord[] = [];
        let before: string | undefined;
        do {
          const page = await s.queryLogs({ user: u, limit: 1000, ...(before ? { before } : {}) });
          seen.push(...page.records);
          before = page.next;
        } while (before);
        expect(seen).toHaveLength(1050);
        expect(new Set(seen.map((r) => r.id))).toEqual(all);
      }
    } finally {
      await a.close();
      await proxy.close();
    }
  });

  it("an instance SIGKILLed mid-load loses no settled charge; the survivor's recover() takes its reservations once its heartbeat is stale, and no live instance's", async () => {
    const schema = newSchema();
    const CAPACITY = 1_000_000_000;
    const CHILD_TIMEOUT_MS = 2_000;
    const CONCURRENCY = 8;
    const buckets = { pool: { unit: "tokens", capacity: CAPACITY, refill: "1000/day", per: "global" } } as const;
    // The survivor and another live instance, each holding reservations of requests still in flight.
    const survivor = await instance({ schema, instanceTimeoutMs: 1_000 });
    const live = await instance({ schema, instanceTimeoutMs: 1_000 });
    const qs = manager(survivor, buckets);
    const ql = manager(live, buckets);
    const mine = await Promise.all([1, 2, 3].map(() => qs.reserve(caller(), F, REQ, undefined).then(held)));
    const theirs = await Promise.all([1, 2].map(() => ql.reserve(caller(), F, REQ, undefined).then(held)));

    // The instance to kill, in a process of its own.
    const fixture = fileURLToPath(new URL("./fixtures/pg-instance.mjs", import.meta.url));
    const child = spawn(process.execPath, [fixture, schema, String(CONCURRENCY), String(CHILD_TIMEOUT_MS), String(CAPACITY), String(NOW)], { stdio: ["ignore", "pipe", "pipe"] });
    let childId = "";
    const settled = new Set<string>();
    let stderr = "";
    let buf = "";
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<NodeJS.Signals | null>((r) => child.on("close", (_c, sig) => r(sig)));
    await new Promise<void>((resolve, reject) => {
      child.stdout.on("data", (d: Buffer) => {
        buf += d.toString();
        const lines = buf.split("\n");
        buf = lines.pop()!;
        for (const line of lines) {
          const [what, id] = line.split(" ");
          if (what === "ready") childId = id!;
          if (what === "settled") settled.add(id!);
          if (settled.size >= 300) resolve();
        }
      });
      void exited.then(() => reject(new Error(`the instance exited before it was killed: ${stderr}`)));
    });
    child.kill("SIGKILL");
    expect(await exited).toBe("SIGKILL");
    const reported = settled.size;

    // No settled charge lost, none counted twice: every request the child
    // made is either settled (1500 charged) or still reserved (2000 held),
    // so the level says exactly how many settles were stored, and it is at
    // least every one the child saw resolve, and at most those plus the
    // ones in flight when it was killed.
    const reservedBy = async (id: string) => (await server.sql<{ n: number }>(db, `SELECT count(*)::int AS n FROM ${schema}.reservations WHERE instance = $1`, [id]))[0]!.n;
    const orphaned = await reservedBy(childId);
    expect(orphaned).toBeLessThanOrEqual(CONCURRENCY);
    const level = (await qs.state("pool/global"))!.level;
    const spentBySettles = CAPACITY - level - 2000 * (orphaned + mine.length + theirs.length);
    expect(spentBySettles % 1500).toBe(0);
    const stored = spentBySettles / 1500;
    expect(stored).toBeGreaterThanOrEqual(reported);
    expect(stored).toBeLessThanOrEqual(reported + CONCURRENCY);

    // While the dead instance's heartbeat is recent it may only be slow: nothing is taken.
    expect(await qs.recover()).toBe(0);
    // Once it is stale, recover() takes exactly the dead instance's reservations.
    const deadline = Date.now() + 15_000;
    let taken = 0;
    while (taken === 0 && orphaned > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 250));
      taken = await qs.recover();
    }
    expect(taken).toBe(orphaned);
    expect(await reservedBy(childId)).toBe(0);
    // The live instances' own reservations are untouched, and settle normally.
    expect((await survivor.reservations()).map((r) => r.id).sort()).toEqual([...mine, ...theirs].map((r) => r.id).sort());
    expect(await qs.recover()).toBe(0);
    await Promise.all(mine.map((r) => qs.settle(r, usage(1000, 500), undefined)));
    await Promise.all(theirs.map((r) => ql.settle(r, usage(1000, 500), undefined)));
    expect(await survivor.reservations()).toEqual([]);
    // Recovered in full: the level is the capacity less every settle and every orphaned hold.
    expect((await qs.state("pool/global"))!.level).toBe(CAPACITY - 1500 * (stored + mine.length + theirs.length) - 2000 * orphaned);
  }, 60_000);

  it("a closed instance's reservations left unsettled are recoverable at once, without waiting for its timeout", async () => {
    const schema = newSchema();
    const buckets = { pool: { unit: "tokens", capacity: 100_000, refill: "1000/day", per: "global" } } as const;
    const leaving = await instance({ schema, instanceTimeoutMs: 3_600_000 });
    const staying = await instance({ schema });
    held(await manager(leaving, buckets).reserve(caller(), F, REQ, undefined));
    const q = manager(staying, buckets);
    expect(await q.recover()).toBe(0);
    await leaving.close();
    expect(await q.recover()).toBe(1);
    expect(await staying.reservations()).toEqual([]);
  });
});
