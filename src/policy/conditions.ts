/**
 * A rule's conditions other than who and which host, each compiled once into
 * a closure. A condition answers YES, NO or UNKNOWN; UNKNOWN means it needs a
 * fact the request does not carry (a streamed body's size, an unparsed
 * model), and the engine turns an otherwise matching rule with an UNKNOWN
 * into a deny: fail closed.
 */

import { flatGlob, anyOf, hasGlob, isAlways, pathGlob } from "./glob.js";
import { inWindow, type TimeWindow } from "./time.js";
import { serverMatches, type ServerPattern } from "./dns.js";
import type { ArgConstraint } from "./schema.js";
import type { DnsTarget, HttpTarget, LlmTarget, McpTarget, SqlAccessTarget, SqlTarget, TcpTarget, TokenTarget, UdpTarget } from "./types.js";

export const NO = 0;
export const YES = 1;
export const UNKNOWN = 2;
export type Outcome = typeof NO | typeof YES | typeof UNKNOWN;

/** Per-request facts computed at most once, on demand. */
export interface EvalContext {
  /** Milliseconds since the epoch of the decision (the request's `now` or the clock). */
  now(): number;
  /**
   * Whole minutes since the epoch of the decision: Math.floor(now() / 60000).
   * A small integer, so reading it costs no heap number (now() may).
   */
  minute(): number;
  /** The query string as name → values (parsed on first use). */
  query(t: HttpTarget): Map<string, string[]>;
}

/** A compiled condition. `test` is the hot path; `why` is for explain. */
export interface Condition<T> {
  /** What it checks, for explain: "port", "path", "when.hours", ... */
  what: string;
  test(t: T, ctx: EvalContext): Outcome;
  /** A sentence saying what was required and what the request had. */
  why(t: T, ctx: EvalContext): string;
}

export type AnyTarget = HttpTarget | TcpTarget | McpTarget | LlmTarget | DnsTarget | UdpTarget | TokenTarget | SqlAccessTarget | SqlTarget;

/** A port list compiled to a set plus ranges; undefined means any port. */
export function portCondition(ports: Array<number | string>): Condition<HttpTarget | TcpTarget | UdpTarget> | undefined {
  const singles = new Set<number>();
  const ranges: Array<[number, number]> = [];
  for (const p of ports) {
    if (p === "*") return undefined;
    if (typeof p === "number") singles.add(p);
    else if (p.includes("-")) ranges.push(p.split("-").map(Number) as [number, number]);
    else singles.add(Number(p));
  }
  const text = ports.join(", ");
  const ok = (port: number) => {
    if (singles.has(port)) return true;
    for (const [lo, hi] of ranges) if (port >= lo && port <= hi) return true;
    return false;
  };
  return { what: "port", test: (t) => (ok(t.port) ? YES : NO), why: (t) => `port ${t.port} ${ok(t.port) ? "is" : "is not"} in ${text}` };
}

export function schemeCondition(schemes: string[]): Condition<HttpTarget> {
  const set = new Set(schemes);
  return { what: "scheme", test: (t) => (set.has(t.scheme) ? YES : NO), why: (t) => `scheme ${t.scheme} ${set.has(t.scheme) ? "is" : "is not"} one of ${schemes.join(", ")}` };
}

export function methodCondition(methods: string[]): Condition<HttpTarget> | undefined {
  if (methods.includes("*")) return undefined;
  // The engine upper-cases the request's method; a short list compares faster than a Set.
  const list = [...new Set(methods.map((m) => m.toUpperCase()))];
  const has = (m: string) => {
    for (let i = 0; i < list.length; i++) if (list[i] === m) return true;
    return false;
  };
  return { what: "method", test: (t) => (has(t.method) ? YES : NO), why: (t) => `method ${t.method} ${has(t.method) ? "is" : "is not"} one of ${list.join(", ")}` };
}

export function pathCondition(paths: string[]): Condition<HttpTarget> | undefined {
  if (paths.includes("**")) return undefined;
  const m = anyOf(paths.map(pathGlob));
  return { what: "path", test: (t) => (m(t.path) ? YES : NO), why: (t) => `path ${t.path} ${m(t.path) ? "matches" : "does not match"} ${paths.join(", ")}` };
}

