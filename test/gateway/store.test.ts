// The SQLite store: the conformance suite, then what is SQLite's own (the
// file, its pragmas and schema, write failures, credentials in the bytes).
import { randomUUID } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { getPriority, tmpdir } from "node:os";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { afterAll, describe, expect, it } from "vitest";
import { ErrorCode, isMeshguardError, type MeshguardError } from "../../src/errors.js";
import { openStore } from "../../src/gateway/store/index.js";
import type { SqliteStore } from "../../src/gateway/store/sqlite.js";
import { APPLICATION_ID, MIGRATIONS } from "../../src/gateway/store/sqlite-schema.js";
import type { Retention } from "../../src/gateway/types.js";
import { record, uniqueUser } from "./fixtures-records.js";
import { storeConformance } from "./store-conformance.js";

const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), "mg-store-"));
  dirs.push(d);
  return d;
}
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const FULL: Retention = { mode: "full" };

const shared = tempDir();
storeConformance("sqlite", (o) => openStore({}, { dataDir: shared, retention: o?.retention ?? FULL, ...(o?.secrets ? { secrets: o.secrets } : {}) }));

describe("sqlite: the file", () => {
  it("is <dataDir>/gateway.db by default, in WAL mode, marked as a gateway database at the newest schema version", async () => {
    const dir = tempDir();
    const s = await openStore({}, { dataDir: join(dir, "nested", "data"), retention: FULL });
    s.appendLog(record(uniqueUser(), Date.now()));
    await s.flush();
    const path = join(dir, "nested", "data", "gateway.db");
    expect(existsSync(path)).toBe(true);
    const db = new DatabaseSync(path, { readOnly: true });
    expect(db.prepare("PRAGMA journal_mode").get()).toEqual({ journal_mode: "wal" });
    expect(db.prepare("PRAGMA application_id").get()).toEqual({ application_id: APPLICATION_ID });
    expect(db.prepare("SELECT version FROM schema_version").all()).toEqual([{ version: MIGRATIONS.length }]);
    const indexes = (db.prepare("SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'logs' AND sql IS NOT NULL").all() as { name: string }[]).map((r) => r.name);
    expect(indexes.sort()).toEqual(["logs_model_time", "logs_session", "logs_time", "logs_user_time"]);
    db.close();
    await s.close();
  });

  it("storage.path names the file; a relative one is taken from the data directory", async () => {
    const dir = tempDir();
    const s = await openStore({ path: "logs/gw.sqlite" }, { dataDir: dir, retention: FULL });
    await s.close();
    expect(existsSync(join(dir, "logs", "gw.sqlite"))).toBe(true);
  });

  it("refuses a file that is some other SQLite database, and leaves it as it was", async () => {
    const path = join(tempDir(), "other.db");
    const other = new DatabaseSync(path);
    other.exec("CREATE TABLE customers (name TEXT); INSERT INTO customers VALUES ('x')");
    other.close();
    const err = await openStore({ path }, { dataDir: tempDir(), retention: FULL }).catch((e: unknown) => e);
    expect(isMeshguardError(err, ErrorCode.STORE_FAILED)).toBe(true);
    expect(String((err as Error).message)).toMatch(/not a meshguard gateway database/);
    const db = new DatabaseSync(path, { readOnly: true });
    expect(db.prepare("SELECT name FROM sqlite_schema").all()).toEqual([{ name: "customers" }]);
    db.close();
  });

  it("migrates a version 1 file: the records already stored get their model column, so filters and usage by model find them", async () => {
    const dir = tempDir();
    const path = join(dir, "gateway.db");
    const db = new DatabaseSync(path);
    db.exec(`PRAGMA application_id = ${APPLICATION_ID}; CREATE TABLE schema_version (version INTEGER NOT NULL); INSERT INTO schema_version VALUES (1);`);
    db.exec(MIGRATIONS[0]!);
    const u = uniqueUser();
    const old = record(u, Date.UTC(2026, 0, 1, 10, 30), { model: "gpt-4o-mini", usage: { inputTokens: 7, outputTokens: 3, estimated: false }, costUsd: 0.5 });
    const { requestHeaders: _h, requestBody: _q, responseBody: _a, ...meta } = old;
    db.prepare("INSERT INTO logs (id, time, user, node, session_id, input_tokens, output_tokens, cost_usd, meta) VALUES (?, ?, ?, ?, ?, 7, 3, 0.5, ?)").run(old.id, old.time, u, old.caller.node, old.sessionId, JSON.stringify(meta));
    db.close();
    const s = await openStore({}, { dataDir: dir, retention: FULL });
    expect((await s.queryLogs({ model: "gpt-4o-mini" })).records.map((r) => r.id)).toEqual([old.id]);
    expect(await s.usage!({ since: Date.UTC(2026, 0, 1), until: Date.UTC(2026, 0, 2), bucket: "day", by: "model" })).toEqual([
      { start: Date.UTC(2026, 0, 1), key: "gpt-4o-mini", requests: 1, inputTokens: 7, outputTokens: 3, costUsd: 0.5 },
    ]);
    await s.close();
  });

  it("refuses a database a newer meshguard wrote (a schema version it does not know)", async () => {
    const dir = tempDir();
    await (await openStore({}, { dataDir: dir, retention: FULL })).close();
    const db = new DatabaseSync(join(dir, "gateway.db"));
    db.exec(`UPDATE schema_version SET version = ${MIGRATIONS.length + 1}`);
    db.close();
    const err = await openStore({}, { dataDir: dir, retention: FULL }).catch((e: unknown) => e);
    expect(isMeshguardError(err, ErrorCode.STORE_FAILED)).toBe(true);
    expect(String((err as Error).message)).toMatch(/newer meshguard/);
  });

  it("a bad storage config is INVALID_OPTIONS naming the field", async () => {
    const err = await openStore({ flushIntervalMs: 0 }, { dataDir: tempDir(), retention: FULL }).catch((e: unknown) => e);
    expect(isMeshguardError(err, ErrorCode.INVALID_OPTIONS)).toBe(true);
    expect(String((err as Error).message)).toMatch(/flushIntervalMs: must be more than 0/);
  });
});

