/**
 * The guard judging postgres.js statements in the agent (issue 15), against
 * a real PostgreSQL (Debian's, started in a temporary data directory by
 * test/gateway/pg-server.ts), as test/guard/sql-pg.test.ts does for pg.
 * What reached the database is read back with the guard uninstalled, as the
 * superuser.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import postgres from "postgres";
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
    "INSERT INTO secrets VALUES (1, 'top')",
    "CREATE TABLE notes (id int, owner text)",
  ])
    await server.sql(DB, s);
}, 120_000);
afterAll(async () => {
  await server?.stop();
});

// postgres.js does not tell which database a query's connection is to: rules for its agents name the database "*".
const policyText = (port: number) =>
  JSON.stringify({
    version: 5,
    rules: [
      { id: "db", src: ["*"], tcp: { host: ["127.0.0.1"], port: [port] } },
      { id: "reader", src: ["tag:reader"], sql: { database: ["*"], operation: ["select"], table: ["public.orders"] } },
      { id: "writer", src: ["tag:writer"], sql: { database: ["*"], operation: ["select", "insert", "update"], table: ["public.orders"] } },
      { id: "no-secrets", src: ["*"], effect: "deny", sql: { database: ["*"], operation: ["*"], table: ["public.secrets"] } },
      { id: "ask-delete", src: ["tag:writer"], effect: "approve", sql: { database: ["*"], operation: ["delete"], table: ["public.orders"] } },
      { id: "named-db", src: ["tag:named"], sql: { database: [DB], operation: ["select"], table: ["public.orders"] } },
    ],
  });

let g: GuardHandle | undefined;
let clients: postgres.Sql[] = [];
const events: DecisionEvent[] = [];

/** as installs the guard as an agent with this tag and returns a postgres.js client (max connections as given). */
function as(tag: string, max = 1, approvals?: GuardOptions["approvals"]): postgres.Sql {
  g = installGuard({ identity: { node: "agent", tags: [tag] }, policy: loadPolicy(policyText(server.port)), intercept: { sdk: true }, sdkSearchPaths: [process.cwd()], ...(approvals ? { approvals } : {}) });
  g.on("decision", (e: DecisionEvent) => events.push(e));
  const sql = postgres(server.url(DB), { max, onnotice: () => {} });
  clients.push(sql);
  return sql;
}

/** done ends the clients and uninstalls the guard, so the test can read what reached the database. */
async function done(): Promise<void> {
  for (const c of clients) await c.end({ timeout: 5 }).catch(() => {});
  clients = [];
  g?.uninstall();
  g = undefined;
}

const count = async (table: string) => Number((await server.sql<{ n: string }>(DB, `SELECT count(*) AS n FROM ${table}`))[0]!.n);

beforeEach(() => {
  events.length = 0;
});
afterEach(async () => {
  await done();
  if (!unavailable) await server.sql(DB, "DELETE FROM orders");
});

