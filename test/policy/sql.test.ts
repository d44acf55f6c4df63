/**
 * sql rules (format version 5): the statement analysis (PostgreSQL's own
 * parser) and the decisions the engine makes from it, without a database.
 * The guard against a real PostgreSQL is test/guard/sql-pg.test.ts.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { loadPolicy, PolicyInvalidError, type Policy } from "../../src/policy/index.js";
import { analyzeSql, formatAccess } from "../../src/policy/sql.js";
import { formatTarget } from "../../src/policy/request.js";
import { decisionEvent } from "../../src/policy/event.js";
import type { Principal, SqlTarget } from "../../src/policy/types.js";

const acc = (s: string) => {
  const a = analyzeSql(s);
  if (!a.ok) throw new Error(a.error);
  return a.accesses.map(formatAccess);
};

describe("analyzeSql finds every operation and object", () => {
  it("CTEs, subqueries, set operations and multi-statement strings", () => {
    expect(acc("WITH x AS (DELETE FROM app.jobs RETURNING id) SELECT id FROM x")).toEqual(["delete app.jobs (id)", "select app.jobs (id)"]);
    expect(acc("SELECT a FROM t WHERE b IN (SELECT c FROM secret.s)")).toEqual(["select public.t (a, b)", "select secret.s (c)"]);
    expect(acc("SELECT 1 UNION SELECT x FROM u")).toEqual(["select public.u (x)"]);
    expect(acc("SELECT id FROM orders; DROP TABLE orders")).toEqual(["select public.orders (id)", "ddl public.orders"]);
  });
  it("INSERT … ON CONFLICT is insert and update; SELECT INTO is ddl and select; RETURNING is select", () => {
    expect(acc("INSERT INTO t (k, v) VALUES (1, 2) ON CONFLICT (k) DO UPDATE SET v = excluded.v")).toEqual(["insert public.t (k, v)", "update public.t (v)"]);
    expect(acc("SELECT * INTO copy_t FROM t")).toEqual(["ddl public.copy_t", "select public.t (*)"]);
    expect(acc("INSERT INTO t VALUES (1) RETURNING id")).toEqual(["insert public.t (*)", "select public.t (id)"]);
  });
  it("EXPLAIN plans (explain); EXPLAIN ANALYZE also runs its statement", () => {
    expect(acc("EXPLAIN DELETE FROM t")).toEqual(["explain public.t"]);
    expect(acc("EXPLAIN ANALYZE DELETE FROM t")).toEqual(["explain public.t", "delete public.t"]);
  });
  it("functions: safe ones are free, others are call, dangerous ones are marked", () => {
    expect(acc("SELECT count(*), lower(name) FROM users")).toEqual(["select public.users (name)"]);
    const a = analyzeSql("SELECT set_config('role', 'x', false), public.bump(1)");
    expect(a.ok && a.accesses).toEqual([
      { operation: "call", object: "pg_catalog.set_config", dangerous: true },
      { operation: "call", object: "public.bump" },
    ]);
    expect(acc("CALL refresh_stats()")).toEqual(["call public.refresh_stats"]);
  });
  it("quoting and case: names as PostgreSQL reads them", () => {
    expect(acc('SeLeCt ID fRoM PUBLIC.Users')).toEqual(["select public.users (id)"]);
    expect(acc('SELECT 1 FROM "Public"."Users"')).toEqual(["select Public.Users"]);
    expect(acc("SELECT 1 /* ; DROP TABLE t */ -- ; DELETE FROM t\n")).toEqual([]);
    expect(acc("SELECT ';DROP TABLE t' AS x")).toEqual([]);
  });
  it("the other statement kinds", () => {
    expect(acc("TRUNCATE a, b.c")).toEqual(["ddl public.a", "ddl b.c"]);
    expect(acc("COPY t (a) TO STDOUT")).toEqual(["copy_to public.t (a)"]);
    expect(acc("COPY t FROM STDIN")).toEqual(["copy_from public.t"]);
    expect(acc("DO $$ BEGIN DELETE FROM t; END $$")).toEqual(["do"]);
    expect(acc("PREPARE p AS DELETE FROM t")).toEqual(["prepare", "delete public.t"]);
    expect(acc("DECLARE c CURSOR FOR SELECT a FROM t")).toEqual(["cursor", "select public.t (a)"]);
    expect(acc("SET search_path = evil")).toEqual(["set search_path"]);
    expect(acc("BEGIN; COMMIT")).toEqual([]);
  });
  it("a text that does not parse is an error", () => {
    expect(analyzeSql("SELEC 1").ok).toBe(false);
    expect(analyzeSql("SELECT 1; DELETE FROM").ok).toBe(false);
  });
});

