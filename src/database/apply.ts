/**
 * `meshguard policy apply --db`: the policy's `sql` rules made into
 * PostgreSQL's own objects, so that the database enforces them for the
 * caller roles the database gateway sets (docs/database.md, "Applying the
 * policy to the database"):
 *
 *   - a role per user and per tag named in a rule's `src` (and per tag set
 *     given with `tagSets`, a member of each tag's role), NOLOGIN;
 *   - the gateway's login role: LOGIN, NOINHERIT, no privileges of its own,
 *     a member of every caller role so that it can SET ROLE to it;
 *   - GRANTs of SELECT, INSERT, UPDATE and DELETE (column lists when the
 *     rule lists columns) on every table or view the rule's `table` globs
 *     match in the catalog now (a table created later needs another apply),
 *     USAGE on their schemas and, with INSERT, on their columns' sequences;
 *   - on a table some rule filters by `rows`: ENABLE and FORCE ROW LEVEL
 *     SECURITY and one row-security policy per role and command, keyed on
 *     current_user (CREATE POLICY … TO role USING (rows) WITH CHECK (rows));
 *   - the meshguard schema (meshguard.principal(), meshguard.owners()).
 *
 * Grants come from allow and approve rules only; deny rules are enforced by
 * the gateway's statement check, and what an unconditional one denies is
 * withheld from the roles its src names (PostgreSQL has no negative grant:
 * a tag-set role still inherits what another of its tags' roles holds). What meshguard owns, and so may revoke or drop: the
 * SELECT/INSERT/UPDATE/DELETE privileges of the roles it created (their
 * COMMENT says so) on this database's relations, their USAGE on schemas and
 * on sequences owned by columns,
 * and row-security policies named "mg:…" whose COMMENT is meshguard's.
 * Nothing else is ever touched. Everything runs in one transaction; the
 * catalog is read first, so a second apply of the same policy runs nothing.
 */

import { createHash } from "node:crypto";
import { parseSync } from "libpg-query";
import pg from "pg";
import { ErrorCode, MeshguardError } from "../errors.js";
import { flatGlob, anyOf } from "../policy/glob.js";
import { resolveSrc } from "../policy/identity.js";
import { ruleId } from "../policy/compile.js";
import { TAG_RE } from "../policy/schema.js";
import { sqlParserReady, SQL_PARSER_PG_MAJOR } from "../policy/sql.js";
import type { Policy } from "../policy/load.js";
import type { Rule } from "../policy/schema.js";
import { DEFAULT_GATEWAY_ROLE, MESHGUARD_SCHEMA, fitIdentifier, meshguardSchemaSql, quoteIdent, quoteLiteral, roleForTag, roleForTagSet, roleForUser } from "./roles.js";

/** What applyDatabasePolicy needs of a connection: node-postgres' Client and PoolClient fit. */
export interface DatabaseClient {
  query(text: string, values?: unknown[]): Promise<{ rows: unknown[] }>;
}

export interface DatabaseApplyOptions {
  /** postgres://USER:PASSWORD@HOST:PORT/DATABASE: apply connects (and disconnects) itself. */
  connectionString?: string;
  /** A connected client instead (node-postgres' Client or PoolClient): apply runs its own transaction on it. */
  client?: DatabaseClient;
  /** Read the catalog and return the statements, change nothing. */
  dryRun?: boolean;
  /** Tag sets of nodes that carry several tags ([["tag:a", "tag:b"]]): each gets a role, a member of each tag's role. */
  tagSets?: readonly (readonly string[])[];
  /** The gateway's login role (default "meshguard_gateway"). */
  gatewayRole?: string;
  /** The password the gateway role gets when apply creates it (an existing role's password is left alone). */
  gatewayPassword?: string;
}

/** One thing apply changes, with the statement that does it. */
export interface DatabaseChange {
  kind: "schema" | "role" | "membership" | "row-security" | "grant" | "revoke" | "policy" | "drop-policy";
  /** The role, table or policy concerned ("public.orders", "mg:tag:reader"). */
  object: string;
  /** The statement (a password shown as '***'). */
  sql: string;
}

export interface DatabaseApplyResult {
  /** The database applied to (current_database()); rules whose `database` globs miss it were left out. */
  database: string;
  /** The server's version (server_version). */
  serverVersion: string;
  dryRun: boolean;
  /** False when the database already matched the policy (nothing ran). */
  changed: boolean;
  /** The statements run (with dryRun: that would run), in order. */
  statements: string[];
  changes: DatabaseChange[];
  /** Things the user should know: a glob matching no table, a rule apply cannot express, a table owner now under row security. */
  warnings: string[];
  /** Rules that grant nothing in this database, and why. */
  skipped: Array<{ ruleId: string; reason: string }>;
}

type Priv = "SELECT" | "INSERT" | "UPDATE" | "DELETE";
const PRIVS: readonly Priv[] = ["SELECT", "INSERT", "UPDATE", "DELETE"];

/** The table privileges each operation needs (merge needs those of its clauses, which the statement check sees as insert/update/delete). */
const OP_PRIVS: Record<string, readonly Priv[]> = {
  select: ["SELECT"],
  copy_to: ["SELECT"],
  insert: ["INSERT"],
  copy_from: ["INSERT"],
  update: ["UPDATE"],
  delete: ["DELETE"],
  "*": PRIVS,
};

/** The operations that need a table privilege ("*" stands for all of them). */
const PRIV_OPS = Object.keys(OP_PRIVS).filter((o) => o !== "*");

/** The row-security command of each privilege, and whether its policy has USING, WITH CHECK or both. */
const POLICY_FORM: Record<Priv, { using: boolean; check: boolean }> = {
  SELECT: { using: true, check: false },
  INSERT: { using: false, check: true },
  UPDATE: { using: true, check: true },
  DELETE: { using: true, check: false },
};

const CALLER_COMMENT = "meshguard: caller role (meshguard policy apply --db)";
const GATEWAY_COMMENT = "meshguard: gateway login role (meshguard policy apply --db)";
const POLICY_COMMENT = "meshguard: row filter (meshguard policy apply --db)";
const POLICY_PREFIX = "mg:";

/** Schemas apply never grants in nor expands globs into. */
const SYSTEM_SCHEMAS = ["pg_catalog", "information_schema", MESHGUARD_SCHEMA];

/** Relation kinds a table glob expands to: tables, partitioned tables, views, materialized views, foreign tables. */
const RELKINDS = ["r", "p", "v", "m", "f"];
/** Those that can have row security (views, materialized views and foreign tables cannot). */
const RLS_KINDS = new Set(["r", "p"]);

