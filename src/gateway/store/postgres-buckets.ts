/**
 * Bucket transactions in PostgreSQL, under row locks.
 *
 * One transaction (READ COMMITTED) per call:
 *   1. SELECT ... FOR UPDATE the rows of the keys, ORDER BY key: every
 *      transaction takes its locks in the same (byte) order, so two
 *      transactions over overlapping keys queue rather than deadlock;
 *   2. keys with no row yet get one (INSERT ... ON CONFLICT DO NOTHING, level
 *      NULL: "no state"), then all are locked again — a row another instance
 *      created meanwhile is waited for like any other;
 *   3. fn runs on the locked states; nothing else can change them until
 *      COMMIT (each statement after a lock wait reads the newest version);
 *   4. its states, reservation added or removed, and the removal of any row
 *      created in 2 that fn left without a state, go in one statement;
 *      COMMIT.
 * A deadlock or serialization failure (possible only where rows are
 * created, or with other software holding locks) rolls back and runs the
 * whole thing again, fn included, as the GatewayStore contract allows. A
 * connection that breaks before COMMIT is sent is also retried; one that
 * breaks during COMMIT is not (it may have committed: running fn again could
 * reserve twice), and is reported.
 */
import type { Pool, PoolClient } from "pg";
import type { BucketState, Reservation } from "../types.js";
import { checkout, isConnectionFailure, isRetryable, release } from "./postgres-pool.js";

/** Attempts after a deadlock or serialization failure. */
const MAX_CONFLICT_ATTEMPTS = 20;
/** Attempts after a broken connection (before COMMIT). */
const MAX_CONNECTION_ATTEMPTS = 3;

export type TxFn<T> = (states: Map<string, BucketState>) => { states: BucketState[]; add?: Reservation; remove?: string; result: T };

interface Statement {
  name: string;
  text: string;
}

interface Row {
  key: string;
  level: number | null;
  updated_at: number | null;
}

/** fn threw: its error is the caller's, unwrapped, never retried. */
class FnError {
  readonly err: unknown;
  constructor(err: unknown) {
    this.err = err;
  }
}

export class BucketTx {
  readonly #pool: Pool;
  readonly #lock: Statement;
  readonly #create: Statement;
  readonly #write: Statement;
  readonly #instance: string;
  readonly #wrap: (err: unknown) => Error;

  /** `wrap` turns a failure of the database (not of fn) into the error callers see. */
  constructor(pool: Pool, s: string, instance: string, wrap: (err: unknown) => Error) {
    this.#pool = pool;
    this.#instance = instance;
    this.#wrap = wrap;
    // Named: each connection parses and plans them once (a third of a transaction's time when not).
    const named = (name: string, text: string): Statement => ({ name: `mg_${s.replace(/\W/g, "")}_${name}`, text });
    this.#lock = named("lock", `SELECT key, level, updated_at FROM ${s}.buckets WHERE key = ANY($1::text[]) ORDER BY key COLLATE "C" FOR UPDATE`);
    this.#create = named("create", `INSERT INTO ${s}.buckets (key) SELECT k FROM unnest($1::text[]) AS k ORDER BY k COLLATE "C" ON CONFLICT (key) DO NOTHING`);
    this.#write = named("write", `WITH put AS (
        INSERT INTO ${s}.buckets (key, level, updated_at) SELECT * FROM unnest($1::text[], $2::float8[], $3::float8[])
        ON CONFLICT (key) DO UPDATE SET level = excluded.level, updated_at = excluded.updated_at RETURNING 1
      ), unset AS (
        DELETE FROM ${s}.buckets WHERE key = ANY($4::text[]) AND level IS NULL RETURNING 1
      ), added AS (
        INSERT INTO ${s}.reservations (id, instance, time, holds) SELECT $5, $6, $7, $8 WHERE $5::text IS NOT NULL RETURNING 1
      ), removed AS (
        DELETE FROM ${s}.reservations WHERE id = $9 RETURNING 1
      ) SELECT (SELECT count(*) FROM put) + (SELECT count(*) FROM unset) + (SELECT count(*) FROM added) + (SELECT count(*) FROM removed) AS n`);
  }

  /** run: see the module comment. Rejects with fn's own error, unchanged, when fn throws. */
  async run<T>(keys: string[], fn: TxFn<T>): Promise<T> {
    const unique = [...new Set(keys)];
    for (let conflicts = 0, broken = 0; ; ) {
      let client: PoolClient | undefined;
      let committing = false;
      try {
        client = await checkout(this.#pool);
        const result = await this.#once(client, unique, fn, () => (committing = true));
        release(client);
        return result;
      } catch (err) {
        if (client) await this.#abandon(client, err);
        if (err instanceof FnError) throw err.err;
        if (isRetryable(err) && ++conflicts < MAX_CONFLICT_ATTEMPTS) {
          // Jitter, so the transactions that collided do not collide again.
          await new Promise((r) => setTimeout(r, Math.random() * Math.min(50, 2 ** conflicts)));
          continue;
        }
        if (!isConnectionFailure(err)) throw this.#wrap(err);
        if (committing) {
          throw this.#wrap(new Error(`the connection failed during COMMIT, so whether the transaction was stored is unknown: ${err instanceof Error ? err.message : String(err)}`, { cause: err }));
        }
        if (++broken < MAX_CONNECTION_ATTEMPTS) continue;
        throw this.#wrap(err);
      }
    }
  }

  async #once<T>(client: PoolClient, keys: string[], fn: TxFn<T>, onCommit: () => void): Promise<T> {
    await client.query("BEGIN");
    let rows = (await client.query<Row>({ ...this.#lock, values: [keys] })).rows;
    if (rows.length < keys.length) {
      const have = new Set(rows.map((r) => r.key));
      await client.query({ ...this.#create, values: [keys.filter((k) => !have.has(k))] });
      rows = (await client.query<Row>({ ...this.#lock, values: [keys] })).rows;
    }
    const states = new Map<string, BucketState>();
    for (const r of rows) if (r.level !== null) states.set(r.key, { key: r.key, level: r.level, updatedAt: r.updated_at ?? 0 });
    let out: ReturnType<TxFn<T>>;
    try {
      out = fn(states);
    } catch (err) {
      throw new FnError(err);
    }
    // One row per key, the last state given winning (as a sequence of upserts would).
    const put = new Map(out.states.map((st) => [st.key, st]));
    const unset = rows.filter((r) => r.level === null && !put.has(r.key)).map((r) => r.key);
    // Adding and removing the same reservation leaves none (the statement's parts do not see each other's rows).
    const same = out.add !== undefined && out.add.id === out.remove;
    const add = same ? undefined : out.add;
    const remove = same ? undefined : out.remove;
    const next = [...put.values()];
    const values = [
      next.map((st) => st.key),
      next.map((st) => st.level),
      next.map((st) => st.updatedAt),
      unset,
      add?.id ?? null,
      this.#instance,
      add?.time ?? null,
      add ? JSON.stringify(add.holds) : null,
      remove ?? null,
    ];
    await client.query({ ...this.#write, values });
    onCommit();
    await client.query("COMMIT");
    return out.result;
  }

  /** Ends a failed attempt: rolls back on a connection that still works, destroys one that does not. */
  async #abandon(client: PoolClient, err: unknown): Promise<void> {
    if (err instanceof FnError || !isConnectionFailure(err)) {
      try {
        await client.query("ROLLBACK");
        release(client);
      } catch (rollbackErr) {
        release(client, rollbackErr, true); // a connection that cannot roll back is not reused
      }
      return;
    }
    release(client, err, true);
  }
}
