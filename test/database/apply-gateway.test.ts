/**
 * `meshguard policy apply --db` and the database gateway together, nothing
 * written by hand: applyDatabasePolicy makes the roles, grants, row-security
 * policies and EXECUTE grants of one policy, and the gateway then serves two
 * agents with that same policy file over a real headscale tailnet, against a
 * real PostgreSQL 15. Last, the gateway's close(): it drains.
 */
import { readFileSync, writeFileSync } from "node:fs";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { applyDatabasePolicy, startDatabaseGateway, type DatabaseApplyResult } from "../../src/database/index.js";
import { loadPolicy } from "../../src/policy/index.js";
import { DB, GATEWAY_PASSWORD, GATEWAY_ROLE, startDbTailnet, TAILNET, type DbTailnet } from "./db-tailnet.js";
import { postgresUnavailable, startPostgres, type PgServer } from "../gateway/pg-server.js";

const unavailable = postgresUnavailable();
if (unavailable) console.warn(`apply + database gateway tests skipped: ${unavailable}`);

const A_ROWS = "z IS NOT NULL";
const B_ROWS = "owner = ANY (meshguard.owners())";
const RULES = [
  { id: "a-items", src: ["tag:agent-a"], sql: { database: [DB], operation: ["select", "insert", "update"], table: ["public.items"], rows: A_ROWS } },
  { id: "b-items", src: ["tag:agent-b"], sql: { database: [DB], operation: ["select", "insert", "update"], table: ["public.items"], rows: B_ROWS } },
  // Functions and procedures: EXECUTE for agent-a only (PUBLIC's is revoked).
  { id: "a-calls", src: ["tag:agent-a"], sql: { database: [DB], operation: ["call"], table: ["public.double_it", "public.touch", "ops.*"] } },
  { id: "a-sleep", src: ["tag:agent-a"], sql: { database: [DB], operation: ["call"], table: ["pg_catalog.pg_sleep"] } },
];
const MESHGUARD = { version: 5, rules: RULES };

let server: PgServer;
let url: string;
let t: DbTailnet;
let applied: DatabaseApplyResult;
let dry: DatabaseApplyResult;

const apply = (rules: object[], dryRun = false) =>
  applyDatabasePolicy(loadPolicy(JSON.stringify({ version: 5, rules })), { connectionString: url, gatewayRole: GATEWAY_ROLE, gatewayPassword: GATEWAY_PASSWORD, dryRun });
const asSuperuser = (sql: string, params: unknown[] = []) => server.sql(DB, sql, params);
const canExecute = async (role: string, fn: string) => ((await asSuperuser("SELECT has_function_privilege($1, $2, 'EXECUTE') AS ok", [role, fn]))[0] as { ok: boolean }).ok;

beforeAll(async () => {
  if (unavailable) return;
  server = await startPostgres();
  url = await server.createDatabase(DB);
  for (const s of [
    "CREATE TABLE public.items (id int PRIMARY KEY, owner text NOT NULL, z text)",
    "INSERT INTO public.items VALUES (1, 'alice@', 'a1'), (2, 'alice@', NULL), (3, 'bob@', 'b3'), (4, 'bob@', NULL)",
    "CREATE FUNCTION public.double_it(i int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT i * 2'",
    "CREATE PROCEDURE public.touch(i int) LANGUAGE sql AS $$ UPDATE public.items SET z = 'touched' WHERE id = i $$",
    "CREATE SCHEMA ops",
    "CREATE FUNCTION ops.answer() RETURNS int LANGUAGE sql AS 'SELECT 42'",
    // A function no rule names: PUBLIC keeps its EXECUTE.
    "CREATE FUNCTION public.untouched() RETURNS int LANGUAGE sql AS 'SELECT 1'",
  ])
    await asSuperuser(s);
  dry = await apply(RULES, true);
  applied = await apply(RULES);
  t = await startDbTailnet({ server, meshguard: MESHGUARD });
}, 180_000);

afterAll(async () => {
  await t?.close();
  await server?.stop();
});

const connect = (agent: "agentA" | "agentB", port?: number) => t.connect(port ?? agent);
const ids = (r: pg.QueryResult) => r.rows.map((x) => Number(x.id));