describe.skipIf(unavailable)("postgres.js statements judged in the agent", () => {
  it("postgres.js is found and instrumented, both builds; its own catalog reads at connect pass", async () => {
    const sql = as("tag:reader");
    expect(g!.instrumented).toEqual(expect.arrayContaining(["postgres (cjs)", "postgres (esm)"]));
    // The connection's array-type lookup (fetch_types) ran unjudged: no decision about pg_catalog.
    expect(await sql`SELECT id FROM orders`).toHaveLength(0);
    expect(events.filter((e) => e.layer === "sql").map((e) => e.target)).toEqual([{ kind: "sql", database: "", accesses: ["select public.orders (id)"], length: "SELECT id FROM orders".length }]);
  });

  it("allowed and denied per agent; nothing denied reaches the database", async () => {
    const reader = as("tag:reader");
    expect(await reader`SELECT id FROM orders`).toEqual([]);
    const err = await reader`INSERT INTO orders (id, item) VALUES (1, 'x')`.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PolicyDeniedError);
    expect((err as PolicyDeniedError).reason).toContain("insert public.orders");
    await done();
    expect(await count("orders")).toBe(0);

    const writer = as("tag:writer");
    await writer`INSERT INTO orders (id, item) VALUES (1, 'x')`;
    await expect(writer`SELECT value FROM secrets`).rejects.toMatchObject({ code: "MESHGUARD_POLICY_DENIED", ruleId: "no-secrets" });
    await done();
    expect(await count("orders")).toBe(1);
  });

  it("sql.unsafe and sql.file: a multi-statement string hiding a denied statement is refused whole", async () => {
    const writer = as("tag:writer");
    await writer.unsafe("INSERT INTO orders VALUES (1, 'a')");
    await expect(writer.unsafe("SELECT id FROM orders; DELETE FROM orders")).rejects.toBeInstanceOf(PolicyDeniedError);
    await expect(writer.unsafe("INSERT INTO orders VALUES (2, 'b'); DROP TABLE orders")).rejects.toBeInstanceOf(PolicyDeniedError);
    await expect(writer.unsafe("SELECT 1; -- x\nDeLeTe FrOm \"orders\"")).rejects.toBeInstanceOf(PolicyDeniedError);
    // With parameters (extended protocol): the text is judged, values are data.
    expect(await writer.unsafe("SELECT item FROM orders WHERE id = $1", [1])).toEqual([{ item: "a" }]);
    await expect(writer.unsafe("DELETE FROM orders WHERE id = $1", [1])).rejects.toBeInstanceOf(PolicyDeniedError);
    // sql.file: the file's text is judged.
    const dir = mkdtempSync(join(tmpdir(), "pgjs-"));
    try {
      writeFileSync(join(dir, "ok.sql"), "SELECT id FROM orders");
      writeFileSync(join(dir, "bad.sql"), "SELECT id FROM orders;\nDELETE FROM orders");
      expect(await writer.file(join(dir, "ok.sql"))).toEqual([{ id: 1 }]);
      await expect(writer.file(join(dir, "bad.sql"))).rejects.toBeInstanceOf(PolicyDeniedError);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    await done();
    expect(await count("orders")).toBe(1);
  });

  it("prepared statements and helpers: the built text is judged, values are data", async () => {
    const writer = as("tag:writer");
    // Tagged templates with values are prepared statements (postgres.js' default).
    await writer`INSERT INTO orders (id, item) VALUES (${1}, ${"DELETE FROM orders"})`;
    await writer`INSERT INTO orders ${writer({ id: 2, item: "b" })}`;
    await expect(writer`DELETE FROM orders WHERE id = ${1}`).rejects.toBeInstanceOf(PolicyDeniedError);
    // The denied statement was never prepared: sending it again is judged again.
    await expect(writer`DELETE FROM orders WHERE id = ${1}`).rejects.toBeInstanceOf(PolicyDeniedError);
    // A fragment hiding a denied statement in an allowed one.
    await expect(writer`SELECT id FROM orders WHERE id IN (${writer`SELECT id FROM secrets`})`).rejects.toBeInstanceOf(PolicyDeniedError);
    // An identifier helper naming a denied table.
    await expect(writer`SELECT * FROM ${writer("secrets")}`).rejects.toBeInstanceOf(PolicyDeniedError);
    expect(await writer`SELECT id, item FROM orders ORDER BY id`).toEqual([
      { id: 1, item: "DELETE FROM orders" },
      { id: 2, item: "b" },
    ]);
    await done();
    expect(await count("orders")).toBe(2);
  });

  it("sql.begin: INSERT, a denied statement → the transaction rolls back, nothing is committed", async () => {
    const writer = as("tag:writer", 2);
    const err = await writer
      .begin(async (tx) => {
        await tx`INSERT INTO orders VALUES (1, 'a')`;
        await tx`DELETE FROM orders`;
      })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PolicyDeniedError);
    // The app catches the denial and goes on to commit: still nothing is committed.
    const caught = await writer
      .begin(async (tx) => {
        await tx`INSERT INTO orders VALUES (2, 'b')`;
        await tx`TRUNCATE orders`.catch(() => {});
        return "went on";
      })
      .catch((e: unknown) => e);
    expect(caught).toBeInstanceOf(PolicyDeniedError);
    // Pipelined without waiting.
    const piped = await writer.begin((tx) => [tx`INSERT INTO orders VALUES (3, 'c')`, tx`DROP TABLE orders`, tx`INSERT INTO orders VALUES (4, 'd')`]).catch((e: unknown) => e);
    expect(piped).toBeInstanceOf(PolicyDeniedError);
    // The pool still works.
    await writer.begin(async (tx) => {
      await tx`INSERT INTO orders VALUES (5, 'e')`;
    });
    await done();
    expect(await server.sql(DB, "SELECT id FROM orders")).toEqual([{ id: 5 }]);
  });

  it("a reserved connection: BEGIN, INSERT, denied, COMMIT → nothing committed; the connection stays usable", async () => {
    const writer = as("tag:writer");
    const c = await writer.reserve();
    await c`BEGIN`;
    await c`INSERT INTO orders VALUES (1, 'a')`;
    await expect(c`DELETE FROM orders`).rejects.toBeInstanceOf(PolicyDeniedError);
    await c`COMMIT`; // the transaction is aborted: COMMIT rolls back
    // Outside a transaction a denial aborts nothing.
    await expect(c.unsafe("TRUNCATE orders")).rejects.toBeInstanceOf(PolicyDeniedError);
    await c`INSERT INTO orders VALUES (2, 'b')`;
    expect(await c`SELECT id FROM orders`).toEqual([{ id: 2 }]);
    c.release();
    expect(await writer`SELECT count(*)::int AS n FROM orders`).toEqual([{ n: 1 }]);
    await done();
    expect(await server.sql(DB, "SELECT id FROM orders")).toEqual([{ id: 2 }]);
  });

  it("cursors, forEach and describe: a denied statement rejects and hands over no row", async () => {
    await server.sql(DB, "INSERT INTO orders VALUES (1, 'a'), (2, 'b'), (3, 'c')");
    const reader = as("tag:reader");
    const seen: number[] = [];
    for await (const rows of reader`SELECT id FROM orders ORDER BY id`.cursor(2)) seen.push(...rows.map((r) => r.id as number));
    expect(seen).toEqual([1, 2, 3]);
    const got: unknown[] = [];
    await expect(
      (async () => {
        for await (const rows of reader`SELECT value FROM secrets`.cursor(1)) got.push(rows);
      })(),
    ).rejects.toBeInstanceOf(PolicyDeniedError);
    await expect(reader`SELECT value FROM secrets`.forEach((row) => got.push(row))).rejects.toBeInstanceOf(PolicyDeniedError);
    await expect(reader`SELECT value FROM secrets WHERE id = ${1}`.describe()).rejects.toBeInstanceOf(PolicyDeniedError);
    expect(got).toEqual([]);
    expect(await reader`SELECT count(*)::int AS n FROM orders`).toEqual([{ n: 3 }]);
    await done();
    expect(await count("orders")).toBe(3);
  });

  it("an approve rule denies (a postgres.js statement cannot be held) without asking the approver", async () => {
    const asked: ApprovalRequest[] = [];
    const writer = as("tag:writer", 1, { callback: (req) => (asked.push(req), { approved: true }) });
    await writer`INSERT INTO orders VALUES (1, 'a')`;
    const err = (await writer`DELETE FROM orders WHERE id = 1`.catch((e: unknown) => e)) as PolicyDeniedError;
    expect(err).toBeInstanceOf(PolicyDeniedError);
    expect(err.ruleId).toBe("ask-delete");
    expect(err.reason).toContain("cannot hold it for an approver");
    expect(asked).toEqual([]);
    await done();
    expect(await count("orders")).toBe(1);
  });

  it("a rule naming a database denies: postgres.js does not tell the database (fails closed)", async () => {
    const named = as("tag:named");
    const err = (await named`SELECT id FROM orders`.catch((e: unknown) => e)) as PolicyDeniedError;
    expect(err).toBeInstanceOf(PolicyDeniedError);
    expect(err.ruleId).toBe("named-db");
    expect(err.reason).toMatch(/needs the database name.*name the database "\*"/);
  });

  it("decision events and errors carry no literal values", async () => {
    const writer = as("tag:writer");
    const ins = "INSERT INTO orders (id, item) VALUES (424242, 'zebra-kumquat-4711')";
    const del = "UPDATE secrets SET value = 'walrus-quince-9182'";
    await writer.unsafe(ins);
    const err = (await writer.unsafe(del).catch((e: unknown) => e)) as Error;
    expect(err).toBeInstanceOf(PolicyDeniedError);
    expect(err.message).not.toContain("walrus-quince");
    await writer`SELECT item FROM orders WHERE item = ${"okapi-medlar-5531"}`;
    const text = JSON.stringify(events);
    for (const literal of ["zebra-kumquat", "424242", "walrus-quince", "okapi-medlar"]) expect(text).not.toContain(literal);
    expect(events.filter((e) => e.layer === "sql").map((e) => [e.outcome, e.target])).toEqual([
      ["allow", { kind: "sql", database: "", accesses: ["insert public.orders (id, item)"], length: ins.length }],
      ["deny", { kind: "sql", database: "", accesses: ["update public.secrets (value)"], length: del.length }],
      ["allow", { kind: "sql", database: "", accesses: ["select public.orders (item)"], length: "SELECT item FROM orders WHERE item = $1".length }],
    ]);
  });

  it("with the guard uninstalled, queries made before and after work unjudged", async () => {
    const writer = as("tag:reader");
    const before = writer`SELECT count(*)::int AS n FROM orders`;
    g!.uninstall();
    g = undefined;
    expect(await before).toEqual([{ n: 0 }]);
    await writer`INSERT INTO orders VALUES (7, 'g')`;
    expect(await writer`SELECT id FROM orders`).toEqual([{ id: 7 }]);
  });
});
