/**
 * SQL statements as the policy sees them (format version 5, `sql` rules):
 * PostgreSQL's own parser (libpg-query's wasm build, pinned at the server's
 * major version, 15 — see SQL_PARSER_PG_MAJOR) turns a statement text into a
 * list of accesses, each one operation on one object:
 *
 *   select | insert | update | delete | merge | copy_to | copy_from   on a table or view
 *   ddl       on the table created, altered, dropped or truncated ("" when the object is no relation)
 *   call      on a function or procedure ("pg_catalog.set_config", "public.refresh")
 *   do | prepare | execute | cursor                                   on nothing (""; any `table` pattern matches)
 *   explain   on each table of the explained statement
 *   set       on the setting ("search_path", "statement_timeout", "discard")
 *
 * Every statement of a multi-statement string, every CTE, subquery and set
 * operation is walked; INSERT … ON CONFLICT DO UPDATE is insert and update,
 * SELECT INTO and CREATE TABLE AS are ddl and select, EXPLAIN ANALYZE is
 * explain and its statement, RETURNING is select on the target. Names are as
 * PostgreSQL reads them: unquoted identifiers lower-cased, quoted ones kept;
 * a table without a schema is taken to be in "public" (the parser has no
 * catalog and no search_path: a database gateway pins search_path).
 *
 * The parser has no catalog, so functions are judged by name: those of
 * SAFE_FUNCTIONS (side-effect-free pg_catalog functions) are free; any other
 * is a `call` a rule must allow, and those of isDangerousFunction
 * (set_config, pg_read_file, lo_*, dblink*, …) only by a rule that names
 * them without a wildcard. A text that does not parse is an error: denied.
 *
 * Analyses are cached by statement text (bounded: SQL_CACHE_SIZE entries,
 * the oldest evicted), so a repeated statement is not parsed again.
 */

import { loadModule, parseSync } from "libpg-query";

/** The PostgreSQL major version whose grammar the parser speaks (libpg-query 15.x). Match it to the server's `server_version`. */
export const SQL_PARSER_PG_MAJOR = 15;

export const SQL_OPERATIONS = ["select", "insert", "update", "delete", "merge", "copy_to", "copy_from", "ddl", "call", "do", "prepare", "execute", "cursor", "explain", "set"] as const;
export type SqlOperation = (typeof SQL_OPERATIONS)[number];

/** One thing a statement does: an operation on an object, with the columns it names. */
export interface SqlAccess {
  operation: SqlOperation;
  /** "schema.name" of the table, view or function; the setting for `set`; "" when the operation has no object. */
  object: string;
  /** Columns of the object the statement names ("*" for all columns); undefined when the operation has none. */
  columns?: string[];
  /** A dangerous built-in function: only a rule naming it without a wildcard allows it. */
  dangerous?: true;
}

export type SqlAnalysis = { ok: true; accesses: readonly SqlAccess[] } | { ok: false; error: string };

/*
 * The wasm module is instantiated once, starting when this module is first
 * imported (about 10 ms); every parse after that is synchronous. No
 * top-level await here: the guard's preload is loaded with `require`, which
 * refuses a module graph with one. The public entry points (meshguard,
 * meshguard/policy, meshguard/guard) await sqlParserReady() instead, so an
 * application that imports them never sees the parser loading; a statement
 * judged before it is loaded (only possible from the preload) is denied.
 */
let parserLoaded = false;
let parserError: unknown;
const loading: Promise<void> = loadModule().then(
  () => {
    parserLoaded = true;
  },
  (err: unknown) => {
    parserError = err;
  },
);

/** sqlParserLoaded tells whether statements can be parsed now. */
export function sqlParserLoaded(): boolean {
  return parserLoaded;
}

/** sqlParserReady resolves once PostgreSQL's parser is loaded (it never rejects: a parser that failed to load denies every statement, saying why). */
export function sqlParserReady(): Promise<void> {
  return loading;
}

/**
 * SAFE_FUNCTIONS: pg_catalog functions without side effects, free in any
 * statement (called unqualified or as pg_catalog.name). Everything else is a
 * `call`. docs/policy.md lists them.
 */
