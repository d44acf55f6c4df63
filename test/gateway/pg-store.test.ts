// The PostgreSQL store against a real PostgreSQL (Debian's, started by the
// test): the conformance suite every engine passes, then what is
// PostgreSQL's own — the URL from the environment, migrations (also two
// instances migrating at once), refusing a schema that is not ours,
// records the database refuses, and no credential in any byte it holds.
import { execFileSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorCode, isMeshguardError, type MeshguardError } from "../../src/errors.js";
import { openStore, type StorageConfigInput } from "../../src/gateway/store/index.js";
import { MIGRATIONS } from "../../src/gateway/store/postgres-schema.js";
import type { GatewayStore, Retention } from "../../src/gateway/types.js";
import { record, uniqueUser } from "./fixtures-records.js";
import { startCutProxy } from "./pg-cut-proxy.js";
import { postgresUnavailable, startPostgres, type PgServer } from "./pg-server.js";
import { storeConformance } from "./store-conformance.js";

const FULL: Retention = { mode: "full" };
const unavailable = postgresUnavailable();
if (unavailable) console.warn(`PostgreSQL store tests skipped: ${unavailable}`);

let server: PgServer;
/** The environment variable the stores read their URL from (no password in any config). */
const ENV = "MG_TEST_PG_URL";
beforeAll(async () => {
  if (unavailable) return;
  server = await startPostgres();
  process.env[ENV] = await server.createDatabase();
}, 120_000);
afterAll(async () => {
  await server?.stop();
});

const opened: GatewayStore[] = [];
afterAll(async () => {
  await Promise.all(opened.map((s) => s.close()));
});

/** A store on the test database (schema `schema`, default "meshguard"). */
async function pgStore(o: { retention?: Retention; secrets?: string[]; onError?: (e: MeshguardError) => void; config?: Partial<Extract<StorageConfigInput, { engine: "postgres" }>> } = {}): Promise<GatewayStore> {
  const s = await openStore(
    { engine: "postgres", urlEnv: ENV, ...o.config },
    { dataDir: "/nonexistent", retention: o.retention ?? FULL, ...(o.secrets ? { secrets: o.secrets } : {}), ...(o.onError ? { onError: o.onError } : {}) },
  );
  opened.push(s);
  return s;
}

