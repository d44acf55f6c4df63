/**
 * The PostgreSQL engine of the gateway store: what several gateway
 * instances share (issue 9).
 *
 * - Log records are batched by the LogBatcher SQLite uses too (./batcher.ts)
 *   and written with one multi-row INSERT per flush interval, off the
 *   request path; a record
 *   id is stored at most once, so a batch retried after an unknown outcome
 *   never logs a request twice (./postgres-logs.ts).
 * - Bucket transactions run under row locks taken in key order
 *   (./postgres-buckets.ts): atomic across every instance on the database.
 * - Each instance registers itself and keeps a heartbeat; the reservations
 *   it adds name it, and recoverableReservations() returns only those of
 *   instances that are gone (./postgres-instances.ts).
 * - Retention, redaction and secret scrubbing are the shared record.ts and
 *   retention.ts, exactly as for SQLite.
 * - Everything runs on a pool of connections: no database work blocks the
 *   event loop.
 */
import { randomUUID } from "node:crypto";
import type { Pool } from "pg";
import { ErrorCode, MeshguardError } from "../../errors.js";
import type { BucketState, GatewayStore, LogQuery, LogRecord, Reservation, Retention, SessionSummary, UsageQuery, UsageRow } from "../types.js";
import type { OAuthTokenStore } from "../credentials/token-store.js";
import { LogBatcher } from "./batcher.js";
import { BucketTx, type TxFn } from "./postgres-buckets.js";
import { InstanceRegistry, toReservation } from "./postgres-instances.js";
import * as logs from "./postgres-logs.js";
import { checkout, createPool, isConnectionFailure, pgError, release, type PgTarget } from "./postgres-pool.js";
import { ident, migrate } from "./postgres-schema.js";
import { prepareSecrets, type LogRow } from "./record.js";
import { SqlTokenStore } from "./oauth-tokens.js";
import { startPruning, type OnPruned } from "./retention.js";

export interface PostgresStoreOptions {
  target: PgTarget;
  /** The PostgreSQL schema holding the tables. */
  schema: string;
  poolSize: number;
  /** synchronous_commit for this store's connections; undefined: the server's. */
  synchronousCommit?: "on" | "off" | undefined;
  /** How long this instance may go without a heartbeat before others take it for gone. */
  instanceTimeoutMs: number;
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

/** Rows deleted per statement by prune, so a large prune never holds locks long. */
const PRUNE_CHUNK = 5_000;

export class PostgresStore implements GatewayStore {
  readonly #pool: Pool;
  readonly #o: PostgresStoreOptions;
  readonly #s: string;
  readonly #batcher: LogBatcher;
  readonly #tx: BucketTx;
  readonly #instance: InstanceRegistry;
  readonly #stopPruning: () => void;
  #closed = false;
  #closing: Promise<void> | undefined;

  readonly #life: { closing: boolean };
  /** Connectors' per-user OAuth tokens, sealed (./oauth-tokens.ts). */
  readonly oauthTokens: OAuthTokenStore;