describe.skipIf(unavailable)("policy apply --db, then the database gateway", () => {
  it("apply's dry run shows the EXECUTE grants of call rules and PUBLIC's revoked; the second apply changes nothing", async () => {
    const sql = dry.statements.join("\n");
    expect(sql).toContain('REVOKE EXECUTE ON FUNCTION "public"."double_it"(i integer) FROM PUBLIC');
    expect(sql).toContain('GRANT EXECUTE ON FUNCTION "public"."double_it"(i integer) TO "mg:tag:agent-a"');
    expect(sql).toContain('REVOKE EXECUTE ON PROCEDURE "public"."touch"(IN i integer) FROM PUBLIC');
    expect(sql).toContain('GRANT EXECUTE ON PROCEDURE "public"."touch"(IN i integer) TO "mg:tag:agent-a"');
    expect(sql).toContain('GRANT USAGE ON SCHEMA "ops" TO "mg:tag:agent-a"');
    expect(sql).not.toContain("untouched");
    expect(sql).not.toContain("pg_sleep");
    expect(dry.warnings.join("\n")).toMatch(/"public"."double_it"\(i integer\): EXECUTE is revoked from PUBLIC/);
    expect(applied.statements).toEqual(dry.statements);
    expect(await canExecute("mg:tag:agent-a", "public.double_it(int)")).toBe(true);
    expect(await canExecute("mg:tag:agent-b", "public.double_it(int)")).toBe(false);
    expect(await canExecute("mg:tag:agent-a", "ops.answer()")).toBe(true);
    expect(await canExecute("public", "public.untouched()")).toBe(true);
    const again = await apply(RULES);
    expect(again.changed).toBe(false);
    expect(again.statements).toEqual([]);
  });

  it("two agents, the same query, different rows: reads", async () => {
    const a = await connect("agentA");
    const b = await connect("agentB");
    const q = "SELECT id FROM items ORDER BY id";
    expect(ids(await a.query(q))).toEqual([1, 3]); // z IS NOT NULL
    expect(ids(await b.query(q))).toEqual([3, 4]); // bob@'s rows
    // Extended protocol, a prepared statement: the same.
    const named = { name: "by-min-id", text: "SELECT id FROM items WHERE id >= $1 ORDER BY id", values: [2] };
    expect(ids(await a.query(named))).toEqual([3]);
    expect(ids(await b.query(named))).toEqual([3, 4]);
  });

  it("two agents, different rows: writes (WITH CHECK, and updates reach only the caller's rows)", async () => {
    const a = await connect("agentA");
    const b = await connect("agentB");
    await expect(a.query("INSERT INTO items VALUES (10, 'alice@', NULL)")).rejects.toMatchObject({ code: "42501", message: expect.stringMatching(/row-level security/) });
    await a.query("INSERT INTO items VALUES (11, 'bob@', 'from-a')");
    await expect(b.query("INSERT INTO items VALUES (12, 'alice@', 'x')")).rejects.toMatchObject({ code: "42501" });
    expect((await a.query("UPDATE items SET z = z || '+a' WHERE id IN (1, 2, 3, 4)")).rowCount).toBe(2); // 1 and 3
    expect((await b.query("UPDATE items SET z = 'b' WHERE id IN (1, 2, 3, 4, 11)")).rowCount).toBe(3); // 3, 4, 11
    const zById = Object.fromEntries((await asSuperuser("SELECT id, z FROM items")).map((r) => [r.id, r.z]));
    expect(zById).toEqual({ 1: "a1+a", 2: null, 3: "b", 4: "b", 11: "b" });
    // Back to the starting rows for the next test.
    for (const s of ["DELETE FROM items WHERE id = 11", "UPDATE items SET z = CASE id WHEN 1 THEN 'a1' WHEN 3 THEN 'b3' END"]) await asSuperuser(s);
  });

  it("call rules: the agent granted EXECUTE calls the function and the procedure (a write through row security); the other is denied", async () => {
    const a = await connect("agentA");
    const b = await connect("agentB");
    expect((await a.query("SELECT public.double_it(21) AS v")).rows[0].v).toBe(42);
    expect((await a.query("SELECT ops.answer() AS v")).rows[0].v).toBe(42);
    await a.query("CALL public.touch(4)"); // z IS NULL: outside agent-a's rows, the UPDATE inside reaches nothing
    await a.query("CALL public.touch(1)");
    expect(await asSuperuser("SELECT id, z FROM items WHERE z = 'touched'")).toEqual([{ id: 1, z: "touched" }]);
    await asSuperuser("UPDATE items SET z = 'a1' WHERE id = 1");
    await expect(b.query("SELECT public.double_it(21)")).rejects.toMatchObject({ code: "42501", message: expect.stringMatching(/denied by policy/) });
  });

  it("a narrower policy revokes the EXECUTE it no longer gives", async () => {
    const narrower = RULES.map((r) => (r.id === "a-calls" ? { ...r, sql: { ...r.sql, table: ["public.double_it"] } } : r));
    const res = await apply(narrower);
    expect(res.statements).toContain('REVOKE EXECUTE ON PROCEDURE "public"."touch"(IN i integer) FROM "mg:tag:agent-a"');
    expect(await canExecute("mg:tag:agent-a", "public.touch(int)")).toBe(false);
    expect(await canExecute("mg:tag:agent-a", "public.double_it(int)")).toBe(true);
    await apply(RULES);
  });

  it("a policy reload reaches statements already judged: the same text on the same connection is decided by the new policy", async () => {
    const a = await connect("agentA");
    const q = "SELECT id FROM items WHERE id = 1";
    expect(ids(await a.query(q))).toEqual([1]);
    expect(ids(await a.query(q))).toEqual([1]); // now from the decision cache
    const original = readFileSync(t.policyPath, "utf8");
    const reload = async (text: string) => {
      const done = new Promise((r) => t.gw.events.once("reload", r));
      writeFileSync(t.policyPath, text);
      await done;
    };
    await reload(JSON.stringify({ ...TAILNET, meshguard: { version: 5, rules: RULES.filter((r) => r.id !== "a-items") } }));
    await expect(a.query(q)).rejects.toMatchObject({ code: "42501", message: expect.stringMatching(/denied by policy/) });
    await reload(original);
    expect(ids(await a.query(q))).toEqual([1]);
  });

  it("close() with a short timeout ends a session still busy when it runs out", async () => {
    // A second gateway on the same tailnet, closed here (the first serves the next test).
    const node = await t.startNode("db-gateway-2", "tag:dbgw");
    const gw2 = await startDatabaseGateway({
      config: { policy: t.policyPath, upstream: { host: "127.0.0.1", port: server.port, user: GATEWAY_ROLE, password: { env: "PW" } } },
      node,
      env: { PW: GATEWAY_PASSWORD },
    });
    const port = await t.forward(t.nodes.agentA, gw2);
    const a = await connect("agentA", port);
    const long = a.query("SELECT pg_sleep(30)");
    long.catch(() => {});
    await new Promise((r) => setTimeout(r, 300));
    const t0 = Date.now();
    await gw2.close({ timeoutMs: 500 });
    expect(Date.now() - t0).toBeLessThan(5000);
    await expect(long).rejects.toThrow();
    expect(gw2.connections).toBe(0);
  });

  it("close() drains: it stops accepting, lets the statement in flight finish, and ends idle sessions with FATAL 57P01", async () => {
    const busy = await connect("agentA");
    const idle = await connect("agentB");
    const idleErrors: Array<{ code?: string }> = [];
    idle.on("error", (e) => idleErrors.push(e as { code?: string }));
    const inFlight = busy.query("SELECT pg_sleep(1.5), 7 AS done");
    await new Promise((r) => setTimeout(r, 300));
    expect(t.gw.connections).toBeGreaterThanOrEqual(2); // with the earlier tests' clients, idle too
    const t0 = Date.now();
    const closing = t.gw.close({ timeoutMs: 20_000 });
    // The statement in flight finishes and its result reaches the client.
    expect((await inFlight).rows[0].done).toBe(7);
    await closing;
    const took = Date.now() - t0;
    expect(took).toBeGreaterThan(900);
    expect(took).toBeLessThan(15_000);
    expect(t.gw.connections).toBe(0);
    await new Promise((r) => setTimeout(r, 200));
    expect(idleErrors.map((e) => e.code)).toContain("57P01");
    // No longer accepting: a new connection is not served.
    const late = new pg.Client({ host: "127.0.0.1", port: t.ports.agentB, user: "x", database: DB, connectionTimeoutMillis: 3000 });
    late.on("error", () => {});
    await expect(late.connect()).rejects.toThrow();
  });
});