const fail = (message: string, hint?: string, cause?: unknown) => new MeshguardError(ErrorCode.DATABASE_APPLY_FAILED, message, { ...(hint ? { hint } : {}), ...(cause !== undefined ? { cause } : {}) });

/**
 * rowsExpressionError says why a `rows` filter is not one SQL expression
 * (undefined when it is). It must parse, with PostgreSQL's parser, as the
 * single unnamed item of a SELECT list and nothing else, so it can never
 * close the parenthesis apply writes it in (`USING (<rows>)`). Whether it is
 * boolean and names existing columns PostgreSQL says when the policy is
 * created.
 */
export async function rowsExpressionError(rows: string): Promise<string | undefined> {
  await sqlParserReady();
  let tree: { stmts?: Array<{ stmt?: Record<string, unknown> }> };
  try {
    tree = parseSync(`SELECT ${rows}\n`) as typeof tree;
  } catch (err) {
    return `it does not parse as a SQL expression (PostgreSQL ${SQL_PARSER_PG_MAJOR}'s parser: ${(err as Error).message})`;
  }
  const stmts = tree.stmts ?? [];
  const sel = stmts.length === 1 ? (stmts[0]!.stmt?.SelectStmt as Record<string, unknown> | undefined) : undefined;
  const extra = sel ? Object.keys(sel).filter((k) => k !== "targetList" && k !== "limitOption" && k !== "op") : [];
  const targets = sel?.targetList as Array<{ ResTarget?: { name?: string } }> | undefined;
  if (!sel || extra.length || targets?.length !== 1 || targets[0]!.ResTarget?.name !== undefined) {
    return "it is not one SQL expression (it reads as more than a single expression: a list, an alias, a FROM, another statement)";
  }
  return undefined;
}

/**
 * applyDatabasePolicy makes the database match the policy's `sql` rules
 * (see the module comment), or with `dryRun` says what it would run.
 * Throws MeshguardError MESHGUARD_DATABASE_APPLY_FAILED (nothing changed).
 */
export async function applyDatabasePolicy(policy: Policy, opts: DatabaseApplyOptions): Promise<DatabaseApplyResult> {
  if ((opts.connectionString === undefined) === (opts.client === undefined)) {
    throw new MeshguardError(ErrorCode.INVALID_OPTIONS, "applyDatabasePolicy needs exactly one of connectionString and client");
  }
  const gatewayRole = opts.gatewayRole ?? DEFAULT_GATEWAY_ROLE;
  if (gatewayRole === "" || Buffer.byteLength(gatewayRole) > 63 || gatewayRole.startsWith("mg:") || gatewayRole.includes("\0")) {
    throw new MeshguardError(ErrorCode.INVALID_OPTIONS, `gatewayRole ${JSON.stringify(gatewayRole)} is not a usable role name`, {
      hint: 'use a name of 1-63 bytes that does not start with "mg:" (meshguard\'s caller roles), such as "meshguard_gateway"',
    });
  }
  for (const set of opts.tagSets ?? []) {
    const bad = set.find((t) => !TAG_RE.test(t));
    if (bad !== undefined || set.length === 0) {
      throw new MeshguardError(ErrorCode.INVALID_OPTIONS, `tag set ${JSON.stringify(set)} ${bad !== undefined ? `has ${JSON.stringify(bad)}, which is not a tag` : "is empty"}`, {
        hint: 'list tags as "tag:name", e.g. ["tag:billing", "tag:reports"] (--tag-set tag:billing,tag:reports)',
      });
    }
  }
  // The filters are checked before anything connects: a typo never reaches the database.
  for (const [i, r] of policy.rules.entries()) {
    if (r.sql?.rows === undefined || r.effect === "deny") continue;
    const why = await rowsExpressionError(r.sql.rows);
    if (why) throw fail(`rule ${ruleId(r, i)}: its rows filter ${JSON.stringify(r.sql.rows)} is refused: ${why}`, 'write a boolean expression over the table\'s columns, such as "z IS NOT NULL" or "owner = ANY (meshguard.owners())"');
  }

  let own: pg.Client | undefined;
  let client: DatabaseClient;
  if (opts.client) client = opts.client;
  else {
    try {
      own = new pg.Client({ connectionString: opts.connectionString, application_name: "meshguard-policy-apply", connectionTimeoutMillis: 10_000 });
      // An error of the idle connection (a restarted server) must not crash the process: the query in flight reports it.
      own.on("error", () => {});
      await own.connect();
    } catch (err) {
      await own?.end().catch(() => {});
      throw fail(`cannot connect to PostgreSQL at ${shownUrl(opts.connectionString!)}: ${(err as Error).message}`, "check the host, port, database, user and password of the connection string", err);
    }
    client = own!;
  }
  try {
    return await inTransaction(client, policy, opts, gatewayRole);
  } finally {
    await own?.end().catch(() => {});
  }
}

/** shownUrl is the connection string without its password, for messages. */
export function shownUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.toString();
  } catch {
    return "(a connection string that is not a URL)";
  }
}

async function inTransaction(client: DatabaseClient, policy: Policy, opts: DatabaseApplyOptions, gatewayRole: string): Promise<DatabaseApplyResult> {
  const dryRun = opts.dryRun === true;
  let current: PlannedChange | undefined;
  try {
    await client.query(dryRun ? "BEGIN READ ONLY" : "BEGIN");
    // Two applies at once would each revoke what the other grants: one waits for the other.
    if (!dryRun) await client.query("SELECT pg_advisory_xact_lock(hashtext('meshguard policy apply --db'))");
    const catalog = await readCatalog(client);
    const plan = planChanges(policy, catalog, opts, gatewayRole);
    for (const c of plan.changes) {
      if (dryRun) break;
      current = c;
      await client.query(c.run ?? c.sql);
    }
    current = undefined;
    await client.query(dryRun ? "ROLLBACK" : "COMMIT");
    const changes = plan.changes.map(({ kind, object, sql }) => ({ kind, object, sql }));
    return {
      database: catalog.database,
      serverVersion: catalog.serverVersion,
      dryRun,
      changed: changes.length > 0,
      statements: changes.map((c) => c.sql),
      changes,
      warnings: plan.warnings,
      skipped: plan.skipped,
    };
  } catch (err) {
    await client.query("ROLLBACK").catch(() => {});
    if (err instanceof MeshguardError) throw err;
    const pgErr = err as { message?: string; code?: string };
    if (current) throw fail(`${current.rules ? `rule ${current.rules.join(", rule ")}: ` : ""}PostgreSQL refused ${JSON.stringify(current.sql)}: ${pgErr.message}${pgErr.code ? ` (SQLSTATE ${pgErr.code})` : ""}; nothing was changed`, hintFor(pgErr.code), err);
    throw fail(`reading the catalog failed: ${pgErr.message ?? String(err)}; nothing was changed`, undefined, err);
  }
}

