/**
 * `meshguard policy apply --db` (applyDatabasePolicy) against a real
 * PostgreSQL (Debian's, started in a temporary data directory by
 * test/gateway/pg-server.ts). Row security is checked the way the database
 * gateway uses it: logged in as the gateway role, SET ROLE to a caller's
 * role, meshguard.owners set with set_config.
 */
import pg from "pg";
import { from as copyFrom } from "pg-copy-streams";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCliCaptured } from "../cli-run.js";
import { applyDatabasePolicy, ownersSettingValue, roleForTag, type DatabaseApplyResult } from "../../src/database/index.js";
import { isMeshguardError } from "../../src/errors.js";
import { loadPolicy } from "../../src/policy/index.js";
import { postgresUnavailable, startPostgres, type PgServer } from "../gateway/pg-server.js";

const unavailable = postgresUnavailable();
if (unavailable) console.warn(`policy apply --db tests skipped: ${unavailable}`);

const DB = "appdb";
const GW_PASSWORD = "gateway-secret-pw";
const LONG_TAG = `tag:${"long-tag-name-".repeat(5)}x`;
let server: PgServer;
let url: string;

beforeAll(async () => {
  if (unavailable) return;
  server = await startPostgres();
  url = await server.createDatabase(DB);
  for (const s of [
    "CREATE TABLE items (id int PRIMARY KEY, z text, owner text, body text)",
    "INSERT INTO items VALUES (1, 'a', 'alice', 'one'), (2, NULL, 'alice', 'two'), (3, 'c', 'bob', 'three'), (4, NULL, 'bob', 'four')",
    "CREATE TABLE audit_log (id int, msg text, secret text)",
    "INSERT INTO audit_log VALUES (1, 'hello', 'hidden')",
    "CREATE SCHEMA reports",
    "CREATE TABLE reports.daily (day date, total int)",
    "CREATE TABLE secrets (v text)",
    "CREATE VIEW items_view AS SELECT id, z FROM items",
    // Objects meshguard did not create: they must come through every apply untouched.
    "CREATE ROLE app_reader NOLOGIN",
    "GRANT SELECT ON items TO app_reader",
    "CREATE POLICY custom_policy ON items TO app_reader USING (id < 100)",
  ])
    await server.sql(DB, s);
}, 120_000);
afterAll(async () => {
  await server?.stop();
});

interface RuleSpec {
  id: string;
  src: string[];
  effect?: string;
  when?: Record<string, unknown>;
  sql: Record<string, unknown>;
}

const FULL: RuleSpec[] = [
  { id: "reader-items", src: ["tag:reader"], sql: { database: [DB], operation: ["select"], table: ["public.items"], rows: "z IS NOT NULL" } },
  { id: "owner-items", src: ["tag:owner"], sql: { database: [DB], operation: ["select", "insert", "update", "copy_from"], table: ["public.items"], rows: "owner = ANY (meshguard.owners())" } },
  { id: "reader-log", src: ["tag:reader"], sql: { database: [DB], operation: ["select"], table: ["public.audit_log"], columns: ["id", "msg"] } },
  { id: "alice-reports", src: ["alice@example.com"], sql: { database: [DB], operation: ["select"], table: ["reports.*"] } },
  { id: "long", src: [LONG_TAG], sql: { database: [DB], operation: ["select"], table: ["public.audit_log"] } },
  { id: "no-secrets", src: ["*"], effect: "deny", sql: { database: ["*"], operation: ["*"], table: ["public.secrets"] } },
  { id: "elsewhere", src: ["tag:reader"], sql: { database: ["otherdb"], operation: ["*"], table: ["*"] } },
];

const policy = (rules: RuleSpec[]) => loadPolicy(JSON.stringify({ version: 5, rules }));
const apply = (rules: RuleSpec[], extra: Partial<Parameters<typeof applyDatabasePolicy>[1]> = {}) =>
  applyDatabasePolicy(policy(rules), { connectionString: url, gatewayPassword: GW_PASSWORD, tagSets: [["tag:reader", "tag:owner"]], ...extra });