  private constructor(pool: Pool, o: PostgresStoreOptions, instance: InstanceRegistry, life: { closing: boolean }) {
    this.#pool = pool;
    this.#life = life;
    this.#o = o;
    this.#s = ident(o.schema);
    this.oauthTokens = new SqlTokenStore(
      (sql, params) =>
        this.#read(async () => {
          let n = 0;
          const r = await pool.query(sql.replace(/\?/g, () => `$${++n}`), params);
          return { rows: r.rows as Record<string, unknown>[], changes: r.rowCount ?? 0 };
        }, "could not read or write OAuth tokens"),
      `${this.#s}.`,
    );
    this.#instance = instance;
    this.#tx = new BucketTx(pool, this.#s, instance.id, (err) => this.#error(err, "could not run a bucket transaction"));
    this.#batcher = new LogBatcher({
      intervalMs: o.flushIntervalMs,
      retention: o.retention,
      secrets: prepareSecrets(o.secrets),
      write: (rows) => this.#writeBatch(rows),
      onError: o.onError,
      ...(o.maxPending === undefined ? {} : { maxPending: o.maxPending }),
    });
    instance.start((err) => o.onError(this.#error(err, "could not refresh this gateway instance's heartbeat (other instances may take it for gone)")));
    this.#stopPruning = startPruning(this, o.retention, o.onError, o.pruneEveryMs, o.onPruned);
  }

  /** open connects, brings the schema to the newest version (one instance at a time) and registers this instance. */
  static async open(o: PostgresStoreOptions): Promise<PostgresStore> {
    // A connection's error while the pool ends (the server stopping just after close) is no news.
    const life = { closing: false };
    const pool = createPool(o.target, o.poolSize, o.synchronousCommit, (err) => {
      if (!life.closing) o.onError(pgError(err, "a pooled PostgreSQL connection failed while idle", o.target));
    });
    const instance = new InstanceRegistry(pool, ident(o.schema), randomUUID(), o.instanceTimeoutMs);
    try {
      const client = await checkout(pool);
      let failure: unknown;
      try {
        await migrate(client, o.schema);
      } catch (err) {
        failure = err;
        throw err;
      } finally {
        release(client, failure);
      }
      await instance.beat();
    } catch (err) {
      await pool.end().catch(() => {});
      throw pgError(err, `could not open the gateway store in schema "${o.schema}"`, o.target);
    }
    return new PostgresStore(pool, o, instance, life);
  }

  /** This instance's id, as its reservations and the instances table name it. */
  get instanceId(): string {
    return this.#instance.id;
  }

  /** Queues `rec`; never throws and never waits (the request path calls it). */
  appendLog(rec: LogRecord): void {
    this.#batcher.append(rec);
  }

  flush(): Promise<void> {
    return this.#batcher.flush();
  }

  queryLogs(q: LogQuery): Promise<{ records: LogRecord[]; next?: string }> {
    return this.#read(() => logs.queryLogs(this.#pool, this.#s, q), "could not read log records");
  }

  getLog(id: string): Promise<LogRecord | undefined> {
    return this.#read(() => logs.getLog(this.#pool, this.#s, id), "could not read a log record");
  }

  sessions(q: Omit<LogQuery, "sessionId">): Promise<SessionSummary[]> {
    return this.#read(() => logs.sessions(this.#pool, this.#s, q), "could not read sessions");
  }

  usage(q: UsageQuery): Promise<UsageRow[]> {
    return this.#read(() => logs.usage(this.#pool, this.#s, q), "could not sum usage");
  }

  async prune(before: number): Promise<number> {
    this.#open();
    let total = 0;
    for (;;) {
      let n: number;
      try {
        n = await logs.pruneChunk(this.#pool, this.#s, before, PRUNE_CHUNK);
      } catch (err) {
        // A prune cut short by close() is no failure worth a warning.
        if (this.#closed) return total;
        throw this.#error(err, "could not delete old log records");
      }
      total += n;
      if (n < PRUNE_CHUNK || this.#closed) return total;
    }
  }

  async bucketTx<T>(keys: string[], fn: TxFn<T>): Promise<T> {
    this.#open();
    return await this.#tx.run(keys, fn);
  }

  /** Every unsettled reservation, of every instance (what the quota API shows as held). */
  reservations(): Promise<Reservation[]> {
    return this.#read(async () => {
      const { rows } = await this.#pool.query<{ id: string; time: number; holds: string }>(`SELECT id, time, holds FROM ${this.#s}.reservations ORDER BY time, id`);
      return rows.map(toReservation);
    }, "could not read reservations");
  }

  /** The unsettled reservations of instances that are gone (see ./postgres-instances.ts): what the quota manager's recover() may take. */
  recoverableReservations(): Promise<Reservation[]> {
    return this.#read(() => this.#instance.recoverable(), "could not read the reservations of gone gateway instances");
  }

  /**
   * One statement, so atomic across instances: the row of `key` is locked by
   * the upsert, and its session continues when its last request is within
   * the gap of `time` (a request older than the last one, from a concurrent
   * call, continues it too).
   */
  assignSession(key: string, time: number, idleGapMs: number, newId: string): Promise<string> {
    return this.#read(async () => {
      const { rows } = await this.#pool.query<{ id: string }>(
        `INSERT INTO ${this.#s}.sessions AS o (caller, id, last) VALUES ($1, $2, $3)
         ON CONFLICT (caller) DO UPDATE SET
           id = CASE WHEN excluded.last - o.last > $4 THEN excluded.id ELSE o.id END,
           last = greatest(o.last, excluded.last)
         RETURNING id`,
        [key, newId, Math.trunc(time), Math.trunc(idleGapMs)],
      );
      return rows[0]!.id;
    }, "could not assign a session");
  }

  forgetSessions(before: number): Promise<number> {
    return this.#read(async () => (await this.#pool.query(`DELETE FROM ${this.#s}.sessions WHERE last < $1`, [Math.trunc(before)])).rowCount ?? 0, "could not forget idle sessions");
  }

  listBuckets(): Promise<BucketState[]> {
    return this.#read(async () => {
      const { rows } = await this.#pool.query<{ key: string; level: number; updated_at: number }>(
        `SELECT key, level, updated_at FROM ${this.#s}.buckets WHERE level IS NOT NULL ORDER BY key COLLATE "C"`,
      );
      return rows.map((r) => ({ key: r.key, level: r.level, updatedAt: r.updated_at }));
    }, "could not read bucket states");
  }

  close(): Promise<void> {
    return (this.#closing ??= this.#close());
  }

  async #close(): Promise<void> {
    this.#stopPruning();
    this.#instance.stop();
    await this.#batcher.close();
    this.#closed = true;
    try {
      await this.#instance.unregister();
    } catch (err) {
      this.#o.onError(this.#error(err, "closing: could not remove this instance's row (its open reservations become recoverable after its timeout instead of at once)"));
    }
    this.#life.closing = true;
    await this.#pool.end().catch(() => {});
  }

  /**
   * Writes one batch in one statement; all or nothing. When the server
   * refuses the batch for its data (not for a broken connection), the rows
   * are written one by one and a row refused alone is dropped and reported:
   * one bad record must not hold up every later batch.
   */
  async #writeBatch(rows: LogRow[]): Promise<void> {
    try {
      await this.#insert(rows);
      return;
    } catch (err) {
      if (isConnectionFailure(err)) throw this.#error(err, `could not write ${rows.length} log record(s)`);
    }
    // Rows already written by the loop before a connection failure are skipped when the batch is tried again (ON CONFLICT).
    for (const row of rows) {
      try {
        await this.#insert([row]);
      } catch (err) {
        if (isConnectionFailure(err)) throw this.#error(err, `could not write ${rows.length} log record(s)`);
        this.#o.onError(this.#error(err, `log record ${row.id} was refused by the database and dropped`));
      }
    }
  }

  /** Inserts `rows`, one statement per MAX_ROWS_PER_INSERT (each safe to run again: ON CONFLICT). */
  async #insert(rows: LogRow[]): Promise<void> {
    for (let i = 0; i < rows.length; i += logs.MAX_ROWS_PER_INSERT) {
      await this.#pool.query(logs.insertLogs(this.#s, rows.slice(i, i + logs.MAX_ROWS_PER_INSERT)));
    }
  }

  async #read<R>(f: () => Promise<R>, what: string): Promise<R> {
    this.#open();
    try {
      return await f();
    } catch (err) {
      throw this.#error(err, what);
    }
  }

  #error(err: unknown, what: string): MeshguardError {
    return pgError(err, what, this.#o.target);
  }

  #open(): void {
    if (this.#closed) throw new MeshguardError(ErrorCode.CLOSED, "the gateway store is closed");
  }
}
