/**
 * The guard judging node-postgres statements in the agent (issue 15), against
 * a real PostgreSQL (Debian's, started in a temporary data directory by
 * test/gateway/pg-server.ts). What reached the database is read back with
 * the guard uninstalled, as the superuser.
 */
import { pipeline } from "node:stream/promises";
import { Readable, Writable } from "node:stream";
import pg from "pg";
import Cursor from "pg-cursor";
import { from as copyFrom, to as copyTo } from "pg-copy-streams";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { installGuard, type GuardHandle } from "../../src/guard/index.js";
import { PolicyDeniedError } from "../../src/guard/errors.js";
import type { ApprovalRequest, GuardOptions } from "../../src/guard/types.js";
import { loadPolicy } from "../../src/policy/index.js";
import type { DecisionEvent } from "../../src/policy/event.js";
import { postgresUnavailable, startPostgres, type PgServer } from "../gateway/pg-server.js";

const unavailable = postgresUnavailable();
if (unavailable) console.warn(`PostgreSQL guard tests skipped: ${unavailable}`);

let server: PgServer;
const DB = "appdb";

beforeAll(async () => {
  if (unavailable) return;
  server = await startPostgres();
  await server.createDatabase(DB);
  for (const s of [
    "CREATE TABLE orders (id int PRIMARY KEY, item text)",
    "CREATE TABLE secrets (id int, value text)",
    "CREATE TABLE counter (n int)",
    "INSERT INTO counter VALUES (0)",
    "INSERT INTO secrets VALUES (1, 'top')",
    "CREATE TABLE notes (id int, owner text)",
    "CREATE FUNCTION bump() RETURNS int LANGUAGE sql AS 'UPDATE counter SET n = n + 1 RETURNING n'",
  ])
    await server.sql(DB, s);
}, 120_000);
afterAll(async () => {
  await server?.stop();
});

const policyText = (port: number) =>
  JSON.stringify({
    version: 5,
    rules: [
      { id: "db", src: ["*"], tcp: { host: ["127.0.0.1"], port: [port] } },
      { id: "reader", src: ["tag:reader"], sql: { database: [DB], operation: ["select", "copy_to"], table: ["public.orders", "public.counter"] } },
      { id: "writer", src: ["tag:writer"], sql: { database: [DB], operation: ["select", "insert", "update", "copy_from"], table: ["public.orders"] } },
      { id: "writer-calls", src: ["tag:writer"], sql: { database: [DB], operation: ["call"], table: ["public.*", "pg_catalog.*"] } },
      { id: "no-secrets", src: ["*"], effect: "deny", sql: { database: ["*"], operation: ["*"], table: ["public.secrets"] } },
      { id: "ask-delete", src: ["tag:writer"], effect: "approve", sql: { database: [DB], operation: ["delete"], table: ["public.orders"] } },
      { id: "mine", src: ["tag:owner"], sql: { database: [DB], operation: ["select"], table: ["public.notes"], rows: "owner = ANY (meshguard.owners())" } },
    ],
  });

let g: GuardHandle | undefined;
let clients: pg.Client[] = [];
const events: DecisionEvent[] = [];

/** as installs the guard as an agent with this tag and returns a connected client. */
async function as(tag: string, approvals?: GuardOptions["approvals"]): Promise<pg.Client> {
  g = installGuard({ identity: { node: "agent", tags: [tag] }, policy: loadPolicy(policyText(server.port)), intercept: { sdk: true }, sdkSearchPaths: [process.cwd()], ...(approvals ? { approvals } : {}) });
  g.on("decision", (e: DecisionEvent) => events.push(e));
  const c = new pg.Client({ connectionString: server.url(DB) });
  clients.push(c);
  await c.connect();
  return c;
}

/** done ends the clients and uninstalls the guard, so the test can read what reached the database. */
async function done(): Promise<void> {
  for (const c of clients) await c.end().catch(() => {});
  clients = [];
  g?.uninstall();
  g = undefined;
}

const count = async (table: string) => Number((await server.sql<{ n: string }>(DB, `SELECT count(*) AS n FROM ${table}`))[0]!.n);
const counter = async () => Number((await server.sql<{ n: number }>(DB, "SELECT n FROM counter"))[0]!.n);

beforeEach(() => {
  events.length = 0;
});
afterEach(async () => {
  await done();
  if (!unavailable) await server.sql(DB, "DELETE FROM orders");
});

