/**
 * How a LogRecord becomes a stored row and back, for every engine: the
 * retention mode and the credential rules are applied here, once, on the
 * way in, so no engine can store what it should not.
 *
 * Invariant: a row never holds a credential header, nor any configured
 * secret in any field (they are replaced by "[REDACTED]"), nor — under
 * "metadata" retention — headers or bodies.
 */
import { redactHeadersWith, scrubber } from "../redact.js";
import type { LogRecord, Retention } from "../types.js";

/** The columns of a stored log record. `meta` is the JSON of everything but headers and bodies. */
export interface LogRow {
  id: string;
  time: number;
  user: string;
  node: string;
  sessionId: string;
  /** The record's model (also in meta): a column of its own to filter and aggregate by. */
  model: string;
  inputTokens: number;
  outputTokens: number;
  costUsd: number;
  meta: string;
  requestHeaders: string | null;
  requestBody: string | null;
  responseBody: string | null;
}

/** Secrets prepared once for many records: the list, a scrubber, and their JSON-escaped forms. */
export interface Secrets {
  list: readonly string[];
  scrub(text: string): string;
  /** Each secret as it appears inside a JSON string (the same unless it holds a quote, a backslash or a control character). */
  inJson: readonly string[];
}

export function prepareSecrets(list: readonly string[]): Secrets {
  // Deduplicated, longest first (what redactHeadersWith and the scrubber expect).
  const clean = [...new Set(list.filter((s) => typeof s === "string" && s.length > 0))].sort((a, b) => b.length - a.length);
  return { list: clean, scrub: scrubber(clean), inJson: clean.map((s) => JSON.stringify(s).slice(1, -1)) };
}

/**
 * toRow returns the row to store for `rec` under `retention`, or undefined
 * when nothing may be stored (mode "none").
 */
export function toRow(rec: LogRecord, retention: Retention, secrets: Secrets): LogRow | undefined {
  if (retention.mode === "none") return undefined;
  // A record no engine could store is refused here, alone, so that it can
  // never make the batch it is in fail again and again.
  if (typeof rec.id !== "string" || rec.id === "") throw new TypeError("a log record needs a non-empty string id");
  if (!Number.isSafeInteger(rec.time)) throw new TypeError(`log record ${rec.id}: time must be epoch milliseconds, not ${String(rec.time)}`);
  if (typeof rec.sessionId !== "string" || typeof rec.caller?.user !== "string" || typeof rec.caller.node !== "string") {
    throw new TypeError(`log record ${rec.id}: sessionId, caller.user and caller.node must be strings`);
  }
  const { requestHeaders, requestBody, responseBody, ...meta } = rec;
  const scrub = secrets.scrub;
  const full = retention.mode === "full";
  const headers = full && requestHeaders ? redactHeadersWith(requestHeaders, secrets.list) : undefined;
  return {
    id: rec.id,
    time: rec.time,
    user: rec.caller.user,
    node: rec.caller.node,
    sessionId: rec.sessionId,
    model: typeof rec.model === "string" ? scrub(rec.model) : "",
    inputTokens: count(rec.usage?.inputTokens),
    outputTokens: count(rec.usage?.outputTokens),
    costUsd: count(rec.costUsd),
    meta: metaJson(meta, secrets),
    // redactHeaders already dropped every header naming or holding a secret.
    requestHeaders: headers ? JSON.stringify(headers) : null,
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

/**
 * The JSON of a record's metadata with every secret removed from every
 * string. Fast path: one search per secret in the plain JSON; only a record
 * that holds one is serialized again with each string scrubbed (replacing
 * inside JSON text could break an escape sequence).
 */
function metaJson(meta: object, secrets: Secrets): string {
  const plain = JSON.stringify(meta);
  if (!secrets.list.some((s, i) => plain.includes(s) || plain.includes(secrets.inJson[i]!))) return plain;
  return JSON.stringify(meta, (_k, v: unknown) => (typeof v === "string" ? secrets.scrub(v) : v));
}