const POLICY = `{
  "version": 5,
  "rules": [
    { "id": "reader", "src": ["tag:reader"], "sql": { "database": ["appdb"], "operation": ["select"], "table": ["public.*"] } },
    { "id": "writer", "src": ["tag:writer"], "sql": { "database": ["appdb"], "operation": ["select", "insert", "update"], "table": ["public.orders"] } },
    { "id": "no-secrets", "src": ["*"], "effect": "deny", "sql": { "database": ["*"], "operation": ["*"], "table": ["public.secrets"] } },
    { "id": "calls", "src": ["tag:writer"], "sql": { "database": ["appdb"], "operation": ["call"], "table": ["*"] } },
    { "id": "cols", "src": ["tag:cols"], "sql": { "database": ["appdb"], "operation": ["select"], "table": ["public.users"], "columns": ["id", "name"] } },
    { "id": "mine", "src": ["tag:owner"], "sql": { "database": ["appdb"], "operation": ["select"], "table": ["public.notes"], "rows": "owner = ANY (meshguard.owners())" } },
    { "id": "ask", "src": ["tag:writer"], "effect": "approve", "sql": { "database": ["appdb"], "operation": ["delete"], "table": ["public.orders"] } }
  ],
  "tests": [
    { "as": "tag:reader", "request": "sql appdb SELECT id FROM orders", "expect": "allow", "ruleId": "reader" },
    { "as": "tag:reader", "request": "sql appdb SELECT 1 FROM secrets", "expect": "deny", "ruleId": "no-secrets" },
    { "as": "tag:owner", "request": "sql appdb SELECT * FROM notes", "expect": "deny", "ruleId": "mine" },
    { "as": "tag:owner", "request": "sql appdb SELECT * FROM notes", "rowFilters": true, "expect": "allow", "ruleId": "mine" }
  ]
}`;

const who = (tag: string): Principal => ({ tags: [tag] });
const sql = (statement: string, database = "appdb"): SqlTarget => ({ kind: "sql", database, statement });