export const SAFE_FUNCTIONS: ReadonlySet<string> = new Set(
  (
    "count sum avg min max bool_and bool_or every array_agg string_agg json_agg jsonb_agg json_object_agg jsonb_object_agg " +
    "stddev variance row_number rank dense_rank percent_rank cume_dist ntile lag lead first_value last_value nth_value " +
    "lower upper length char_length octet_length substr substring trim btrim ltrim rtrim lpad rpad replace concat concat_ws " +
    "left right position strpos split_part reverse repeat initcap format md5 starts_with regexp_replace regexp_match regexp_matches " +
    "abs ceil ceiling floor round trunc mod power sqrt greatest least sign random " +
    "now current_timestamp clock_timestamp statement_timestamp transaction_timestamp date_trunc date_part extract age to_char to_date to_timestamp to_number make_date make_interval " +
    "coalesce nullif cast array_length array_position cardinality unnest generate_series " +
    "json_build_object jsonb_build_object json_build_array jsonb_build_array to_json to_jsonb jsonb_set jsonb_extract_path json_extract_path jsonb_array_length json_array_length jsonb_typeof " +
    "gen_random_uuid current_setting version"
  ).split(" "),
);

/** isDangerousFunction: built-ins that read files, change settings, reach other servers or other sessions. */
export function isDangerousFunction(qualified: string): boolean {
  const name = qualified.slice(qualified.lastIndexOf(".") + 1);
  return (
    DANGEROUS.has(name) ||
    name.startsWith("lo_") ||
    name.startsWith("dblink") ||
    name.startsWith("pg_read_") ||
    name.startsWith("pg_ls_") ||
    name.startsWith("pg_file_") ||
    name === "copy_program" ||
    name === "copy_file"
  );
}
const DANGEROUS = new Set(["set_config", "pg_stat_file", "pg_terminate_backend", "pg_cancel_backend", "pg_reload_conf", "pg_rotate_logfile", "loread", "lowrite", "pg_advisory_lock"]);

/**
 * isDangerousSetting: settings that change who the session is or how names
 * resolve, and resets of everything (RESET ALL, DISCARD): like dangerous
 * functions, only a rule naming them without a wildcard allows them.
 */
export function isDangerousSetting(name: string): boolean {
  return name === "role" || name === "session_authorization" || name === "search_path" || name === "all" || name === "discard" || name.startsWith("meshguard.");
}

/** SQL_CACHE_SIZE bounds the analysis cache (statement texts). */
export const SQL_CACHE_SIZE = 2048;
/** A text longer than this is analysed but not cached (a generated bulk INSERT would evict everything). */
const MAX_CACHED_TEXT = 16 * 1024;
const cache = new Map<string, SqlAnalysis>();

/**
 * analyzeSql returns the accesses of a statement text (one or more
 * statements), or why it cannot be read. Never throws. The cache is bounded
 * first-in first-out (a hit costs one lookup, no reordering).
 */
export function analyzeSql(text: string): SqlAnalysis {
  const hit = cache.get(text);
  if (hit !== undefined) return hit;
  const a = analyzeUncached(text);
  if (parserLoaded && text.length <= MAX_CACHED_TEXT) {
    if (cache.size >= SQL_CACHE_SIZE) cache.delete(cache.keys().next().value as string);
    cache.set(text, a);
  }
  return a;
}

/** analyzeUncached parses and walks, without the cache (the benchmark's cold path). */
export function analyzeUncached(text: string): SqlAnalysis {
  if (typeof text !== "string") return { ok: false, error: "the statement is not text" };
  if (!parserLoaded)
    return {
      ok: false,
      error:
        parserError !== undefined
          ? `PostgreSQL's parser (libpg-query) failed to load: ${(parserError as Error)?.message ?? String(parserError)}`
          : "PostgreSQL's parser (libpg-query) is not loaded yet: await sqlParserReady() (importing meshguard or meshguard/policy does) before judging statements",
    };
  let tree: { stmts?: Array<{ stmt?: Node }> };
  try {
    tree = parseSync(text) as typeof tree;
  } catch (err) {
    return { ok: false, error: `PostgreSQL ${SQL_PARSER_PG_MAJOR}'s parser cannot read it: ${(err as Error)?.message ?? String(err)}` };
  }
  try {
    const w = new Walker();
    for (const s of tree.stmts ?? []) if (s.stmt) w.statement(s.stmt);
    return Object.freeze({ ok: true as const, accesses: Object.freeze(dedupe(w.out)) });
  } catch (err) {
    return { ok: false, error: `the statement could not be analysed: ${(err as Error)?.message ?? String(err)}` };
  }
}

