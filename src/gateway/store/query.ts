/**
 * What the engines' log queries share: the page size rules and the WHERE
 * terms of a LogQuery. Each engine passes its own placeholder style
 * (SQLite "?", PostgreSQL "$n"), so both filter by exactly the same rules.
 */
import type { LogQuery } from "../types.js";

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
  if (q.sessionId !== undefined) where.push(`session_id = ${param(q.sessionId)}`);
  if (q.since !== undefined) where.push(`time >= ${param(q.since)}`);
  if (q.until !== undefined) where.push(`time < ${param(q.until)}`);
  return where;
}

export function whereSql(where: string[]): string {
  return where.length === 0 ? "" : `WHERE ${where.join(" AND ")}`;
}