describe("sql rules decide statements", () => {
  const p: Policy = loadPolicy(POLICY);
  const d = (tag: string, s: string, db?: string) => p.evaluate({ principal: who(tag), target: sql(s, db) });

  it("allowed and denied per agent", () => {
    expect(d("tag:reader", "SELECT id FROM orders").effect).toBe("allow");
    expect(d("tag:reader", "INSERT INTO orders (id) VALUES (1)").effect).toBe("deny");
    expect(d("tag:writer", "INSERT INTO orders (id) VALUES (1)").effect).toBe("allow");
    expect(d("tag:writer", "SELECT id FROM users").effect).toBe("deny");
    expect(d("tag:reader", "SELECT id FROM orders", "otherdb").effect).toBe("deny");
  });
  it("a denied statement hidden in a multi-statement string denies the whole text, naming it", () => {
    const r = d("tag:reader", "SELECT id FROM orders; DELETE FROM orders");
    expect(r.effect).toBe("deny");
    expect(r.reason).toMatch(/^delete public\.orders: no rule allows/);
  });
  it("deny wins; approve beats allow", () => {
    expect(d("tag:reader", "SELECT o.id FROM orders o JOIN secrets s ON s.id = o.id")).toMatchObject({ effect: "deny", ruleId: "no-secrets" });
    expect(d("tag:writer", "SELECT id FROM orders; DELETE FROM orders WHERE id = 1")).toMatchObject({ effect: "approve", ruleId: "ask" });
  });
  it("writes through functions need a call rule; dangerous built-ins need a rule naming them", () => {
    expect(d("tag:reader", "SELECT public.bump(id) FROM orders").effect).toBe("deny");
    expect(d("tag:writer", "SELECT public.bump(id) FROM orders").effect).toBe("allow");
    const r = d("tag:writer", "SELECT set_config('search_path', 'evil', false)");
    expect(r.effect).toBe("deny");
    expect(r.reason).toContain("call pg_catalog.set_config");
    expect(d("tag:writer", "SELECT pg_read_file('/etc/passwd')").effect).toBe("deny");
  });
  it("columns: only the listed ones; * and unlisted columns do not match", () => {
    expect(d("tag:cols", "SELECT id, name FROM users WHERE id = 3").effect).toBe("allow");
    expect(d("tag:cols", "SELECT * FROM users").effect).toBe("deny");
    expect(d("tag:cols", "SELECT id FROM users WHERE ssn = '1'").effect).toBe("deny");
  });
  it("a rows rule does not allow in-process, and says why", () => {
    const r = d("tag:owner", "SELECT * FROM notes");
    expect(r).toMatchObject({ effect: "deny", ruleId: "mine" });
    expect(r.reason).toContain("database gateway");
    expect(p.evaluate({ principal: who("tag:owner"), target: { ...sql("SELECT * FROM notes"), rowFilters: true } }).effect).toBe("allow");
  });
  it("unparseable and transaction-only texts", () => {
    expect(d("tag:reader", "SELEC id FROM orders")).toMatchObject({ effect: "deny" });
    expect(d("tag:reader", "SELEC id FROM orders").reason).toContain("cannot be judged");
    expect(d("tag:nobody", "BEGIN").effect).toBe("allow");
  });
  it("explain lists every sql rule per access", () => {
    const ex = p.explain({ principal: who("tag:reader"), target: sql("SELECT id FROM orders; DELETE FROM orders") });
    expect(ex.decision.effect).toBe("deny");
    const accesses = new Set(ex.rules.map((r) => r.access));
    expect(accesses).toEqual(new Set(["select public.orders (id)", "delete public.orders"]));
    expect(ex.rules.find((r) => r.access === "select public.orders (id)" && r.ruleId === "reader")?.result).toBe("match");
    expect(ex.rules.find((r) => r.access === "delete public.orders" && r.ruleId === "reader")?.result).toBe("no-match");
  });
  it("renderings and events carry no literal values", () => {
    const t = sql("SELECT id FROM orders WHERE note = 'zebra-kumquat-4711' AND id = 987654321");
    expect(formatTarget(t)).toBe("sql appdb [select public.orders (id, note)]");
    const ev = decisionEvent(who("tag:reader"), t, d("tag:reader", t.statement), { layer: "sql", outcome: "allow", latencyUs: 1, mode: "enforce" });
    const text = JSON.stringify(ev);
    expect(text).not.toContain("zebra-kumquat");
    expect(text).not.toContain("987654321");
    expect(ev.target).toMatchObject({ kind: "sql", database: "appdb", accesses: ["select public.orders (id, note)"] });
  });
});

describe("sql rules in the policy file", () => {
  const bad = (text: string) => {
    try {
      loadPolicy(text);
    } catch (err) {
      expect(err).toBeInstanceOf(PolicyInvalidError);
      return (err as Error).message;
    }
    throw new Error("loaded");
  };
  it("need version 5; old files keep loading", () => {
    expect(bad(`{"version": 4, "rules": [{"src": ["*"], "sql": {"database": ["*"], "operation": ["select"], "table": ["public.t"]}}]}`)).toContain('sql rules need "version": 5');
    expect(loadPolicy(`{"version": 4, "rules": [{"src": ["*"], "tcp": {"host": ["db"], "port": [5432]}}]}`).version).toBe(4);
  });
  it("name what is wrong", () => {
    expect(bad(`{"version": 5, "rules": [{"src": ["*"], "sql": {"database": ["*"], "operation": ["select"], "table": ["users"]}}]}`)).toContain('write "public.users"');
    expect(bad(`{"version": 5, "rules": [{"src": ["*"], "sql": {"database": ["*"], "operation": ["read"], "table": ["*"]}}]}`)).toContain('must be one of "select"');
    expect(bad(`{"version": 5, "rules": [{"src": ["*"], "effect": "deny", "sql": {"database": ["*"], "operation": ["select"], "table": ["*"], "rows": "x"}}]}`)).toContain("a deny rule cannot have a row filter");
  });
  it("tests with SQL requests run at load", () => {
    expect(() => loadPolicy(POLICY.replace('"expect": "allow", "ruleId": "reader"', '"expect": "deny"'))).toThrow(/tests/i);
  });
});

