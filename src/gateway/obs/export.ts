/**
 * Export of logs and usage by time range, for admins only (the gateway's
 * API, under /meshguard/v1):
 *
 *   GET /export/logs?since&until[&user&node][&format=jsonl|csv]
 *       every record in [since, until), newest first. JSON lines: the whole
 *       record as the store keeps it (bodies under full retention); CSV: one
 *       row of metadata per record (no headers or bodies).
 *   GET /export/usage?since&until[&period=hour|day][&user&node][&format=jsonl|csv]
 *       tokens, cost and request counts per period (UTC), user, node,
 *       provider and model, oldest period first.
 *
 * The answer is streamed while the store is paged through, so an export of
 * a year of logs does not sit in memory (usage keeps one row per group).
 * A user (not an admin) gets 403: their own logs are at GET /logs/export.
 */

import { z } from "zod";
import { ErrorCode } from "../../errors.js";
import type { AdminRequest, AdminResponse, AdminRoute, GatewayStore, LogQuery, LogRecord } from "../types.js";
import { csvRow } from "./csv.js";

/** Records read from the store per round trip. */
const PAGE = 500;

/**
 * A query time: epoch milliseconds or an ISO 8601 time, read as the logs
 * API reads it (its definition is private to ./logs-api.ts; one shared
 * definition belongs with the API's query helpers).
 */
const Time = z.string().transform((s, ctx) => {
  const t = /^\d+$/.test(s) ? Number(s) : Date.parse(s);
  if (!Number.isSafeInteger(t)) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: `${JSON.stringify(s)} is not a time: give epoch milliseconds or an ISO 8601 time such as 2026-01-31T12:00:00Z` });
    return z.NEVER;
  }
  return t;
});

const Name = z.string().min(1, "must not be empty").max(1000);

const ExportQuery = z
  .object({
    since: Time.optional(),
    until: Time.optional(),
    user: Name.optional(),
    node: Name.optional(),
    format: z.enum(["jsonl", "csv"], { errorMap: () => ({ message: 'must be "jsonl" (JSON lines, the default) or "csv"' }) }).default("jsonl"),
    period: z.enum(["hour", "day"], { errorMap: () => ({ message: 'must be "hour" or "day" (the default)' }) }).default("day"),
  })
  .strict();

type ExportParams = z.output<typeof ExportQuery>;

const CONTENT_TYPE = { jsonl: "application/x-ndjson; charset=utf-8", csv: "text/csv; charset=utf-8; header=present" } as const;

function fail(status: number, message: string, code?: string): AdminResponse {
  return { status, body: { error: { message, ...(code === undefined ? {} : { code }) } } };
}

function parse(req: AdminRequest, keys: (keyof ExportParams)[]): ExportParams | AdminResponse {
  const raw: Record<string, string> = {};
  for (const [k, v] of req.query) {
    if (k in raw) return fail(400, `query parameter ${k} is given twice`, ErrorCode.INVALID_OPTIONS);
    raw[k] = v;
  }
  const schema = ExportQuery.pick(Object.fromEntries(keys.map((k) => [k, true])) as { [K in keyof ExportParams]?: true });
  const r = schema.safeParse(raw);
  if (!r.success) {
    const lines = r.error.issues.map((i) => (i.code === "unrecognized_keys" ? `unknown query parameter(s) ${i.keys.join(", ")} (this route takes ${keys.join(", ")})` : `${i.path.join(".")}: ${i.message}`));
    return fail(400, `invalid query: ${lines.join("; ")}`, ErrorCode.INVALID_OPTIONS);
  }
  // A route that does not take `period` (or `format`) gets its default, as a picked key would.
  const p = { ...({ format: "jsonl", period: "day" } as const), ...(r.data as Partial<ExportParams>) } as ExportParams;
  if (p.since !== undefined && p.until !== undefined && p.since >= p.until) return fail(400, "invalid query: since must be before until", ErrorCode.INVALID_OPTIONS);
  return p;
}

/** guard answers what stops an export: not an admin, or no store. */
function guard(req: AdminRequest, store: GatewayStore | undefined): AdminResponse | undefined {
  if (req.caller.role !== "admin") return fail(403, "exports need the gateway's admin role (your own logs: GET /meshguard/v1/logs/export)");
  if (store === undefined) return fail(404, 'this gateway keeps no logs (retention "none"), so there is nothing to export');
  return undefined;
}

function storeQuery(p: ExportParams): LogQuery {
  const q: LogQuery = {};
  if (p.since !== undefined) q.since = p.since;
  if (p.until !== undefined) q.until = p.until;
  if (p.user !== undefined) q.user = p.user;
  if (p.node !== undefined) q.node = p.node;
  return q;
}

/** exportRoutes serves the exports over `store` (undefined: the gateway keeps no logs). */
export function exportRoutes(store: GatewayStore | undefined): AdminRoute[] {
  return [
    {
      method: "GET",
      pattern: "/export/logs",
      async handle(req) {
        const stop = guard(req, store);
        if (stop) return stop;
        const p = parse(req, ["since", "until", "user", "node", "format"]);
        if ("status" in p) return p;
        const records = pages(store!, storeQuery(p));
        return { status: 200, contentType: CONTENT_TYPE[p.format], stream: p.format === "csv" ? logCsv(records) : logJsonl(records) };
      },
    },
    {
      method: "GET",
      pattern: "/export/usage",
      async handle(req) {
        const stop = guard(req, store);
        if (stop) return stop;
        const p = parse(req, ["since", "until", "user", "node", "format", "period"]);
        if ("status" in p) return p;
        return { status: 200, contentType: CONTENT_TYPE[p.format], stream: usageLines(pages(store!, storeQuery(p)), p) };
      },
    },
  ];
}

