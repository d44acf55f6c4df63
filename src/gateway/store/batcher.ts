/**
 * LogBatcher is the log path of every store engine (SQLite, PostgreSQL):
 * `append` turns the record into its stored row at once (retention
 * applied, provider keys scrubbed: ./record.ts) and queues it, so it never
 * waits; a timer writes everything queued in one batch per flush interval
 * (so a crash loses at most one interval), and a batch goes out sooner once
 * `batchSize` rows wait. The engine only writes rows.
 *
 * Why rows at append and small batches (measured, bench/gateway at one
 * client): a batch is handed to the engine on the event loop (the SQLite
 * worker's postMessage copies it; PostgreSQL encodes it). Making 300 rows
 * and handing them over at once held the loop 1-2 ms every interval, and
 * the request that arrived meanwhile waited that long; the records kept
 * for 100 ms also made every young-generation GC copy them. Made one at a
 * time after each answer, a row costs a few microseconds, and a hand-off
 * of at most `batchSize` rows (a few hundred) a few tenths of a millisecond.
 *
 * A failed write keeps the rows for the next try, at most once a second, up
 * to `maxPending`; past that the oldest are dropped and counted (memory
 * must not grow without bound while a disk is full or the database is
 * away).
 *
 * Invariants: batches are written one at a time, in append order; `flush()`
 * resolves once every record appended before the call is written (or
 * rejects with the write error, the rows kept); `close()` writes
 * everything appended before it returns, and reports what it could not
 * write; nothing appended after close is kept; retention "none" keeps
 * nothing.
 */
import { ErrorCode, MeshguardError } from "../../errors.js";
import type { LogRecord, Retention } from "../types.js";
import { toRow, type LogRow, type Secrets } from "./record.js";

/** The least time between retries of a failed write (a failing disk is not hammered every 100 ms). */
const RETRY_MS = 1_000;

export interface LogBatcherOptions {
  intervalMs: number;
  retention: Retention;
  /** Provider keys: removed from every field of every record before it is written. */
  secrets: Secrets;
  /** Writes one batch of rows durably (all or nothing); throws (or rejects) when it could not. Never called with no rows. */
  write(rows: LogRow[]): void | Promise<void>;
  /** Told about write failures, dropped and lost records. */
  onError(err: MeshguardError): void;
  /** Records kept in memory while writes fail; default 100,000. */
  maxPending?: number;
  /** Most records per batch (one transaction); default 5,000. */
  maxBatch?: number;
  /**
   * Rows waiting that make a batch go out before the interval ends; default
   * 256. Smaller batches are shorter hand-offs but more transactions: at 64
   * the SQLite worker spent three times the CPU per request (each commit
   * writes the index pages it touched to the WAL again).
   */
  batchSize?: number;
}

export class LogBatcher {
  readonly #o: Required<LogBatcherOptions>;
  #pending: LogRow[] = [];
  #timer: NodeJS.Timeout | undefined;
  /** An early batch is scheduled (setImmediate): `batchSize` rows were waiting. */
  #soon: NodeJS.Immediate | undefined;
  /** The tail of the chain of batch writes: each waits for the one before. */
  #chain: Promise<void> = Promise.resolve();
  #dropped = 0;
  /** The last write failed: batches wait for the retry timer, not for `batchSize` rows. */
  #failing = false;
  #stopped = false;
  #closed = false;
  #closing: Promise<void> | undefined;

  constructor(o: LogBatcherOptions) {
    this.#o = { maxPending: 100_000, maxBatch: 5_000, batchSize: 256, ...o };
  }

  /** Records waiting to be written. */
  get pending(): number {
    return this.#pending.length;
  }

  /** Records dropped so far because more than maxPending were waiting. */
  get dropped(): number {
    return this.#dropped;
  }

