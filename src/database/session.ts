/**
 * One client connection of the database gateway, and its one upstream
 * connection (session mode: an upstream connection never carries two
 * identities).
 *
 * Start-up: SSLRequest and GSSENCRequest are answered `N` (WireGuard already
 * encrypts); a CancelRequest is relayed upstream when its key is one this
 * gateway handed out, to the same tailnet address. A protocol-3 startup
 * packet names the database; its `user` is ignored (whois names the caller)
 * and any parameter outside STARTUP_SETTINGS (`options` such as
 * `-c role=…`, `replication`, …) is refused. The gateway logs in upstream as
 * its own role (node-postgres does the authentication), sets
 * meshguard.principal, meshguard.owners and search_path, does SET ROLE to
 * the caller's role, and only then hands the session over: AuthenticationOk,
 * the server's ParameterStatus values, a BackendKeyData of the gateway's own
 * (mapped to the upstream one for cancels), ReadyForQuery.
 *
 * Then every frontend message is framed and judged in order: `Query` and
 * `Parse` by the policy (rowFilters on: PostgreSQL enforces the rows
 * filters for the role), `Bind` only of a statement whose Parse was allowed,
 * `Execute` only of a portal bound here, `FunctionCall` never. Statements
 * that change the session's identity are refused whatever the policy says
 * or how statements are read (pinnedSettingChange).
 *
 * A denial keeps the protocol's meaning by letting the server itself fail in
 * the denied message's place: the gateway sends a probe (a Query or Parse
 * calling a function that does not exist, named with a fresh nonce), which
 * fails where the denied message would have — so inside a transaction block
 * the transaction is aborted, in a pipeline the server skips to Sync — and
 * rewrites the server's ErrorResponse for that nonce into the denial
 * (SQLSTATE 42501). Messages after a denied extended-protocol message are
 * dropped up to Sync, as the server would. The connection stays usable.
 */

import { randomBytes, randomInt } from "node:crypto";
import net from "node:net";
import pg from "pg";
import { serialize } from "pg-protocol";
import { requestApproval } from "../guard/approvals.js";
import type { ApprovalOptions } from "../guard/types.js";
import type { WhoIs } from "../node.js";
import { decisionEvent, type ApprovalOutcome, type DecisionEvent, type EventPrincipal } from "../policy/event.js";
import type { Policy } from "../policy/load.js";
import type { Reveal } from "../policy/request.js";
import { analyzeSql, SQL_PARSER_PG_MAJOR } from "../policy/sql.js";
import type { Decision, Principal, SqlTarget } from "../policy/types.js";
import { OWNERS_SETTING, ownersSettingValue, PRINCIPAL_SETTING, quoteIdent, roleForCaller } from "./roles.js";
import {
  authenticationOk,
  backendKeyData,
  BackendScanner,
  bindMessage,
  CANCEL_REQUEST,
  describeTarget,
  errorMessageOf,
  errorResponse,
  executePortal,
  FrontendFramer,
  GSSENC_REQUEST,
  MSG,
  parameterStatus,
  parseMessage,
  PROTOCOL_3,
  queryText,
  readStartup,
  readyForQuery,
  SSL_REQUEST,
  startupParameters,
  type ErrorFields,
  type FrontendMessage,
} from "./wire.js";

/** Startup parameters a client may set (applied with set_config before the hand-over); any other is refused. `user` and `database` are read, not applied. */
export const STARTUP_SETTINGS: ReadonlySet<string> = new Set([
  "application_name",
  "datestyle",
  "timezone",
  "intervalstyle",
  "extra_float_digits",
  "statement_timeout",
  "lock_timeout",
  "idle_in_transaction_session_timeout",
]);

/** The search_path every session has: the parser takes an unqualified table to be in public, and temporary tables cannot shadow it. */
export const PINNED_SEARCH_PATH = "public, pg_temp";

/**
 * Client encodings a client may ask for at startup: the session's is always
 * UTF8 (with SQL_ASCII the server reads the bytes as UTF-8 too). Any other —
 * SJIS, GBK or BIG5, whose multibyte characters may end in a quote or a
 * backslash — would let the server read a statement differently from the
 * gateway's parser.
 */
const UTF8_NAMES = new Set(["utf8", "utf-8", "unicode", "sql_ascii"]);

