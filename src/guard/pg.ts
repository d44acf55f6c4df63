/**
 * Database statements in the agent: every query a `pg` (node-postgres)
 * Client sends is judged as a `sql` target in `Client.prototype.query`, the
 * one entry every path goes through — a text, a config object (extended
 * protocol: `values`, a prepared statement's `name`), a Pool's query (it
 * checks out a Client), and a Submittable (pg-cursor, pg-query-stream,
 * pg-copy-streams: each carries its `text`). The text is judged before
 * node-postgres queues it, so a denied statement never leaves the process.
 *
 * A denial keeps the protocol's meaning: the caller's query rejects with
 * PolicyDeniedError (its callback gets it, a Submittable gets it through
 * `handleError`), and, in the denied statement's place in the queue, the
 * guard sends ABORT_IF_IN_TRANSACTION: inside a transaction block it fails
 * on the server, which aborts the transaction (a later COMMIT rolls back, so
 * an INSERT before the denied statement is never committed); outside one it
 * does nothing. The denial is delivered once that probe is answered, so the
 * connection stays usable and in order.
 *
 * The statement text is all that is judged: values of the extended protocol
 * are data, never SQL. A query without readable text is denied (fails closed).
 * The database is the Client's (`client.database`). An approve rule holds
 * the query until the approver answers; a refusal is delivered like a
 * denial (transaction aborted). Statements the app queues behind a held one
 * without waiting for it are not held back.
 */

import { SQL_PARSER_PG_MAJOR } from "../policy/sql.js";
import type { SqlTarget } from "../policy/types.js";
import type { GuardCore } from "./core.js";
import { PolicyDeniedError } from "./errors.js";
import { patchMethod, type Fn } from "./patches.js";
import { current } from "./state.js";

/**
 * ABORT_IF_IN_TRANSACTION fails only inside a transaction block: there the
 * transaction began before this statement (now() ≠ statement_timestamp())
 * or has written (an xid is assigned). The failing expression is not a
 * constant (concat is stable), so the planner cannot fold it into an error
 * outside a transaction.
 */
export const ABORT_IF_IN_TRANSACTION =
  "SELECT CASE WHEN pg_catalog.pg_current_xact_id_if_assigned() IS NOT NULL OR pg_catalog.now() <> pg_catalog.statement_timestamp() " +
  "THEN pg_catalog.concat('meshguard: a statement was denied by policy, so this transaction is aborted', '')::pg_catalog.int4 END";

interface PgClient {
  database?: unknown;
  connectionParameters?: { database?: unknown };
  connection?: unknown;
}

interface Submittable {
  submit: unknown;
  text?: unknown;
  callback?: unknown;
  handleError?: (err: Error, connection?: unknown) => void;
}

/** instrumentPgClient patches a node-postgres Client class (pg's `Client`). */
export function instrumentPgClient(cls: { prototype: object }): boolean {
  const proto = cls.prototype as { query?: unknown; connect?: unknown; _handleReadyForQuery?: unknown };
  // node-postgres' Client, not any class with a query method.
  if (typeof proto.query !== "function" || typeof proto.connect !== "function" || typeof proto._handleReadyForQuery !== "function") return false;
  const patched = patchMethod(proto, "query", judgingQuery);
  if (patched) patchMethod(proto, "connect", checkingConnect);
  return patched;
}

/**
 * checkingConnect reads the server's `server_version` from the startup
 * (a ParameterStatus message) and warns when its major version is not the
 * parser's: statements are still judged, but a grammar the parser does not
 * know makes them unparseable, hence denied (docs/policy.md, "The parser").
 */
function checkingConnect(original: Fn): Fn {
  return function connect(this: unknown, ...args: unknown[]): unknown {
    const conn = (this as PgClient).connection as { on?: (ev: string, f: (m: { parameterName?: unknown; parameterValue?: unknown }) => void) => void } | undefined;
    try {
      conn?.on?.("parameterStatus", (m) => {
        if (m.parameterName !== "server_version" || typeof m.parameterValue !== "string") return;
        const major = Number.parseInt(m.parameterValue, 10);
        if (major !== SQL_PARSER_PG_MAJOR)
          current()?.warn(
            new Error(
              `meshguard guard: this PostgreSQL server is version ${m.parameterValue}, the SQL parser speaks PostgreSQL ${SQL_PARSER_PG_MAJOR}: statements its grammar does not know are denied. Pin libpg-query ${major}.x to match (docs/policy.md, "The parser")`,
            ),
          );
      });
    } catch {
      // not node-postgres' Connection: nothing to read
    }
    return original.apply(this, args);
  };
}