describe.skipIf(unavailable)("pg statements judged in the agent", () => {
  it("pg is found and instrumented; the server's major version is the parser's (no warning at connect)", async () => {
    const warnings: Error[] = [];
    g = installGuard({ identity: { node: "agent", tags: ["tag:reader"] }, policy: loadPolicy(policyText(server.port)), intercept: { sdk: true }, sdkSearchPaths: [process.cwd()] });
    g.on("warning", (e: Error) => warnings.push(e));
    expect(g.instrumented).toContain("pg (cjs)");
    const c = new pg.Client({ connectionString: server.url(DB) });
    clients.push(c);
    await c.connect();
    expect(server.version).toMatch(/^15/);
    expect(warnings).toEqual([]);
    // What a server of another major announces at startup (ParameterStatus) is warned about.
    (c as unknown as { connection: { emit(ev: string, m: object): void } }).connection.emit("parameterStatus", { parameterName: "server_version", parameterValue: "16.4" });
    expect(warnings.map((w) => w.message)).toEqual([expect.stringMatching(/version 16\.4, the SQL parser speaks PostgreSQL 15.*Pin libpg-query 16\.x/)]);
  });

  it("allowed and denied per agent; nothing denied reaches the database", async () => {
    const reader = await as("tag:reader");
    expect((await reader.query("SELECT id FROM orders")).rows).toEqual([]);
    const err = await reader.query("INSERT INTO orders (id, item) VALUES (1, 'x')").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PolicyDeniedError);
    expect((err as PolicyDeniedError).reason).toContain("insert public.orders");
    await done();
    expect(await count("orders")).toBe(0);

    const writer = await as("tag:writer");
    await writer.query("INSERT INTO orders (id, item) VALUES (1, 'x')");
    await expect(writer.query("SELECT value FROM secrets")).rejects.toMatchObject({ code: "MESHGUARD_POLICY_DENIED", ruleId: "no-secrets" });
    await done();
    expect(await count("orders")).toBe(1);
  });

  it("a multi-statement string hiding a denied statement is refused whole", async () => {
    const writer = await as("tag:writer");
    await writer.query("INSERT INTO orders VALUES (1, 'a')");
    await expect(writer.query("SELECT id FROM orders; DELETE FROM orders")).rejects.toBeInstanceOf(PolicyDeniedError);
    await expect(writer.query("INSERT INTO orders VALUES (2, 'b'); DROP TABLE orders")).rejects.toBeInstanceOf(PolicyDeniedError);
    await done();
    expect(await count("orders")).toBe(1);
  });

  it("comments, quoting and case do not hide a statement", async () => {
    const writer = await as("tag:writer");
    await writer.query("INSERT INTO orders VALUES (1, 'a')");
    for (const s of [
      "SELECT 1 /* harmless */; DeLeTe FrOm ORDERS",
      'SELECT 1; -- comment\nDELETE FROM "orders"',
      "SELECT 1; DELETE FROM public . orders",
      "SELECT $$;DELETE$$ AS x; delete from orders",
      "WITH gone AS (DELETE FROM orders RETURNING id) SELECT id FROM gone",
    ])
      await expect(writer.query(s), s).rejects.toBeInstanceOf(PolicyDeniedError);
    // A quoted literal that looks like a statement is a string, not a statement.
    expect((await writer.query("SELECT ';DELETE FROM orders' AS x FROM orders")).rows).toEqual([{ x: ";DELETE FROM orders" }]);
    await done();
    expect(await count("orders")).toBe(1);
  });

  it("writes through functions need a call rule; dangerous built-ins need a rule naming them", async () => {
    const reader = await as("tag:reader");
    await expect(reader.query("SELECT n FROM counter WHERE bump() > 0")).rejects.toMatchObject({ ruleId: undefined });
    await done();
    expect(await counter()).toBe(0);

    const writer = await as("tag:writer");
    expect((await writer.query("SELECT public.bump() AS n")).rows).toEqual([{ n: 1 }]);
    // "pg_catalog.*" allows calls, but not set_config or pg_read_file.
    const err = (await writer.query("SELECT set_config('search_path', 'evil', false)").catch((e: unknown) => e)) as PolicyDeniedError;
    expect(err).toBeInstanceOf(PolicyDeniedError);
    expect(err.reason).toContain("call pg_catalog.set_config");
    await expect(writer.query("SELECT pg_read_file('/etc/passwd')")).rejects.toBeInstanceOf(PolicyDeniedError);
    expect((await writer.query("SHOW search_path").catch((e: unknown) => e)) instanceof PolicyDeniedError).toBe(true);
    await done();
    expect(await counter()).toBe(1);
  });

  it("prepared statements and the extended protocol: the text is judged, values are data", async () => {
    const writer = await as("tag:writer");
    const ins = { name: "ins", text: "INSERT INTO orders (id, item) VALUES ($1, $2)" };
    await writer.query({ ...ins, values: [1, "DELETE FROM orders"] });
    await writer.query({ ...ins, values: [2, "b"] });
    await expect(writer.query({ name: "del", text: "DELETE FROM orders WHERE id = $1", values: [1] })).rejects.toBeInstanceOf(PolicyDeniedError);
    // The name of a denied prepared statement was never sent: using it again is judged again.
    await expect(writer.query({ name: "del", text: "DELETE FROM orders WHERE id = $1", values: [2] })).rejects.toBeInstanceOf(PolicyDeniedError);
    await done();
    expect(await count("orders")).toBe(2);
  });

  it("INSERT, a denied statement, COMMIT: nothing is committed", async () => {
    const writer = await as("tag:writer");
    await writer.query("BEGIN");
    await writer.query("INSERT INTO orders VALUES (1, 'a')");
    await expect(writer.query("DELETE FROM orders")).rejects.toBeInstanceOf(PolicyDeniedError);
    await writer.query("COMMIT"); // the transaction is aborted: COMMIT rolls back
    // Pipelined without waiting: the denial still takes the transaction down before COMMIT.
    const q = [writer.query("BEGIN"), writer.query("INSERT INTO orders VALUES (2, 'b')"), writer.query("DROP TABLE orders"), writer.query("COMMIT")];
    const settled = await Promise.allSettled(q);
    expect(settled.map((s) => s.status)).toEqual(["fulfilled", "fulfilled", "rejected", "fulfilled"]);
    expect((settled[2] as PromiseRejectedResult).reason).toBeInstanceOf(PolicyDeniedError);
    await done();
    expect(await count("orders")).toBe(0);
  });

  it("the connection stays usable after a denial, inside and outside a transaction", async () => {
    const writer = await as("tag:writer");
    await expect(writer.query("DELETE FROM orders")).rejects.toBeInstanceOf(PolicyDeniedError);
    await writer.query("INSERT INTO orders VALUES (1, 'a')"); // autocommit: not aborted by the denial
    await writer.query("BEGIN");
    await expect(writer.query("TRUNCATE orders")).rejects.toBeInstanceOf(PolicyDeniedError);
    await writer.query("ROLLBACK");
    expect((await writer.query("SELECT id FROM orders")).rows).toEqual([{ id: 1 }]);
    // A query object without text is denied (fails closed); no query at all is node-postgres' own TypeError.
    await expect(writer.query({ values: [1] } as unknown as string)).rejects.toBeInstanceOf(PolicyDeniedError);
    expect(() => writer.query(undefined as unknown as string)).toThrow(TypeError);
    // Callback style.
    const err = await new Promise((resolve) => writer.query("DELETE FROM orders", (e: Error | null) => resolve(e)));
    expect(err).toBeInstanceOf(PolicyDeniedError);
    expect((await writer.query("SELECT count(*)::int AS n FROM orders")).rows).toEqual([{ n: 1 }]);
    await done();
    expect(await count("orders")).toBe(1);
  });

  it("a pool's queries are judged too", async () => {
    await as("tag:reader");
    const pool = new pg.Pool({ connectionString: server.url(DB), max: 1 });
    try {
      expect((await pool.query("SELECT count(*)::int AS n FROM orders")).rows).toEqual([{ n: 0 }]);
      await expect(pool.query("DELETE FROM orders")).rejects.toBeInstanceOf(PolicyDeniedError);
      expect((await pool.query("SELECT 1 AS one")).rows).toEqual([{ one: 1 }]);
    } finally {
      await pool.end();
    }
  });

  it("an approve rule holds the statement until the approver answers; the approver sees no literals", async () => {
    const asked: ApprovalRequest[] = [];
    const writer = await as("tag:writer", { callback: (req) => (asked.push(req), { approved: req.request.includes("id") }) });
    await writer.query("INSERT INTO orders VALUES (1, 'a'), (2, 'b'), (3, 'c')");
    await writer.query("DELETE FROM orders WHERE id = 1"); // approved
    await writer.query("BEGIN");
    await writer.query("INSERT INTO orders VALUES (4, 'd')");
    await expect(writer.query("DELETE FROM orders WHERE item = 'capybara-3307'")).rejects.toBeInstanceOf(PolicyDeniedError); // refused
    await writer.query("COMMIT"); // a refusal aborts the transaction as a denial does
    expect(asked.map((r) => [r.ruleId, r.request])).toEqual([
      ["ask-delete", "sql appdb [delete public.orders (id)]"],
      ["ask-delete", "sql appdb [delete public.orders (item)]"],
    ]);
    expect(JSON.stringify(asked)).not.toContain("capybara");
    await done();
    expect(await count("orders")).toBe(2);
  });

  it("pg-cursor: a cursor's statement is judged; a denied one errors its reads and sends nothing", async () => {
    await server.sql(DB, "INSERT INTO orders VALUES (1, 'a'), (2, 'b'), (3, 'c')");
    const reader = await as("tag:reader");
    const cur = reader.query(new Cursor("SELECT id FROM orders ORDER BY id"));
    expect(await cur.read(2)).toEqual([{ id: 1 }, { id: 2 }]);
    expect(await cur.read(2)).toEqual([{ id: 3 }]);
    await cur.close();
    const denied = reader.query(new Cursor("SELECT value FROM secrets"));
    await expect(denied.read(1)).rejects.toBeInstanceOf(PolicyDeniedError);
    const writes = reader.query(new Cursor("WITH d AS (DELETE FROM orders RETURNING id) SELECT id FROM d"));
    await expect(writes.read(1)).rejects.toBeInstanceOf(PolicyDeniedError);
    expect((await reader.query("SELECT count(*)::int AS n FROM orders")).rows).toEqual([{ n: 3 }]);
    await done();
    expect(await count("orders")).toBe(3);
  });

  it("pg-copy-streams: COPY TO and COPY FROM are judged as copy_to and copy_from", async () => {
    await server.sql(DB, "INSERT INTO orders VALUES (1, 'a')");
    const reader = await as("tag:reader");
    let out = "";
    await pipeline(reader.query(copyTo("COPY orders TO STDOUT")), new Writable({ write: (c, _e, cb) => ((out += String(c)), cb()) }));
    expect(out).toBe("1\ta\n");
    await expect(pipeline(reader.query(copyTo("COPY secrets TO STDOUT")), new Writable({ write: (_c, _e, cb) => cb() }))).rejects.toBeInstanceOf(PolicyDeniedError);
    await expect(pipeline(Readable.from(["9\tz\n"]), reader.query(copyFrom("COPY orders FROM STDIN")))).rejects.toBeInstanceOf(PolicyDeniedError);
    await done();
    const writer = await as("tag:writer");
    await pipeline(Readable.from(["2\tb\n3\tc\n"]), writer.query(copyFrom("COPY orders FROM STDIN")));
    await expect(pipeline(Readable.from(["5\tleak\n"]), writer.query(copyFrom("COPY secrets (id, value) FROM STDIN")))).rejects.toBeInstanceOf(PolicyDeniedError);
    expect((await writer.query("SELECT count(*)::int AS n FROM orders")).rows).toEqual([{ n: 3 }]);
    await done();
    expect(await count("orders")).toBe(3);
    expect(await count("secrets")).toBe(1);
  });

  it("a statement only a rows rule allows is denied in-process, and the error says so", async () => {
    const owner = await as("tag:owner");
    const err = (await owner.query("SELECT id FROM notes").catch((e: unknown) => e)) as PolicyDeniedError;
    expect(err).toBeInstanceOf(PolicyDeniedError);
    expect(err.ruleId).toBe("mine");
    expect(err.message).toContain("database gateway");
  });

  it("decision events and errors carry no literal values", async () => {
    const writer = await as("tag:writer");
    const [ins, del, sel] = ["INSERT INTO orders (id, item) VALUES (424242, 'zebra-kumquat-4711')", "DELETE FROM orders WHERE item = 'walrus-quince-9182'", "SELECT item FROM orders WHERE item = $1"];
    await writer.query(ins);
    const err = (await writer.query(del).catch((e: unknown) => e)) as Error;
    await writer.query({ text: sel, values: ["okapi-medlar-5531"] });
    expect(err.message).not.toContain("walrus-quince");
    const text = JSON.stringify(events);
    for (const literal of ["zebra-kumquat", "424242", "walrus-quince", "okapi-medlar"]) expect(text).not.toContain(literal);
    const sqlEvents = events.filter((e) => e.layer === "sql");
    expect(sqlEvents.map((e) => [e.outcome, e.target])).toEqual([
      ["allow", { kind: "sql", database: DB, accesses: ["insert public.orders (id, item)"], length: ins.length }],
      ["deny", { kind: "sql", database: DB, accesses: ["delete public.orders (item)"], length: del.length }],
      ["allow", { kind: "sql", database: DB, accesses: ["select public.orders (item)"], length: sel.length }],
    ]);
  });
});
