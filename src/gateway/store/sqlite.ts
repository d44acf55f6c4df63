/**
 * The SQLite engine of the gateway store (node:sqlite, one file, WAL).
 *
 * - Log records are batched by the LogBatcher PostgreSQL uses too
 *   (./batcher.ts) and written one transaction per flush interval;
 *   appendLog only queues.
 * - Log writes, prunes, checkpoints and reads run on a worker thread with a
 *   connection of its own (./sqlite-thread.ts), so none of them holds up
 *   the event loop; without a worker they run inline on the main
 *   connection.
 * - Bucket transactions run on the main connection, `fn` between BEGIN
 *   IMMEDIATE and COMMIT: the write lock is taken before the states are
 *   read, so no other connection (the worker, another gateway process on
 *   the same file) can change them in between; and the connection is
 *   synchronous, so nothing else of this thread runs in between either.
 * - WAL with synchronous=NORMAL: a committed transaction survives the
 *   process being killed (it is in the WAL, handed to the OS); an OS crash
 *   or power loss may lose the last transactions, never corrupt the file.
 */
import { DatabaseSync, type SQLInputValue, type StatementSync } from "node:sqlite";
import { ErrorCode, MeshguardError } from "../../errors.js";
import type { BucketState, GatewayStore, LogQuery, LogRecord, Reservation, Retention, SessionSummary, UsageQuery, UsageRow } from "../types.js";
import type { OAuthTokenStore } from "../credentials/token-store.js";
import { LogBatcher, asStoreError } from "./batcher.js";
import { decodeCursor, encodeCursor } from "./cursor.js";
import { fromRow, prepareSecrets, type LogRow } from "./record.js";
import { SqlTokenStore } from "./oauth-tokens.js";
import { startPruning, type OnPruned } from "./retention.js";
import { clampLimit, logFilters, usageRows, usageSql, whereSql } from "./query.js";
import { migrate } from "./sqlite-schema.js";
import { inlineRunner, workerRunner, type Row, type SqlRunner } from "./sqlite-thread.js";

export interface SqliteStoreOptions {
  /** The database file, or ":memory:". */
  path: string;
  retention: Retention;
  flushIntervalMs: number;
  /** Provider keys: removed from every field of every record before it is stored. */
  secrets: readonly string[];
  onError(err: MeshguardError): void;
  /** How often retention prunes (default hourly), and who hears what it deleted. */
  pruneEveryMs?: number;
  onPruned?: OnPruned;
  maxPending?: number;
}

/**
 * How long a main-thread statement waits for another connection's write
 * lock. Waiting blocks the event loop, so it is short: the worker holds the
 * lock for one batch insert (well under a millisecond at 300 req/s); a
 * second process on the same file (a second gateway, a sqlite3 shell inside
 * a transaction) stalls this one at most this long. Several gateway
 * instances share state through PostgreSQL, not SQLite.
 */
const BUSY_TIMEOUT_MS = 1_000;

/** Rows deleted per statement by prune, so a large prune never holds the write lock long. */
const PRUNE_CHUNK = 5_000;

const RECORD_COLUMNS = "seq, time, meta, request_headers, request_body, response_body";

