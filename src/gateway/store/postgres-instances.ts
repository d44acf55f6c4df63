/**
 * Gateway instances sharing one PostgreSQL store, and which reservations are
 * whose.
 *
 * Each store registers an instance row (a random id, host and pid for
 * people reading the table) and refreshes its heartbeat every third of its
 * timeout; every reservation it adds names it. A reservation is
 * recoverable — its request died with its instance — when its instance's
 * heartbeat is older than that instance's own timeout, or its row is gone
 * (deleted on close: a reservation left then belongs to a request cut off
 * by the shutdown). Times are the database's clock (clock_timestamp()), so
 * the instances' clocks need not agree.
 *
 * A live instance is never recovered from while its heartbeat works. If it
 * stops (a pause or a database outage longer than the timeout), another
 * instance may settle its reservations in full; its own later settle then
 * still refunds what it held beyond the real cost, and finds no reservation
 * to remove: spending is never counted twice or lost, only the refund may
 * come early.
 */
import { hostname } from "node:os";
import type { Pool } from "pg";
import type { Reservation } from "../types.js";

export class InstanceRegistry {
  readonly id: string;
  readonly #pool: Pool;
  readonly #s: string;
  readonly #timeoutMs: number;
  #timer: NodeJS.Timeout | undefined;

  constructor(pool: Pool, s: string, id: string, timeoutMs: number) {
    this.#pool = pool;
    this.#s = s;
    this.id = id;
    this.#timeoutMs = timeoutMs;
  }

  /** Writes this instance's row with a fresh heartbeat (re-creating it if someone deleted it). */
  async beat(): Promise<void> {
    await this.#pool.query(
      `INSERT INTO ${this.#s}.instances (id, host, pid, timeout_ms) VALUES ($1, $2, $3, $4)
       ON CONFLICT (id) DO UPDATE SET heartbeat_at = clock_timestamp(), timeout_ms = excluded.timeout_ms`,
      [this.id, hostname(), process.pid, this.#timeoutMs],
    );
  }

  /** Beats every third of the timeout, so one late or failed beat does not make this instance look gone. */
  start(onError: (err: unknown) => void): void {
    this.#timer = setInterval(() => this.beat().catch(onError), Math.max(100, Math.floor(this.#timeoutMs / 3)));
    this.#timer.unref();
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** Removes this instance's row: its reservations left unsettled become recoverable at once. */
  async unregister(): Promise<void> {
    await this.#pool.query(`DELETE FROM ${this.#s}.instances WHERE id = $1`, [this.id]);
  }

  /** The reservations of instances that are gone, oldest first; also forgets gone instances that hold none. */
  async recoverable(): Promise<Reservation[]> {
    const s = this.#s;
    const gone = `(i.id IS NULL OR i.heartbeat_at < clock_timestamp() - i.timeout_ms * interval '1 millisecond')`;
    const { rows } = await this.#pool.query<{ id: string; time: number; holds: string }>(
      `SELECT r.id, r.time, r.holds FROM ${s}.reservations r LEFT JOIN ${s}.instances i ON i.id = r.instance
       WHERE r.instance <> $1 AND ${gone} ORDER BY r.time, r.id`,
      [this.id],
    );
    await this.#pool.query(
      `DELETE FROM ${s}.instances i WHERE i.id <> $1 AND i.heartbeat_at < clock_timestamp() - i.timeout_ms * interval '1 millisecond'
       AND NOT EXISTS (SELECT 1 FROM ${s}.reservations r WHERE r.instance = i.id)`,
      [this.id],
    );
    return rows.map(toReservation);
  }
}

export function toReservation(r: { id: string; time: number; holds: string }): Reservation {
  return { id: r.id, time: r.time, holds: JSON.parse(r.holds) as Reservation["holds"] };
}
