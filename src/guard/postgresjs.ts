/**
 * Database statements in the agent sent by postgres.js (`postgres`): every
 * query is a `Query` (tagged templates, `sql.unsafe`, `sql.file`, prepared
 * statements, the queries of `sql.begin` and `sql.reserve`, cursors,
 * `forEach`, `describe`). postgres.js builds the final text in its
 * connection (`build(q)`: fragments, helpers, column transforms applied)
 * and writes it in the same synchronous step, so the guard judges it there:
 * `build` ends by assigning `q.statement`, and an accessor on
 * `Query.prototype` sees that assignment with the final text already in
 * `q.string`, before anything is written.
 *
 * A denial keeps the protocol's meaning, as in pg.ts: the statement about
 * to be written is replaced by ABORT_IF_IN_TRANSACTION (simple protocol, no
 * parameters, nothing prepared), and the query rejects with
 * PolicyDeniedError once that probe is answered. Inside a transaction block
 * the probe fails on the server, which aborts the transaction (a later
 * COMMIT rolls back); `sql.begin` also rolls back, since one of its queries
 * rejected. Outside one it does nothing. The connection stays in order.
 *
 * What the guard cannot do here:
 * - hold a statement for an approver: the text exists only while
 *   postgres.js writes it, so an approve rule denies (saying so);
 * - know the database: postgres.js keeps its options in closures no query
 *   reaches, so the target's database is "" (unknown), and a rule naming a
 *   particular database, allow or deny, denies (fails closed); rules for
 *   postgres.js agents name the database "*".
 *
 * The two catalog reads postgres.js makes itself on a new connection (array
 * types; the session state for target_session_attrs) are not the app's: a
 * query without a canceller (only postgres.js' own internal queries have
 * none) whose accesses are all reads of pg_catalog is let through unjudged.
 *
 * The accessor stays on the prototype after the guard is uninstalled (then
 * it only stores the value): queries created meanwhile keep their statement
 * in its slot.
 */

import { analyzeSql } from "../policy/sql.js";
import type { SqlTarget } from "../policy/types.js";
import type { GuardCore } from "./core.js";
import { PolicyDeniedError } from "./errors.js";
import { ABORT_IF_IN_TRANSACTION } from "./pg.js";
import { current } from "./state.js";

const SLOT = Symbol("meshguard.postgresjs.statement");
const INSTRUMENTED = Symbol.for("meshguard.postgresjs.instrumented");

const NO_HOLD = "postgres.js writes a statement as soon as it is built, so the guard cannot hold it for an approver: denied (connect through the database gateway for approvals)";

interface PgjsQuery {
  [SLOT]?: unknown;
  string?: unknown;
  canceller?: unknown;
  options?: Record<string, unknown>;
  parameters?: unknown;
  describeFirst?: unknown;
  onlyDescribe?: unknown;
  prepare?: unknown;
  prepared?: unknown;
  signature?: unknown;
  cursorFn?: unknown;
  forEachFn?: unknown;
  resolve?: (x: unknown) => void;
  reject?: (x: unknown) => void;
}

/** instrumentPostgresQuery installs the judging accessor on postgres.js' Query class (src/query.js, or its CommonJS build). */
export function instrumentPostgresQuery(cls: { prototype: object }): boolean {
  const proto = cls.prototype as Record<PropertyKey, unknown>;
  // postgres.js' Query (a Promise with these methods), not any class.
  if (!(proto instanceof Promise) || !["handle", "execute", "cursor", "simple", "describe", "forEach", "raw"].every((m) => typeof proto[m] === "function")) return false;
  if (Object.hasOwn(proto, INSTRUMENTED)) return false;
  if (Object.hasOwn(proto, "statement")) return false; // something else defines it: not the Query we know
  Object.defineProperty(proto, INSTRUMENTED, { value: true });
  Object.defineProperty(proto, "statement", {
    configurable: true,
    enumerable: false,
    get(this: PgjsQuery) {
      return this[SLOT];
    },
    set(this: PgjsQuery, v: unknown) {
      // The constructor's `statement = null`, and any assignment while no guard is installed: stored as is.
      const core = current();
      if (v === null || v === undefined || core === undefined) {
        this[SLOT] = v;
        return;
      }
      this[SLOT] = judge(core, this, v);
    },
  });
  return true;
}

/** judge decides the statement `build` just made and returns what is to be written: the statement, or the abort probe. */
function judge(core: GuardCore, q: PgjsQuery, statement: unknown): unknown {
  const text = q.string;
  const target: SqlTarget = { kind: "sql", database: "", statement: typeof text === "string" ? text : "" };
  if (typeof text === "string" && isInternal(q, text)) return statement;
  const verdict = typeof text === "string" ? core.check(target, "sql", { noHold: NO_HOLD }) : core.failed(target, new Error("the query carries no statement text the guard can read"));
  if (verdict === undefined) return statement;
  const err = verdict instanceof PolicyDeniedError ? verdict : core.failed(target, new Error("an approval was pending for a statement that cannot be held"));
  if (!(verdict instanceof PolicyDeniedError)) (verdict as Promise<void>).catch(() => {});
  // The probe goes in the statement's place: simple protocol, no parameters, nothing prepared or described.
  q.options = { ...(q.options ?? {}), simple: true, prepare: false };
  q.parameters = [];
  q.describeFirst = false;
  q.onlyDescribe = false;
  q.prepare = false;
  q.prepared = false;
  q.signature = "";
  q.cursorFn = undefined;
  q.forEachFn = undefined;
  const reject = q.reject;
  const deliver = () => reject?.call(q, err);
  q.resolve = deliver;
  q.reject = deliver;
  return { string: ABORT_IF_IN_TRANSACTION, types: [], name: "" };
}

/** isInternal: one of postgres.js' own catalog reads on a new connection (no canceller; only reads of pg_catalog tables, SHOW transaction_read_only, pg_is_in_recovery()). */
function isInternal(q: PgjsQuery, text: string): boolean {
  if (q.canceller !== undefined && q.canceller !== null) return false;
  const a = analyzeSql(text);
  return a.ok && a.accesses.length > 0 && a.accesses.every((x) => (x.operation === "select" && x.object.startsWith("pg_catalog.")) || (x.operation === "set" && x.object === "transaction_read_only") || (x.operation === "call" && x.object === "pg_catalog.pg_is_in_recovery"));
}
