/**
 * What the engines' log queries share: the page size rules and the WHERE
 * terms of a LogQuery. Each engine passes its own placeholder style
 * (SQLite "?", PostgreSQL "$n"), so both filter by exactly the same rules.
 */
import type { LogQuery, UsageQuery, UsageRow } from "../types.js";

export const DEFAULT_LIMIT = 100;
export const MAX_LIMIT = 1_000;

/** clampLimit is the page size for a requested `limit`: default 100, between 1 and 1000. */
export function clampLimit(limit: number | undefined): number {
  if (limit === undefined) return DEFAULT_LIMIT;
  return Math.max(1, Math.min(MAX_LIMIT, Math.floor(limit)));
}

/**
 * logFilters returns the WHERE terms of `q`; `param` binds a value and
 * returns its placeholder. `since` is inclusive, `until` exclusive. The
 * column names are the same in every engine's `logs` table.
 */
export function logFilters(q: Omit<LogQuery, "before" | "limit">, param: (v: string | number) => string): string[] {
  const where: string[] = [];
  if (q.user !== undefined) where.push(`"user" = ${param(q.user)}`);
  if (q.node !== undefined) where.push(`node = ${param(q.node)}`);
  if (q.model !== undefined) where.push(`model = ${param(q.model)}`);
  if (q.sessionId !== undefined) where.push(`session_id = ${param(q.sessionId)}`);
  if (q.since !== undefined) where.push(`time >= ${param(q.since)}`);
  if (q.until !== undefined) where.push(`time < ${param(q.until)}`);
  return where;
}

export function whereSql(where: string[]): string {
  return where.length === 0 ? "" : `WHERE ${where.join(" AND ")}`;
}

/** The length of each usage bucket. Buckets are aligned to the epoch, so to whole UTC hours and days. */
export const USAGE_BUCKET_MS = { hour: 3_600_000, day: 86_400_000 } as const;

/**
 * usageSql returns the aggregation of `q` over a `logs` table named `table`:
 * one row per bucket start and key (user or model) with the requests and
 * the sums of tokens and cost. Both engines divide integers exactly (time is
 * an integer column), so both put a record in the same bucket. The bucket
 * length is one of USAGE_BUCKET_MS, written into the SQL as a number.
 */
export function usageSql(table: string, q: UsageQuery, param: (v: string | number) => string): string {
  const where = logFilters({ ...(q.user !== undefined ? { user: q.user } : {}), since: q.since, until: q.until }, param);
  const size = USAGE_BUCKET_MS[q.bucket];
  const key = q.by === "user" ? `"user"` : "model";
  return `SELECT (time / ${size}) * ${size} AS "start", ${key} AS "key", count(*) AS requests,
    sum(input_tokens) AS "inputTokens", sum(output_tokens) AS "outputTokens", sum(cost_usd) AS "costUsd"
    FROM ${table} ${whereSql(where)} GROUP BY 1, 2`;
}

/**
 * usageRows turns the rows of usageSql into UsageRows ordered by start then
 * key (code-point order: the same in every engine, whatever its collation).
 * PostgreSQL returns bigint counts as strings; both become numbers here.
 */
export function usageRows(rows: readonly Record<string, unknown>[]): UsageRow[] {
  return rows
    .map((r) => ({
      start: Number(r.start),
      key: String(r.key),
      requests: Number(r.requests),
      inputTokens: Number(r.inputTokens),
      outputTokens: Number(r.outputTokens),
      costUsd: Number(r.costUsd),
    }))
    .sort((a, b) => a.start - b.start || (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
}