/**
 * pinnedSettingChange says why a statement would change what the gateway
 * pinned for the session, or undefined: who it is (SET/RESET ROLE, SET
 * SESSION AUTHORIZATION, RESET ALL, DISCARD, search_path and meshguard.*
 * settings — the parser reports them as dangerous `set` accesses — and
 * set_config, whose setting name may be computed) and how its statements
 * are read (client_encoding, SET NAMES).
 */
export function pinnedSettingChange(statement: string): string | undefined {
  const a = analyzeSql(statement);
  if (!a.ok) return undefined; // unparseable: the policy denies it
  for (const acc of a.accesses) {
    if (acc.operation === "set" && acc.object === "client_encoding") return "it changes client_encoding (the gateway reads statements as UTF-8, as the server must)";
    if (acc.operation === "set" && acc.dangerous) return `it changes ${acc.object === "discard" || acc.object === "all" ? "every session setting" : acc.object} (the gateway set the session's role, search_path and meshguard.* settings for the caller; nothing in the session may change them)`;
    if (acc.operation === "call" && acc.object.endsWith(".set_config")) return "it calls set_config, which could change the session's role, search_path or meshguard.* settings (use SET for other settings)";
  }
  return undefined;
}

/** What every session shares with its gateway. */
export interface SessionContext {
  upstream: { host: string; port: number; user: string; password: string | undefined; ssl: boolean; connectTimeoutMs: number };
  policy(): Policy | undefined;
  approvals: ApprovalOptions | undefined;
  whois(sock: net.Socket): Promise<WhoIs>;
  /** Whether anyone records decisions (events are built only then). */
  recording(): boolean;
  record(ev: DecisionEvent): void;
  reveal: Reveal | undefined;
  /** Cancel keys handed out: "pid:secret" → the session's upstream key and client address. */
  cancels: Map<string, { pid: number; secret: number; addr: string }>;
  warn(err: Error): void;
}

/** The caller of a connection, from whois. */
export interface DbSessionCaller {
  principal: Principal;
  /** Full tailnet name, for meshguard.principal(). */
  nodeName: string;
  owners: string[];
  role: string | undefined;
  addr: string;
}

export function callerOf(w: WhoIs, addr: string): DbSessionCaller {
  const short = w.node.name.replace(/\.$/, "").split(".")[0] || w.node.hostname;
  const principal: Principal = { node: short, tags: [...w.node.tags] };
  if (!w.tagged && w.user.login) principal.user = w.user.login;
  const user = !w.tagged && w.user.login ? w.user.login : undefined;
  return {
    principal,
    nodeName: w.node.name.replace(/\.$/, ""),
    owners: w.tagged ? [...w.owners] : user ? [user] : [],
    role: roleForCaller({ ...(user !== undefined ? { user } : {}), tags: w.node.tags }),
    addr,
  };
}

type Verdict = { allow: true } | { allow: false; reason: string };

const DENIED = "42501"; // insufficient_privilege
/** Bytes of extended-protocol messages held for one upstream write before they go anyway. */
const MAX_HELD_BYTES = 64 * 1024;
/** Messages queued behind a statement held for approval before the gateway stops reading the client. */
const MAX_QUEUED = 1024;
const PROTOCOL_VIOLATION = "08P01";

export class DbSession {
  private buf: Buffer = Buffer.alloc(0);
  private started = false;
  private closed = false;
  private upstream: net.Socket | undefined;
  private caller: DbSessionCaller | undefined;
  private database = "";
  private readonly framer = new FrontendFramer();
  private scanner: BackendScanner | undefined;
  private readonly queue: FrontendMessage[] = [];
  /** Extended-protocol messages waiting for their Sync or Flush (forward). */
  private held: Buffer[] = [];
  private heldBytes = 0;
  private waiting = false;
  /** After a denied extended-protocol message: drop messages up to Sync. */
  private skipping = false;
  private readonly statements = new Set<string>();
  private readonly portals = new Set<string>();
  /** Cycles sent upstream (Sync, Query, FunctionCall) and answered (ReadyForQuery). */
  private sent = 0;
  private answered = 0;
  private readonly nonce = randomBytes(6).toString("hex");
  private probes = 0;
  private readonly denials = new Map<string, { cycle: number; error: ErrorFields }>();
  private cancelKey: string | undefined;
  private readonly whois: Promise<WhoIs>;