function judgingQuery(original: Fn): Fn {
  return function query(this: unknown, ...args: unknown[]): unknown {
    const core = current();
    const config = args[0] as unknown;
    // No guard, or no query at all (node-postgres throws its own TypeError for that).
    if (core === undefined || config === null || config === undefined) return original.apply(this, args);
    const client = this as PgClient;
    const submittable = config !== null && typeof config === "object" && typeof (config as Submittable).submit === "function" ? (config as Submittable) : undefined;
    const text = typeof config === "string" ? config : config !== null && typeof config === "object" ? (config as { text?: unknown }).text : undefined;
    const target: SqlTarget = { kind: "sql", database: databaseOf(client), statement: typeof text === "string" ? text : "" };
    const verdict = typeof text === "string" ? core.check(target, "sql") : core.failed(target, new Error("the query carries no statement text the guard can read"));
    if (verdict === undefined) return original.apply(this, args);
    const cb = callbackOf(args, submittable);
    if (verdict instanceof PolicyDeniedError) return refuse(core, original, client, verdict, cb, submittable);
    // Held for approval: sent once approved; refused like a denial (the open transaction aborted) otherwise.
    // Statements the app queues behind a held one without waiting for it are not held back.
    if (cb !== undefined || submittable !== undefined) {
      verdict.then(
        () => original.apply(this, args),
        (err: PolicyDeniedError) => void refuse(core, original, client, err, cb, submittable),
      );
      return submittable;
    }
    return verdict.then(
      () => original.apply(this, args),
      (err: PolicyDeniedError) => refuse(core, original, client, err, undefined, undefined),
    );
  };
}

/** refuse sends the abort probe in the denied statement's place and delivers the denial when it is answered. */
function refuse(core: GuardCore, original: Fn, client: PgClient, err: PolicyDeniedError, cb: ((e: Error) => void) | undefined, submittable: Submittable | undefined): unknown {
  const settled = new Promise<void>((resolve) => {
    try {
      original.call(client, ABORT_IF_IN_TRANSACTION, () => resolve());
    } catch (e) {
      core.warn(e);
      resolve();
    }
  });
  if (cb !== undefined || submittable !== undefined) {
    void settled.then(() => deliver(client, err, cb, submittable));
    return submittable;
  }
  return settled.then(() => {
    throw err;
  });
}

function deliver(client: PgClient, err: PolicyDeniedError, cb: ((e: Error) => void) | undefined, submittable: Submittable | undefined): void {
  if (submittable !== undefined && typeof submittable.handleError === "function") {
    submittable.handleError(err, client.connection);
    return;
  }
  cb?.(err);
}

/** callbackOf finds the caller's callback: query(text, cb), query(text, values, cb), query({ callback }) or a Submittable's. */
function callbackOf(args: unknown[], submittable: Submittable | undefined): ((e: Error) => void) | undefined {
  if (submittable !== undefined) {
    if (typeof submittable.callback === "function") return submittable.callback as (e: Error) => void;
    const f = typeof args[1] === "function" ? args[1] : args[2];
    return typeof f === "function" ? (f as (e: Error) => void) : undefined;
  }
  if (typeof args[1] === "function") return args[1] as (e: Error) => void;
  if (typeof args[2] === "function") return args[2] as (e: Error) => void;
  const c = args[0] as { callback?: unknown } | null;
  return c !== null && typeof c === "object" && typeof c.callback === "function" ? (c.callback as (e: Error) => void) : undefined;
}

function databaseOf(c: PgClient): string {
  try {
    if (typeof c.database === "string") return c.database;
    const d = c.connectionParameters?.database;
    return typeof d === "string" ? d : "";
  } catch {
    return "";
  }
}