/** formatAccess writes an access as policy words: "select public.users (id, name)". */
export function formatAccess(a: SqlAccess): string {
  const cols = a.columns?.length ? ` (${a.columns.join(", ")})` : "";
  return `${a.operation}${a.object ? ` ${a.object}` : ""}${cols}`;
}

type Node = Record<string, unknown>;
type Body = Record<string, unknown>;

/** A query level: the relations its FROM names, for placing its column references. */
interface Level {
  rels: Array<{ name: string; alias: string | undefined; access: SqlAccess }>;
  refs: string[][];
  ctes: Set<string>;
  parent: Level | undefined;
}

/** Statement types that only steer the transaction: no access. */
const NO_ACCESS = new Set(["TransactionStmt"]);

class Walker {
  readonly out: SqlAccess[] = [];
  private level: Level | undefined;

  private add(operation: SqlOperation, object: string, columns?: string[], dangerous?: boolean): SqlAccess {
    const a: SqlAccess = { operation, object };
    if (columns) a.columns = columns;
    if (dangerous) a.dangerous = true;
    this.out.push(a);
    return a;
  }

  /** statement handles one top-level statement (a node wrapper { Type: body }). */
  statement(node: Node): void {
    const [type, body] = unwrap(node);
    if (type === undefined) return;
    if (NO_ACCESS.has(type)) return;
    switch (type) {
      case "SelectStmt":
      case "InsertStmt":
      case "UpdateStmt":
      case "DeleteStmt":
      case "MergeStmt":
        this.query(type, body);
        return;
      case "CopyStmt": {
        const from = body.is_from === true;
        if (body.relation) this.add(from ? "copy_from" : "copy_to", relName(body.relation as Body), cols(body.attlist));
        if (body.query) {
          // COPY (query) TO: copy_to on each table the query reads, and the query's own accesses.
          const inner = new Walker();
          inner.statement(body.query as Node);
          const objects = [...new Set(inner.out.filter((a) => a.operation === "select").map((a) => a.object))];
          for (const o of objects.length ? objects : [""]) this.add("copy_to", o);
          this.out.push(...inner.out);
        }
        // A server-side file or program: superuser business, never a plain copy.
        if (body.is_program === true) this.add("call", "pg_catalog.copy_program", undefined, true);
        else if (typeof body.filename === "string") this.add("call", "pg_catalog.copy_file", undefined, true);
        this.walk(body.whereClause);
        return;
      }
      case "CallStmt":
        this.walk(body.funccall && { FuncCall: body.funccall }, true);
        return;
      case "DoStmt":
        this.add("do", "");
        return;
      case "PrepareStmt":
        this.add("prepare", "");
        if (body.query) this.statement(body.query as Node);
        return;
      case "DeallocateStmt":
        this.add("prepare", "");
        return;
      case "ExecuteStmt":
        this.add("execute", "");
        this.walk(body.params);
        return;
      case "DeclareCursorStmt":
        this.add("cursor", "");
        if (body.query) this.statement(body.query as Node);
        return;
      case "FetchStmt":
      case "ClosePortalStmt":
        this.add("cursor", "");
        return;
      case "ExplainStmt": {
        const analyze = Array.isArray(body.options) && body.options.some((o) => (unwrap(o as Node)[1]?.defname as string | undefined) === "analyze");
        const inner = new Walker();
        if (body.query) inner.statement(body.query as Node);
        const objects = [...new Set(inner.out.filter((a) => a.operation !== "call").map((a) => a.object))];
        if (!objects.length) objects.push("");
        for (const o of objects) this.add("explain", o);
        // EXPLAIN ANALYZE runs its statement: judged as that statement too (a plain EXPLAIN only plans it).
        if (analyze) this.out.push(...inner.out);
        return;
      }
      case "VariableSetStmt": {
        const name = typeof body.name === "string" ? body.name : body.kind === "VAR_RESET_ALL" ? "all" : "";
        this.add("set", name, undefined, isDangerousSetting(name));
        this.walk(body.args);
        return;
      }
      case "VariableShowStmt":
        this.add("set", typeof body.name === "string" ? body.name : "");
        return;
      case "DiscardStmt":
        this.add("set", "discard", undefined, true);
        return;
      case "CreateTableAsStmt": {
        const into = (body.into as Body | undefined)?.rel as Body | undefined;
        this.add("ddl", into ? relName(into) : "");
        if (body.query) this.statement(body.query as Node);
        return;
      }
      case "ViewStmt":
        this.add("ddl", body.view ? relName(body.view as Body) : "");
        return;
      default:
        for (const o of ddlObjects(body)) this.add("ddl", o);
        // Expressions in DDL (defaults, checks, index predicates) may call functions;
        // the relations named are the DDL's objects, not reads.
        for (const [k, v] of Object.entries(body)) if (k !== "relation" && k !== "relations" && k !== "rels" && k !== "objects") this.walk(v);
    }
  }