const one = async <T = Record<string, unknown>>(text: string, params: unknown[] = []) => (await server.sql(DB, text, params))[0] as T;
const roleExists = async (name: string) => (await server.sql(DB, "SELECT 1 FROM pg_roles WHERE rolname = $1", [name])).length === 1;
const can = async (role: string, table: string, priv: string) => (await one<{ ok: boolean }>("SELECT has_table_privilege($1, $2, $3) AS ok", [role, table, priv])).ok;
const policyNames = async (table: string) => (await server.sql<{ policyname: string }>(DB, "SELECT policyname FROM pg_policies WHERE tablename = $1 ORDER BY 1", [table])).map((r) => r.policyname);

/** asCaller logs in as the gateway role and does what the database gateway does for a caller: SET ROLE and the owners setting. */
async function asCaller(role: string | undefined, owners: string[] = []): Promise<pg.Client> {
  const u = new URL(url);
  u.username = "meshguard_gateway";
  u.password = GW_PASSWORD;
  const c = new pg.Client({ connectionString: u.toString() });
  await c.connect();
  if (role) await c.query(`SET ROLE "${role}"`);
  await c.query("SELECT set_config('meshguard.owners', $1, false)", [ownersSettingValue(owners)]);
  return c;
}
const ids = async (c: pg.Client, q = "SELECT id FROM items ORDER BY id") => (await c.query(q)).rows.map((r) => r.id as number);

