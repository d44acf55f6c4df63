/**
 * Log records in PostgreSQL: the batch insert and the reads.
 *
 * A batch is one multi-row INSERT (one statement, one round trip), `ON
 * CONFLICT (id) DO NOTHING`: a batch written again — after a failure that
 * left its outcome unknown, the commit done but its answer lost — stores no
 * record twice. Each value is a parameter of its own rather than one array
 * per column: the driver then sends text as it is and bodies as raw bytes
 * (Buffers go in binary), where an array literal would be built, escaped and
 * hex-encoded on the event loop (measured: 300 records of 4 KiB, ~1 ms
 * against 7-70 ms).
 */
import type { Pool } from "pg";
import type { LogQuery, LogRecord, SessionSummary, UsageQuery, UsageRow } from "../types.js";
import { decodeCursor, encodeCursor } from "./cursor.js";
import { fromRow, type LogRow } from "./record.js";
import { clampLimit, logFilters, usageRows, usageSql, whereSql } from "./query.js";

/**
 * PostgreSQL's text cannot hold NUL. Metadata and headers are JSON (NUL is
 * escaped there) and bodies are bytea; the plain text columns used for
 * filtering (id, user, node, session) get U+FFFD instead, and so do the
 * values a query compares them with, so filters still match.
 */
export function pgText(s: string): string {
  return s.includes("\0") ? s.replaceAll("\0", "\uFFFD") : s;
}

const utf8 = (s: string | null): Buffer | null => (s === null ? null : Buffer.from(s, "utf8"));

const LOG_COLUMNS = `id, time, "user", node, session_id, model, input_tokens, output_tokens, cost_usd, meta, request_headers, request_body, response_body`;
const PER_ROW = 13;
/** Rows per statement: PostgreSQL takes at most 65535 parameters. */
export const MAX_ROWS_PER_INSERT = Math.floor(65_535 / PER_ROW);

/** insertLogs returns the statement inserting `rows` (at most MAX_ROWS_PER_INSERT) into `${s}.logs`. */
export function insertLogs(s: string, rows: readonly LogRow[]): { text: string; values: unknown[] } {
  if (rows.length > MAX_ROWS_PER_INSERT) throw new RangeError(`insertLogs: ${rows.length} rows, at most ${MAX_ROWS_PER_INSERT} per statement`);
  const values: unknown[] = [];
  const tuples: string[] = [];
  for (const r of rows) {
    const n = values.length;
    tuples.push(`(${Array.from({ length: PER_ROW }, (_, i) => `$${n + i + 1}`).join(",")})`);
    values.push(pgText(r.id), r.time, pgText(r.user), pgText(r.node), pgText(r.sessionId), pgText(r.model), r.inputTokens, r.outputTokens, r.costUsd, r.meta, r.requestHeaders, utf8(r.requestBody), utf8(r.responseBody));
  }
  return { text: `INSERT INTO ${s}.logs (${LOG_COLUMNS}) VALUES ${tuples.join(",")} ON CONFLICT (id) DO NOTHING`, values };
}

const RECORD_COLUMNS = "seq, time, meta, request_headers, request_body, response_body";

interface RecordRow {
  seq: number;
  time: number;
  meta: string;
  request_headers: string | null;
  request_body: Buffer | null;
  response_body: Buffer | null;
}

function toRecord(r: RecordRow): LogRecord {
  return fromRow({
    meta: r.meta,
    requestHeaders: r.request_headers,
    requestBody: r.request_body === null ? null : r.request_body.toString("utf8"),
    responseBody: r.response_body === null ? null : r.response_body.toString("utf8"),
  });
}

/** A query's WHERE terms with "$n" placeholders, and their values. */
function filters(q: Omit<LogQuery, "before" | "limit">): { where: string[]; params: unknown[] } {
  const params: unknown[] = [];
  const where = logFilters(q, (v) => (params.push(typeof v === "string" ? pgText(v) : v), `$${params.length}`));
  return { where, params };
}

export async function queryLogs(pool: Pool, s: string, q: LogQuery): Promise<{ records: LogRecord[]; next?: string }> {
  const limit = clampLimit(q.limit);
  const { where, params } = filters(q);
  if (q.before !== undefined) {
    const p = decodeCursor(q.before);
    params.push(p.time, p.seq);
    where.push(`(time, seq) < ($${params.length - 1}, $${params.length})`);
  }
  params.push(limit + 1);
  const { rows } = await pool.query<RecordRow>(`SELECT ${RECORD_COLUMNS} FROM ${s}.logs ${whereSql(where)} ORDER BY time DESC, seq DESC LIMIT $${params.length}`, params);
  const page = rows.slice(0, limit);
  const last = page.at(-1);
  const records = page.map(toRecord);
  return rows.length > limit && last ? { records, next: encodeCursor({ time: last.time, seq: last.seq }) } : { records };
}

export async function getLog(pool: Pool, s: string, id: string): Promise<LogRecord | undefined> {
  const { rows } = await pool.query<RecordRow>(`SELECT ${RECORD_COLUMNS} FROM ${s}.logs WHERE id = $1`, [pgText(id)]);
  return rows[0] && toRecord(rows[0]);
}

export async function sessions(pool: Pool, s: string, q: Omit<LogQuery, "sessionId">): Promise<SessionSummary[]> {
  const { where, params } = filters(q);
  params.push(clampLimit(q.limit));
  // A session id is derived from its caller (sessions.ts), so one id has one user and node.
  const sql = `SELECT session_id AS id, min("user") AS "user", min(node) AS node, min(time) AS "firstTime", max(time) AS "lastTime", count(*) AS requests,
    sum(input_tokens) AS "inputTokens", sum(output_tokens) AS "outputTokens", sum(cost_usd) AS "costUsd"
    FROM ${s}.logs ${whereSql(where)} GROUP BY session_id ORDER BY "lastTime" DESC, id LIMIT $${params.length}`;
  return (await pool.query<SessionSummary>(sql, params)).rows;
}

export async function usage(pool: Pool, s: string, q: UsageQuery): Promise<UsageRow[]> {
  const params: unknown[] = [];
  const sql = usageSql(`${s}.logs`, q, (v) => (params.push(typeof v === "string" ? pgText(v) : v), `$${params.length}`));
  return usageRows((await pool.query<Record<string, unknown>>(sql, params)).rows);
}

/** Deletes at most `chunk` records older than `before`; returns how many. */
export async function pruneChunk(pool: Pool, s: string, before: number, chunk: number): Promise<number> {
  const r = await pool.query(`DELETE FROM ${s}.logs WHERE seq IN (SELECT seq FROM ${s}.logs WHERE time < $1 LIMIT $2)`, [before, chunk]);
  return r.rowCount ?? 0;
}