describe("decisions of a repeated statement", () => {
  it("follow the policy in force for each caller and database, never a remembered one", () => {
    const p = loadPolicy(POLICY);
    const s = "SELECT id FROM orders; INSERT INTO orders (id) VALUES (1)";
    const d = (tag: string, db = "appdb") => p.evaluate({ principal: who(tag), target: sql(s, db) });
    expect(d("tag:writer")).toMatchObject({ effect: "allow", reason: 'allowed: select public.orders (id) by "writer"; insert public.orders (id) by "writer"' });
    expect(d("tag:reader")).toMatchObject({ effect: "deny" });
    expect(d("tag:writer", "otherdb")).toMatchObject({ effect: "deny" });
    expect(d("tag:writer").effect).toBe("allow");
    const mixed = "SELECT id FROM orders; DELETE FROM orders; INSERT INTO orders (id) VALUES (1)";
    expect(p.evaluate({ principal: who("tag:writer"), target: sql(mixed) })).toMatchObject({ effect: "approve", ruleId: "ask" });
    expect(p.evaluate({ principal: who("tag:reader"), target: sql(mixed) }).effect).toBe("deny");
    expect(p.evaluate({ principal: who("tag:writer"), target: sql(mixed) })).toMatchObject({ effect: "approve", ruleId: "ask" });
  });
});

describe("an unknown database (a driver that does not tell it: postgres.js)", () => {
  it("a rule naming a database, allow or deny, cannot apply for sure: denied; rules for every database decide", () => {
    const p = loadPolicy(
      JSON.stringify({
        version: 5,
        rules: [
          { id: "any-db", src: ["*"], sql: { database: ["*"], operation: ["select"], table: ["public.*"] } },
          { id: "prod-no-users", src: ["*"], effect: "deny", sql: { database: ["prod"], operation: ["select"], table: ["public.users"] } },
          { id: "app-insert", src: ["*"], sql: { database: ["appdb"], operation: ["insert"], table: ["public.orders"] } },
        ],
      }),
    );
    const d = (s: string, db: string) => p.evaluate({ principal: who("tag:x"), target: sql(s, db) });
    expect(d("SELECT id FROM orders", "")).toMatchObject({ effect: "allow", ruleId: "any-db" });
    // The deny for "prod" might apply: it does (with a known database only in prod).
    expect(d("SELECT id FROM users", "")).toMatchObject({ effect: "deny", ruleId: "prod-no-users" });
    expect(d("SELECT id FROM users", "appdb")).toMatchObject({ effect: "allow" });
    // The allow for "appdb" might not apply: denied, saying why.
    const r = d("INSERT INTO orders (id) VALUES (1)", "");
    expect(r).toMatchObject({ effect: "deny", ruleId: "app-insert" });
    expect(r.reason).toContain('needs the database name, which the request does not carry (the driver does not tell');
    expect(d("INSERT INTO orders (id) VALUES (1)", "appdb")).toMatchObject({ effect: "allow" });
  });
});

describe("operations without an object", () => {
  it("match any table pattern; a ddl without a relation needs a pattern matching nothing but *", () => {
    const p = loadPolicy(
      JSON.stringify({
        version: 5,
        rules: [
          { id: "cursors", src: ["*"], sql: { database: ["*"], operation: ["cursor", "select"], table: ["public.t"] } },
          { id: "tmp-ddl", src: ["*"], sql: { database: ["*"], operation: ["ddl"], table: ["public.tmp_*"] } },
        ],
      }),
    );
    const d = (s: string) => p.evaluate({ principal: who("tag:x"), target: sql(s) }).effect;
    expect(d("DECLARE c CURSOR FOR SELECT a FROM t")).toBe("allow");
    expect(d("FETCH 10 FROM c")).toBe("allow");
    expect(d("DECLARE c CURSOR FOR SELECT a FROM u")).toBe("deny");
    expect(d("CREATE TABLE tmp_x (a int)")).toBe("allow");
    expect(d("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'")).toBe("deny");
    expect(d("ALTER SYSTEM SET work_mem = '1GB'")).toBe("deny");
    expect(acc("COPY (SELECT a FROM t JOIN u USING (a)) TO STDOUT")).toEqual(["copy_to public.t", "copy_to public.u", "select public.t (a)", "select public.u (a)"]);
  });
});