/** Every named parameter must be present and every one of its values must match (no smuggling a second value). */
export function queryCondition(query: Record<string, string>): Condition<HttpTarget> {
  const checks = Object.entries(query).map(([name, glob]) => [name, flatGlob(glob), glob] as const);
  const ok = (t: HttpTarget, ctx: EvalContext) => {
    const q = ctx.query(t);
    for (const [name, m] of checks) {
      const vs = q.get(name);
      if (!vs) return false;
      for (const v of vs) if (!m(v)) return false;
    }
    return true;
  };
  const text = checks.map(([n, , g]) => `${n}=${g}`).join("&");
  return { what: "query", test: (t, ctx) => (ok(t, ctx) ? YES : NO), why: (t, ctx) => `query "${t.query}" ${ok(t, ctx) ? "satisfies" : "does not satisfy"} ${text}` };
}

export function headerCondition(headers: Record<string, string>): Condition<HttpTarget> {
  const checks = Object.entries(headers).map(([name, glob]) => [name.toLowerCase(), flatGlob(glob), glob] as const);
  const ok = (t: HttpTarget) => {
    for (const [name, m] of checks) {
      const v = t.headers?.[name];
      if (typeof v !== "string" || !m(v)) return false;
    }
    return true;
  };
  const text = checks.map(([n, , g]) => `${n}: ${g}`).join(", ");
  return { what: "when.headers", test: (t) => (ok(t) ? YES : NO), why: (t) => `headers ${ok(t) ? "satisfy" : "do not satisfy"} ${text}` };
}

export function bodySizeCondition(max: number): Condition<HttpTarget> {
  return {
    what: "when.maxBodyBytes",
    test: (t) => (typeof t.bodySize !== "number" || !(t.bodySize >= 0) ? UNKNOWN : t.bodySize <= max ? YES : NO),
    why: (t) => (typeof t.bodySize !== "number" ? `the body size is unknown (streamed) but the rule allows at most ${max} bytes: fails closed` : `body of ${t.bodySize} bytes ${t.bodySize <= max ? "is within" : "exceeds"} ${max}`),
  };
}

/**
 * A window's answer depends on the minute only (its bounds are whole minutes
 * and a zone's offset, read from Intl, is too), so the last minute's answer
 * is remembered: most calls skip the calendar arithmetic.
 */
export function windowCondition(w: TimeWindow): Condition<AnyTarget> {
  let lastMinute = NaN;
  let lastOk = false;
  const ok = (ctx: EvalContext) => {
    const minute = ctx.minute();
    if (minute !== lastMinute) {
      lastOk = inWindow(w, ctx.now());
      lastMinute = minute;
    }
    return lastOk;
  };
  return {
    what: "when (time window)",
    test: (_t, ctx) => (ok(ctx) ? YES : NO),
    why: (_t, ctx) => `${new Date(ctx.now()).toISOString()} is ${ok(ctx) ? "inside" : "outside"} ${w.text}`,
  };
}

export function tcpFlagCondition(flag: "tls" | "tailnet", want: boolean): Condition<TcpTarget> {
  const has = (t: TcpTarget) => Boolean(t[flag]);
  return { what: flag, test: (t) => (has(t) === want ? YES : NO), why: (t) => `${flag} is ${has(t)}, the rule wants ${want}` };
}

/**
 * The record types a dns rule allows. A look-up without a record type is an
 * address look-up (dns.lookup), which asks for both A and AAAA records: it
 * matches only a list that has both.
 */
export function rrtypeCondition(types: readonly string[]): Condition<DnsTarget> {
  const set = new Set(types);
  const both = set.has("A") && set.has("AAAA");
  const ok = (t: DnsTarget) => (typeof t.rrtype === "string" ? set.has(t.rrtype) : both);
  const asked = (t: DnsTarget) => (typeof t.rrtype === "string" ? `record type ${t.rrtype}` : "an address look-up (A and AAAA)");
  return { what: "rrtype", test: (t) => (ok(t) ? YES : NO), why: (t) => `${asked(t)} ${ok(t) ? "is" : "is not"} within ${types.join(", ")}` };
}

/** The DNS servers a dns rule allows a query to go to (default: the system's resolver only). */
export function serverCondition(patterns: readonly ServerPattern[], text: readonly string[]): Condition<DnsTarget> {
  const ok = (t: DnsTarget) => {
    const server = typeof t.server === "string" ? t.server : undefined;
    for (const p of patterns) if (serverMatches(p, server)) return true;
    return false;
  };
  const where = (t: DnsTarget) => (typeof t.server === "string" ? `server ${t.server}` : "the system's resolver");
  return { what: "server", test: (t) => (ok(t) ? YES : NO), why: (t) => `${where(t)} ${ok(t) ? "is" : "is not"} one of ${text.join(", ")}` };
}