  /**
   * Makes `rec` into its row and queues it; never throws and never waits
   * (the request path calls it). Ignored once closed, and under retention
   * "none". A record that cannot be made into a row is dropped alone and
   * reported, so it can never make a batch fail again and again.
   */
  append(rec: LogRecord): void {
    if (this.#closed || this.#o.retention.mode === "none") return;
    try {
      let row: LogRow | undefined;
      try {
        row = toRow(rec, this.#o.retention, this.#o.secrets);
      } catch (err) {
        this.#o.onError(asStoreError(err, "a log record could not be stored and was dropped"));
        return;
      }
      if (row === undefined) return;
      this.#pending.push(row);
      if (this.#pending.length > this.#o.maxPending) this.#drop(this.#pending.length - this.#o.maxPending);
      if (this.#pending.length >= this.#o.batchSize && !this.#stopped && !this.#failing) this.#flushSoon();
      else this.#schedule(this.#o.intervalMs);
    } catch {
      // only onError can throw here; the request must not see it.
    }
  }

  /** Writes everything pending now; rejects with the write error when a batch fails (a retry is then scheduled). Resolves at once when closed. */
  flush(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#cancel();
    const done = (this.#chain = this.#chain.then(() => this.#drain()));
    // A failure is the caller's to handle, not also an unhandled rejection
    // of the chain; what it left pending is tried again later.
    this.#chain = done.catch(() => {
      if (!this.#stopped && this.#pending.length > 0) this.#schedule(Math.max(this.#o.intervalMs, RETRY_MS));
    });
    return done;
  }

  /**
   * Stops the timer and writes everything pending, once (later calls return
   * the same promise); never rejects: what cannot be written is reported
   * through onError as lost. Records appended while it writes are written
   * too; after it resolves, nothing more is kept.
   */
  close(): Promise<void> {
    return (this.#closing ??= this.#close());
  }

  async #close(): Promise<void> {
    this.#stopped = true;
    this.#cancel();
    // At least once (a flush waits for a batch a timer is writing), then
    // until nothing is pending: a record appended meanwhile is written too.
    do {
      try {
        await this.flush();
      } catch (err) {
        const why = err instanceof Error ? err.message : String(err);
        this.#o.onError(new MeshguardError(ErrorCode.STORE_FAILED, `closing: ${this.#pending.length} log record(s) could not be written and are lost: ${why}`, { cause: err }));
        break;
      }
    } while (this.#pending.length > 0);
    this.#closed = true;
    this.#pending = [];
  }

  /** Writes a batch after the I/O callbacks of this loop turn (the answer that appended the row has gone out). */
  #flushSoon(): void {
    if (this.#soon !== undefined) return;
    this.#soon = setImmediate(() => {
      this.#soon = undefined;
      // A batch still being written takes this one's turn: its successor takes all that waits then.
      this.flush().catch((err: unknown) => this.#o.onError(asStoreError(err, "could not write log records; they are kept and retried")));
    });
    this.#soon.unref();
  }

  #schedule(ms: number): void {
    if (this.#timer !== undefined || this.#stopped) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.flush().catch((err: unknown) => this.#o.onError(asStoreError(err, "could not write log records; they are kept and retried")));
    }, ms);
    this.#timer.unref();
  }

  #cancel(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#soon !== undefined) clearImmediate(this.#soon);
    this.#soon = undefined;
  }

  async #drain(): Promise<void> {
    while (this.#pending.length > 0) {
      const rows = this.#pending.splice(0, this.#o.maxBatch);
      try {
        await this.#o.write(rows);
        this.#failing = false;
      } catch (err) {
        this.#failing = true;
        this.#pending.unshift(...rows);
        if (this.#pending.length > this.#o.maxPending) this.#drop(this.#pending.length - this.#o.maxPending);
        throw err;
      }
    }
  }

  #drop(n: number): void {
    this.#pending.splice(0, n);
    this.#dropped += n;
    this.#o.onError(new MeshguardError(ErrorCode.STORE_FAILED, `dropped ${n} log record(s) (${this.#dropped} in all): more than ${this.#o.maxPending} were waiting for a store that fails to write`));
  }
}

/** asStoreError wraps a failure of an engine as STORE_FAILED (a MeshguardError passes unchanged). */
export function asStoreError(err: unknown, message: string): MeshguardError {
  if (err instanceof MeshguardError) return err;
  const detail = err instanceof Error ? err.message : String(err);
  return new MeshguardError(ErrorCode.STORE_FAILED, `${message}: ${detail}`, { cause: err });
}