describe("settings", () => {
  it("identity and name-resolution settings need a rule naming them; others match globs", () => {
    const p = loadPolicy(
      JSON.stringify({
        version: 5,
        rules: [
          { id: "any-set", src: ["tag:a"], sql: { database: ["*"], operation: ["set"], table: ["*"] } },
          { id: "path", src: ["tag:b"], sql: { database: ["*"], operation: ["set"], table: ["search_path"] } },
        ],
      }),
    );
    const d = (tag: string, s: string) => p.evaluate({ principal: who(tag), target: sql(s) }).effect;
    expect(d("tag:a", "SET statement_timeout = '5s'")).toBe("allow");
    expect(d("tag:a", "SHOW work_mem")).toBe("allow");
    for (const s of ["SET ROLE admin", "RESET ROLE", "SET SESSION AUTHORIZATION admin", "SET search_path = evil", "RESET ALL", "DISCARD ALL", "SET meshguard.principal = 'x'"]) expect(d("tag:a", s), s).toBe("deny");
    expect(d("tag:b", "SET search_path = app")).toBe("allow");
  });
  it("analysis never throws, whatever the text", () => {
    for (const s of ["", ";", "\u0000", "SELECT (".repeat(5000), `SELECT ${"(".repeat(3000)}1${")".repeat(3000)}`, "SELECT 'unterminated", "/* open comment", "\uD800"]) {
      const a = analyzeSql(s);
      expect(typeof a.ok).toBe("boolean");
    }
    expect(loadPolicy(POLICY).evaluate({ principal: who("tag:reader"), target: sql(`SELECT ${"(".repeat(3000)}1${")".repeat(3000)} FROM secrets`) }).effect).toBe("deny");
  });
});

describe("the parser loads without top-level await in the preload's module graph", () => {
  // Regression: a top-level await in src/policy/sql.ts made `node --require <preload>` fail with ERR_REQUIRE_ASYNC_MODULE.
  const preload = fileURLToPath(new URL("../../dist/guard/preload.js", import.meta.url));
  it.skipIf(!existsSync(preload))("dist/guard/preload.js can be required (build with npx tsup first)", () => {
    const r = spawnSync(process.execPath, ["-e", "require(process.argv[1]); console.log('required')", preload], { encoding: "utf8" });
    expect(r.stderr).not.toContain("ERR_REQUIRE_ASYNC_MODULE");
    expect(r.stdout.trim()).toBe("required");
  });
  it.skipIf(!existsSync(preload))("the preload runs a policy's sql tests once the parser is loaded; a failure withdraws the policy with a warning", () => {
    const dir = mkdtempSync(join(tmpdir(), "mg-sql-preload-"));
    try {
      const file = (expect: string) => {
        const f = join(dir, `${expect}.json`);
        const rules = [{ id: "r", src: ["*"], sql: { database: ["*"], operation: ["select"], table: ["public.*"] } }];
        writeFileSync(f, JSON.stringify({ version: 5, rules, tests: [{ as: "tag:a", request: "sql d SELECT a FROM t", expect }] }));
        return f;
      };
      const script = "process.on('warning', (w) => console.log('warning', w.code)); setTimeout(() => console.log('done'), 300);";
      const run = (f: string) => spawnSync(process.execPath, ["--require", preload, "-e", script], { encoding: "utf8", env: { ...process.env, MESHGUARD_POLICY: f, MESHGUARD_AS: "tag:a" } });
      expect(run(file("allow")).stdout.trim()).toBe("done");
      expect(run(file("deny")).stdout.trim()).toBe("warning MESHGUARD_POLICY_TESTS_FAILED\ndone");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("function names", () => {
  it("unqualified built-ins are pg_catalog's; others are public's", () => {
    expect(acc("SELECT nextval('s'), pg_sleep(1), refresh()")).toEqual(["call pg_catalog.nextval", "call pg_catalog.pg_sleep", "call public.refresh"]);
    expect(acc("SELECT lo_import('/etc/passwd'), dblink_exec('x', 'y')").length).toBe(2);
    const a = analyzeSql("SELECT lo_import('/etc/passwd'), dblink_exec('x', 'y'), PG_CATALOG.SET_CONFIG('a', 'b', true)");
    expect(a.ok && a.accesses.every((x) => x.dangerous === true)).toBe(true);
  });
  it("columns: whole-row and starred references never pass a columns rule", () => {
    const p = loadPolicy(POLICY);
    for (const s of ["SELECT u FROM users u", "SELECT users.* FROM users", "SELECT row_to_json(u) FROM users u", "SELECT id FROM users ORDER BY ssn", "SELECT (SELECT ssn) FROM users"])
      expect(p.evaluate({ principal: who("tag:cols"), target: sql(s) }).effect, s).toBe("deny");
  });
});