  constructor(
    private readonly ctx: SessionContext,
    private readonly client: net.Socket,
    private readonly onClose: () => void,
  ) {
    this.whois = ctx.whois(client);
    this.whois.catch(() => {}); // read in begin()
    client.setNoDelay?.(true);
    client.on("data", (d: Buffer) => this.onClientData(d));
    client.on("error", () => this.close());
    client.on("close", () => this.close());
    client.on("end", () => this.close());
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.cancelKey) this.ctx.cancels.delete(this.cancelKey);
    this.client.destroy();
    this.upstream?.destroy();
    this.onClose();
  }

  private fatal(code: string, message: string, hint?: string): void {
    if (this.closed) return;
    this.client.end(errorResponse({ severity: "FATAL", code, message: `meshguard db-gateway: ${message}`, ...(hint ? { hint } : {}) }));
    setTimeout(() => this.close(), 1000).unref();
  }

  private onClientData(d: Buffer): void {
    try {
      if (this.started) {
        for (const m of this.framer.push(d)) this.queue.push(m);
        // Held behind an approval: stop reading rather than queue without bound.
        if (this.waiting && this.queue.length > MAX_QUEUED) this.client.pause();
        this.pump();
        return;
      }
      this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
      const p = readStartup(this.buf);
      if (p === undefined) return;
      this.buf = Buffer.from(p.rest);
      if (p.code === SSL_REQUEST || p.code === GSSENC_REQUEST) {
        // WireGuard already encrypts the connection.
        this.client.write("N");
        if (this.buf.length) this.onClientData(Buffer.alloc(0));
        return;
      }
      if (p.code === CANCEL_REQUEST) return this.relayCancel(p.body);
      if (p.code !== PROTOCOL_3) return this.fatal(PROTOCOL_VIOLATION, `unsupported frontend protocol ${p.code >> 16}.${p.code & 0xffff}: the gateway speaks 3.0`);
      this.started = true;
      this.client.pause();
      const rest = this.buf;
      this.buf = Buffer.alloc(0);
      void this.begin(startupParameters(p.body), rest);
    } catch (err) {
      this.fatal(PROTOCOL_VIOLATION, (err as Error).message);
    }
  }

  private relayCancel(body: Buffer): void {
    const key = body.length >= 8 ? `${body.readInt32BE(0)}:${body.readInt32BE(4)}` : "";
    const up = this.ctx.cancels.get(key);
    const from = this.client.remoteAddress ?? "";
    this.client.destroy();
    // As PostgreSQL does, a cancel is never answered; an unknown key or another address is ignored.
    if (up === undefined || up.addr !== from) return;
    const s = net.connect({ host: this.ctx.upstream.host, port: this.ctx.upstream.port });
    s.on("error", () => s.destroy());
    s.on("connect", () => s.end(serialize.cancel(up.pid, up.secret)));
  }

  /** begin identifies the caller, logs in upstream, sets the session's identity and hands the session over. */
  private async begin(params: Map<string, string>, rest: Buffer): Promise<void> {
    for (const name of params.keys()) {
      const n = name.toLowerCase();
      if (n === "user" || n === "database" || n.startsWith("_pq_.") || STARTUP_SETTINGS.has(n)) continue;
      if (n === "client_encoding" && UTF8_NAMES.has(params.get(name)!.trim().toLowerCase())) continue;
      if (n === "client_encoding")
        return this.fatal("22023", `the client encoding ${JSON.stringify(params.get(name))} is refused: the gateway speaks UTF8 only`, "set PGCLIENTENCODING=UTF8 (or the driver's client_encoding)");
      return this.fatal(
        DENIED,
        `the startup parameter ${JSON.stringify(name)} is refused: ${n === "options" ? "command-line options (-c role=…, -c search_path=…) could change the session's identity" : "the gateway passes on only " + [...STARTUP_SETTINGS].join(", ")}`,
        n === "options" ? "unset PGOPTIONS (or the driver's `options`); set ordinary settings with SET after connecting" : undefined,
      );
    }
    this.database = params.get("database") || params.get("user") || "";
    let w: WhoIs;
    try {
      w = await this.whois;
    } catch (err) {
      return this.fatal(DENIED, `cannot tell who is calling (whois: ${(err as Error).message}): the connection is refused`);
    }
    const caller = callerOf(w, this.client.remoteAddress ?? "");
    this.caller = caller;
    if (caller.role === undefined) return this.fatal(DENIED, `the tailnet names neither a user nor tags for ${caller.nodeName}: it has no database role`);
    const u = this.ctx.upstream;
    const pc = new pg.Client({ host: u.host, port: u.port, user: u.user, database: this.database, client_encoding: "UTF8", connectionTimeoutMillis: u.connectTimeoutMs, ...(u.password !== undefined ? { password: u.password } : {}), ...(u.ssl ? { ssl: true } : {}) });
    pc.on("error", () => {});
    const statuses = new Map<string, string>();
    const conn = (pc as unknown as { connection: { on(ev: string, f: (m: { parameterName: string; parameterValue: string }) => void): void; stream: net.Socket } }).connection;
    conn.on("parameterStatus", (m) => statuses.set(m.parameterName, m.parameterValue));
    try {
      await pc.connect();
    } catch (err) {
      const e = err as { message?: string; code?: string };
      return this.fatal(e.code && /^[0-9A-Z]{5}$/.test(e.code) ? e.code : "08006", `the upstream database refused the gateway's connection to ${JSON.stringify(this.database)}: ${e.message ?? String(err)}`);
    }
    if (this.closed) return void pc.end().catch(() => {});
    const version = statuses.get("server_version") ?? "";
    if (Number.parseInt(version, 10) !== SQL_PARSER_PG_MAJOR)
      this.ctx.warn(new Error(`the upstream PostgreSQL is version ${version}, the SQL parser speaks PostgreSQL ${SQL_PARSER_PG_MAJOR}: statements its grammar does not know are denied (docs/policy.md, "The parser")`));
    try {
      const settings: Array<[string, string]> = [
        [PRINCIPAL_SETTING, caller.nodeName],
        [OWNERS_SETTING, ownersSettingValue(caller.owners)],
        ["search_path", PINNED_SEARCH_PATH],
        ...[...params].filter(([k]) => STARTUP_SETTINGS.has(k.toLowerCase())),
      ];
      const values = settings.flat();
      await pc.query(`SELECT ${settings.map((_, i) => `pg_catalog.set_config($${2 * i + 1}, $${2 * i + 2}, false)`).join(", ")}`, values);
    } catch (err) {
      void pc.end().catch(() => {});
      return this.fatal((err as { code?: string }).code ?? "22023", `a session setting was refused by the server: ${(err as Error).message}`);
    }
    try {
      await pc.query(`SET ROLE ${quoteIdent(caller.role)}`);
    } catch (err) {
      void pc.end().catch(() => {});
      return this.fatal(
        DENIED,
        `cannot act as the database role ${JSON.stringify(caller.role)} of ${caller.nodeName}: ${(err as Error).message}`,
        `create the role and grant it to the gateway's login role ${JSON.stringify(u.user)} (meshguard policy apply --db does both; docs/database.md)`,
      );
    }
    if (this.closed) return void pc.end().catch(() => {});
    // Take the authenticated socket over from node-postgres: from here on its bytes are the client's.
    const sock = conn.stream;
    for (const ev of ["data", "end", "error", "close", "timeout", "drain"]) sock.removeAllListeners(ev);
    sock.setNoDelay?.(true);
    this.upstream = sock;
    sock.on("error", () => this.close());
    sock.on("close", () => this.close());
    sock.on("end", () => this.close());
    this.scanner = new BackendScanner(
      (type) => type === MSG.errorResponse && this.denials.size > 0,
      (msg) => this.rewrite(msg),
      () => this.onReady(),
    );
    sock.on("data", (d: Buffer) => {
      let out: Buffer[];
      try {
        out = this.scanner!.push(d);
      } catch (err) {
        this.ctx.warn(err as Error);
        return this.close();
      }
      if (out.length === 0) return;
      let ok = true;
      if (out.length === 1) ok = this.client.write(out[0]!);
      else {
        this.client.cork();
        for (const b of out) ok = this.client.write(b) && ok;
        this.client.uncork();
      }
      if (!ok) {
        sock.pause();
        this.client.once("drain", () => sock.resume());
      }
    });
    const pid = randomInt(1, 2 ** 31 - 1);
    const secret = randomInt(-(2 ** 31), 2 ** 31 - 1);
    this.cancelKey = `${pid}:${secret}`;
    const up = pc as unknown as { processID: number; secretKey: number };
    this.ctx.cancels.set(this.cancelKey, { pid: up.processID, secret: up.secretKey, addr: caller.addr });
    const hello = [authenticationOk(), ...[...statuses].map(([k, v]) => parameterStatus(k, v)), backendKeyData(pid, secret), readyForQuery("I")];
    this.client.write(Buffer.concat(hello));
    this.client.resume();
    if (rest.length) this.onClientData(rest);
  }

  private pump(): void {
    if (this.waiting || this.upstream === undefined || this.closed) return;
    while (this.queue.length > 0 && !this.closed) {
      const held = this.handle(this.queue.shift()!);
      if (held === undefined) continue;
      this.waiting = true;
      held.then(
        () => {
          this.waiting = false;
          this.client.resume();
          this.pump();
        },
        (err: unknown) => {
          this.ctx.warn(err as Error);
          this.close();
        },
      );
      return;
    }
  }

  /**
   * forward sends a message upstream. Extended-protocol messages (`hold`)
   * wait for the Sync or Flush that makes the server answer them (node-
   * postgres, for one, writes each message on its own): a cycle goes
   * upstream in one write. Anything else sends what waits, in order.
   */
  private forward(b: Buffer, hold = false): void {
    this.held.push(b);
    this.heldBytes += b.length;
    if (hold && this.heldBytes < MAX_HELD_BYTES) return;
    const out = this.held.length === 1 ? this.held[0]! : Buffer.concat(this.held, this.heldBytes);
    this.held = [];
    this.heldBytes = 0;
    if (!this.upstream!.write(out)) {
      this.client.pause();
      this.upstream!.once("drain", () => this.client.resume());
    }
  }

  /** handle judges one frontend message; a promise when it is held for an approval. */
  private handle(m: FrontendMessage): Promise<void> | undefined {
    if (this.skipping) {
      if (m.type === MSG.sync) {
        this.skipping = false;
        this.sent++;
        this.forward(m.raw);
      } else if (m.type === MSG.flush || m.type === MSG.terminate) this.forward(m.raw);
      return undefined;
    }
    switch (m.type) {
      case MSG.query: {
        const text = queryText(m.body);
        return this.after(this.decide(text), () => this.forward(m.raw), (why) => this.deny(why, "simple"));
      }
      case MSG.parse: {
        const { name, text } = parseMessage(m.body);
        return this.after(
          this.decide(text),
          () => {
            this.statements.add(name);
            this.forward(m.raw, true);
          },
          (why) => {
            this.statements.delete(name);
            this.deny(why, "extended");
          },
        );
      }
      case MSG.bind: {
        const { portal, statement } = bindMessage(m.body);
        if (!this.statements.has(statement)) {
          this.portals.delete(portal);
          this.refuse(`Bind of the prepared statement ${JSON.stringify(statement)}, which this gateway did not see parsed and allowed in this session`, "extended");
          return undefined;
        }
        this.portals.add(portal);
        this.forward(m.raw, true);
        return undefined;
      }
      case MSG.execute: {
        const portal = executePortal(m.body);
        if (!this.portals.has(portal)) {
          this.refuse(`Execute of the portal ${JSON.stringify(portal)}, which was not bound to an allowed statement through this gateway`, "extended");
          return undefined;
        }
        this.forward(m.raw, true);
        return undefined;
      }
      case MSG.close: {
        const t = describeTarget(m.body);
        (t.kind === "S" ? this.statements : this.portals).delete(t.name);
        this.forward(m.raw, true);
        return undefined;
      }
      case MSG.functionCall:
        this.refuse("the fast-path FunctionCall message calls a function by OID, which no policy can judge: use SELECT", "simple");
        return undefined;
      case MSG.sync:
        this.sent++;
        this.forward(m.raw);
        return undefined;
      case MSG.describe:
        this.forward(m.raw, true);
        return undefined;
      default:
        // Flush, Terminate, CopyData/CopyDone/CopyFail: nothing to judge.
        this.forward(m.raw);
        return undefined;
    }
  }

  private after(v: Verdict | Promise<Verdict>, allow: () => void, deny: (why: string) => void): Promise<void> | undefined {
    const apply = (r: Verdict) => (r.allow ? allow() : deny(r.reason));
    if (!(v instanceof Promise)) return void apply(v);
    return v.then((r) => {
      if (!this.closed) apply(r);
    });
  }

  /** decide judges a statement text: identity changes always refused, the rest by the policy (an approve rule waits for the approver). */
  private decide(text: string): Verdict | Promise<Verdict> {
    const caller = this.caller!;
    const target: SqlTarget = { kind: "sql", database: this.database, statement: text, rowFilters: true };
    const t0 = performance.now();
    const identity = pinnedSettingChange(text);
    const policy = this.ctx.policy();
    const d: Decision = identity
      ? { effect: "deny", reason: `refused at the database gateway: ${identity}` }
      : policy === undefined
        ? { effect: "deny", reason: "no policy is loaded (the gateway fails closed)" }
        : policy.evaluate({ principal: caller.principal, target });
    const us = (performance.now() - t0) * 1000;
    if (d.effect === "allow") {
      this.record(target, d, "allow", us, policy);
      return { allow: true };
    }
    if (d.effect !== "approve") {
      this.record(target, d, "deny", us, policy);
      return { allow: false, reason: d.reason };
    }
    const approvals = this.ctx.approvals;
    if (approvals === undefined || (approvals.callback === undefined && approvals.webhook === undefined)) {
      const reason = `${d.reason}; the rule asks for approval but the database gateway has no approver configured ("approvals" in the config)`;
      this.record(target, { ...d, reason }, "deny", us, policy);
      return { allow: false, reason };
    }
    const started = Date.now();
    return requestApproval(approvals, caller.principal, target, d, this.ctx.reveal).then(
      (a): Verdict => {
        const outcome: ApprovalOutcome = { approved: a.approved, ms: Date.now() - started, ...(a.by ? { by: a.by } : {}), ...(a.reason ? { reason: a.reason } : {}) };
        this.record(target, d, a.approved ? "allow" : "deny", us, policy, outcome);
        return a.approved ? { allow: true } : { allow: false, reason: `approval refused${a.by ? ` by ${a.by}` : ""}: ${a.reason ?? "no reason given"}` };
      },
      (err: unknown): Verdict => {
        const why = (err as Error).message;
        this.record(target, d, "deny", us, policy, { approved: false, ms: Date.now() - started, reason: why });
        return { allow: false, reason: `no approval: ${why}` };
      },
    );
  }

  private record(target: SqlTarget, d: Decision, outcome: "allow" | "deny", us: number, policy: Policy | undefined, approval?: ApprovalOutcome): void {
    if (!this.ctx.recording()) return;
    const c = this.caller!;
    const principal: EventPrincipal = { ...c.principal, owners: c.owners, ...(c.addr ? { ip: c.addr } : {}) };
    try {
      this.ctx.record(
        decisionEvent(principal, target, d, {
          layer: "sql",
          outcome,
          latencyUs: us,
          ...(policy ? { policyHash: policy.hash } : {}),
          ...(approval ? { approval } : {}),
          ...(this.ctx.reveal ? { reveal: this.ctx.reveal } : {}),
        }),
      );
    } catch (err) {
      this.ctx.warn(err as Error);
    }
  }

  /** refuse denies a message that is not a statement (Bind, Execute, FunctionCall), recording the decision. */
  private refuse(why: string, mode: "simple" | "extended"): void {
    const reason = `refused at the database gateway: ${why}`;
    this.record({ kind: "sql", database: this.database, statement: "", rowFilters: true }, { effect: "deny", reason }, "deny", 0, this.ctx.policy());
    this.deny(reason, mode);
  }

  /** deny sends the probe that makes the server fail in the denied message's place. */
  private deny(reason: string, mode: "simple" | "extended"): void {
    const nonce = `mg_denied_${this.nonce}_${++this.probes}`;
    this.denials.set(nonce, {
      cycle: this.sent,
      error: {
        severity: "ERROR",
        code: DENIED,
        message: `meshguard: denied by policy: ${reason}`,
        hint: "the database gateway judges every statement with the policy's sql rules (docs/database.md); inside a transaction block the transaction is aborted; the connection stays usable",
      },
    });
    const probe = `SELECT pg_catalog.${nonce}()`;
    if (mode === "simple") {
      this.sent++;
      this.forward(serialize.query(probe));
    } else {
      this.skipping = true;
      this.forward(serialize.parse({ name: "", text: probe }), true);
    }
  }

  private rewrite(msg: Buffer): Buffer {
    const text = errorMessageOf(msg);
    const m = text === undefined ? null : /mg_denied_[0-9a-f]+_\d+/.exec(text);
    const d = m ? this.denials.get(m[0]) : undefined;
    if (d === undefined) return msg;
    this.denials.delete(m![0]);
    return errorResponse(d.error);
  }

  /** onReady: one more cycle answered; denials of earlier cycles the server skipped (an earlier error in the pipeline) are forgotten. */
  private onReady(): void {
    this.answered++;
    for (const [k, d] of this.denials) if (d.cycle < this.answered) this.denials.delete(k);
  }
}