function hintFor(code: string | undefined): string | undefined {
  if (code === "42501") return "apply needs a superuser, or a role with CREATEROLE that owns the tables (ALTER TABLE and CREATE POLICY are the owner's)";
  if (code === "42703" || code === "42883" || code === "42804") return "a rows filter names a column or function the table does not have, or is not boolean: fix the rule's rows";
  return undefined;
}

// ---- the catalog as apply needs it ----

interface Relation {
  name: string; // "schema.name"
  schema: string;
  kind: string;
  rls: boolean;
  force: boolean;
  owner: string;
  ownerBypasses: boolean;
  /** apply's login is a superuser or has the owner's privileges: it can grant, revoke, enable row security and create policies here. */
  mine: boolean;
  columns: Set<string>;
}

interface RoleRow {
  name: string;
  comment: string | null;
  super: boolean;
  inherit: boolean;
  login: boolean;
  bypass: boolean;
}

interface Catalog {
  database: string;
  serverVersion: string;
  serverMajor: number;
  relations: Map<string, Relation>;
  /** Roles meshguard may create or use: the ones named in the plan and every one it created, by name. */
  roles: Map<string, RoleRow>;
  /** "role\0member" pairs. */
  memberships: Set<string>;
  /** Privileges held by meshguard's caller roles: "table\0role\0PRIV" → "all" or the columns. */
  privileges: Map<string, "all" | Set<string>>;
  /** Schemas where a meshguard caller role has USAGE: "schema\0role". */
  usage: Set<string>;
  /** The sequences owned by each table's columns (serial, identity), by table. */
  sequences: Map<string, string[]>;
  /** Sequences where a meshguard caller role has USAGE: "sequence\0role". */
  sequenceUsage: Set<string>;
  /** Tables without row security: the other roles with privileges there that no policy covers. */
  uncovered: Map<string, string[]>;
  /** Schemas apply's login owns (or is a superuser): it can grant and revoke USAGE there. */
  ownSchemas: Set<string>;
  /** meshguard's row-security policies: "table\0name" → its comment. */
  policies: Map<string, string>;
  /** Policies named "mg:…" that meshguard did not make (no meshguard comment): never touched. */
  foreignPolicies: Set<string>;
  /** The meshguard schema's functions are there, as meshguardSchemaSql() writes them. */
  schemaCurrent: boolean;
  /** Functions and procedures outside the system schemas, by "schema.name(argument types)". */
  routines: Map<string, Routine>;
  /** EXECUTE held by meshguard's caller roles: "routine\0role". */
  executes: Set<string>;
}

/** A function or procedure, as `call` rules grant EXECUTE on it. */
interface Routine {
  schema: string;
  /** "schema.name", what a rule's table glob matches. */
  name: string;
  /** The signature to name it by in GRANT and REVOKE: "schema"."name"(argument types). */
  signature: string;
  procedure: boolean;
  /** PUBLIC may execute it (PostgreSQL's default for a new function). */
  publicExecute: boolean;
  mine: boolean;
  owner: string;
}

async function rows<T>(client: DatabaseClient, text: string, values?: unknown[]): Promise<T[]> {
  return (await client.query(text, values)).rows as T[];
}