describe.skipIf(Boolean(unavailable))("postgres", () => {
  storeConformance("postgres", (o) => pgStore({ ...(o?.retention ? { retention: o.retention } : {}), ...(o?.secrets ? { secrets: o.secrets } : {}) }));

  describe("postgres: connecting", () => {
    it("the URL comes from the variable urlEnv names; a variable not set is STORE_FAILED naming it", async () => {
      const err = await openStore({ engine: "postgres", urlEnv: "MG_TEST_NOT_SET" }, { dataDir: "", retention: FULL, env: {} }).catch((e: unknown) => e);
      expect(isMeshguardError(err, ErrorCode.STORE_FAILED)).toBe(true);
      expect(String(err)).toMatch(/MG_TEST_NOT_SET.*not set/);
      expect((err as MeshguardError).hint).toMatch(/MG_TEST_NOT_SET=postgres:\/\//);
    });

    it("a wrong password fails to open, and no message shows the password given", async () => {
      const wrong = `wrong-${randomUUID()}`;
      const url = process.env[ENV]!.replace(encodeURIComponent(server.password), wrong);
      const err = await openStore({ engine: "postgres", url }, { dataDir: "", retention: FULL }).catch((e: unknown) => e);
      expect(isMeshguardError(err, ErrorCode.STORE_FAILED)).toBe(true);
      expect(String(err)).toMatch(/password authentication failed/);
      expect(String(err)).toContain(`postgres://${server.user}:***@127.0.0.1:${server.port}/`);
      expect(String(err)).not.toContain(wrong);
    });

    it("a server that is not there fails to open with STORE_FAILED naming it (no password)", async () => {
      const closed = process.env[ENV]!.replace(`:${server.port}/`, ":1/");
      const err = await openStore({ engine: "postgres", url: closed }, { dataDir: "", retention: FULL }).catch((e: unknown) => e);
      expect(isMeshguardError(err, ErrorCode.STORE_FAILED)).toBe(true);
      expect(String(err)).toMatch(/ECONNREFUSED/);
      expect(String(err)).not.toContain(server.password);
    });
  });

  describe("postgres: schema and migrations", () => {
    it("creates its schema and tables on first use, at the newest version", async () => {
      const schema = `mg_${randomUUID().slice(0, 8)}`;
      await pgStore({ config: { schema } });
      const db = new URL(process.env[ENV]!).pathname.slice(1);
      const tables = (await server.sql<{ t: string }>(db, "SELECT table_name AS t FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1", [schema])).map((r) => r.t);
      expect(tables).toEqual(["buckets", "instances", "logs", "oauth_delegations", "oauth_tokens", "reservations", "schema_version", "sessions"]);
      expect(await server.sql(db, `SELECT version FROM ${schema}.schema_version`)).toEqual([{ version: MIGRATIONS.length }]);
    });

    it("eight instances starting at once on a new schema: one migrates, all open, the schema is created once", async () => {
      const schema = `mg_${randomUUID().slice(0, 8)}`;
      const stores = await Promise.all(Array.from({ length: 8 }, () => pgStore({ config: { schema } })));
      const db = new URL(process.env[ENV]!).pathname.slice(1);
      expect(await server.sql(db, `SELECT version FROM ${schema}.schema_version`)).toEqual([{ version: MIGRATIONS.length }]);
      // And they share it: a record one writes, another reads.
      const rec = record(uniqueUser(), Date.now());
      stores[0]!.appendLog(rec);
      await stores[0]!.flush();
      expect(await stores[7]!.getLog(rec.id)).toEqual(rec);
    });

    it("refuses a schema holding other tables, and leaves it as it was", async () => {
      const db = new URL(process.env[ENV]!).pathname.slice(1);
      await server.sql(db, "CREATE SCHEMA crm; CREATE TABLE crm.customers (name text); INSERT INTO crm.customers VALUES ('x')");
      const err = await pgStore({ config: { schema: "crm" } }).catch((e: unknown) => e);
      expect(isMeshguardError(err, ErrorCode.STORE_FAILED)).toBe(true);
      expect(String(err)).toMatch(/"crm" holds other tables \(customers\)/);
      expect((await server.sql<{ t: string }>(db, "SELECT table_name AS t FROM information_schema.tables WHERE table_schema = 'crm'")).map((r) => r.t)).toEqual(["customers"]);
    });

    it("migrates a version 1 schema: stored records get their model column (one whose meta holds an escaped NUL keeps '' and does not stop the migration)", async () => {
      const schema = `mg_${randomUUID().slice(0, 8)}`;
      const db = new URL(process.env[ENV]!).pathname.slice(1);
      await server.sql(db, `CREATE SCHEMA ${schema}; CREATE TABLE ${schema}.schema_version (version integer NOT NULL); INSERT INTO ${schema}.schema_version VALUES (1);`);
      await server.sql(db, MIGRATIONS[0]!(schema));
      const u = uniqueUser();
      const t = Date.UTC(2026, 0, 1, 10);
      const meta = (model: string) => JSON.stringify({ id: randomUUID(), time: t, model, caller: { user: u } });
      for (const m of [meta("gpt-4o-mini"), meta("bad\u0000model")]) {
        await server.sql(db, `INSERT INTO ${schema}.logs (id, time, "user", node, session_id, input_tokens, output_tokens, cost_usd, meta) VALUES ($1, $2, $3, 'n', 's', 7, 3, 0.5, $4)`, [randomUUID(), t, u, m]);
      }
      const s = await pgStore({ config: { schema } });
      expect(await server.sql(db, `SELECT version FROM ${schema}.schema_version`)).toEqual([{ version: MIGRATIONS.length }]);
      expect(await s.usage!({ since: Date.UTC(2026, 0, 1), until: Date.UTC(2026, 0, 2), bucket: "day", by: "model", user: u })).toEqual([
        { start: Date.UTC(2026, 0, 1), key: "", requests: 1, inputTokens: 7, outputTokens: 3, costUsd: 0.5 },
        { start: Date.UTC(2026, 0, 1), key: "gpt-4o-mini", requests: 1, inputTokens: 7, outputTokens: 3, costUsd: 0.5 },
      ]);
    });

    it("refuses a schema a newer meshguard wrote", async () => {
      const schema = `mg_${randomUUID().slice(0, 8)}`;
      await (await pgStore({ config: { schema } })).close();
      const db = new URL(process.env[ENV]!).pathname.slice(1);
      await server.sql(db, `UPDATE ${schema}.schema_version SET version = ${MIGRATIONS.length + 1}`);
      const err = await pgStore({ config: { schema } }).catch((e: unknown) => e);
      expect(isMeshguardError(err, ErrorCode.STORE_FAILED)).toBe(true);
      expect(String(err)).toMatch(/newer meshguard/);
    });
  });

  describe("postgres: records", () => {
    it("a body, a session id and a user holding NUL (which PostgreSQL text cannot) are stored, read back and found by filter", async () => {
      const s = await pgStore();
      const u = `${uniqueUser()}\u0000x`;
      const rec = record(u, Date.now(), { sessionId: "s\u0000nul", requestBody: "a\u0000b", responseBody: "\u0000", reason: "why\u0000" });
      s.appendLog(rec);
      await s.flush();
      expect(await s.getLog(rec.id)).toEqual(rec);
      expect((await s.queryLogs({ user: u, sessionId: "s\u0000nul" })).records).toEqual([rec]);
      expect((await s.sessions({ user: u })).map((x) => x.requests)).toEqual([1]);
    });

    it("a record the database refuses (an admin's CHECK constraint) is dropped alone and reported; the rest of its batch is stored", async () => {
      const schema = `mg_${randomUUID().slice(0, 8)}`;
      const errors: MeshguardError[] = [];
      const s = await pgStore({ config: { schema }, onError: (e) => errors.push(e) });
      const db = new URL(process.env[ENV]!).pathname.slice(1);
      await server.sql(db, `ALTER TABLE ${schema}.logs ADD CONSTRAINT no_poison CHECK (node <> 'poison')`);
      const u = uniqueUser();
      const recs = Array.from({ length: 5 }, (_, i) => record(u, Date.now() + i, i === 2 ? { caller: { node: "poison", user: u, tags: [], addr: "100.64.0.1", via: "tailnet" } } : {}));
      for (const r of recs) s.appendLog(r);
      await s.flush();
      expect((await s.queryLogs({ user: u })).records.map((r) => r.id).sort()).toEqual(recs.filter((_, i) => i !== 2).map((r) => r.id).sort());
      expect(errors.map((e) => e.message).join("\n")).toMatch(new RegExp(`log record ${recs[2]!.id} was refused by the database and dropped.*no_poison`));
      // Not retried for ever: a later flush has nothing left to write.
      await s.flush();
      expect(errors).toHaveLength(1);
    });

    it("retention.maxAge: records past it are deleted when the store opens", async () => {
      const schema = `mg_${randomUUID().slice(0, 8)}`;
      const u = uniqueUser();
      const s1 = await pgStore({ config: { schema } });
      const now = Date.now();
      for (const t of [now - 3 * 86_400_000, now - 86_400_000, now]) s1.appendLog(record(u, t));
      await s1.close();
      const s2 = await pgStore({ config: { schema }, retention: { mode: "full", maxAgeMs: 2 * 86_400_000 } });
      const deadline = Date.now() + 5000;
      while ((await s2.queryLogs({ user: u })).records.length > 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      expect((await s2.queryLogs({ user: u })).records.map((r) => r.time)).toEqual([now, now - 86_400_000]);
    });
  });

  describe("postgres: a connection lost in a bucket transaction", () => {
    /** A store whose connections go through a proxy that can drop one answer, with a bucket at level 10. */
    async function throughProxy() {
      const proxy = await startCutProxy(server.port);
      const schema = `mg_${randomUUID().slice(0, 8)}`;
      const url = process.env[ENV]!.replace(`:${server.port}/`, `:${proxy.port}/`);
      const s = await pgStore({ config: { schema, url, urlEnv: undefined } });
      const key = `k-${randomUUID()}`;
      await s.bucketTx([key], () => ({ states: [{ key, level: 10, updatedAt: 1 }], result: undefined }));
      const db = new URL(process.env[ENV]!).pathname.slice(1);
      const stored = async () => ({
        level: (await server.sql<{ level: number }>(db, `SELECT level FROM ${schema}.buckets WHERE key = $1`, [key]))[0]!.level,
        reservations: (await server.sql<{ id: string }>(db, `SELECT id FROM ${schema}.reservations`)).map((r) => r.id),
      });
      return { proxy, schema, s, key, stored };
    }

    it("before COMMIT: the transaction (fn included) runs again on a new connection and is stored once", async () => {
      const { proxy, schema, s, key, stored } = await throughProxy();
      try {
        let runs = 0;
        const cut = proxy.cutAnswerTo(`_${schema}_write`, "SELECT 1");
        const got = await s.bucketTx([key], (m) => {
          runs++;
          const level = m.get(key)!.level;
          return { states: [{ key, level: level - 1, updatedAt: 2 }], add: { id: "r-1", holds: [{ key, amount: 1 }], time: 2 }, result: level };
        });
        await cut;
        expect(runs).toBe(2);
        expect(got).toBe(10);
        expect(await stored()).toEqual({ level: 9, reservations: ["r-1"] });
      } finally {
        await s.close();
        await proxy.close();
      }
    });

    it("during COMMIT: STORE_FAILED saying the outcome is unknown, fn not run again, the change stored once", async () => {
      const { proxy, s, key, stored } = await throughProxy();
      try {
        let runs = 0;
        const cut = proxy.cutAnswerTo("COMMIT", "COMMIT");
        const err = await s
          .bucketTx([key], (m) => {
            runs++;
            return { states: [{ key, level: m.get(key)!.level - 1, updatedAt: 2 }], add: { id: "r-2", holds: [{ key, amount: 1 }], time: 2 }, result: undefined };
          })
          .catch((e: unknown) => e);
        await cut;
        expect(isMeshguardError(err, ErrorCode.STORE_FAILED)).toBe(true);
        expect(String(err)).toMatch(/during COMMIT, so whether the transaction was stored is unknown/);
        expect(runs).toBe(1);
        expect(await stored()).toEqual({ level: 9, reservations: ["r-2"] });
      } finally {
        await s.close();
        await proxy.close();
      }
    });
  });

  describe("postgres: no credential in the database", () => {
    it("Authorization, x-api-key and provider keys appear in no row (pg_dump) and no byte of the data directory, WAL included", async () => {
      const schema = `mg_${randomUUID().slice(0, 8)}`;
      const providerKey = `sk-proj-${randomUUID().replaceAll("-", "")}`;
      const googleKey = `AIza${randomUUID().replaceAll("-", "")}`;
      const clientKey = `client-${randomUUID()}`;
      const s = await pgStore({ config: { schema }, secrets: [providerKey, googleKey] });
      const u = uniqueUser();
      for (let i = 0; i < 50; i++) {
        s.appendLog(
          record(u, Date.now() + i, {
            requestHeaders: { authorization: `Bearer ${clientKey}`, "x-api-key": clientKey, "x-goog-api-key": googleKey, "x-forwarded-key": providerKey, "content-type": "application/json" },
            requestBody: JSON.stringify({ messages: [{ role: "user", content: `use ${providerKey} and ${googleKey}` }] }),
            responseBody: `{"error":{"message":"Incorrect API key provided: ${providerKey}"}}`,
            reason: `upstream 401: ${providerKey}`,
          }),
        );
      }
      await s.flush();
      const dump = execFileSync(join(server.bin, "pg_dump"), ["--dbname", process.env[ENV]!, "--schema", schema, "--data-only"], { maxBuffer: 64 << 20 }).toString();
      // Not vacuous: the records are in the dump (metadata as text, bodies as bytea, hex-encoded).
      expect(dump.includes("upstream 401: [REDACTED]")).toBe(true);
      expect(dump.includes(Buffer.from("Incorrect API key provided").toString("hex"))).toBe(true);
      for (const secret of [providerKey, googleKey, clientKey]) {
        expect(dump.includes(secret), `${secret} in pg_dump`).toBe(false);
        expect(dump.includes(Buffer.from(secret).toString("hex")), `${secret} (hex) in pg_dump`).toBe(false);
      }
      const db = new URL(process.env[ENV]!).pathname.slice(1);
      await server.sql(db, "CHECKPOINT");
      const files = (dir: string): string[] => readdirSync(dir).flatMap((n) => (statSync(join(dir, n)).isDirectory() ? files(join(dir, n)) : [join(dir, n)]));
      let seen = false;
      for (const f of files(server.dataDir)) {
        const bytes = readFileSync(f);
        seen ||= bytes.includes("Incorrect API key provided");
        for (const secret of [providerKey, googleKey, clientKey]) expect(bytes.includes(secret), `${secret} in ${f}`).toBe(false);
      }
      expect(seen).toBe(true);
    });
  });
});
