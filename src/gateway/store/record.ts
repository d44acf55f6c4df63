/**
 * How a LogRecord becomes a stored row and back, for every engine: the
 * retention mode and the credential rules are applied here, once, on the
 * way in, so no engine can store what it should not.
 *
 * Invariant: a row never holds a credential header, nor any configured
 * secret in any field (they are replaced by "[REDACTED]"), nor — under
 * "metadata" retention — headers or bodies.
 */
import { redactHeaders, scrubSecrets } from "../redact.js";
import type { LogRecord, Retention } from "../types.js";

/** The columns of a stored log record. `meta` is the JSON of everything but headers and bodies. */
export interface LogRow {
  id: string;
  time: number;
  user: string;
  node: string;
  sessionId: string;
  inputTokens: number;
  outputTokens: number;
  costUsd: number;
  meta: string;
  requestHeaders: string | null;
  requestBody: string | null;
  responseBody: string | null;
}

/**
 * toRow returns the row to store for `rec` under `retention`, or undefined
 * when nothing may be stored (mode "none").
 */
export function toRow(rec: LogRecord, retention: Retention, secrets: readonly string[]): LogRow | undefined {
  if (retention.mode === "none") return undefined;
  // A record no engine could store is refused here, alone, so that it can
  // never make the batch it is in fail again and again.
  if (typeof rec.id !== "string" || rec.id === "") throw new TypeError("a log record needs a non-empty string id");
  if (!Number.isSafeInteger(rec.time)) throw new TypeError(`log record ${rec.id}: time must be epoch milliseconds, not ${String(rec.time)}`);
  if (typeof rec.sessionId !== "string" || typeof rec.caller?.user !== "string" || typeof rec.caller.node !== "string") {
    throw new TypeError(`log record ${rec.id}: sessionId, caller.user and caller.node must be strings`);
  }
  const { requestHeaders, requestBody, responseBody, ...meta } = rec;
  const scrub = secrets.length === 0 ? (s: string) => s : (s: string) => scrubSecrets(s, secrets);
  const full = retention.mode === "full";
  const headers = full && requestHeaders ? redactHeaders(requestHeaders, secrets) : undefined;
  return {
    id: rec.id,
    time: rec.time,
    user: rec.caller.user,
    node: rec.caller.node,
    sessionId: rec.sessionId,
    inputTokens: count(rec.usage?.inputTokens),
    outputTokens: count(rec.usage?.outputTokens),
    costUsd: count(rec.costUsd),
    meta: JSON.stringify(meta, secrets.length === 0 ? undefined : (_k, v: unknown) => (typeof v === "string" ? scrub(v) : v)),
    requestHeaders: headers ? scrub(JSON.stringify(headers)) : null,
    requestBody: full && requestBody !== undefined ? scrub(requestBody) : null,
    responseBody: full && responseBody !== undefined ? scrub(responseBody) : null,
  };
}

/** fromRow rebuilds the record a row was made from (without what retention dropped). */
export function fromRow(row: Pick<LogRow, "meta" | "requestHeaders" | "requestBody" | "responseBody">): LogRecord {
  const rec = JSON.parse(row.meta) as LogRecord;
  if (row.requestHeaders !== null) rec.requestHeaders = JSON.parse(row.requestHeaders) as Record<string, string>;
  if (row.requestBody !== null) rec.requestBody = row.requestBody;
  if (row.responseBody !== null) rec.responseBody = row.responseBody;
  return rec;
}

/** A number for an aggregate column: what is not a finite number counts as 0. */
function count(n: unknown): number {
  return typeof n === "number" && Number.isFinite(n) ? n : 0;
}