async function readCatalog(client: DatabaseClient): Promise<Catalog> {
  const [info] = await rows<{ db: string; version: string; num: string }>(client, "SELECT current_database() AS db, current_setting('server_version') AS version, current_setting('server_version_num') AS num");
  const relations = new Map<string, Relation>();
  for (const r of await rows<{ schema: string; name: string; kind: string; rls: boolean; force: boolean; owner: string; bypass: boolean; mine: boolean; columns: string[] | null }>(
    client,
    `SELECT n.nspname AS schema, c.relname AS name, c.relkind::text AS kind, c.relrowsecurity AS rls, c.relforcerowsecurity AS force,
            o.rolname AS owner, (o.rolsuper OR o.rolbypassrls) AS bypass,
            ((SELECT rolsuper FROM pg_roles WHERE rolname = current_user) OR pg_has_role(c.relowner, 'USAGE')) AS mine,
            (SELECT array_agg(a.attname::text) FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) AS columns
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_roles o ON o.oid = c.relowner
      WHERE c.relkind::text = ANY ($1) AND NOT (n.nspname = ANY ($2)) AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'`,
    [RELKINDS, SYSTEM_SCHEMAS],
  )) {
    const name = `${r.schema}.${r.name}`;
    relations.set(name, { name, schema: r.schema, kind: r.kind, rls: r.rls, force: r.force, owner: r.owner, ownerBypasses: r.bypass, mine: r.mine, columns: new Set(r.columns ?? []) });
  }
  const roles = new Map<string, RoleRow>();
  for (const r of await rows<RoleRow>(
    client,
    `SELECT rolname AS name, shobj_description(oid, 'pg_authid') AS comment, rolsuper AS super, rolinherit AS inherit, rolcanlogin AS login, rolbypassrls AS bypass
       FROM pg_roles WHERE rolname LIKE 'mg:%' OR shobj_description(oid, 'pg_authid') LIKE 'meshguard:%'`,
  ))
    roles.set(r.name, r);
  const mine = [...roles.values()].filter((r) => r.comment === CALLER_COMMENT).map((r) => r.name);
  const memberships = new Set<string>();
  for (const m of await rows<{ role: string; member: string }>(
    client,
    "SELECT r.rolname AS role, m.rolname AS member FROM pg_auth_members am JOIN pg_roles r ON r.oid = am.roleid JOIN pg_roles m ON m.oid = am.member WHERE r.rolname LIKE 'mg:%'",
  ))
    memberships.add(`${m.role}\0${m.member}`);
  const privileges = new Map<string, "all" | Set<string>>();
  const relFrom = "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace";
  for (const p of await rows<{ schema: string; name: string; role: string; priv: Priv }>(
    client,
    `SELECT n.nspname AS schema, c.relname AS name, g.rolname AS role, a.privilege_type AS priv
       ${relFrom}, aclexplode(c.relacl) a JOIN pg_roles g ON g.oid = a.grantee
      WHERE g.rolname = ANY ($1) AND a.privilege_type = ANY ($2)`,
    [mine, PRIVS],
  ))
    privileges.set(`${p.schema}.${p.name}\0${p.role}\0${p.priv}`, "all");
  for (const p of await rows<{ schema: string; name: string; role: string; priv: Priv; col: string }>(
    client,
    `SELECT n.nspname AS schema, c.relname AS name, g.rolname AS role, a.privilege_type AS priv, t.attname::text AS col
       FROM pg_attribute t JOIN pg_class c ON c.oid = t.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(t.attacl) a JOIN pg_roles g ON g.oid = a.grantee
      WHERE t.attacl IS NOT NULL AND NOT t.attisdropped AND g.rolname = ANY ($1) AND a.privilege_type = ANY ($2)`,
    [mine, PRIVS],
  )) {
    const k = `${p.schema}.${p.name}\0${p.role}\0${p.priv}`;
    const had = privileges.get(k);
    // A table-level privilege covers every column (and PostgreSQL keeps column grants beside it: they are revoked with it).
    if (had === "all") continue;
    if (had) had.add(p.col);
    else privileges.set(k, new Set([p.col]));
  }
  const usage = new Set<string>();
  for (const u of await rows<{ schema: string; role: string }>(
    client,
    `SELECT n.nspname AS schema, g.rolname AS role FROM pg_namespace n, aclexplode(n.nspacl) a JOIN pg_roles g ON g.oid = a.grantee
      WHERE g.rolname = ANY ($1) AND a.privilege_type = 'USAGE'`,
    [mine],
  ))
    usage.add(`${u.schema}\0${u.role}`);
  // Sequences owned by a table's columns (serial, identity): an INSERT that takes the default calls nextval, which needs USAGE.
  const sequences = new Map<string, string[]>();
  for (const q of await rows<{ table: string; seq: string }>(
    client,
    `SELECT tn.nspname || '.' || t.relname AS table, sn.nspname || '.' || s.relname AS seq
       FROM pg_depend d JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' JOIN pg_namespace sn ON sn.oid = s.relnamespace
       JOIN pg_class t ON t.oid = d.refobjid JOIN pg_namespace tn ON tn.oid = t.relnamespace
      WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')`,
  )) {
    const list = sequences.get(q.table);
    if (list) list.push(q.seq);
    else sequences.set(q.table, [q.seq]);
  }
  const sequenceUsage = new Set<string>();
  for (const u of await rows<{ seq: string; role: string }>(
    client,
    `SELECT n.nspname || '.' || c.relname AS seq, g.rolname AS role
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(c.relacl) a JOIN pg_roles g ON g.oid = a.grantee
      WHERE c.relkind = 'S' AND g.rolname = ANY ($1) AND a.privilege_type = 'USAGE'`,
    [mine],
  ))
    sequenceUsage.add(`${u.seq}\0${u.role}`);
  // Roles with privileges on a table without row security that no policy there would cover: enabling it hides every row from them.
  const uncovered = new Map<string, string[]>();
  for (const u of await rows<{ table: string; roles: string[] }>(
    client,
    `SELECT n.nspname || '.' || c.relname AS table, array_agg(DISTINCT g.rolname::text) AS roles
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(c.relacl) a JOIN pg_roles g ON g.oid = a.grantee
      WHERE NOT c.relrowsecurity AND c.relkind IN ('r', 'p') AND g.oid <> c.relowner AND NOT g.rolsuper AND NOT g.rolbypassrls AND g.rolname NOT LIKE 'mg:%'
        AND NOT EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid AND (g.oid = ANY (p.polroles) OR 0 = ANY (p.polroles)))
      GROUP BY 1`,
  ))
    uncovered.set(u.table, u.roles.sort());
  const ownSchemas = new Set(
    (await rows<{ schema: string }>(client, "SELECT nspname AS schema FROM pg_namespace WHERE (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) OR pg_has_role(nspowner, 'USAGE')")).map((r) => r.schema),
  );
  const policies = new Map<string, string>();
  const foreignPolicies = new Set<string>();
  for (const p of await rows<{ schema: string; name: string; policy: string; comment: string | null }>(
    client,
    `SELECT n.nspname AS schema, c.relname AS name, p.polname AS policy, obj_description(p.oid, 'pg_policy') AS comment
       FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE p.polname LIKE 'mg:%'`,
  )) {
    // Only a policy meshguard made (its comment) is meshguard's to replace or drop.
    if (p.comment?.startsWith(POLICY_COMMENT)) policies.set(`${p.schema}.${p.name}\0${p.policy}`, p.comment);
    else foreignPolicies.add(`${p.schema}.${p.name}\0${p.policy}`);
  }
  const [fns] = await rows<{ principal: string | null; owners: string | null }>(
    client,
    `SELECT (SELECT prosrc FROM pg_proc WHERE oid = to_regprocedure($1)) AS principal, (SELECT prosrc FROM pg_proc WHERE oid = to_regprocedure($2)) AS owners`,
    [`${quoteIdent(MESHGUARD_SCHEMA)}.principal()`, `${quoteIdent(MESHGUARD_SCHEMA)}.owners()`],
  );
  const bodies = meshguardSchemaSql()
    .map((s) => /\$\$(.*)\$\$/s.exec(s)?.[1])
    .filter((b): b is string => b !== undefined);
  const schemaCurrent = fns!.principal === bodies[0] && fns!.owners === bodies[1];
  const routines = new Map<string, Routine>();
  for (const f of await rows<{ schema: string; name: string; args: string; kind: string; public: boolean; mine: boolean; owner: string }>(
    client,
    `SELECT n.nspname AS schema, p.proname AS name, pg_get_function_identity_arguments(p.oid) AS args, p.prokind::text AS kind, o.rolname AS owner,
            EXISTS (SELECT 1 FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE') AS public,
            ((SELECT rolsuper FROM pg_roles WHERE rolname = current_user) OR pg_has_role(p.proowner, 'USAGE')) AS mine
       FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace JOIN pg_roles o ON o.oid = p.proowner
      WHERE p.prokind IN ('f', 'p') AND NOT (n.nspname = ANY ($1)) AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'`,
    [SYSTEM_SCHEMAS],
  )) {
    const signature = `${quoteIdent(f.schema)}.${quoteIdent(f.name)}(${f.args})`;
    routines.set(signature, { schema: f.schema, name: `${f.schema}.${f.name}`, signature, procedure: f.kind === "p", publicExecute: f.public, mine: f.mine, owner: f.owner });
  }
  const executes = new Set<string>();
  for (const e of await rows<{ schema: string; name: string; args: string; role: string }>(
    client,
    `SELECT n.nspname AS schema, p.proname AS name, pg_get_function_identity_arguments(p.oid) AS args, g.rolname AS role
       FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace, aclexplode(p.proacl) a JOIN pg_roles g ON g.oid = a.grantee
      WHERE g.rolname = ANY ($1) AND a.privilege_type = 'EXECUTE'`,
    [mine],
  ))
    executes.add(`${quoteIdent(e.schema)}.${quoteIdent(e.name)}(${e.args})\0${e.role}`);
  return {
    routines,
    executes,
    database: info!.db,
    serverVersion: info!.version,
    serverMajor: Math.floor(Number(info!.num) / 10000),
    relations,
    roles,
    memberships,
    privileges,
    usage,
    sequences,
    sequenceUsage,
    uncovered,
    ownSchemas,
    policies,
    foreignPolicies,
    schemaCurrent,
  };
}

