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
    inputTokens: rec.usage?.inputTokens ?? 0,
    outputTokens: rec.usage?.outputTokens ?? 0,
    costUsd: rec.costUsd ?? 0,
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