/** mcpItemOf says what an MCP target asks for: a tool call, a resource read or a prompt get. */
export function mcpItemOf(t: McpTarget): "tool" | "resource" | "prompt" {
  return typeof t.resource === "string" ? "resource" : typeof t.prompt === "string" ? "prompt" : "tool";
}

/** An mcp rule is about one kind of item (format version 6 adds resources and prompts). */
export function mcpItemCondition(item: "tool" | "resource" | "prompt"): Condition<McpTarget> {
  return { what: "item", test: (t) => (mcpItemOf(t) === item ? YES : NO), why: (t) => `the request is a ${mcpItemOf(t)} ${mcpItemOf(t) === item ? "request, as" : "request, not a"} ${item} rule${mcpItemOf(t) === item ? " is about" : ""}` };
}

export function nameCondition<T extends McpTarget>(what: "server" | "tool" | "resource" | "prompt", globs: string[]): Condition<T> | undefined {
  if (globs.includes("*")) return undefined;
  const m = anyOf(globs.map(flatGlob));
  const get = (t: T) => (typeof t[what] === "string" ? t[what] : "");
  return { what, test: (t) => (m(get(t)) ? YES : NO), why: (t) => `${what} ${JSON.stringify(get(t))} ${m(get(t)) ? "matches" : "does not match"} ${globs.join(", ")}` };
}

/** An argument constraint; an absent argument does not match. */
export function argCondition(name: string, c: ArgConstraint): Condition<McpTarget> {
  const spec = typeof c === "string" ? { glob: c } : c;
  const glob = spec.glob === undefined ? undefined : flatGlob(spec.glob);
  const ok = (v: unknown): boolean => {
    if (glob && !(typeof v === "string" && glob(v))) return false;
    if (spec.in && !spec.in.some((x) => x === v)) return false;
    if (spec.min !== undefined && !(typeof v === "number" && v >= spec.min)) return false;
    if (spec.max !== undefined && !(typeof v === "number" && v <= spec.max)) return false;
    if (spec.maxLength !== undefined && !((typeof v === "string" || Array.isArray(v)) && v.length <= spec.maxLength)) return false;
    return true;
  };
  const has = (t: McpTarget) => t.args !== null && typeof t.args === "object" && Object.hasOwn(t.args, name);
  return {
    what: `args.${name}`,
    test: (t) => (has(t) && ok(t.args[name]) ? YES : NO),
    why: (t) => (has(t) ? `argument ${name}=${JSON.stringify(t.args[name])} ${ok(t.args[name]) ? "satisfies" : "does not satisfy"} ${JSON.stringify(c)}` : `argument ${name} is absent`),
  };
}

/**
 * The model glob is over "provider/model". An empty (unparsed) model is
 * UNKNOWN when the provider could still match — its provider part (the text
 * before the glob's first "/", or "*" for a glob without one) matches the
 * request's provider — and NO otherwise.
 */
let keyProvider: string | undefined;
let keyModel: string | undefined;
let lastKey = "";

/** key is "provider/model", remembered for the last request (every model rule of a decision asks, and a process calls few models). */
function key(t: LlmTarget): string {
  if (t.provider !== keyProvider || t.model !== keyModel) {
    lastKey = `${t.provider}/${t.model}`;
    keyProvider = t.provider;
    keyModel = t.model;
  }
  return lastKey;
}

export function modelCondition(globs: string[]): Condition<LlmTarget> | undefined {
  if (globs.includes("*")) return undefined;
  const m = anyOf(globs.map(flatGlob));
  const provider = anyOf(globs.map((g) => flatGlob(g.includes("/") ? g.slice(0, g.indexOf("/")) : "*")));
  const unknown = (t: LlmTarget) => typeof t.model !== "string" || t.model === "";
  return {
    what: "model",
    test: (t) => (unknown(t) ? (provider(t.provider) ? UNKNOWN : NO) : m(key(t)) ? YES : NO),
    why: (t) =>
      unknown(t)
        ? provider(t.provider)
          ? "the model is unknown (body not parsed): fails closed"
          : `provider ${t.provider} does not match ${globs.join(", ")}`
        : `${key(t)} ${m(key(t)) ? "matches" : "does not match"} ${globs.join(", ")}`,
  };
}

