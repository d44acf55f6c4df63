/**
 * The database gateway (issue 15, must-haves 4, 6 and 7) end to end: a real
 * PostgreSQL 15, a real headscale tailnet, agents that are not guarded
 * reaching the gateway node over the tailnet with psql (Debian's client) and
 * node-postgres. What reached the database is read back as the superuser.
 */
import { spawn } from "node:child_process";
import net from "node:net";
import pg from "pg";
import { parse as parseBackend, serialize } from "pg-protocol";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ApprovalRequest } from "../../src/guard/types.js";
import type { DecisionEvent } from "../../src/policy/event.js";
import { DB, prepareDatabase, startDbTailnet, type DbTailnet } from "./db-tailnet.js";
import { postgresUnavailable, startPostgres, type PgServer } from "../gateway/pg-server.js";

const unavailable = postgresUnavailable();
if (unavailable) console.warn(`database gateway tests skipped: ${unavailable}`);

const ROWS = { "tag:agent-a": "z IS NOT NULL", "tag:agent-b": "owner = ANY (meshguard.owners())" };
const MESHGUARD = {
  version: 5,
  rules: [
    { id: "a-items", src: ["tag:agent-a"], sql: { database: [DB], operation: ["select", "insert", "copy_to"], table: ["public.items"], rows: ROWS["tag:agent-a"] } },
    { id: "b-items", src: ["tag:agent-b"], sql: { database: [DB], operation: ["select", "insert", "update", "copy_from"], table: ["public.items"], rows: ROWS["tag:agent-b"] } },
    { id: "meshguard-fns", src: ["*"], sql: { database: [DB], operation: ["call"], table: ["meshguard.*"] } },
    { id: "a-sleep", src: ["tag:agent-a"], sql: { database: [DB], operation: ["call"], table: ["pg_catalog.pg_sleep"] } },
    { id: "a-update", src: ["tag:agent-a"], effect: "approve", sql: { database: [DB], operation: ["update"], table: ["public.items"], rows: ROWS["tag:agent-a"] } },
    // Even a rule naming them cannot let a session change its identity at the gateway.
    { id: "a-identity", src: ["tag:agent-a"], sql: { database: [DB], operation: ["set"], table: ["role", "session_authorization", "search_path", "meshguard.principal", "meshguard.owners", "discard", "all"] } },
    { id: "a-set-config", src: ["tag:agent-a"], sql: { database: [DB], operation: ["call"], table: ["pg_catalog.set_config"] } },
    { id: "a-settings", src: ["tag:agent-a"], sql: { database: [DB], operation: ["set"], table: ["statement_timeout", "application_name", "client_encoding"] } },
    { id: "no-secrets", src: ["*"], effect: "deny", sql: { database: ["*"], operation: ["*"], table: ["public.secrets"] } },
  ],
};

let server: PgServer;
let t: DbTailnet;
const events: DecisionEvent[] = [];
const approvals: ApprovalRequest[] = [];
let approve = true;
/** How long the approver takes to answer. */
let approveDelayMs = 0;

beforeAll(async () => {
  if (unavailable) return;
  server = await startPostgres();
  await prepareDatabase(server, ROWS);
  t = await startDbTailnet({
    server,
    meshguard: MESHGUARD,
    gateway: {
      approvals: {
        callback: async (req) => {
          approvals.push(req);
          if (approveDelayMs > 0) await new Promise((r) => setTimeout(r, approveDelayMs));
          return { approved: approve, by: "dba@example.com", ...(approve ? {} : { reason: "not today" }) };
        },
      },
    },
  });
  t.gw.events.on("decision", (e: DecisionEvent) => events.push(e));
}, 180_000);

afterAll(async () => {
  await t?.close();
  await server?.stop();
});

const connect = (agent: "agentA" | "agentB", extra: pg.ClientConfig = {}) => t.connect(agent, extra);

/** psql runs Debian's psql against the agent's forwarder; resolves with its exit code and output. */
function psql(agent: "agentA" | "agentB", sql: string, env: Record<string, string> = {}, input = ""): Promise<{ code: number; out: string; err: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn("psql", ["-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", String(t.ports[agent]), "-U", "agent", "-d", DB, "-c", sql], {
      env: { ...process.env, PGPASSWORD: "not-the-database-password", PGCONNECT_TIMEOUT: "20", ...env },
    });
    let out = "";
    let err = "";
    p.stdout.on("data", (d: Buffer) => (out += d.toString()));
    p.stderr.on("data", (d: Buffer) => (err += d.toString()));
    p.on("error", reject);
    p.on("close", (code) => resolve({ code: code ?? -1, out, err }));
    p.stdin.end(input);
  });
}

