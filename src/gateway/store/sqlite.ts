/**
 * The SQLite engine of the gateway store (node:sqlite, one file, WAL).
 *
 * - Log records are batched by a LogBatcher and written one transaction per
 *   flush interval; appendLog only queues.
 * - Bucket transactions run `fn` between BEGIN IMMEDIATE and COMMIT: the
 *   write lock is taken before the states are read, so no other connection
 *   (another gateway process on the same file) can change them in between.
 *   Within this process the connection is synchronous, so nothing else runs
 *   between the read and the write either.
 * - WAL with synchronous=NORMAL: a committed transaction survives the
 *   process being killed (it is in the WAL, handed to the OS); an OS crash
 *   or power loss may lose the last transactions, never corrupt the file.
 *
 * The connection is synchronous: statements run on the main thread. They
 * are short (indexed reads, one insert per record in a batch), and the
 * request path itself never waits for one (see bench/gateway-store.mjs).
 */
import { DatabaseSync, type StatementSync } from "node:sqlite";
import { ErrorCode, MeshguardError } from "../../errors.js";
import type { BucketState, GatewayStore, LogQuery, LogRecord, Reservation, Retention, SessionSummary } from "../types.js";
import { LogBatcher, asStoreError } from "./batcher.js";
import { decodeCursor, encodeCursor } from "./cursor.js";
import { fromRow, toRow } from "./record.js";
import { startPruning } from "./retention.js";
import { migrate } from "./sqlite-schema.js";

export interface SqliteStoreOptions {
  /** The database file, or ":memory:". */
  path: string;
  retention: Retention;
  flushIntervalMs: number;
  /** Provider keys: removed from every field of every record before it is stored. */
  secrets: readonly string[];
  onError(err: MeshguardError): void;
  maxPending?: number;
}

/** Rows deleted per statement by prune, so a large prune never holds the write lock long. */
const PRUNE_CHUNK = 5_000;
export const DEFAULT_LIMIT = 100;
export const MAX_LIMIT = 1_000;

interface LogRowOut {
  seq: number;
  time: number;
  meta: string;
  request_headers: string | null;
  request_body: string | null;
  response_body: string | null;
}

export class SqliteStore implements GatewayStore {
  readonly #db: DatabaseSync;
  readonly #o: SqliteStoreOptions;
  readonly #batcher: LogBatcher;
  readonly #stmts = new Map<string, StatementSync>();
  readonly #stopPruning: () => void;
  #closed = false;
  #closing: Promise<void> | undefined;