describe.skipIf(unavailable)("meshguard policy apply --db", () => {
  let first: DatabaseApplyResult;

  it("a dry run prints the SQL and changes nothing", async () => {
    const dry = await apply(FULL, { dryRun: true });
    expect(dry.dryRun).toBe(true);
    expect(dry.database).toBe(DB);
    const sql = dry.statements.join("\n");
    expect(sql).toContain('CREATE ROLE "mg:tag:reader" NOLOGIN');
    expect(sql).toContain('CREATE ROLE "meshguard_gateway" LOGIN NOINHERIT');
    expect(sql).toContain("PASSWORD '***'");
    expect(sql).not.toContain(GW_PASSWORD);
    expect(sql).toContain('ALTER TABLE "public"."items" ENABLE ROW LEVEL SECURITY');
    expect(sql).toContain('ALTER TABLE "public"."items" FORCE ROW LEVEL SECURITY');
    expect(sql).toContain('CREATE POLICY "mg:tag:reader:select" ON "public"."items" AS PERMISSIVE FOR SELECT TO "mg:tag:reader" USING ((z IS NOT NULL\n))');
    expect(sql).toContain('GRANT SELECT ("id", "msg") ON "public"."audit_log" TO "mg:tag:reader"');
    expect(sql).toContain("CREATE SCHEMA IF NOT EXISTS \"meshguard\"");
    expect(await roleExists("mg:tag:reader")).toBe(false);
    expect(await roleExists("meshguard_gateway")).toBe(false);
    expect((await one<{ rls: boolean }>("SELECT relrowsecurity AS rls FROM pg_class WHERE relname = 'items'")).rls).toBe(false);
    expect(await policyNames("items")).toEqual(["custom_policy"]);
    // The deny rule and the other database's rule are not applied; the deny rule is reported.
    expect(dry.skipped).toContainEqual({ ruleId: "no-secrets", reason: expect.stringContaining("deny") });
    expect(dry.skipped.map((s) => s.ruleId)).not.toContain("elsewhere");
  });

  it("apply creates the roles, grants, row security and policies", async () => {
    first = await apply(FULL);
    expect(first.changed).toBe(true);
    expect(first.dryRun).toBe(false);
    const gw = await one<{ rolinherit: boolean; rolcanlogin: boolean; rolsuper: boolean; rolbypassrls: boolean }>("SELECT rolinherit, rolcanlogin, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = 'meshguard_gateway'");
    expect(gw).toEqual({ rolinherit: false, rolcanlogin: true, rolsuper: false, rolbypassrls: false });
    for (const r of ["mg:tag:reader", "mg:tag:owner", "mg:user:alice@example.com", "mg:tags:owner+reader"]) {
      expect(await roleExists(r), r).toBe(true);
      expect((await one<{ m: boolean }>("SELECT pg_has_role('meshguard_gateway', $1, 'MEMBER') AS m", [r])).m, r).toBe(true);
    }
    // The tag-set role is a member of each tag's role, inheriting their grants.
    expect(await can("mg:tags:owner+reader", "public.items", "INSERT")).toBe(true);
    expect(await can("mg:tag:reader", "public.items", "SELECT")).toBe(true);
    expect(await can("mg:tag:reader", "public.items", "INSERT")).toBe(false);
    expect(await can("mg:tag:reader", "public.audit_log", "SELECT")).toBe(false); // columns only
    expect((await one<{ ok: boolean }>("SELECT has_column_privilege('mg:tag:reader', 'public.audit_log', 'msg', 'SELECT') AS ok")).ok).toBe(true);
    expect((await one<{ ok: boolean }>("SELECT has_column_privilege('mg:tag:reader', 'public.audit_log', 'secret', 'SELECT') AS ok")).ok).toBe(false);
    expect(await can("mg:user:alice@example.com", "reports.daily", "SELECT")).toBe(true);
    expect(await can("mg:tag:reader", "public.secrets", "SELECT")).toBe(false);
    // The gateway has no privileges of its own.
    expect(await can("meshguard_gateway", "public.items", "SELECT")).toBe(false);
    const rel = await one<{ rls: boolean; force: boolean }>("SELECT relrowsecurity AS rls, relforcerowsecurity AS force FROM pg_class WHERE relname = 'items'");
    expect(rel).toEqual({ rls: true, force: true });
    expect(await policyNames("items")).toEqual(["custom_policy", "mg:tag:owner:insert", "mg:tag:owner:select", "mg:tag:owner:update", "mg:tag:reader:select"]);
    // app_reader, which had SELECT on items before, has a policy there (custom_policy): no warning that it loses its rows.
    expect(first.warnings.join("\n")).not.toContain("gets row security");
    // Tables without a rows rule get no row security.
    expect((await one<{ rls: boolean }>("SELECT relrowsecurity AS rls FROM pg_class WHERE relname = 'audit_log'")).rls).toBe(false);
  });

  it("two callers on the same query see different rows: z IS NOT NULL, and only their owners' rows", async () => {
    const reader = await asCaller("mg:tag:reader");
    const owner = await asCaller("mg:tag:owner", ["alice"]);
    const bob = await asCaller("mg:tag:owner", ["bob"]);
    const gateway = await asCaller(undefined);
    try {
      expect(await ids(reader)).toEqual([1, 3]);
      expect(await ids(owner)).toEqual([1, 2]);
      expect(await ids(bob)).toEqual([3, 4]);
      // The gateway's own role reads nothing.
      await expect(gateway.query("SELECT id FROM items")).rejects.toThrow(/permission denied/);
      // Columns: the reader reads id and msg of audit_log, not secret.
      expect((await reader.query("SELECT id, msg FROM audit_log")).rows).toEqual([{ id: 1, msg: "hello" }]);
      await expect(reader.query("SELECT secret FROM audit_log")).rejects.toThrow(/permission denied/);
    } finally {
      for (const c of [reader, owner, bob, gateway]) await c.end();
    }
  });

  it("writes: WITH CHECK refuses a row outside the filter; rows outside it cannot be updated", async () => {
    const owner = await asCaller("mg:tag:owner", ["alice"]);
    const reader = await asCaller("mg:tag:reader");
    try {
      await owner.query("INSERT INTO items (id, z, owner) VALUES (5, 'e', 'alice')");
      await expect(owner.query("INSERT INTO items (id, z, owner) VALUES (6, 'f', 'bob')")).rejects.toThrow(/row-level security/);
      await expect(owner.query("UPDATE items SET owner = 'bob' WHERE id = 1")).rejects.toThrow(/row-level security/);
      expect((await owner.query("UPDATE items SET body = 'changed' WHERE id = 3")).rowCount).toBe(0);
      expect((await owner.query("UPDATE items SET body = 'changed' WHERE id = 2")).rowCount).toBe(1);
      await expect(reader.query("INSERT INTO items (id, z, owner) VALUES (7, 'g', 'x')")).rejects.toThrow(/permission denied/);
    } finally {
      await owner.end();
      await reader.end();
    }
    expect((await server.sql(DB, "SELECT id, body FROM items WHERE id IN (3, 5, 6) ORDER BY id")).map((r) => r.id)).toEqual([3, 5]);
    expect((await one<{ body: string }>("SELECT body FROM items WHERE id = 3")).body).toBe("three");
  });

  it("COPY FROM into a row-secured table is refused by PostgreSQL", async () => {
    const owner = await asCaller("mg:tag:owner", ["alice"]);
    try {
      const err = await new Promise<Error | undefined>((resolve) => {
        const stream = owner.query(copyFrom("COPY items (id, z, owner) FROM STDIN"));
        stream.on("error", resolve);
        stream.on("finish", () => resolve(undefined));
        stream.end("8\th\talice\n");
      });
      expect(err?.message).toMatch(/COPY FROM not supported with row-level security/);
    } finally {
      await owner.end();
    }
    expect((await server.sql(DB, "SELECT 1 FROM items WHERE id = 8")).length).toBe(0);
  });

  it("a role that may INSERT gets USAGE on the table's serial sequence, revoked with the rule", async () => {
    await server.sql(DB, "CREATE TABLE public.tickets (id serial PRIMARY KEY, owner text)");
    const withTickets: RuleSpec[] = [...FULL, { id: "tickets", src: ["tag:owner"], sql: { database: [DB], operation: ["insert", "select"], table: ["public.tickets"] } }];
    const res = await apply(withTickets);
    expect(res.statements).toContain('GRANT USAGE ON SEQUENCE "public"."tickets_id_seq" TO "mg:tag:owner"');
    const owner = await asCaller("mg:tag:owner", ["alice"]);
    try {
      expect((await owner.query("INSERT INTO tickets (owner) VALUES ('alice') RETURNING id")).rows).toEqual([{ id: 1 }]);
    } finally {
      await owner.end();
    }
    const back = await apply(FULL);
    expect(back.statements).toContain('REVOKE USAGE ON SEQUENCE "public"."tickets_id_seq" FROM "mg:tag:owner"');
    expect((await one<{ ok: boolean }>("SELECT has_sequence_privilege('mg:tag:owner', 'public.tickets_id_seq', 'USAGE') AS ok")).ok).toBe(false);
  });

  it("a second apply changes nothing and says so", async () => {
    const again = await apply(FULL);
    expect(again.changed).toBe(false);
    expect(again.statements).toEqual([]);
    const dry = await apply(FULL, { dryRun: true });
    expect(dry.statements).toEqual([]);
  });

  it("a connected node-postgres Client can be passed instead of a connection string", async () => {
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    try {
      const res = await applyDatabasePolicy(policy(FULL), { client: c, tagSets: [["tag:reader", "tag:owner"]] });
      expect(res.changed).toBe(false);
      // The client is left connected and usable.
      expect((await c.query("SELECT 1 AS one")).rows).toEqual([{ one: 1 }]);
    } finally {
      await c.end();
    }
  });

  it("what an unconditional deny rule denies is not granted to the roles it names; a deny with when is the gateway's alone", async () => {
    const res = await apply(
      [
        { id: "ops-all", src: ["tag:ops"], sql: { database: [DB], operation: ["select", "insert"], table: ["public.*"] } },
        { id: "no-secrets", src: ["*"], effect: "deny", sql: { database: ["*"], operation: ["*"], table: ["public.secrets"] } },
        { id: "no-log-writes", src: ["tag:ops"], effect: "deny", sql: { database: [DB], operation: ["insert"], table: ["public.items"] } },
        { id: "night", src: ["tag:ops"], effect: "deny", when: { hours: "22:00-06:00" }, sql: { database: [DB], operation: ["insert"], table: ["public.audit_log"] } },
      ] as RuleSpec[],
      { dryRun: true },
    );
    const sql = res.statements.join("\n");
    expect(sql).toContain('GRANT SELECT ON "public"."items" TO "mg:tag:ops"');
    expect(sql).not.toContain('GRANT INSERT ON "public"."items" TO "mg:tag:ops"');
    expect(sql).toContain('GRANT INSERT ON "public"."audit_log" TO "mg:tag:ops"');
    expect(sql).not.toMatch(/ON "public"\."secrets" TO/);
    expect(res.skipped.find((x) => x.ruleId === "night")?.reason).toMatch(/with conditions/);
  });

  it("long names are cut and hashed within 63 bytes", async () => {
    const role = roleForTag(LONG_TAG);
    expect(Buffer.byteLength(role)).toBeLessThanOrEqual(63);
    expect(role).toMatch(/~[0-9a-f]{16}$/);
    expect(await roleExists(role)).toBe(true);
    expect(await can(role, "public.audit_log", "SELECT")).toBe(true);
    // Its row-security policy's name is hashed too.
    const dry = await apply([...FULL, { id: "long-rows", src: [LONG_TAG], sql: { database: [DB], operation: ["select"], table: ["public.items"], rows: "z IS NOT NULL" } }], { dryRun: true });
    const create = dry.statements.find((x) => x.startsWith("CREATE POLICY") && x.includes(role))!;
    const name = /^CREATE POLICY "([^"]+)"/.exec(create)![1]!;
    expect(Buffer.byteLength(name)).toBeLessThanOrEqual(63);
    expect(name).toMatch(/^mg:tag:long-tag-name-.*~[0-9a-f]{16}$/);
  });

  it("a narrowed policy revokes what is no longer granted and drops meshguard's policies that are gone; other objects are untouched", async () => {
    const narrowed = FULL.filter((r) => r.id !== "reader-log" && r.id !== "alice-reports").map((r) =>
      r.id === "owner-items" ? { ...r, sql: { ...r.sql, operation: ["select"] } } : r,
    );
    const res = await apply(narrowed);
    expect(res.changed).toBe(true);
    const sql = res.statements.join("\n");
    expect(sql).toContain('REVOKE INSERT ON "public"."items" FROM "mg:tag:owner"');
    expect(sql).toContain('DROP POLICY "mg:tag:owner:insert" ON "public"."items"');
    // A table-level REVOKE also revokes the column grants.
    expect(sql).toContain('REVOKE SELECT ON "public"."audit_log" FROM "mg:tag:reader"');
    expect(sql).toContain('REVOKE USAGE ON SCHEMA "reports" FROM "mg:user:alice@example.com"');
    expect(await can("mg:tag:owner", "public.items", "INSERT")).toBe(false);
    expect(await can("mg:tag:owner", "public.items", "UPDATE")).toBe(false);
    expect(await can("mg:tag:owner", "public.items", "SELECT")).toBe(true);
    expect(await can("mg:user:alice@example.com", "reports.daily", "SELECT")).toBe(false);
    expect((await one<{ ok: boolean }>("SELECT has_column_privilege('mg:tag:reader', 'public.audit_log', 'msg', 'SELECT') AS ok")).ok).toBe(false);
    expect(await policyNames("items")).toEqual(["custom_policy", "mg:tag:owner:select", "mg:tag:reader:select"]);
    // What meshguard did not create: the role, its grant and its policy.
    expect(await can("app_reader", "public.items", "SELECT")).toBe(true);
    // Roles are kept (other databases may use them).
    expect(await roleExists("mg:user:alice@example.com")).toBe(true);
    expect((await apply(narrowed)).changed).toBe(false);
    // A changed filter replaces meshguard's policy.
    const changed = narrowed.map((r) => (r.id === "reader-items" ? { ...r, sql: { ...r.sql, rows: "z IS NOT NULL AND id > 1" } } : r));
    const res2 = await apply(changed);
    expect(res2.statements.filter((s) => s.includes("mg:tag:reader:select")).map((s) => s.split(" ")[0])).toEqual(["DROP", "CREATE", "COMMENT"]);
    const reader = await asCaller("mg:tag:reader");
    try {
      expect(await ids(reader)).toEqual([3, 5]);
    } finally {
      await reader.end();
    }
  });

  it("a table whose row security someone else enabled: a grant without rows gets a USING (true) policy; an owner under FORCE is warned about", async () => {
    // Qualified: the superuser of these tests is named meshguard, and "$user" in search_path now finds the meshguard schema.
    await server.sql(DB, "CREATE ROLE app_owner NOLOGIN");
    await server.sql(DB, "CREATE TABLE public.shared_notes (id int, note text)");
    await server.sql(DB, "INSERT INTO public.shared_notes VALUES (1, 'n1')");
    await server.sql(DB, "ALTER TABLE public.shared_notes ENABLE ROW LEVEL SECURITY");
    await server.sql(DB, "CREATE TABLE public.app_rows (id int, z text)");
    await server.sql(DB, "ALTER TABLE public.app_rows OWNER TO app_owner");
    await server.sql(DB, "GRANT SELECT ON public.app_rows TO app_reader");
    const rules: RuleSpec[] = [
      ...FULL,
      { id: "notes", src: ["tag:reader"], sql: { database: [DB], operation: ["select"], table: ["public.shared_notes"] } },
      { id: "app-rows", src: ["tag:reader"], sql: { database: [DB], operation: ["select"], table: ["public.app_rows"], rows: "z IS NOT NULL" } },
    ];
    const res = await apply(rules);
    expect(res.statements).toContain('CREATE POLICY "mg:tag:reader:select" ON "public"."shared_notes" AS PERMISSIVE FOR SELECT TO "mg:tag:reader" USING (true)');
    expect(res.statements.join("\n")).not.toContain('ALTER TABLE "public"."shared_notes"');
    expect(res.warnings.join("\n")).toMatch(/public\.app_rows is owned by "app_owner", which FORCE ROW LEVEL SECURITY now subjects to row security/);
    expect(res.warnings.join("\n")).toMatch(/public\.app_rows gets row security: "app_reader" has privileges there and no policy, so it sees no rows from now on/);
    const reader = await asCaller("mg:tag:reader");
    try {
      expect((await reader.query("SELECT id FROM shared_notes")).rows).toEqual([{ id: 1 }]);
    } finally {
      await reader.end();
    }
  });

  it("bad input: a rows filter that is not one expression, a glob matching nothing, a node name, a role meshguard did not create", async () => {
    const bad = async (rows: string) => {
      const err = await apply([{ id: "bad-rows", src: ["tag:reader"], sql: { database: [DB], operation: ["select"], table: ["public.items"], rows } }]).catch((e: unknown) => e);
      expect(isMeshguardError(err, "MESHGUARD_DATABASE_APPLY_FAILED"), String(err)).toBe(true);
      expect((err as Error).message).toContain("rule bad-rows");
      return err as Error;
    };
    expect((await bad("z IS NOT")).message).toMatch(/does not parse/);
    expect((await bad("true) WITH CHECK (true")).message).toMatch(/does not parse|not one SQL expression/);
    expect((await bad("true, false")).message).toMatch(/not one SQL expression/);
    expect((await bad("true FROM secrets")).message).toMatch(/not one SQL expression/);
    // PostgreSQL refuses a filter naming no column of the table: the statement is named, nothing changed.
    const before = await policyNames("items");
    const unknown = await bad("no_such_column IS NULL");
    expect(unknown.message).toMatch(/^rule bad-rows: PostgreSQL refused "CREATE POLICY .*no_such_column.*nothing was changed/s);
    expect(await policyNames("items")).toEqual(before);

    const res = await apply([
      ...FULL,
      { id: "ghost", src: ["tag:reader"], sql: { database: [DB], operation: ["select"], table: ["public.nope_*"] } },
      { id: "node", src: ["build-box"], sql: { database: [DB], operation: ["select"], table: ["public.items"] } },
      { id: "view", src: ["tag:reader"], sql: { database: [DB], operation: ["select"], table: ["public.items_view"], rows: "z IS NOT NULL" } },
    ], { dryRun: true });
    expect(res.warnings.join("\n")).toMatch(/rule ghost: table public\.nope_\* matches no table or view in database appdb/);
    expect(res.warnings.join("\n")).toMatch(/rule node: build-box is a node name/);
    expect(res.warnings.join("\n")).toMatch(/rule view: public\.items_view is a view, which cannot have row security/);
    expect(res.statements.join("\n")).not.toContain("items_view");

    // A server that cannot be reached: named without the password.
    const closed = new URL(url);
    closed.port = "1";
    const down = await applyDatabasePolicy(policy(FULL), { connectionString: closed.toString() }).catch((e: unknown) => e);
    expect(isMeshguardError(down, "MESHGUARD_DATABASE_APPLY_FAILED")).toBe(true);
    expect((down as Error).message).toMatch(/^cannot connect to PostgreSQL at postgres:\/\/meshguard:\*\*\*@127\.0\.0\.1:1\/appdb/);
    expect((down as Error).message).not.toContain(server.password);
    await expect(applyDatabasePolicy(policy(FULL), { connectionString: url, gatewayRole: "mg:tag:x" })).rejects.toThrow(/not a usable role name/);
    await expect(applyDatabasePolicy(policy(FULL), { connectionString: url, tagSets: [["billing"]] })).rejects.toThrow(/"billing", which is not a tag/);

    await server.sql(DB, 'CREATE ROLE "mg:tag:intruder" NOLOGIN');
    const err = await apply([{ id: "x", src: ["tag:intruder"], sql: { database: [DB], operation: ["select"], table: ["public.items"] } }]).catch((e: unknown) => e);
    expect(isMeshguardError(err, "MESHGUARD_DATABASE_APPLY_FAILED")).toBe(true);
    expect((err as Error).message).toMatch(/"mg:tag:intruder" exists and meshguard did not create it/);
  });

  it("the CLI: --db names an environment variable; --dry-run prints the SQL; --json", async () => {
    const files = { "p.hujson": JSON.stringify({ version: 5, rules: FULL }) };
    const cli = (argv: string[]) => runCliCaptured(argv, files);
    // An empty policy first: everything meshguard granted is revoked, so the CLI has grants to make.
    const emptied = await apply([]);
    expect(emptied.statements.some((x) => x.startsWith("REVOKE SELECT ON \"public\".\"items\""))).toBe(true);
    process.env.MG_TEST_DB_URL = url;
    const dry = await cli(["policy", "apply", "p.hujson", "--db", "MG_TEST_DB_URL", "--dry-run", "--tag-set", "tag:reader,tag:owner"]);
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stdout).toContain(`-- p.hujson → database ${DB}`);
    expect(dry.stdout).toContain('GRANT SELECT ("id", "msg") ON "public"."audit_log" TO "mg:tag:reader";');
    const applied = await cli(["policy", "apply", "p.hujson", "--db", "MG_TEST_DB_URL", "--tag-set", "tag:reader,tag:owner", "--json"]);
    expect(applied.code, applied.stderr).toBe(0);
    const doc = JSON.parse(applied.stdout) as { ok: boolean; applied: boolean; database: DatabaseApplyResult };
    expect(doc).toMatchObject({ ok: true, applied: true, database: { database: DB, changed: true } });
    const again = await cli(["policy", "apply", "p.hujson", "--db", "MG_TEST_DB_URL", "--tag-set", "tag:reader,tag:owner"]);
    expect(again.stdout).toBe(`database ${DB} already matches p.hujson: nothing changed\n`);
    const unset = await cli(["policy", "apply", "p.hujson", "--db", "MG_TEST_NO_SUCH_VAR", "--json"]);
    expect(unset.code).toBe(1);
    expect(JSON.parse(unset.stdout).error).toMatchObject({ code: "MESHGUARD_DATABASE_APPLY_FAILED", message: expect.stringContaining("MG_TEST_NO_SUCH_VAR, which is not set") });
    const usage = await cli(["policy", "apply", "p.hujson", "--tag-set", "tag:a,tag:b", "--dry-run"]);
    expect(usage.code).toBe(2);
  });

  it("a login with CREATEROLE that owns the tables can apply; a table it does not own is refused by name; what it cannot revoke is a warning", async () => {
    await server.sql(DB, "CREATE ROLE app_admin LOGIN CREATEROLE PASSWORD 'admin-pw'");
    await server.sql(DB, "CREATE TABLE public.admin_items (id int, z text)");
    await server.sql(DB, "INSERT INTO public.admin_items VALUES (1, 'a'), (2, NULL)");
    await server.sql(DB, "ALTER TABLE public.admin_items OWNER TO app_admin");
    const u = new URL(url);
    u.username = "app_admin";
    u.password = "admin-pw";
    const rules: RuleSpec[] = [{ id: "adm", src: ["tag:adm"], sql: { database: [DB], operation: ["select"], table: ["public.admin_items"], rows: "z IS NOT NULL" } }];
    const opts = { connectionString: u.toString(), gatewayRole: "meshguard_gateway" };
    const res = await applyDatabasePolicy(policy(rules), opts);
    expect(res.changed).toBe(true);
    expect(await can("mg:tag:adm", "public.admin_items", "SELECT")).toBe(true);
    expect(await policyNames("admin_items")).toEqual(["mg:tag:adm:select"]);
    // The grants of the earlier tests are on tables app_admin does not own: it cannot revoke them, and says so.
    expect(res.warnings.join("\n")).toMatch(/public\.items: meshguard's roles hold privileges or policies there .* cannot revoke them/);
    const again = await applyDatabasePolicy(policy(rules), opts);
    expect(again.changed).toBe(false);
    const err = await applyDatabasePolicy(policy([...rules, { id: "other", src: ["tag:adm"], sql: { database: [DB], operation: ["select"], table: ["public.items"] } }]), opts).catch((e: unknown) => e);
    expect(isMeshguardError(err, "MESHGUARD_DATABASE_APPLY_FAILED")).toBe(true);
    expect((err as Error).message).toMatch(/^rule other: public\.items is owned by "meshguard", and apply's login is neither a superuser nor a member of that role/);
  });
});