const ids = (r: pg.QueryResult) => r.rows.map((x) => Number(x.id));
const asSuperuser = (sql: string) => server.sql(DB, sql);

describe.skipIf(unavailable)("database gateway", () => {
  it("psql through the gateway: each agent is its own role and sees only its rows", async () => {
    const a = await psql("agentA", "SELECT current_user, meshguard.principal(), meshguard.owners(), current_setting('search_path'); SELECT id FROM items ORDER BY id");
    expect(a.err).toBe("");
    expect(a.code).toBe(0);
    const [who, ...rows] = a.out.trim().split("\n");
    expect(who).toMatch(/^mg:tag:agent-a\|agent-a\.[^|]+\|\{alice@\}\|public, pg_temp$/);
    expect(rows).toEqual(["1", "3"]);
    const b = await psql("agentB", "SELECT id FROM items ORDER BY id");
    expect(b.code).toBe(0);
    expect(b.out.trim().split("\n")).toEqual(["3", "4"]);
  });

  it("COPY through psql: COPY TO is filtered by the caller's rows; COPY FROM into a row-secured table is refused by PostgreSQL itself", async () => {
    const a = await psql("agentA", "COPY items (id, z) TO STDOUT");
    expect(a.code).toBe(0);
    expect(a.out).toBe("1\ta1\n3\tb3\n");
    // agent-b has no copy_to rule: denied by the gateway.
    const denied = await psql("agentB", "COPY items TO STDOUT");
    expect(denied.err).toMatch(/denied by policy/);
    // agent-b may copy_from by policy; PostgreSQL refuses COPY FROM under row security.
    const b = await psql("agentB", "COPY items FROM STDIN", {}, "30\tbob@\tx\n\\.\n");
    expect(b.code).not.toBe(0);
    expect(b.err).toMatch(/COPY FROM not supported with row-level security/);
    expect(await asSuperuser("SELECT id FROM items WHERE id = 30")).toEqual([]);
  });

  it("node-postgres: the same query gives two agents different rows, for reads and writes", async () => {
    const a = await connect("agentA");
    const b = await connect("agentB");
    const q = "SELECT id FROM items ORDER BY id";
    expect(ids(await a.query(q))).toEqual([1, 3]);
    expect(ids(await b.query(q))).toEqual([3, 4]);
    // Extended protocol, with values: the same filters.
    expect(ids(await a.query("SELECT id FROM items WHERE id > $1 ORDER BY id", [0]))).toEqual([1, 3]);
    // Writes: WITH CHECK refuses rows outside the filter; UPDATE reaches only the agent's rows.
    await expect(a.query("INSERT INTO items VALUES (10, 'alice@', NULL)")).rejects.toMatchObject({ code: "42501", message: expect.stringMatching(/row-level security/) });
    await a.query("INSERT INTO items VALUES (11, 'alice@', 'ok')");
    await expect(b.query("INSERT INTO items VALUES (12, 'alice@', 'x')")).rejects.toMatchObject({ code: "42501" });
    const upd = await b.query("UPDATE items SET z = 'touched' WHERE id IN (1, 2, 3, 4)");
    expect(upd.rowCount).toBe(2);
    const all = await asSuperuser("SELECT id, z FROM items ORDER BY id");
    expect(all).toEqual([
      { id: 1, z: "a1" },
      { id: 2, z: null },
      { id: 3, z: "touched" },
      { id: 4, z: "touched" },
      { id: 11, z: "ok" },
    ]);
    await asSuperuser("DELETE FROM items WHERE id = 11");
    await asSuperuser("UPDATE items SET z = CASE id WHEN 3 THEN 'b3' ELSE NULL END WHERE id IN (3, 4)");
  });

  it("a denied statement errors with 42501 and leaves the connection usable", async () => {
    const a = await connect("agentA");
    await expect(a.query("DELETE FROM items")).rejects.toMatchObject({ code: "42501", message: expect.stringMatching(/^meshguard: denied by policy/) });
    await expect(a.query("SELECT * FROM secrets")).rejects.toMatchObject({ code: "42501", message: expect.stringMatching(/no-secrets/) });
    expect(ids(await a.query("SELECT id FROM items ORDER BY id"))).toEqual([1, 3]);
    expect((await asSuperuser("SELECT count(*)::int AS n FROM items"))[0]!.n).toBe(4);
  });

  it("a multi-statement string hiding a denied statement is refused whole", async () => {
    const a = await connect("agentA");
    await expect(a.query("SELECT 1; DELETE FROM items; SELECT 2")).rejects.toMatchObject({ code: "42501" });
    await expect(a.query("select 1; /* x */ dElEtE from \"items\" -- y")).rejects.toMatchObject({ code: "42501" });
    expect((await asSuperuser("SELECT count(*)::int AS n FROM items"))[0]!.n).toBe(4);
    const p = await psql("agentA", "SELECT 1; DELETE FROM items");
    expect(p.code).not.toBe(0);
    expect(p.err).toMatch(/denied by policy/);
  });

  it("INSERT, a denied statement, COMMIT: nothing is committed", async () => {
    const a = await connect("agentA");
    await a.query("BEGIN");
    await a.query("INSERT INTO items VALUES (20, 'alice@', 'in-tx')");
    await expect(a.query("DELETE FROM items WHERE id = 1")).rejects.toMatchObject({ code: "42501" });
    const commit = await a.query("COMMIT");
    expect(commit.command).toBe("ROLLBACK");
    expect(await asSuperuser("SELECT id FROM items WHERE id = 20")).toEqual([]);
    expect(ids(await a.query("SELECT id FROM items ORDER BY id"))).toEqual([1, 3]);
  });

  it("every statement that would change the session's identity is refused, even with a rule naming it", async () => {
    const a = await connect("agentA");
    for (const s of [
      'SET ROLE "mg:tag:agent-b"',
      "SET ROLE mg_gateway",
      "SET LOCAL ROLE NONE",
      "RESET ROLE",
      "SET SESSION AUTHORIZATION DEFAULT",
      "RESET SESSION AUTHORIZATION",
      "DISCARD ALL",
      "RESET ALL",
      "SET search_path = evil, public",
      "RESET search_path",
      "SET meshguard.owners = '{bob@}'",
      "SET meshguard.principal TO 'someone'",
      "SELECT set_config('meshguard.owners', '{bob@}', false)",
      "SELECT pg_catalog.set_config('role', 'mg:tag:agent-b', false)",
      "SELECT 1; SET ROLE NONE",
      // How statements are read: a client encoding such as SJIS would make the server read a statement differently.
      "SET NAMES 'SJIS'",
      "SET client_encoding TO 'LATIN1'",
      "RESET client_encoding",
    ]) {
      await expect(a.query(s), s).rejects.toMatchObject({ code: "42501", message: expect.stringMatching(/refused at the database gateway/) });
      // Extended protocol too.
      await expect(a.query({ text: s, values: [] }), s).rejects.toMatchObject({ code: "42501" });
    }
    const who = (await a.query("SELECT current_user AS u, meshguard.owners() AS o, current_setting('search_path') AS p")).rows[0];
    expect(who).toEqual({ u: "mg:tag:agent-a", o: ["alice@"], p: "public, pg_temp" });
    // Ordinary settings the policy allows still work.
    await a.query("SET statement_timeout = 5000");
  });

  it("startup-packet options and other unknown startup parameters are refused", async () => {
    await expect(connect("agentA", { options: "-c role=mg_gateway" })).rejects.toMatchObject({ message: expect.stringMatching(/startup parameter "options" is refused/) });
    const p = await psql("agentA", "SELECT current_user", { PGOPTIONS: "-c search_path=evil" });
    expect(p.code).not.toBe(0);
    expect(p.err).toMatch(/"options" is refused/);
    const sjis = await psql("agentA", "SELECT 1", { PGCLIENTENCODING: "SJIS" });
    expect(sjis.code).not.toBe(0);
    expect(sjis.err).toMatch(/client encoding "SJIS" is refused/);
    // application_name is passed on.
    const c = await connect("agentA", { application_name: "agent-app" });
    expect((await c.query("SELECT current_setting('application_name') AS n")).rows[0].n).toBe("agent-app");
  });

  it("a caller whose role does not exist is refused at connect, with the role named and how to create it", async () => {
    const node = await t.startNode("agent-c", "tag:agent-c");
    const port = await t.forward(node);
    const c = new pg.Client({ host: "127.0.0.1", port, user: "x", database: DB });
    c.on("error", () => {});
    await expect(c.connect()).rejects.toMatchObject({ code: "42501", message: expect.stringMatching(/cannot act as the database role "mg:tag:agent-c" of agent-c/), hint: expect.stringMatching(/policy apply --db/) });
  });

  it("prepared statements: named statements are checked at Parse and reusable; a denied one does not break the connection", async () => {
    const a = await connect("agentA");
    const q = { name: "by-id", text: "SELECT id FROM items WHERE id = $1" };
    expect(ids(await a.query({ ...q, values: [1] }))).toEqual([1]);
    expect(ids(await a.query({ ...q, values: [2] }))).toEqual([]); // filtered by row security
    await expect(a.query({ name: "del", text: "DELETE FROM items WHERE id = $1", values: [1] })).rejects.toMatchObject({ code: "42501" });
    expect(ids(await a.query({ ...q, values: [3] }))).toEqual([3]);
    // SQL-level PREPARE is judged with its statement.
    await expect(a.query("PREPARE d AS DELETE FROM items")).rejects.toMatchObject({ code: "42501" });
  });

  it("a pipeline: the denied Parse errors, the rest up to Sync is skipped, earlier results stand, and the session goes on", async () => {
    const raw = await rawSession("agentA");
    const out = await raw.send(
      [
        serialize.parse({ name: "", text: "SELECT id FROM items ORDER BY id" }),
        serialize.bind({}),
        serialize.execute({}),
        serialize.parse({ name: "", text: "DELETE FROM items" }),
        serialize.bind({}),
        serialize.execute({}),
        serialize.parse({ name: "", text: "SELECT 42" }),
        serialize.bind({}),
        serialize.execute({}),
        serialize.sync(),
        // After Sync: a new cycle works.
        serialize.query("SELECT 7 AS n"),
      ],
      2,
    );
    expect(out.map((m) => m.name)).toEqual([
      "parseComplete", "bindComplete", "dataRow", "dataRow", "commandComplete", "error", "readyForQuery",
      "rowDescription", "dataRow", "commandComplete", "readyForQuery",
    ]);
    expect(out[5]).toMatchObject({ code: "42501", message: expect.stringMatching(/denied by policy/) });
    // Bind of a statement the gateway never saw parsed, and Execute of an unbound portal: refused.
    const out2 = await raw.send([serialize.bind({ statement: "never-parsed" }), serialize.execute({}), serialize.sync()], 1);
    expect(out2.map((m) => m.name)).toEqual(["error", "readyForQuery"]);
    expect(out2[0]).toMatchObject({ code: "42501", message: expect.stringMatching(/did not see parsed/) });
    const out3 = await raw.send([serialize.execute({ portal: "nope" }), serialize.sync()], 1);
    expect(out3[0]).toMatchObject({ code: "42501", message: expect.stringMatching(/not bound/) });
    // The fast-path FunctionCall (a function by OID: here 2171, pg_cancel_backend): always refused, its own cycle.
    const fc = Buffer.alloc(19);
    fc.write("F", 0, "latin1");
    fc.writeInt32BE(18, 1);
    fc.writeInt32BE(2171, 5);
    fc.writeInt16BE(0, 9);
    fc.writeInt16BE(1, 11);
    fc.writeInt32BE(-1, 13);
    fc.writeInt16BE(0, 17);
    const out4 = await raw.send([fc], 1);
    expect(out4.map((m) => m.name)).toEqual(["error", "readyForQuery"]);
    expect(out4[0]).toMatchObject({ code: "42501", message: expect.stringMatching(/FunctionCall/) });
    raw.end();
    expect((await asSuperuser("SELECT count(*)::int AS n FROM items"))[0]!.n).toBe(4);
  });

  it("CancelRequest is relayed to the upstream server", async () => {
    const a = await connect("agentA");
    const running = a.query("SELECT pg_sleep(20)");
    await new Promise((r) => setTimeout(r, 500));
    const key = a as unknown as { processID: number; secretKey: number };
    const s = net.connect({ host: "127.0.0.1", port: t.ports.agentA });
    await new Promise<void>((r) => s.once("connect", () => r()));
    s.end(serialize.cancel(key.processID, key.secretKey));
    const t0 = Date.now();
    await expect(running).rejects.toMatchObject({ code: "57014" });
    expect(Date.now() - t0).toBeLessThan(15_000);
    expect((await a.query("SELECT 1 AS one")).rows[0].one).toBe(1);
  });

  it("approve holds the statement until the approver answers", async () => {
    const a = await connect("agentA");
    approve = true;
    const n = approvals.length;
    const r = await a.query("UPDATE items SET z = 'approved-7731' WHERE id = 1");
    expect(r.rowCount).toBe(1);
    expect(approvals.length).toBe(n + 1);
    expect(approvals.at(-1)!.request).not.toContain("approved-7731");
    approve = false;
    await expect(a.query("UPDATE items SET z = 'refused' WHERE id = 1")).rejects.toMatchObject({ code: "42501", message: expect.stringMatching(/approval refused by dba@example.com: not today/) });
    expect((await asSuperuser("SELECT z FROM items WHERE id = 1"))[0]!.z).toBe("approved-7731");
    await asSuperuser("UPDATE items SET z = 'a1' WHERE id = 1");
    const ev = events.filter((e) => e.approval !== undefined).slice(-2);
    expect(ev.map((e) => [e.outcome, e.approval!.approved])).toEqual([
      ["allow", true],
      ["deny", false],
    ]);
  });

  it("a statement held for approval in a pipeline holds the messages behind it, in order", async () => {
    approve = true;
    approveDelayMs = 400;
    try {
      const raw = await rawSession("agentA");
      const t0 = Date.now();
      const out = await raw.send(
        [
          serialize.parse({ name: "", text: "UPDATE items SET z = z WHERE id = 3" }),
          serialize.bind({}),
          serialize.execute({}),
          serialize.parse({ name: "", text: "SELECT id FROM items WHERE id = 1" }),
          serialize.bind({}),
          serialize.execute({}),
          serialize.sync(),
        ],
        1,
      );
      expect(Date.now() - t0).toBeGreaterThanOrEqual(350);
      expect(out.map((m) => m.name)).toEqual(["parseComplete", "bindComplete", "commandComplete", "parseComplete", "bindComplete", "dataRow", "commandComplete", "readyForQuery"]);
      raw.end();
    } finally {
      approveDelayMs = 0;
    }
  });

  it("decision events are redacted: no literal values, the accesses and the caller", async () => {
    const a = await connect("agentA");
    const before = events.length;
    await a.query("SELECT id FROM items WHERE z = 'distinctive-literal-5521'");
    await expect(a.query("DELETE FROM items WHERE z = 'distinctive-literal-9042'")).rejects.toMatchObject({ code: "42501" });
    const mine = events.slice(before);
    expect(mine.map((e) => e.outcome)).toEqual(["allow", "deny"]);
    const text = JSON.stringify(mine);
    expect(text).not.toContain("distinctive-literal");
    expect(mine[0]).toMatchObject({ layer: "sql", principal: { node: "agent-a", tags: ["tag:agent-a"], owners: ["alice@"] }, target: { kind: "sql", database: DB, accesses: ["select public.items (id, z)"] }, ruleId: "a-items" });
  });
});

/** A raw protocol-3 session through the agent's forwarder: messages out, pg-protocol's parser in. */
async function rawSession(agent: "agentA" | "agentB") {
  const s = net.connect({ host: "127.0.0.1", port: t.ports[agent] });
  const inbox: Array<{ name: string; code?: string; message?: string }> = [];
  let wake: (() => void) | undefined;
  void parseBackend(s, (m) => {
    inbox.push(m as never);
    wake?.();
  });
  await new Promise<void>((r) => s.once("connect", () => r()));
  const readyCount = () => inbox.filter((m) => m.name === "readyForQuery").length;
  const until = async (n: number) => {
    while (readyCount() < n) await new Promise<void>((r) => (wake = r));
  };
  s.write(serialize.startup({ user: "agent", database: DB }));
  await until(1);
  inbox.length = 0;
  return {
    async send(msgs: Buffer[], readies: number) {
      inbox.length = 0;
      s.write(Buffer.concat(msgs));
      await until(readies);
      return inbox.filter((m) => m.name !== "parameterStatus" && m.name !== "notice").slice();
    },
    end: () => s.end(serialize.end()),
  };
}
