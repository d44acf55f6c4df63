/**
 * The logs part of the gateway's API (`/meshguard/v1/...`):
 *
 *   GET /logs          newest first, paged: { records, next? } (pass `next` back as `before`)
 *   GET /logs/export   every matching record, bodies included, as JSON lines
 *   GET /logs/:id      { record }
 *   GET /sessions      { sessions }, the most recently active first
 *
 * Visibility is enforced here, not by the caller of these routes: a caller
 * with role "user" reads only records whose user is their own (any `user`
 * in the query is replaced), and asking for someone else's record by id is
 * a 404 exactly like an id that does not exist, so ids reveal nothing.
 * Admins read everything and may filter by `user`.
 *
 * Query parameters: node, model, session, user (admins), since, until (epoch ms or
 * an ISO 8601 time; since inclusive, until exclusive), limit (1-1000,
 * default 100), before (a `next` cursor), bodies=true (GET /logs: include
 * headers and bodies, which the list leaves out to stay small). An unknown
 * parameter is a 400 naming it, so a typo does not silently widen a query.
 */
import { z } from "zod";
import { ErrorCode, MeshguardError } from "../errors.js";
import { apiError, isAnswer, Name, NO_USER, parseQuery as parseWithSchema, Time, userFilter } from "./api-query.js";
import type { AdminRequest, AdminResponse, AdminRoute, GatewayStore, LogQuery, LogRecord } from "./types.js";

/** Records read from the store per round trip of an export. */
const EXPORT_PAGE = 500;

const ListQuery = z
  .object({
    user: Name.optional(),
    node: Name.optional(),
    model: Name.optional(),
    session: Name.optional(),
    since: Time.optional(),
    until: Time.optional(),
    limit: z
      .string()
      .regex(/^\d+$/, "must be a whole number from 1 to 1000")
      .transform(Number)
      .pipe(z.number().int().min(1, "must be from 1 to 1000").max(1000, "must be from 1 to 1000"))
      .optional(),
    before: z.string().min(1).max(200).optional(),
    bodies: z.enum(["true", "false"], { errorMap: () => ({ message: 'must be "true" or "false"' }) }).optional(),
  })
  .strict();

type ListParams = z.output<typeof ListQuery>;

/** The keys each route accepts (the rest of ListQuery is refused there). */
const SESSION_KEYS = ["user", "node", "model", "since", "until", "limit"] as const;
const EXPORT_KEYS = ["user", "node", "model", "session", "since", "until"] as const;

const fail = apiError;

/** parseQuery validates the query string against the keys a route accepts; a 400 response when it does not hold. */
function parseQuery(query: URLSearchParams, keys: readonly (keyof ListParams)[]): ListParams | AdminResponse {
  const schema = ListQuery.pick(Object.fromEntries(keys.map((k) => [k, true])) as { [K in keyof ListParams]?: true });
  return parseWithSchema(query, schema, keys) as ListParams | AdminResponse;
}

/**
 * scope turns validated parameters into the store query the caller may
 * run: the caller's own user for role "user"; undefined (403) for a
 * non-admin with no accountable user, who has no records of their own.
 */
function scope(req: AdminRequest, p: ListParams): LogQuery | undefined {
  const who = userFilter(req.caller, p.user);
  if (who === null) return undefined;
  const q: LogQuery = { ...who };
  if (p.node !== undefined) q.node = p.node;
  if (p.model !== undefined) q.model = p.model;
  if (p.session !== undefined) q.sessionId = p.session;
  if (p.since !== undefined) q.since = p.since;
  if (p.until !== undefined) q.until = p.until;
  if (p.limit !== undefined) q.limit = p.limit;
  if (p.before !== undefined) q.before = p.before;
  return q;
}

function withoutBodies(r: LogRecord): LogRecord {
  const { requestHeaders: _h, requestBody: _q, responseBody: _a, ...meta } = r;
  return meta;
}

/** A store error the client can fix (a bad cursor) is a 400; anything else propagates to the server's error handling. */
function badCursor(err: unknown): AdminResponse {
  if (err instanceof MeshguardError && err.code === ErrorCode.INVALID_OPTIONS) return fail(400, err.message, err.code);
  throw err;
}

/** logRoutes returns the routes of the logs API over `store`. `/logs/export` comes before `/logs/:id`: a router that matches in order finds it. */
export function logRoutes(store: GatewayStore): AdminRoute[] {
  return [
    {
      method: "GET",
      pattern: "/logs",
      async handle(req) {
        const p = parseQuery(req.query, ["user", "node", "model", "session", "since", "until", "limit", "before", "bodies"]);
        if (isAnswer(p)) return p;
        const q = scope(req, p);
        if (!q) return fail(403, NO_USER);
        try {
          const page = await store.queryLogs(q);
          const records = p.bodies === "true" ? page.records : page.records.map(withoutBodies);
          return { status: 200, body: page.next === undefined ? { records } : { records, next: page.next } };
        } catch (err) {
          return badCursor(err);
        }
      },
    },
    {
      method: "GET",
      pattern: "/logs/export",
      async handle(req) {
        const p = parseQuery(req.query, EXPORT_KEYS);
        if (isAnswer(p)) return p;
        const q = scope(req, p);
        if (!q) return fail(403, NO_USER);
        return { status: 200, contentType: "application/x-ndjson; charset=utf-8", stream: exportLines(store, q) };
      },
    },
    {
      method: "GET",
      pattern: "/logs/:id",
      async handle(req, params) {
        const p = parseQuery(req.query, []);
        if (isAnswer(p)) return p;
        const id = params.id ?? "";
        const rec = id === "" ? undefined : await store.getLog(id);
        // Someone else's record answers exactly as a missing one.
        if (!rec || (req.caller.role !== "admin" && (req.caller.user === "" || rec.caller.user !== req.caller.user))) {
          return fail(404, `no log record ${JSON.stringify(id)}`);
        }
        return { status: 200, body: { record: rec } };
      },
    },
    {
      method: "GET",
      pattern: "/sessions",
      async handle(req) {
        const p = parseQuery(req.query, SESSION_KEYS);
        if (isAnswer(p)) return p;
        const q = scope(req, p);
        if (!q) return fail(403, NO_USER);
        return { status: 200, body: { sessions: await store.sessions(q) } };
      },
    },
  ];
}

/** exportLines pages through every record matching `q`, newest first, one JSON line each. */
async function* exportLines(store: GatewayStore, q: LogQuery): AsyncGenerator<string> {
  let before: string | undefined;
  do {
    const page = await store.queryLogs({ ...q, limit: EXPORT_PAGE, ...(before === undefined ? {} : { before }) });
    for (const r of page.records) yield `${JSON.stringify(r)}\n`;
    before = page.next;
  } while (before !== undefined);
}