export class SqliteStore implements GatewayStore {
  readonly #db: DatabaseSync;
  readonly #o: SqliteStoreOptions;
  readonly #batcher: LogBatcher;
  readonly #stmts = new Map<string, StatementSync>();
  #runner: SqlRunner;
  /** Connectors' per-user OAuth tokens, sealed (./oauth-tokens.ts); on the main connection (a few small rows per consent or renewal). */
  readonly oauthTokens: OAuthTokenStore = new SqlTokenStore(async (sql, params) =>
    this.#sync(() => {
      this.#open();
      const st = this.#stmt(sql);
      if (/^\s*SELECT/i.test(sql)) return { rows: st.all(...params) as Record<string, unknown>[], changes: 0 };
      return { rows: [], changes: Number(st.run(...params).changes) };
    }, "could not read or write OAuth tokens"),
  );
  readonly #stopPruning: () => void;
  #closed = false;
  #closing: Promise<void> | undefined;

  private constructor(db: DatabaseSync, o: SqliteStoreOptions, runner: SqlRunner | undefined) {
    this.#db = db;
    this.#o = o;
    this.#runner = runner ?? inlineRunner(db, (sql) => this.#stmt(sql));
    this.#batcher = new LogBatcher({
      intervalMs: o.flushIntervalMs,
      retention: o.retention,
      secrets: prepareSecrets(o.secrets),
      write: (rows) => this.#writeBatch(rows),
      onError: o.onError,
      ...(o.maxPending === undefined ? {} : { maxPending: o.maxPending }),
    });
    this.#stopPruning = startPruning(this, o.retention, o.onError, o.pruneEveryMs, o.onPruned);
  }

  /** open opens (creating and migrating if needed) the database at `o.path`, and starts its worker. */
  static async open(o: SqliteStoreOptions): Promise<SqliteStore> {
    let db: DatabaseSync | undefined;
    try {
      db = new DatabaseSync(o.path, { timeout: BUSY_TIMEOUT_MS });
      db.exec("PRAGMA journal_mode = WAL");
      db.exec("PRAGMA synchronous = NORMAL");
      migrate(db, o.path);
    } catch (err) {
      try {
        db?.close();
      } catch {
        // the open error is the one to report
      }
      throw asStoreError(err, `could not open the gateway store ${o.path}`);
    }
    let store: SqliteStore | undefined;
    const worker = await workerRunner(o.path, (err) => {
      if (store) store.#runInline(err);
    });
    // With a worker, checkpoints are its job: none on this thread.
    if (worker) db.exec("PRAGMA wal_autocheckpoint = 0");
    store = new SqliteStore(db, o, worker);
    return store;
  }

  /** Where log writes and reads run: "worker" (a thread of their own) or "inline" (the main thread). */
  get runsOn(): SqlRunner["kind"] {
    return this.#runner.kind;
  }

  /** The worker stopped: run everything on this thread from now on, with SQLite's own checkpoints. */
  #runInline(err: Error): void {
    if (this.#closed || this.#runner.kind === "inline") return;
    this.#runner = inlineRunner(this.#db, (sql) => this.#stmt(sql));
    this.#db.exec("PRAGMA wal_autocheckpoint = 1000");
    this.#o.onError(asStoreError(err, "the store's worker thread stopped; logs are now written and read on the main thread"));
  }

  /** Queues `rec`; never throws and never waits (the request path calls it). */
  appendLog(rec: LogRecord): void {
    this.#batcher.append(rec);
  }

  flush(): Promise<void> {
    return this.#batcher.flush();
  }

  async queryLogs(q: LogQuery): Promise<{ records: LogRecord[]; next?: string }> {
    this.#open();
    const limit = clampLimit(q.limit);
    const { where, params } = filters(q);
    if (q.before !== undefined) {
      const p = decodeCursor(q.before);
      // A row value: SQLite walks the (user, time) or (time) index from the cursor on.
      where.push("(time, seq) < (?, ?)");
      params.push(p.time, p.seq);
    }
    const rows = await this.#read(`SELECT ${RECORD_COLUMNS} FROM logs ${whereSql(where)} ORDER BY time DESC, seq DESC LIMIT ?`, [...params, limit + 1], "could not read log records");
    const page = rows.slice(0, limit);
    const records = page.map(rowToRecord);
    const last = page.at(-1);
    return rows.length > limit && last ? { records, next: encodeCursor({ time: Number(last.time), seq: Number(last.seq) }) } : { records };
  }

  async getLog(id: string): Promise<LogRecord | undefined> {
    this.#open();
    const [row] = await this.#read(`SELECT ${RECORD_COLUMNS} FROM logs WHERE id = ?`, [id], "could not read a log record");
    return row && rowToRecord(row);
  }

  async sessions(q: Omit<LogQuery, "sessionId">): Promise<SessionSummary[]> {
    this.#open();
    const { where, params } = filters(q);
    const sql = `SELECT session_id AS id, user, node, min(time) AS firstTime, max(time) AS lastTime, count(*) AS requests,
      sum(input_tokens) AS inputTokens, sum(output_tokens) AS outputTokens, sum(cost_usd) AS costUsd
      FROM logs ${whereSql(where)} GROUP BY session_id ORDER BY lastTime DESC, id LIMIT ?`;
    const rows = await this.#read(sql, [...params, clampLimit(q.limit)], "could not read sessions");
    return rows as unknown as SessionSummary[];
  }

  async usage(q: UsageQuery): Promise<UsageRow[]> {
    this.#open();
    const params: SQLInputValue[] = [];
    const sql = usageSql("logs", q, (v) => (params.push(v), "?"));
    return usageRows(await this.#read(sql, params, "could not sum usage"));
  }

  async prune(before: number): Promise<number> {
    this.#open();
    let total = 0;
    for (;;) {
      let n: number;
      try {
        n = await this.#runner.run("DELETE FROM logs WHERE seq IN (SELECT seq FROM logs WHERE time < ? LIMIT ?)", [before, PRUNE_CHUNK]);
      } catch (err) {
        // A prune cut short by close() is no failure worth a warning.
        if (this.#closed) return total;
        throw asStoreError(err, "could not delete old log records");
      }
      total += n;
      if (n < PRUNE_CHUNK || this.#closed) return total;
      // Inline, let requests run between chunks.
      await new Promise((r) => setImmediate(r));
    }
  }

  async bucketTx<T>(
    keys: string[],
    fn: (states: Map<string, BucketState>) => { states: BucketState[]; add?: Reservation; remove?: string; result: T },
  ): Promise<T> {
    this.#open();
    const db = this.#db;
    this.#sync(() => db.exec("BEGIN IMMEDIATE"), "could not start a bucket transaction");
    let out: ReturnType<typeof fn>;
    try {
      const rows = this.#stmt("SELECT key, level, updated_at FROM buckets WHERE key IN (SELECT value FROM json_each(?))").all(JSON.stringify(keys)) as unknown as {
        key: string;
        level: number;
        updated_at: number;
      }[];
      const states = new Map(rows.map((r) => [r.key, { key: r.key, level: r.level, updatedAt: r.updated_at }]));
      out = fn(states);
    } catch (err) {
      db.exec("ROLLBACK");
      throw err; // fn's own error, or a read failure
    }
    try {
      const put = this.#stmt("INSERT INTO buckets (key, level, updated_at) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE SET level = excluded.level, updated_at = excluded.updated_at");
      for (const s of out.states) put.run(s.key, s.level, s.updatedAt);
      if (out.add) this.#stmt("INSERT INTO reservations (id, time, holds) VALUES (?, ?, ?)").run(out.add.id, out.add.time, JSON.stringify(out.add.holds));
      if (out.remove !== undefined) this.#stmt("DELETE FROM reservations WHERE id = ?").run(out.remove);
      db.exec("COMMIT");
    } catch (err) {
      db.exec("ROLLBACK");
      throw asStoreError(err, "could not store a bucket transaction");
    }
    return out.result;
  }

  async reservations(): Promise<Reservation[]> {
    this.#open();
    const rows = await this.#read("SELECT id, time, holds FROM reservations ORDER BY time, id", [], "could not read reservations");
    return rows.map((r) => ({ id: String(r.id), time: Number(r.time), holds: JSON.parse(String(r.holds)) as Reservation["holds"] }));
  }

  async listBuckets(): Promise<BucketState[]> {
    this.#open();
    const rows = await this.#read("SELECT key, level, updated_at FROM buckets ORDER BY key", [], "could not read bucket states");
    return rows.map((r) => ({ key: String(r.key), level: Number(r.level), updatedAt: Number(r.updated_at) }));
  }

  close(): Promise<void> {
    return (this.#closing ??= this.#close());
  }

  async #close(): Promise<void> {
    this.#stopPruning();
    await this.#batcher.close();
    this.#closed = true;
    await this.#runner.close();
    this.#stmts.clear();
    this.#db.close();
  }

  /** Writes one batch in one transaction; all or nothing. */
  async #writeBatch(rows: LogRow[]): Promise<void> {
    try {
      await this.#runner.writeLogs(rows);
    } catch (err) {
      throw asStoreError(err, `could not write ${rows.length} log record(s)`);
    }
  }

  async #read(sql: string, params: SQLInputValue[], what: string): Promise<Row[]> {
    try {
      return await this.#runner.all(sql, params);
    } catch (err) {
      throw asStoreError(err, what);
    }
  }

  #stmt(sql: string): StatementSync {
    let s = this.#stmts.get(sql);
    if (!s) this.#stmts.set(sql, (s = this.#db.prepare(sql)));
    return s;
  }

  #sync<R>(f: () => R, what: string): R {
    try {
      return f();
    } catch (err) {
      throw asStoreError(err, what);
    }
  }

  #open(): void {
    if (this.#closed) throw new MeshguardError(ErrorCode.CLOSED, "the gateway store is closed");
  }
}

function rowToRecord(r: Row): LogRecord {
  return fromRow({
    meta: String(r.meta),
    requestHeaders: r.request_headers === null ? null : String(r.request_headers),
    requestBody: r.request_body === null ? null : String(r.request_body),
    responseBody: r.response_body === null ? null : String(r.response_body),
  });
}

/** The WHERE terms of `q` with SQLite's "?" placeholders, and their values. */
function filters(q: Omit<LogQuery, "before" | "limit">): { where: string[]; params: SQLInputValue[] } {
  const params: SQLInputValue[] = [];
  const where = logFilters(q, (v) => (params.push(v), "?"));
  return { where, params };
}