// ---- what the policy wants, and the statements that get there ----

interface PlannedChange extends DatabaseChange {
  /** The statement to run when it differs from the one shown (a password). */
  run?: string;
  /** The rules it comes from, for an error PostgreSQL gives. */
  rules?: string[];
}

interface Plan {
  changes: PlannedChange[];
  warnings: string[];
  skipped: Array<{ ruleId: string; reason: string }>;
}

/** One privilege a role should have on a relation, from one or more rules. */
interface Want {
  /** "all", or the columns the rules list. */
  columns: "all" | Set<string>;
  /** "all" (some rule has no filter), or the rules' filters (ORed). */
  rows: "all" | Set<string>;
  /** The ids of the rules it comes from. */
  rules: Set<string>;
}

const qualified = (rel: string) => {
  const dot = rel.indexOf(".");
  return `${quoteIdent(rel.slice(0, dot))}.${quoteIdent(rel.slice(dot + 1))}`;
};
const colList = (cols: Iterable<string>) => `(${[...cols].sort().map(quoteIdent).join(", ")})`;

function planChanges(policy: Policy, cat: Catalog, opts: DatabaseApplyOptions, gatewayRole: string): Plan {
  const changes: PlannedChange[] = [];
  const warnings: string[] = [];
  const skipped: Plan["skipped"] = [];
  const add = (kind: DatabaseChange["kind"], object: string, sql: string, run?: string) => changes.push(run === undefined ? { kind, object, sql } : { kind, object, sql, run });
  if (cat.serverMajor !== SQL_PARSER_PG_MAJOR) {
    warnings.push(`the server is PostgreSQL ${cat.serverVersion}, the statement parser speaks PostgreSQL ${SQL_PARSER_PG_MAJOR}: rows filters were checked with that grammar (docs/policy.md says how to match the parser to the server)`);
  }

  // Rules for this database, allow and approve only: deny rules are the gateway's to enforce.
  const rules: Array<{ rule: Rule; id: string }> = [];
  // Unconditional deny rules: what they deny is withheld from the roles of their src (defence in depth; the gateway enforces them anyway).
  const denies: Array<{ id: string; src: ReturnType<typeof resolveSrc>; ops: Set<string>; match: (s: string) => boolean }> = [];
  policy.rules.forEach((r, i) => {
    if (!r.sql) return;
    const id = ruleId(r, i);
    if (!anyOf(r.sql.database.map(flatGlob))(cat.database)) return;
    if (r.effect === "deny") {
      if (r.when === undefined) denies.push({ id, src: resolveSrc(r.src, policy.document.groups), ops: new Set(r.sql.operation), match: anyOf(r.sql.table.map(flatGlob)) });
      skipped.push({ ruleId: id, reason: r.when === undefined ? "a deny rule grants nothing; what it denies is not granted to the roles it names, and the database gateway's statement check enforces it" : "a deny rule with conditions (when) grants nothing and withholds nothing: the database gateway's statement check enforces it" });
      return;
    }
    rules.push({ rule: r, id });
  });

  // The caller roles: every tag and user the rules name, each tag set given, and the tags of those sets.
  const groups = policy.document.groups;
  const tagRoles = new Map<string, string>();
  const userRoles = new Map<string, string>();
  for (const { rule } of rules) {
    const s = resolveSrc(rule.src, groups);
    for (const t of s.tags) tagRoles.set(roleForTag(t), t);
    for (const u of s.users) userRoles.set(roleForUser(u), u);
  }
  const setRoles = new Map<string, string[]>();
  for (const set of opts.tagSets ?? []) {
    for (const t of set) tagRoles.set(roleForTag(t), t);
    const uniq = [...new Set(set)];
    if (uniq.length > 1) setRoles.set(roleForTagSet(uniq), uniq);
  }
  const callerRoles = [...new Set([...tagRoles.keys(), ...userRoles.keys(), ...setRoles.keys()])].sort();
  /** covers: a rule's src names the callers of a role (a tag-set role's callers carry each of its tags). */
  const covers = (src: ReturnType<typeof resolveSrc>, role: string): boolean => {
    if (src.star) return true;
    const tag = tagRoles.get(role);
    if (tag !== undefined) return src.tags.has(tag);
    const user = userRoles.get(role);
    if (user !== undefined) return src.users.has(user);
    return (setRoles.get(role) ?? []).some((t) => src.tags.has(t));
  };

  // ---- roles ----
  for (const role of callerRoles) {
    const have = cat.roles.get(role);
    if (have && have.comment !== CALLER_COMMENT) {
      throw fail(`the role ${quoteIdent(role)} exists and meshguard did not create it (its comment is ${have.comment === null ? "empty" : JSON.stringify(have.comment)}): apply never takes over a role`, `rename or drop that role, or, if it is meant to be meshguard's caller role, COMMENT ON ROLE ${quoteIdent(role)} IS ${quoteLiteral(CALLER_COMMENT)}`);
    }
    const attrs = "NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT";
    if (!have) {
      add("role", role, `CREATE ROLE ${quoteIdent(role)} ${attrs}`);
      add("role", role, `COMMENT ON ROLE ${quoteIdent(role)} IS ${quoteLiteral(CALLER_COMMENT)}`);
    } else {
      // Only the attributes that differ: naming SUPERUSER or BYPASSRLS at all in ALTER ROLE needs a superuser.
      const fix = [have.login && "NOLOGIN", have.super && "NOSUPERUSER", have.bypass && "NOBYPASSRLS", !have.inherit && "INHERIT"].filter(Boolean);
      if (fix.length) add("role", role, `ALTER ROLE ${quoteIdent(role)} ${fix.join(" ")}`);
    }
  }
  const gw = cat.roles.get(gatewayRole);
  if (gw && (gw.super || gw.bypass)) {
    throw fail(`the gateway role ${quoteIdent(gatewayRole)} is ${gw.super ? "a superuser" : "allowed to bypass row security (BYPASSRLS)"}: row filters would not apply to anyone it serves`, `use another role for the gateway (--gateway-role NAME), or ALTER ROLE ${quoteIdent(gatewayRole)} NOSUPERUSER NOBYPASSRLS`);
  }
  if (gw === undefined) {
    const pw = opts.gatewayPassword;
    const create = `CREATE ROLE ${quoteIdent(gatewayRole)} LOGIN NOINHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS`;
    if (pw !== undefined) add("role", gatewayRole, `${create} PASSWORD '***'`, `${create} PASSWORD ${quoteLiteral(pw)}`);
    else add("role", gatewayRole, create);
    add("role", gatewayRole, `COMMENT ON ROLE ${quoteIdent(gatewayRole)} IS ${quoteLiteral(GATEWAY_COMMENT)}`);
  } else if (gw.inherit || !gw.login) {
    // NOINHERIT: the gateway has no privileges of its own, only those of the role it SETs.
    add("role", gatewayRole, `ALTER ROLE ${quoteIdent(gatewayRole)} LOGIN NOINHERIT`);
  }
  const member = (role: string, of: string) => {
    if (!cat.memberships.has(`${of}\0${role}`)) add("membership", of, `GRANT ${quoteIdent(of)} TO ${quoteIdent(role)}`);
  };
  for (const [setRole, tags] of setRoles) for (const t of tags) member(setRole, roleForTag(t));
  for (const role of callerRoles) member(gatewayRole, role);

  // ---- the meshguard schema ----
  if (!cat.schemaCurrent) for (const s of meshguardSchemaSql()) add("schema", MESHGUARD_SCHEMA, s);

  // ---- what each role should hold ----
  const wants = new Map<string, Want>(); // "table\0role\0PRIV"
  const wantExec = new Map<string, Set<string>>(); // "signature\0role" → rule ids
  const rowsTables = new Set<string>();
  for (const { rule, id } of rules) {
    const sql = rule.sql!;
    const ops = sql.operation.includes("*") ? PRIV_OPS : sql.operation.filter((o) => OP_PRIVS[o] !== undefined);
    const calls = sql.operation.includes("*") || sql.operation.includes("call");
    if (!ops.length && !calls) {
      skipped.push({ ruleId: id, reason: `its operations (${sql.operation.join(", ")}) need no privileges apply grants: the gateway's statement check decides them, and PostgreSQL's own rules (ownership for ddl) apply` });
      continue;
    }
    const s = resolveSrc(rule.src, groups);
    const roles = s.star ? callerRoles : [...new Set([...[...s.tags].map(roleForTag), ...[...s.users].map(roleForUser)])];
    if (s.nodes.size) {
      warnings.push(`rule ${id}: ${[...s.nodes].join(", ")} ${s.nodes.size > 1 ? "are node names" : "is a node name"}: PostgreSQL roles are per user and per tag, so nothing is granted for ${s.nodes.size > 1 ? "them" : "it"} (fail closed): name the node's tag or user in src`);
    }
    if (!roles.length) {
      skipped.push({ ruleId: id, reason: s.star ? "its src is * and no rule names a tag or user to make a role for" : "its src names no tag or user" });
      continue;
    }
    const match = anyOf(sql.table.map(flatGlob));
    if (calls) {
      const fns = [...cat.routines.values()].filter((f) => match(f.name)).sort((a, b) => a.signature.localeCompare(b.signature));
      if (!fns.length && !ops.length) {
        warnings.push(`rule ${id}: ${sql.table.join(", ")} matches no function or procedure in database ${cat.database} outside ${SYSTEM_SCHEMAS.join(", ")} (functions there keep PostgreSQL's own privileges; globs expand at apply time: run apply again after creating the function)`);
        continue;
      }
      for (const f of fns) {
        if (!f.mine) throw fail(`rule ${id}: the ${f.procedure ? "procedure" : "function"} ${f.signature} is owned by ${quoteIdent(f.owner)}, and apply's login is neither a superuser nor a member of that role, so it cannot grant EXECUTE on it`, "run apply as the function's owner (or a member of it), or as a superuser; or narrow the rule's table globs");
        for (const role of roles) {
          if (denies.some((d) => (d.ops.has("call") || d.ops.has("*")) && d.match(f.name) && covers(d.src, role))) continue;
          const k = `${f.signature}\0${role}`;
          const w = wantExec.get(k);
          if (w) w.add(id);
          else wantExec.set(k, new Set([id]));
        }
      }
      if (!ops.length) continue;
    }
    const rels = [...cat.relations.values()].filter((r) => match(r.name)).sort((a, b) => a.name.localeCompare(b.name));
    if (!rels.length) {
      warnings.push(`rule ${id}: table ${sql.table.join(", ")} matches no table or view in database ${cat.database} (globs expand against the catalog at apply time: run apply again after creating the table)`);
      continue;
    }
    const listed = sql.columns && !sql.columns.includes("*") ? sql.columns : undefined;
    for (const rel of rels) {
      // PostgreSQL only warns when a GRANT by someone else grants nothing: refuse instead, or every apply would "change" it again.
      if (!rel.mine) throw fail(`rule ${id}: ${rel.name} is owned by ${quoteIdent(rel.owner)}, and apply's login is neither a superuser nor a member of that role, so it cannot grant on it, enable row security or create policies there`, `run apply as the tables' owner (or a member of it) with CREATEROLE, or as a superuser; or narrow the rule's table globs`);
      if (sql.rows !== undefined && !RLS_KINDS.has(rel.kind)) {
        warnings.push(`rule ${id}: ${rel.name} is a ${KIND_NAMES[rel.kind]}, which cannot have row security: its rows filter cannot be enforced there, so nothing is granted on it (fail closed); filter the table it reads instead`);
        continue;
      }
      let cols: "all" | Set<string> = "all";
      if (listed) {
        const missing = listed.filter((c) => !rel.columns.has(c));
        if (missing.length) warnings.push(`rule ${id}: ${rel.name} has no column ${missing.join(", ")}: not granted`);
        cols = new Set(listed.filter((c) => rel.columns.has(c)));
        if (!cols.size) continue;
      }
      if (sql.rows !== undefined) rowsTables.add(rel.name);
      for (const role of roles) {
        const privs = new Set<Priv>();
        for (const o of ops) if (!denies.some((d) => (d.ops.has(o) || d.ops.has("*")) && d.match(rel.name) && covers(d.src, role))) for (const p of OP_PRIVS[o]!) privs.add(p);
        for (const p of privs) {
          // DELETE has no column form: a rule listing columns still grants it on the table.
          const c = p === "DELETE" ? "all" : cols;
          const k = `${rel.name}\0${role}\0${p}`;
          const w = wants.get(k);
          if (!w) {
            wants.set(k, { columns: c === "all" ? "all" : new Set(c), rows: sql.rows === undefined ? "all" : new Set([sql.rows]), rules: new Set([id]) });
            continue;
          }
          w.rules.add(id);
          if (w.columns !== "all") w.columns = c === "all" ? "all" : new Set([...w.columns, ...c]);
          if (w.rows !== "all") w.rows = sql.rows === undefined ? "all" : w.rows.add(sql.rows);
        }
      }
    }
  }

  // ---- row security on the tables that need it ----
  for (const name of [...rowsTables].sort()) {
    const rel = cat.relations.get(name)!;
    if (!rel.rls) {
      add("row-security", name, `ALTER TABLE ${qualified(name)} ENABLE ROW LEVEL SECURITY`);
      const others = (cat.uncovered.get(name) ?? []).filter((r) => r !== gatewayRole);
      if (others.length) {
        warnings.push(`${name} gets row security: ${others.map(quoteIdent).join(", ")} ${others.length > 1 ? "have" : "has"} privileges there and no policy, so ${others.length > 1 ? "they see" : "it sees"} no rows from now on (give ${others.length > 1 ? "each" : "it"} a policy, e.g. CREATE POLICY ${quoteIdent(`${others[0]}_all`)} ON ${qualified(name)} TO ${quoteIdent(others[0]!)} USING (true) WITH CHECK (true))`);
      }
    }
    if (!rel.force) {
      add("row-security", name, `ALTER TABLE ${qualified(name)} FORCE ROW LEVEL SECURITY`);
      if (!rel.ownerBypasses) {
        warnings.push(`${name} is owned by ${quoteIdent(rel.owner)}, which FORCE ROW LEVEL SECURITY now subjects to row security too: it sees only the rows a policy gives it (give it one, e.g. CREATE POLICY app_all ON ${qualified(name)} TO ${quoteIdent(rel.owner)} USING (true) WITH CHECK (true), or BYPASSRLS)`);
      }
    }
  }

  // ---- privileges: revoke what is no longer wanted, then grant what is missing ----
  const managed = new Set([...cat.roles.values()].filter((r) => r.comment === CALLER_COMMENT).map((r) => r.name));
  const revokes: PlannedChange[] = [];
  const notMine = new Set<string>();
  const grants: PlannedChange[] = [];
  for (const [k, have] of [...cat.privileges].sort(byKey)) {
    const [table, role, priv] = k.split("\0") as [string, string, Priv];
    // Only relations apply manages (not sequences, not system schemas) of roles it created.
    if (!managed.has(role) || !cat.relations.has(table)) continue;
    const want = wants.get(k);
    if (!cat.relations.get(table)!.mine) {
      // Not wanted (a wanted one on a table apply cannot grant on failed above). PostgreSQL would
      // only warn ("no privileges could be revoked"): say so instead of "changing" it at every apply.
      notMine.add(table);
      continue;
    }
    const from = `ON ${qualified(table)} FROM ${quoteIdent(role)}`;
    if (!want) revokes.push({ kind: "revoke", object: table, sql: `REVOKE ${priv} ${from}` });
    else if (have === "all" && want.columns !== "all") revokes.push({ kind: "revoke", object: table, sql: `REVOKE ${priv} ${from}` }); // also revokes its column grants
    else if (have !== "all" && want.columns !== "all") {
      const gone = [...have].filter((c) => !(want.columns as Set<string>).has(c));
      if (gone.length) revokes.push({ kind: "revoke", object: table, sql: `REVOKE ${priv} ${colList(gone)} ${from}` });
    } else if (have !== "all" && want.columns === "all") {
      // A table-level grant does not remove column grants: drop them so the catalog says one thing.
      revokes.push({ kind: "revoke", object: table, sql: `REVOKE ${priv} ${colList(have)} ${from}` });
    }
  }
  for (const [k, want] of [...wants].sort(byKey)) {
    const [table, role, priv] = k.split("\0") as [string, string, Priv];
    const haveRaw = cat.privileges.get(k);
    // What is left after the revokes above.
    const have = haveRaw === "all" && want.columns !== "all" ? undefined : haveRaw !== "all" && haveRaw !== undefined && want.columns === "all" ? undefined : haveRaw;
    const to = `ON ${qualified(table)} TO ${quoteIdent(role)}`;
    if (want.columns === "all") {
      if (have !== "all") grants.push({ kind: "grant", object: table, sql: `GRANT ${priv} ${to}`, rules: [...want.rules].sort() });
    } else {
      const missing = [...want.columns].filter((c) => have === undefined || (have !== "all" && !have.has(c)));
      if (missing.length) grants.push({ kind: "grant", object: table, sql: `GRANT ${priv} ${colList(missing)} ${to}`, rules: [...want.rules].sort() });
    }
  }
  // USAGE on the sequences of a table's serial and identity columns, for each role that may INSERT (a sequence has its table's owner).
  const wantSeq = new Map<string, string>(); // "sequence\0role" → its table
  for (const k of wants.keys()) {
    const [table, role, priv] = k.split("\0") as [string, string, Priv];
    if (priv === "INSERT") for (const seq of cat.sequences.get(table) ?? []) wantSeq.set(`${seq}\0${role}`, table);
  }
  const seqTable = new Map([...cat.sequences].flatMap(([t, seqs]) => seqs.map((q) => [q, t] as const)));
  for (const u of [...cat.sequenceUsage].sort()) {
    const [seq, role] = u.split("\0") as [string, string];
    if (wantSeq.has(u) || !managed.has(role)) continue;
    const table = seqTable.get(seq);
    if (table === undefined) continue; // a sequence no column owns: not meshguard's business
    if (cat.relations.get(table)?.mine === false) notMine.add(table);
    else revokes.push({ kind: "revoke", object: seq, sql: `REVOKE USAGE ON SEQUENCE ${qualified(seq)} FROM ${quoteIdent(role)}` });
  }
  for (const [u, table] of [...wantSeq].sort(byKey)) {
    const [seq, role] = u.split("\0") as [string, string];
    if (!cat.sequenceUsage.has(u)) grants.push({ kind: "grant", object: seq, sql: `GRANT USAGE ON SEQUENCE ${qualified(seq)} TO ${quoteIdent(role)}`, rules: [...wants.get(`${table}\0${role}\0INSERT`)!.rules].sort() });
  }
  // EXECUTE on the functions and procedures of call rules: revoked from meshguard's roles where no rule gives it any
  // more, granted where missing, and revoked from PUBLIC (which holds it by default) so that only the roles granted may call.
  for (const e of [...cat.executes].sort()) {
    const [sig, role] = e.split("\0") as [string, string];
    const f = cat.routines.get(sig);
    if (wantExec.has(e) || !managed.has(role) || f === undefined) continue;
    if (!f.mine) notMine.add(`${f.procedure ? "procedure" : "function"} ${sig}`);
    else revokes.push({ kind: "revoke", object: sig, sql: `REVOKE EXECUTE ON ${f.procedure ? "PROCEDURE" : "FUNCTION"} ${sig} FROM ${quoteIdent(role)}` });
  }
  const publicRevoked = new Set<string>();
  for (const [k, ids] of [...wantExec].sort(byKey)) {
    const [sig, role] = k.split("\0") as [string, string];
    const f = cat.routines.get(sig)!;
    const what = f.procedure ? "PROCEDURE" : "FUNCTION";
    if (f.publicExecute && !publicRevoked.has(sig)) {
      publicRevoked.add(sig);
      revokes.push({ kind: "revoke", object: sig, sql: `REVOKE EXECUTE ON ${what} ${sig} FROM PUBLIC`, rules: [...ids].sort() });
      warnings.push(`${sig}: EXECUTE is revoked from PUBLIC, so only the roles the policy's call rules name (and the owner, and roles granted it by hand) may call it from now on; an application role that called it needs GRANT EXECUTE ON ${what} ${sig} TO that role`);
    }
    if (!cat.executes.has(k)) grants.push({ kind: "grant", object: sig, sql: `GRANT EXECUTE ON ${what} ${sig} TO ${quoteIdent(role)}`, rules: [...ids].sort() });
  }
  // USAGE on the schemas of granted relations (public's is PUBLIC's already: not managed).
  const wantUsage = new Set<string>();
  for (const k of wants.keys()) {
    const [table, role] = k.split("\0") as [string, string];
    const schema = cat.relations.get(table)!.schema;
    if (schema !== "public") wantUsage.add(`${schema}\0${role}`);
  }
  for (const k of wantExec.keys()) {
    const [sig, role] = k.split("\0") as [string, string];
    const schema = cat.routines.get(sig)!.schema;
    if (schema !== "public") wantUsage.add(`${schema}\0${role}`);
  }
  for (const u of [...cat.usage].sort()) {
    const [schema, role] = u.split("\0") as [string, string];
    if (schema === "public" || wantUsage.has(u) || !managed.has(role)) continue;
    if (!cat.ownSchemas.has(schema)) notMine.add(`schema ${schema}`);
    else revokes.push({ kind: "revoke", object: schema, sql: `REVOKE USAGE ON SCHEMA ${quoteIdent(schema)} FROM ${quoteIdent(role)}` });
  }
  for (const u of [...wantUsage].sort()) {
    const [schema, role] = u.split("\0") as [string, string];
    if (cat.usage.has(u)) continue;
    if (!cat.ownSchemas.has(schema)) throw fail(`the schema ${quoteIdent(schema)} is not owned by apply's login (nor is it a superuser), so it cannot grant USAGE on it to ${quoteIdent(role)}`, "run apply as the schema's owner (or a member of it), or as a superuser");
    grants.push({ kind: "grant", object: schema, sql: `GRANT USAGE ON SCHEMA ${quoteIdent(schema)} TO ${quoteIdent(role)}` });
  }

  // ---- row-security policies: on every row-secured table, one per role and command it is granted ----
  const wantPolicies = new Map<string, { table: string; sql: string[]; comment: string; rules: string[] }>(); // "table\0name"
  for (const [k, want] of [...wants].sort(byKey)) {
    const [table, role, priv] = k.split("\0") as [string, string, Priv];
    const rel = cat.relations.get(table)!;
    // A table with row security (ours, or enabled by someone else) shows a role no row without a policy.
    if (!rowsTables.has(table) && !rel.rls) continue;
    const expr = want.rows === "all" ? "true" : [...want.rows].sort().map((r) => `(${r}\n)`).join(" OR ");
    const form = POLICY_FORM[priv];
    const name = fitIdentifier(`${POLICY_PREFIX}${role.startsWith("mg:") ? role.slice(3) : role}:${priv.toLowerCase()}`);
    const body = `CREATE POLICY ${quoteIdent(name)} ON ${qualified(table)} AS PERMISSIVE FOR ${priv} TO ${quoteIdent(role)}${form.using ? ` USING (${expr})` : ""}${form.check ? ` WITH CHECK (${expr})` : ""}`;
    // The comment carries a digest of the definition: an unchanged policy is left alone, a changed one replaced.
    if (cat.foreignPolicies.has(`${table}\0${name}`)) {
      throw fail(`${table} has a row-security policy ${quoteIdent(name)} that meshguard did not create (its comment is not meshguard's), with the name apply needs for ${role}'s ${priv}`, `rename it (ALTER POLICY ${quoteIdent(name)} ON ${qualified(table)} RENAME TO other_name): apply never replaces a policy it did not create`);
    }
    const comment = `${POLICY_COMMENT} ${createHash("sha256").update(body).digest("hex").slice(0, 16)}`;
    wantPolicies.set(`${table}\0${name}`, { table, sql: [body, `COMMENT ON POLICY ${quoteIdent(name)} ON ${qualified(table)} IS ${quoteLiteral(comment)}`], comment, rules: [...want.rules].sort() });
  }
  const dropPolicies: PlannedChange[] = [];
  const createPolicies: PlannedChange[] = [];
  for (const [k, comment] of [...cat.policies].sort(byKey)) {
    const [table, name] = k.split("\0") as [string, string];
    const want = wantPolicies.get(k);
    if (want && want.comment === comment) continue;
    if (cat.relations.get(table)?.mine === false) notMine.add(table);
    else dropPolicies.push({ kind: "drop-policy", object: table, sql: `DROP POLICY ${quoteIdent(name)} ON ${qualified(table)}` });
  }
  for (const [k, want] of wantPolicies) {
    if (cat.policies.get(k) === want.comment) continue;
    for (const s of want.sql) createPolicies.push({ kind: "policy", object: want.table, sql: s, rules: want.rules });
  }
  for (const t of [...notMine].sort()) {
    warnings.push(`${t}: meshguard's roles hold privileges or policies there that the policy no longer gives, and apply's login does not own it, so it cannot revoke them: run apply as its owner (or a superuser)`);
  }
  // Policies go before the grants that need them and after the revokes: no moment shows a role more rows than the policy says.
  changes.push(...revokes, ...dropPolicies, ...createPolicies, ...grants);
  return { changes, warnings, skipped };
}

const KIND_NAMES: Record<string, string> = { v: "view", m: "materialized view", f: "foreign table", r: "table", p: "partitioned table" };

function byKey<T>(a: [string, T], b: [string, T]): number {
  return a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0;
}