  private constructor(db: DatabaseSync, o: SqliteStoreOptions) {
    this.#db = db;
    this.#o = o;
    this.#batcher = new LogBatcher({
      intervalMs: o.flushIntervalMs,
      write: (batch) => this.#writeBatch(batch),
      onError: o.onError,
      ...(o.maxPending === undefined ? {} : { maxPending: o.maxPending }),
    });
    this.#stopPruning = startPruning(this, o.retention, o.onError);
  }

  /** open opens (creating and migrating if needed) the database at `o.path`. */
  static open(o: SqliteStoreOptions): SqliteStore {
    let db: DatabaseSync | undefined;
    try {
      db = new DatabaseSync(o.path, { timeout: 5_000 });
      db.exec("PRAGMA journal_mode = WAL");
      db.exec("PRAGMA synchronous = NORMAL");
      migrate(db, o.path);
      return new SqliteStore(db, o);
    } catch (err) {
      try {
        db?.close();
      } catch {
        // the open error is the one to report
      }
      throw asStoreError(err, `could not open the gateway store ${o.path}`);
    }
  }

  appendLog(rec: LogRecord): void {
    if (this.#closed || this.#o.retention.mode === "none") return;
    this.#batcher.push(rec);
  }

  flush(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    return this.#batcher.flush();
  }

  async queryLogs(q: LogQuery): Promise<{ records: LogRecord[]; next?: string }> {
    this.#open();
    const limit = clampLimit(q.limit);
    const { where, params } = filters(q);
    if (q.before !== undefined) {
      const p = decodeCursor(q.before);
      where.push("(time < ? OR (time = ? AND seq < ?))");
      params.push(p.time, p.time, p.seq);
    }
    const sql = `SELECT seq, time, meta, request_headers, request_body, response_body FROM logs ${whereSql(where)} ORDER BY time DESC, seq DESC LIMIT ?`;
    const rows = this.#run(() => this.#stmt(sql).all(...params, limit + 1) as unknown as LogRowOut[], "could not read log records");
    const page = rows.slice(0, limit);
    const records = page.map(rowToRecord);
    const last = page.at(-1);
    return rows.length > limit && last ? { records, next: encodeCursor({ time: last.time, seq: last.seq }) } : { records };
  }

  async getLog(id: string): Promise<LogRecord | undefined> {
    this.#open();
    const row = this.#run(
      () => this.#stmt("SELECT seq, time, meta, request_headers, request_body, response_body FROM logs WHERE id = ?").get(id) as LogRowOut | undefined,
      "could not read a log record",
    );
    return row && rowToRecord(row);
  }

  async sessions(q: Omit<LogQuery, "sessionId">): Promise<SessionSummary[]> {
    this.#open();
    const { where, params } = filters(q);
    const sql = `SELECT session_id AS id, user, node, min(time) AS firstTime, max(time) AS lastTime, count(*) AS requests,
      sum(input_tokens) AS inputTokens, sum(output_tokens) AS outputTokens, sum(cost_usd) AS costUsd
      FROM logs ${whereSql(where)} GROUP BY session_id ORDER BY lastTime DESC, id LIMIT ?`;
    const rows = this.#run(() => this.#stmt(sql).all(...params, clampLimit(q.limit)), "could not read sessions");
    return rows.map((r) => ({ ...(r as unknown as SessionSummary) }));
  }

  async prune(before: number): Promise<number> {
    this.#open();
    let total = 0;
    for (;;) {
      const n = this.#run(
        () => Number(this.#stmt("DELETE FROM logs WHERE seq IN (SELECT seq FROM logs WHERE time < ? LIMIT ?)").run(before, PRUNE_CHUNK).changes),
        "could not delete old log records",
      );
      total += n;
      if (n < PRUNE_CHUNK) return total;
      // Let requests run between chunks.
      await new Promise((r) => setImmediate(r));
      if (this.#closed) return total;
    }
  }

  async bucketTx<T>(
    keys: string[],
    fn: (states: Map<string, BucketState>) => { states: BucketState[]; add?: Reservation; remove?: string; result: T },
  ): Promise<T> {
    this.#open();
    const db = this.#db;
    this.#run(() => db.exec("BEGIN IMMEDIATE"), "could not start a bucket transaction");
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
    const rows = this.#run(() => this.#stmt("SELECT id, time, holds FROM reservations ORDER BY time, id").all(), "could not read reservations") as unknown as {
      id: string;
      time: number;
      holds: string;
    }[];
    return rows.map((r) => ({ id: r.id, time: r.time, holds: JSON.parse(r.holds) as Reservation["holds"] }));
  }

  close(): Promise<void> {
    return (this.#closing ??= this.#close());
  }

  async #close(): Promise<void> {
    this.#stopPruning();
    this.#batcher.stop();
    try {
      await this.#batcher.flush();
    } catch (err) {
      this.#o.onError(asStoreError(err, `closing: ${this.#batcher.pending} log record(s) could not be written and are lost`));
    }
    this.#closed = true;
    this.#stmts.clear();
    this.#db.close();
  }

  /** Writes one batch in one transaction; all or nothing. */
  #writeBatch(batch: LogRecord[]): void {
    const insert = this.#stmt(
      `INSERT OR IGNORE INTO logs (id, time, user, node, session_id, input_tokens, output_tokens, cost_usd, meta, request_headers, request_body, response_body)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    );
    const rows = batch.flatMap((rec) => {
      const row = toRow(rec, this.#o.retention, this.#o.secrets);
      return row ? [row] : [];
    });
    if (rows.length === 0) return;
    this.#db.exec("BEGIN IMMEDIATE");
    try {
      for (const r of rows) {
        insert.run(r.id, r.time, r.user, r.node, r.sessionId, r.inputTokens, r.outputTokens, r.costUsd, r.meta, r.requestHeaders, r.requestBody, r.responseBody);
      }
      this.#db.exec("COMMIT");
    } catch (err) {
      this.#db.exec("ROLLBACK");
      throw asStoreError(err, `could not write ${rows.length} log record(s)`);
    }
  }

  #stmt(sql: string): StatementSync {
    let s = this.#stmts.get(sql);
    if (!s) this.#stmts.set(sql, (s = this.#db.prepare(sql)));
    return s;
  }

  #run<R>(f: () => R, what: string): R {
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

function rowToRecord(r: LogRowOut): LogRecord {
  return fromRow({ meta: r.meta, requestHeaders: r.request_headers, requestBody: r.request_body, responseBody: r.response_body });
}

function clampLimit(limit: number | undefined): number {
  if (limit === undefined) return DEFAULT_LIMIT;
  return Math.max(1, Math.min(MAX_LIMIT, Math.floor(limit)));
}

/** The WHERE terms every log query shares. `since` is inclusive, `until` exclusive. */
function filters(q: Omit<LogQuery, "before" | "limit">): { where: string[]; params: (string | number)[] } {
  const where: string[] = [];
  const params: (string | number)[] = [];
  if (q.user !== undefined) (where.push("user = ?"), params.push(q.user));
  if (q.node !== undefined) (where.push("node = ?"), params.push(q.node));
  if (q.sessionId !== undefined) (where.push("session_id = ?"), params.push(q.sessionId));
  if (q.since !== undefined) (where.push("time >= ?"), params.push(q.since));
  if (q.until !== undefined) (where.push("time < ?"), params.push(q.until));
  return { where, params };
}

function whereSql(where: string[]): string {
  return where.length === 0 ? "" : `WHERE ${where.join(" AND ")}`;
}