describe("sqlite: writes off the request path", () => {
  it("a batch that cannot be written (the database locked by another process) is kept and written once it can be", async () => {
    const dir = tempDir();
    const errors: MeshguardError[] = [];
    const s = await openStore({ flushIntervalMs: 20 }, { dataDir: dir, retention: FULL, onError: (e) => errors.push(e) });
    // Another connection holds the write lock past the store's busy timeout.
    const other = new DatabaseSync(join(dir, "gateway.db"), { timeout: 0 });
    other.exec("BEGIN EXCLUSIVE");
    const u = uniqueUser();
    const recs = Array.from({ length: 10 }, (_, i) => record(u, Date.now() + i));
    for (const r of recs) s.appendLog(r);
    // The background write fails: reported to onError, never thrown at appendLog's caller.
    const deadline = Date.now() + 10_000;
    while (errors.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(errors.map((e) => e.code)).toContain(ErrorCode.STORE_FAILED);
    expect(errors[0]!.message).toMatch(/could not write 10 log record\(s\)/);
    // An explicit flush rejects while the lock is held.
    const failed = await s.flush().catch((e: unknown) => e);
    expect(isMeshguardError(failed, ErrorCode.STORE_FAILED)).toBe(true);
    expect((await s.queryLogs({ user: u })).records).toHaveLength(0);
    other.exec("COMMIT");
    other.close();
    // The kept records are written by the background retry, with no flush() call.
    while ((await s.queryLogs({ user: u })).records.length < 10 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect((await s.queryLogs({ user: u })).records.map((r) => r.id).sort()).toEqual(recs.map((r) => r.id).sort());
    await s.close();
  }, 30_000);

  it("retention.maxAge: records past it are deleted when the store opens", async () => {
    const dir = tempDir();
    const u = uniqueUser();
    const s1 = await openStore({}, { dataDir: dir, retention: FULL });
    const now = Date.now();
    s1.appendLog(record(u, now - 3 * 86_400_000));
    s1.appendLog(record(u, now - 1 * 86_400_000));
    s1.appendLog(record(u, now));
    await s1.close();
    const s2 = await openStore({}, { dataDir: dir, retention: { mode: "full", maxAgeMs: 2 * 86_400_000 } });
    // The prune at open runs in the background; wait for it.
    const deadline = Date.now() + 3000;
    let n = 3;
    while (n > 2 && Date.now() < deadline) {
      n = (await s2.queryLogs({ user: u })).records.length;
      await new Promise((r) => setTimeout(r, 10));
    }
    expect((await s2.queryLogs({ user: u })).records.map((r) => r.time)).toEqual([now, now - 86_400_000]);
    await s2.close();
  });
});

describe("sqlite: no credential in the database file", () => {
  it("Authorization, x-api-key and provider keys appear in no byte of the database or its WAL", async () => {
    const dir = tempDir();
    const providerKey = `sk-proj-${randomUUID().replaceAll("-", "")}`;
    const googleKey = `AIza${randomUUID().replaceAll("-", "")}`;
    const clientKey = `client-${randomUUID()}`;
    const s = await openStore({}, { dataDir: dir, retention: FULL, secrets: [providerKey, googleKey] });
    const u = uniqueUser();
    for (let i = 0; i < 50; i++) {
      s.appendLog(
        record(u, Date.now() + i, {
          requestHeaders: {
            authorization: `Bearer ${clientKey}`,
            "x-api-key": clientKey,
            "x-goog-api-key": googleKey,
            "proxy-authorization": `Basic ${clientKey}`,
            "x-forwarded-key": providerKey,
            "content-type": "application/json",
          },
          requestBody: JSON.stringify({ messages: [{ role: "user", content: `use ${providerKey} and ${googleKey}` }] }),
          responseBody: `{"error":{"message":"Incorrect API key provided: ${providerKey}"}}`,
          reason: `upstream 401: ${providerKey}`,
        }),
      );
    }
    await s.flush();
    const files = () => ["gateway.db", "gateway.db-wal"].filter((f) => existsSync(join(dir, f))).map((f) => [f, readFileSync(join(dir, f))] as const);
    const check = () => {
      const seen = files();
      expect(seen.map(([f]) => f)).toContain("gateway.db");
      // Not vacuous: the records are in the files (the bodies' other words are).
      expect(seen.some(([, b]) => b.includes("Incorrect API key provided"))).toBe(true);
      for (const [f, bytes] of seen) {
        for (const secret of [providerKey, googleKey, clientKey]) expect(bytes.includes(secret), `${secret} in ${f}`).toBe(false);
      }
    };
    check(); // records in the WAL
    await s.close();
    check(); // checkpointed into the main file
  });
});

describe("sqlite: the log writer", () => {
  // Linux only: the nice value is per thread there, and /proc lists the threads.
  it.runIf(process.platform === "linux")("the worker thread runs 10 nicer than the gateway's own thread (its inserts yield to requests)", async () => {
    const niceOfThreads = () => {
      const out = new Map<number, number>();
      for (const tid of readdirSync("/proc/self/task")) {
        try {
          const stat = readFileSync(`/proc/self/task/${tid}/stat`, "utf8");
          // Fields after the command's closing parenthesis: state is field 3, nice field 19.
          out.set(Number(tid), Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[16]));
        } catch {
          // the thread ended meanwhile
        }
      }
      return out;
    };
    const own = getPriority(0);
    const before = niceOfThreads();
    const s = await openStore({}, { dataDir: tempDir(), retention: FULL });
    try {
      expect((s as SqliteStore).runsOn).toBe("worker");
      const fresh = [...niceOfThreads()].filter(([tid]) => !before.has(tid));
      // The worker is the one new thread as nice as this: the others Node started with it keep the process's priority.
      expect(fresh.filter(([, nice]) => nice === Math.min(19, own + 10))).toHaveLength(1);
      expect(niceOfThreads().get(process.pid)).toBe(own);
      // And it still writes.
      const u = uniqueUser();
      s.appendLog(record(u, Date.now()));
      await s.flush();
      expect((await s.queryLogs({ user: u })).records).toHaveLength(1);
    } finally {
      await s.close();
    }
  });

  it('a file database writes log batches on a thread of its own; ":memory:" on the main thread; both store the same', async () => {
    for (const [path, kind] of [[undefined, "worker"], [":memory:", "inline"]] as const) {
      const s = await openStore(path ? { path } : {}, { dataDir: tempDir(), retention: FULL });
      expect((s as SqliteStore).runsOn).toBe(kind);
      const u = uniqueUser();
      const recs = Array.from({ length: 20 }, (_, i) => record(u, Date.now() + i));
      for (const r of recs) s.appendLog(r);
      await s.flush();
      expect((await s.queryLogs({ user: u })).records).toEqual([...recs].reverse());
      await s.close();
    }
  });
});