  /** query handles a SELECT/INSERT/UPDATE/DELETE/MERGE body as its own level. */
  private query(type: string, body: Body): void {
    const level: Level = { rels: [], refs: [], ctes: new Set(this.level?.ctes ?? []), parent: this.level };
    this.level = level;
    try {
      const w = body.withClause as Body | undefined;
      for (const c of (w?.ctes as Node[] | undefined) ?? []) {
        const cte = unwrap(c)[1];
        if (typeof cte?.ctename === "string") level.ctes.add(cte.ctename);
      }
      for (const c of (w?.ctes as Node[] | undefined) ?? []) this.walk(unwrap(c)[1]?.ctequery);
      if (type === "SelectStmt") {
        if (body.larg) this.query("SelectStmt", body.larg as Body);
        if (body.rarg) this.query("SelectStmt", body.rarg as Body);
        const into = body.intoClause as Body | undefined;
        if (into?.rel) this.add("ddl", relName(into.rel as Body));
        for (const [k, v] of Object.entries(body)) if (k !== "withClause" && k !== "larg" && k !== "rarg" && k !== "intoClause") this.walk(v);
      } else if (type === "InsertStmt") {
        const name = relName(body.relation as Body);
        this.add("insert", name, cols(body.cols) ?? ["*"]);
        this.walk(body.selectStmt);
        const oc = body.onConflictClause as Body | undefined;
        if (oc?.action === "ONCONFLICT_UPDATE") {
          const set = cols(oc.targetList) ?? [];
          const refs = this.refsOf([oc.whereClause, oc.targetList]);
          this.walk([oc.whereClause, oc.targetList]);
          this.add("update", name, uniq([...set, ...refs]));
        }
        this.returning(name, body.returningList);
      } else if (type === "UpdateStmt" || type === "DeleteStmt") {
        const name = relName(body.relation as Body);
        const alias = ((body.relation as Body).alias as Body | undefined)?.aliasname as string | undefined;
        const set = type === "UpdateStmt" ? (cols(body.targetList) ?? []) : [];
        const a = this.add(type === "UpdateStmt" ? "update" : "delete", name, set);
        level.rels.push({ name, alias, access: a });
        this.walk(type === "UpdateStmt" ? body.fromClause : body.usingClause);
        this.walk(body.whereClause);
        this.walk(type === "UpdateStmt" ? body.targetList : undefined);
        this.returning(name, body.returningList);
      } else {
        const name = relName(body.relation as Body);
        const alias = ((body.relation as Body).alias as Body | undefined)?.aliasname as string | undefined;
        const a = this.add("merge", name, []);
        level.rels.push({ name, alias, access: a });
        this.walk(body.sourceRelation);
        this.walk(body.joinCondition);
        for (const wc of (body.mergeWhenClauses as Node[] | undefined) ?? []) {
          const c = unwrap(wc)[1] ?? {};
          const op = c.commandType === "CMD_INSERT" ? "insert" : c.commandType === "CMD_UPDATE" ? "update" : c.commandType === "CMD_DELETE" ? "delete" : undefined;
          if (op) this.add(op, name, op === "delete" ? [] : (cols(c.targetList) ?? (op === "insert" ? ["*"] : [])));
          this.walk(c.condition);
          this.walk(c.values);
          this.walk(c.targetList);
        }
      }
      this.place(level);
    } finally {
      this.level = level.parent;
    }
  }