export function maxTokensCondition(max: number): Condition<LlmTarget> {
  return {
    what: "maxTokens",
    test: (t) => (typeof t.maxTokens !== "number" ? UNKNOWN : t.maxTokens <= max ? YES : NO),
    why: (t) => (typeof t.maxTokens !== "number" ? `max tokens not declared but the rule allows at most ${max}: fails closed` : `max tokens ${t.maxTokens} ${t.maxTokens <= max ? "is within" : "exceeds"} ${max}`),
  };
}

// ---- sql rules (format version 5): conditions over one access of a statement ----

/** sqlDatabaseCondition: the database name matches one of the globs. */
export function sqlDatabaseCondition(globs: string[]): Condition<SqlAccessTarget> | undefined {
  const m = anyOf(globs.map(flatGlob));
  if (isAlways(m)) return undefined;
  // "" is no database name PostgreSQL allows: the driver did not tell (postgres.js). The rule may or may not apply: UNKNOWN (fail closed).
  return {
    what: "database",
    test: (t) => (t.database === "" ? UNKNOWN : m(t.database) ? YES : NO),
    why: (t) => (t.database === "" ? `the database is not known, and ${globs.join(", ")} does not match every name` : `database ${t.database} ${m(t.database) ? "matches" : "does not match"} ${globs.join(", ")}`),
  };
}

/** sqlOperationCondition: the access's operation is listed ("*": any). */
export function sqlOperationCondition(ops: string[]): Condition<SqlAccessTarget> | undefined {
  if (ops.includes("*")) return undefined;
  const set = new Set(ops);
  return { what: "operation", test: (t) => (set.has(t.operation) ? YES : NO), why: (t) => `operation ${t.operation} ${set.has(t.operation) ? "is" : "is not"} one of ${ops.join(", ")}` };
}

/** Operations that never have an object: any `table` pattern matches them. */
const OBJECTLESS = new Set(["do", "prepare", "execute", "cursor"]);

/**
 * sqlObjectCondition: the object matches one of the globs (an operation
 * without an object — do, prepare, execute, cursor — matches any). A dangerous
 * built-in function matches only a pattern without a wildcard that names it
 * exactly: a broad "call on *" never lets set_config or pg_read_file through.
 */
export function sqlObjectCondition(globs: string[]): Condition<SqlAccessTarget> {
  const m = anyOf(globs.map(flatGlob));
  const literal = new Set(globs.filter((g) => !hasGlob(g)));
  const ok = (t: SqlAccessTarget) => (t.object === "" && OBJECTLESS.has(t.operation)) || (t.dangerous ? literal.has(t.object) : m(t.object));
  return {
    what: "table",
    test: (t) => (ok(t) ? YES : NO),
    why: (t) =>
      t.dangerous && !ok(t) && m(t.object)
        ? `${t.object} is a dangerous built-in: only a pattern naming it exactly allows it, not ${globs.join(", ")}`
        : `object ${JSON.stringify(t.object)} ${ok(t) ? "matches" : "does not match"} ${globs.join(", ")}`,
  };
}

/** sqlColumnsCondition: every column the access names is listed ("*", all columns, only if "*" is listed). */
export function sqlColumnsCondition(columns: string[]): Condition<SqlAccessTarget> | undefined {
  if (columns.includes("*")) return undefined;
  const set = new Set(columns);
  const outside = (t: SqlAccessTarget) => (t.columns ?? []).filter((c) => !set.has(c));
  return {
    what: "columns",
    test: (t) => {
      const cs = t.columns;
      if (cs) for (let i = 0; i < cs.length; i++) if (!set.has(cs[i]!)) return NO;
      return YES;
    },
    why: (t) => {
      const o = outside(t);
      return o.length ? `the statement names ${o.map((c) => (c === "*" ? "all columns (*)" : c)).join(", ")}, not in ${columns.join(", ")}` : `every column named is in ${columns.join(", ")}`;
    },
  };
}

/** ROWS_WHAT names the row-filter condition: NO where filters are not enforced (the engine then says why in its denial). */
export const ROWS_WHAT = "rows";

/** sqlRowsCondition: a rule with a row filter matches only where the filter is enforced (the database gateway). */
export function sqlRowsCondition(rows: string): Condition<SqlAccessTarget> {
  return {
    what: ROWS_WHAT,
    test: (t) => (t.rowFilters === true ? YES : NO),
    why: (t) => (t.rowFilters === true ? `the row filter (${rows}) is enforced by the database gateway` : `the rule allows only with a row filter (${rows}), which only the database gateway enforces; in-process it does not allow`),
  };
}
