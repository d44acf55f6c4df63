/**
 * LogBatcher keeps log appends off the request path: `push` only queues the
 * record; a timer writes everything queued in one batch per flush interval
 * (so a crash loses at most one interval). A failed write keeps the records
 * for the next try, up to `maxPending`; past that the oldest are dropped and
 * counted (memory must not grow without bound while a disk is full).
 *
 * Invariant: batches are written one at a time, in append order; `flush()`
 * resolves once every record pushed before the call is written (or rejects
 * with the write error, the records kept).
 */
import { ErrorCode, MeshguardError } from "../../errors.js";
import type { LogRecord } from "../types.js";

export interface LogBatcherOptions {
  intervalMs: number;
  /** Writes one batch durably; throws (or rejects) when it could not. */
  write(batch: LogRecord[]): void | Promise<void>;
  /** Told about write failures and dropped records; never throws into the caller. */
  onError(err: MeshguardError): void;
  /** Records kept in memory while writes fail; default 100,000. */
  maxPending?: number;
  /** Most records per batch (one transaction); default 5,000. */
  maxBatch?: number;
}

export class LogBatcher {
  readonly #o: Required<LogBatcherOptions>;
  #pending: LogRecord[] = [];
  #timer: NodeJS.Timeout | undefined;
  /** The tail of the chain of batch writes: each waits for the one before. */
  #chain: Promise<void> = Promise.resolve();
  #dropped = 0;

  constructor(o: LogBatcherOptions) {
    this.#o = { maxPending: 100_000, maxBatch: 5_000, ...o };
  }

  /** Records waiting to be written. */
  get pending(): number {
    return this.#pending.length;
  }

  push(rec: LogRecord): void {
    this.#pending.push(rec);
    if (this.#pending.length > this.#o.maxPending) this.#drop(this.#pending.length - this.#o.maxPending);
    this.#schedule(this.#o.intervalMs);
  }

  /** Writes everything pending now; rejects with the write error when a batch fails. */
  flush(): Promise<void> {
    this.#cancel();
    const done = (this.#chain = this.#chain.then(() => this.#drain()));
    // A failure is the caller's to handle here, not also an unhandled rejection of the chain.
    this.#chain = done.catch(() => {});
    return done;
  }

  /** Stops the timer; pending records stay until flush(). */
  stop(): void {
    this.#cancel();
  }

  #schedule(ms: number): void {
    if (this.#timer !== undefined) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.flush().catch((err: unknown) => {
        this.#o.onError(asStoreError(err, "could not write log records; they are kept and retried"));
        if (this.#pending.length > 0) this.#schedule(Math.max(this.#o.intervalMs, 1000));
      });
    }, ms);
    this.#timer.unref();
  }

  #cancel(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  async #drain(): Promise<void> {
    while (this.#pending.length > 0) {
      const batch = this.#pending.splice(0, this.#o.maxBatch);
      try {
        await this.#o.write(batch);
      } catch (err) {
        this.#pending.unshift(...batch);
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