  /** returning: RETURNING reads the target's columns (PostgreSQL asks for SELECT on them). */
  private returning(name: string, list: unknown): void {
    if (!Array.isArray(list) || !list.length) return;
    const refs = this.refsOf([list]);
    this.walk(list);
    this.add("select", name, refs.length ? refs : []);
  }

  /** refsOf collects the column names referenced in nodes of this level (qualifiers dropped). */
  private refsOf(nodes: unknown[]): string[] {
    const out: string[] = [];
    const visit = (n: unknown): void => {
      if (Array.isArray(n)) return n.forEach(visit);
      if (n === null || typeof n !== "object") return;
      for (const [k, v] of Object.entries(n as Body)) {
        if (k === "ColumnRef") {
          const f = fieldsOf(v as Body);
          out.push(f.length ? f[f.length - 1]! : "*");
        } else if (k === "SelectStmt") continue;
        else visit(v);
      }
    };
    nodes.forEach(visit);
    return uniq(out);
  }

  /** place gives each column reference of a level to the relations it can belong to (all of them when unqualified: conservative). */
  private place(level: Level): void {
    for (const f of level.refs) {
      const col = f[f.length - 1]!;
      const qual = f.length >= 2 ? f[f.length - 2] : undefined;
      let targets = level.rels;
      if (qual !== undefined) {
        const byQual = level.rels.filter((r) => r.alias === qual || (r.alias === undefined && r.name.slice(r.name.lastIndexOf(".") + 1) === qual));
        if (byQual.length) targets = byQual;
        else if (level.parent) {
          // A correlated reference to an outer query's relation.
          level.parent.refs.push(f);
          continue;
        }
      } else if (!targets.length && level.parent) {
        level.parent.refs.push(f);
        continue;
      }
      for (const r of targets) {
        const c = r.access.columns ?? (r.access.columns = []);
        if (!c.includes(col)) c.push(col);
      }
    }
  }

  /** walk visits any node tree: relations read, subqueries, column references, function calls. */
  private walk(n: unknown, callStmt = false): void {
    if (Array.isArray(n)) {
      for (const x of n) this.walk(x);
      return;
    }
    if (n === null || typeof n !== "object") return;
    for (const [k, v] of Object.entries(n as Body)) {
      if (v === null || typeof v !== "object") continue;
      switch (k) {
        case "SelectStmt":
        case "InsertStmt":
        case "UpdateStmt":
        case "DeleteStmt":
        case "MergeStmt":
          this.query(k, v as Body);
          break;
        case "RangeVar": {
          const body = v as Body;
          const name = relName(body);
          if (body.schemaname === undefined && this.level?.ctes.has(body.relname as string)) break; // a CTE, walked where it is defined
          const a = this.add("select", name, []);
          this.level?.rels.push({ name, alias: (body.alias as Body | undefined)?.aliasname as string | undefined, access: a });
          break;
        }
        case "ColumnRef": {
          const f = fieldsOf(v as Body);
          (this.level?.refs ?? []).push(f.length ? f : ["*"]);
          break;
        }
        case "FuncCall": {
          this.func(v as Body, callStmt);
          this.walk((v as Body).args);
          this.walk((v as Body).agg_filter);
          this.walk((v as Body).agg_order);
          this.walk((v as Body).over);
          break;
        }
        default:
          this.walk(v);
      }
    }
  }

  private func(body: Body, callStmt: boolean): void {
    const parts = ((body.funcname as Node[] | undefined) ?? []).map((p) => (unwrap(p)[1]?.sval as string | undefined) ?? "");
    const name = parts[parts.length - 1] ?? "";
    const schema = parts.length >= 2 ? parts[parts.length - 2]! : undefined;
    if (!callStmt && (schema === undefined || schema === "pg_catalog") && SAFE_FUNCTIONS.has(name)) return;
    const qualified = schema !== undefined ? `${schema}.${name}` : `${builtinLike(name) ? "pg_catalog" : "public"}.${name}`;
    this.add("call", qualified, undefined, isDangerousFunction(qualified));
  }
}