/** pages yields every record matching `q`, newest first, a page at a time. */
async function* pages(store: GatewayStore, q: LogQuery): AsyncGenerator<LogRecord> {
  let before: string | undefined;
  do {
    const page = await store.queryLogs({ ...q, limit: PAGE, ...(before === undefined ? {} : { before }) });
    yield* page.records;
    before = page.next;
  } while (before !== undefined);
}

async function* logJsonl(records: AsyncIterable<LogRecord>): AsyncGenerator<string> {
  for await (const r of records) yield `${JSON.stringify(r)}\n`;
}

export const LOG_CSV_COLUMNS = [
  "id",
  "time",
  "session",
  "user",
  "node",
  "tags",
  "via",
  "addr",
  "operation",
  "provider",
  "model",
  "stream",
  "status",
  "outcome",
  "reason",
  "rule",
  "input_tokens",
  "output_tokens",
  "cache_read_tokens",
  "cache_write_tokens",
  "usage_estimated",
  "cost_usd",
  "overhead_ms",
  "duration_ms",
  "ttft_ms",
] as const;

async function* logCsv(records: AsyncIterable<LogRecord>): AsyncGenerator<string> {
  yield csvRow(LOG_CSV_COLUMNS);
  for await (const r of records) {
    const u = r.usage;
    yield csvRow([
      r.id,
      new Date(r.time).toISOString(),
      r.sessionId,
      r.caller.user,
      r.caller.node,
      r.caller.tags.join(" "),
      r.caller.via,
      r.caller.addr,
      r.operation,
      r.provider,
      r.model,
      r.stream,
      r.status,
      r.outcome,
      r.reason,
      r.ruleId,
      u?.inputTokens,
      u?.outputTokens,
      u?.cacheReadTokens ?? (u ? 0 : undefined),
      u?.cacheWriteTokens ?? (u ? 0 : undefined),
      u?.estimated,
      r.costUsd,
      round(r.overheadMs),
      round(r.durationMs),
      r.ttftMs === undefined ? undefined : round(r.ttftMs),
    ]);
  }
}

const round = (ms: number) => Math.round(ms * 1000) / 1000;

interface UsageRow {
  period: string;
  user: string;
  node: string;
  provider: string;
  model: string;
  requests: number;
  inputTokens: number;
  outputTokens: number;
  cacheReadTokens: number;
  cacheWriteTokens: number;
  costUsd: number;
}

export const USAGE_CSV_COLUMNS = ["period", "user", "node", "provider", "model", "requests", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "cost_usd"] as const;

const PERIOD_MS = { hour: 3_600_000, day: 86_400_000 } as const;

/** usageLines sums the records per (period, user, node, provider, model): every request counts, tokens and cost where known. */
async function* usageLines(records: AsyncIterable<LogRecord>, p: ExportParams): AsyncGenerator<string> {
  const step = PERIOD_MS[p.period];
  const groups = new Map<string, UsageRow>();
  for await (const r of records) {
    const period = new Date(Math.floor(r.time / step) * step).toISOString();
    const key = JSON.stringify([period, r.caller.user, r.caller.node, r.provider, r.model]);
    let g = groups.get(key);
    if (g === undefined) {
      g = { period, user: r.caller.user, node: r.caller.node, provider: r.provider, model: r.model, requests: 0, inputTokens: 0, outputTokens: 0, cacheReadTokens: 0, cacheWriteTokens: 0, costUsd: 0 };
      groups.set(key, g);
    }
    g.requests++;
    const u = r.usage;
    if (u) {
      g.inputTokens += u.inputTokens;
      g.outputTokens += u.outputTokens;
      g.cacheReadTokens += u.cacheReadTokens ?? 0;
      g.cacheWriteTokens += u.cacheWriteTokens ?? 0;
    }
    g.costUsd += r.costUsd ?? 0;
  }
  const rows = [...groups.values()].sort((a, b) => cmp(a.period, b.period) || cmp(a.user, b.user) || cmp(a.node, b.node) || cmp(a.provider, b.provider) || cmp(a.model, b.model));
  if (p.format === "csv") {
    yield csvRow(USAGE_CSV_COLUMNS);
    for (const g of rows) yield csvRow([g.period, g.user, g.node, g.provider, g.model, g.requests, g.inputTokens, g.outputTokens, g.cacheReadTokens, g.cacheWriteTokens, usd(g.costUsd)]);
  } else for (const g of rows) yield `${JSON.stringify({ ...g, costUsd: usd(g.costUsd) })}\n`;
}

/** A sum of many small costs, without the float noise of the additions (1e-10 dollars is far below any price). */
const usd = (n: number) => Math.round(n * 1e10) / 1e10;

const cmp = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