/** builtinLike: an unqualified name resolved to pg_catalog (which PostgreSQL searches first). */
function builtinLike(name: string): boolean {
  return name.startsWith("pg_") || name.startsWith("lo_") || DANGEROUS.has(name) || SAFE_FUNCTIONS.has(name) || OTHER_BUILTINS.has(name);
}

/** Built-ins with side effects or state that are not dangerous: their unqualified names are pg_catalog's. */
const OTHER_BUILTINS = new Set(["nextval", "currval", "setval", "lastval", "txid_current", "loread", "lowrite", "to_regclass", "has_table_privilege", "row_to_json", "array_to_string", "string_to_array"]);

function unwrap(n: Node | undefined): [string | undefined, Body] {
  if (!n || typeof n !== "object") return [undefined, {}];
  const keys = Object.keys(n);
  return keys.length === 1 ? [keys[0], (n[keys[0]!] ?? {}) as Body] : [undefined, n];
}

function relName(r: Body | undefined): string {
  if (!r) return "";
  const schema = typeof r.schemaname === "string" ? r.schemaname : "public";
  return `${schema}.${String(r.relname)}`;
}

function fieldsOf(ref: Body): string[] {
  return ((ref.fields as Node[] | undefined) ?? []).map((f) => {
    const [t, b] = unwrap(f);
    return t === "A_Star" ? "*" : String(b.sval ?? "");
  });
}

/** cols reads the names of a list of ResTarget (INSERT columns, UPDATE SET targets, COPY column lists). */
function cols(list: unknown): string[] | undefined {
  if (!Array.isArray(list) || !list.length) return undefined;
  const out: string[] = [];
  for (const x of list as Node[]) {
    const [t, b] = unwrap(x);
    if (t === "ResTarget" && typeof b.name === "string") out.push(b.name);
    else if (t === "String" && typeof b.sval === "string") out.push(b.sval);
  }
  return uniq(out);
}

/** ddlObjects names the relations a DDL statement is about ("" when none can be named). */
function ddlObjects(body: Body): string[] {
  const out: string[] = [];
  if (body.relation && typeof body.relation === "object") out.push(relName(body.relation as Body));
  for (const r of (body.relations as Node[] | undefined) ?? []) {
    const [t, b] = unwrap(r);
    if (t === "RangeVar") out.push(relName(b));
  }
  for (const r of (body.rels as Node[] | undefined) ?? []) {
    const rel = unwrap(r)[1]?.relation as Body | undefined;
    if (rel) out.push(relName(rel));
  }
  const rt = body.removeType;
  if (typeof rt === "string" && /^OBJECT_(TABLE|VIEW|MATVIEW|FOREIGN_TABLE|SEQUENCE|INDEX)$/.test(rt)) {
    for (const o of (body.objects as Node[] | undefined) ?? []) {
      const names = (((unwrap(o)[1]?.items as Node[] | undefined) ?? []) as Node[]).map((i) => String(unwrap(i)[1]?.sval ?? ""));
      out.push(names.length >= 2 ? `${names[names.length - 2]}.${names[names.length - 1]}` : `public.${names[0] ?? ""}`);
    }
  }
  return out.length ? uniq(out) : [""];
}

function uniq(a: string[]): string[] {
  return [...new Set(a)];
}

/** dedupe merges accesses with the same operation and object (their columns united). */
function dedupe(list: SqlAccess[]): SqlAccess[] {
  const by = new Map<string, SqlAccess>();
  for (const a of list) {
    const k = `${a.operation}\0${a.object}`;
    const had = by.get(k);
    if (!had) {
      by.set(k, { ...a, ...(a.columns ? { columns: [...a.columns] } : {}) });
      continue;
    }
    if (had.columns || a.columns) had.columns = uniq([...(had.columns ?? []), ...(a.columns ?? [])]);
  }
  for (const a of by.values()) if (a.columns) Object.freeze(a.columns);
  return [...by.values()].map((a) => Object.freeze(a));
}
