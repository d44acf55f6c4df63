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
 * Then ./relay.ts carries the session: every `Query` and `Parse` is judged
 * by the policy (rowFilters on: PostgreSQL enforces the rows filters for
 * the role), `Bind` only of a statement whose Parse was allowed, `Execute`
 * only of a portal bound here, `FunctionCall` never. Statements that change
 * the session's identity are refused whatever the policy says or how
 * statements are read (pinnedSettingChange). Decisions are cached by
 * (caller, database, text) for the policy in force (./decisions.ts): a
 * statement already seen costs a Map lookup.
 *
 * drain() (the gateway's close) lets the statement in flight finish, then
 * ends the session with the FATAL 57P01 PostgreSQL itself sends when it is
 * shut down; an open transaction block is rolled back, as it would be.
 */

import { randomBytes, randomInt } from "node:crypto";
import net from "node:net";
import pg from "pg";
import { serialize } from "pg-protocol";
import { requestApproval } from "../guard/approvals.js";
import type { ApprovalOptions } from "../guard/types.js";
import type { WhoIs } from "../node.js";
import type { ApprovalOutcome, EventPrincipal } from "../policy/event.js";
import type { Policy } from "../policy/load.js";
import type { Reveal } from "../policy/request.js";
import { analyzeSql, SQL_PARSER_PG_MAJOR } from "../policy/sql.js";
import type { Decision, Principal, SqlTarget } from "../policy/types.js";
import { OWNERS_SETTING, ownersSettingValue, PRINCIPAL_SETTING, quoteIdent, roleForCaller } from "./roles.js";
import { remember, type DecisionBatch, type DecisionCache } from "./decisions.js";
import { ALLOW, Relay, type Verdict } from "./relay.js";
import { authenticationOk, backendKeyData, CANCEL_REQUEST, errorResponse, GSSENC_REQUEST, parameterStatus, PROTOCOL_3, readStartup, readyForQuery, SSL_REQUEST, startupParameters } from "./wire.js";

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
  /** Where decisions go: allows batched off the statement's path, the rest at once. */
  batch: DecisionBatch;
  decisions: DecisionCache;
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

const DENIED = "42501"; // insufficient_privilege
/** Bytes queued behind a statement held for approval before the gateway stops reading the client. */
const MAX_HELD_BYTES = 1024 * 1024;
const PROTOCOL_VIOLATION = "08P01";

export class DbSession {
  private buf: Buffer = Buffer.alloc(0);
  private started = false;
  private closed = false;
  private upstream: net.Socket | undefined;
  private caller: DbSessionCaller | undefined;
  private database = "";
  private relay: Relay | undefined;
  /** The caller's decisions by statement text, for the policy they were made under (undefined: not cacheable). */
  private cache: Map<string, Decision> | undefined;
  private cachePolicy: Policy | undefined;
  /** The principal as events carry it (built once). */
  private eventPrincipal: EventPrincipal | undefined;
  private draining = false;
  /** Which socket's write buffer is full (its other side is not read until it drains). */
  private readonly full = { server: false, client: false };
  private cancelKey: string | undefined;
  private readonly whois: Promise<WhoIs>;
  private readonly ctx: SessionContext;
  private readonly client: net.Socket;
  private readonly onClose: () => void;

  constructor(
    ctx: SessionContext,
    client: net.Socket,
    onClose: () => void,
  ) {
    this.ctx = ctx;
    this.client = client;
    this.onClose = onClose;
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
    this.relay?.close();
    if (this.cancelKey) this.ctx.cancels.delete(this.cancelKey);
    this.client.destroy();
    this.upstream?.destroy();
    this.onClose();
  }

  /**
   * drain ends the session once no statement is in flight (at once when it
   * is idle or not handed over yet): the client gets FATAL 57P01, as from a
   * PostgreSQL shutting down.
   */
  drain(): void {
    if (this.closed || this.draining) return;
    this.draining = true;
    const relay = this.relay;
    if (relay === undefined) return this.shutDown();
    relay.onIdle = () => this.shutDown();
    if (relay.idle) this.shutDown();
  }

  private shutDown(): void {
    if (this.closed) return;
    if (this.relay !== undefined) this.relay.onIdle = undefined;
    this.upstream?.end(TERMINATE);
    this.fatal("57P01", "terminating connection: the database gateway is shutting down", "connect again: another gateway instance (or this one, restarted) takes new connections");
  }

  private fatal(code: string, message: string, hint?: string): void {
    if (this.closed) return;
    this.client.end(errorResponse({ severity: "FATAL", code, message: `meshguard db-gateway: ${message}`, ...(hint ? { hint } : {}) }));
    setTimeout(() => this.close(), 1000).unref();
  }

  private onClientData(d: Buffer): void {
    try {
      if (this.started) {
        const relay = this.relay!;
        relay.fromClient(d);
        // Held behind an approval: stop reading rather than queue without bound.
        if (relay.heldBytes > MAX_HELD_BYTES) this.client.pause();
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
    if (this.closed || this.draining) return void pc.end().catch(() => {});
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
    if (this.closed || this.draining) return void pc.end().catch(() => {});
    // Take the authenticated socket over from node-postgres: from here on its bytes are the client's.
    const sock = conn.stream;
    for (const ev of ["data", "end", "error", "close", "timeout", "drain"]) sock.removeAllListeners(ev);
    sock.setNoDelay?.(true);
    this.upstream = sock;
    sock.on("error", () => this.close());
    sock.on("close", () => this.close());
    sock.on("end", () => this.close());
    const client = this.client;
    const relay = new Relay(
      {
        judge: (text) => this.judge(text),
        refused: (why) => this.refused(why),
        toServer: (b) => writeOrWait(sock, client, b, this.full, "server"),
        toClient: (b) => writeOrWait(client, sock, b, this.full, "client"),
        failed: (err) => {
          this.ctx.warn(err);
          this.close();
        },
        released: () => {
          if (!this.closed && !this.full.server) client.resume();
        },
      },
      randomBytes(6).toString("hex"),
    );
    this.relay = relay;
    sock.on("data", (d: Buffer) => {
      try {
        relay.fromServer(d);
      } catch (err) {
        this.ctx.warn(err as Error);
        this.close();
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

  /** judge decides a statement text: from the cache when it was seen, else identity changes always refused and the rest by the policy (an approve rule waits for the approver). */
  private judge(text: string): Verdict | Promise<Verdict> {
    const policy = this.ctx.policy();
    if (policy !== this.cachePolicy) {
      this.cachePolicy = policy;
      this.cache = policy === undefined ? undefined : this.ctx.decisions.forCaller(policy, this.cacheKey());
    }
    const recording = this.ctx.recording();
    const t0 = recording ? performance.now() : 0;
    let d = this.cache?.get(text);
    if (d === undefined) {
      d = this.decide(text, policy);
      if (this.cache !== undefined) remember(this.cache, text, d);
    }
    if (d.effect === "allow") {
      if (recording) this.record(text, d, "allow", t0, policy);
      return ALLOW;
    }
    if (d.effect !== "approve") {
      if (recording) this.record(text, d, "deny", t0, policy);
      return { allow: false, reason: d.reason };
    }
    return this.approve(text, d, policy, t0);
  }

  private cacheKey(): string {
    const p = this.caller!.principal;
    return `${this.database}\0${p.node ?? ""}\0${p.user ?? ""}\0${p.tags.join(",")}`;
  }

  private decide(text: string, policy: Policy | undefined): Decision {
    const identity = pinnedSettingChange(text);
    if (identity) return { effect: "deny", reason: `refused at the database gateway: ${identity}` };
    if (policy === undefined) return { effect: "deny", reason: "no policy is loaded (the gateway fails closed)" };
    return policy.evaluate({ principal: this.caller!.principal, target: { kind: "sql", database: this.database, statement: text, rowFilters: true } });
  }

  private approve(text: string, d: Decision, policy: Policy | undefined, t0: number): Verdict | Promise<Verdict> {
    const caller = this.caller!;
    const approvals = this.ctx.approvals;
    if (approvals === undefined || (approvals.callback === undefined && approvals.webhook === undefined)) {
      const reason = `${d.reason}; the rule asks for approval but the database gateway has no approver configured ("approvals" in the config)`;
      this.record(text, { ...d, reason }, "deny", t0, policy);
      return { allow: false, reason };
    }
    const started = Date.now();
    return requestApproval(approvals, caller.principal, this.target(text), d, this.ctx.reveal).then(
      (a): Verdict => {
        const outcome: ApprovalOutcome = { approved: a.approved, ms: Date.now() - started, ...(a.by ? { by: a.by } : {}), ...(a.reason ? { reason: a.reason } : {}) };
        this.record(text, d, a.approved ? "allow" : "deny", t0, policy, outcome);
        return a.approved ? ALLOW : { allow: false, reason: `approval refused${a.by ? ` by ${a.by}` : ""}: ${a.reason ?? "no reason given"}` };
      },
      (err: unknown): Verdict => {
        const why = (err as Error).message;
        this.record(text, d, "deny", t0, policy, { approved: false, ms: Date.now() - started, reason: why });
        return { allow: false, reason: `no approval: ${why}` };
      },
    );
  }

  private target(text: string): SqlTarget {
    return { kind: "sql", database: this.database, statement: text, rowFilters: true };
  }

  /** record hands a decision to the gateway's batch: an allow goes later (off the statement's path), anything else now. */
  private record(text: string, d: Decision, outcome: "allow" | "deny", t0: number, policy: Policy | undefined, approval?: ApprovalOutcome): void {
    if (!this.ctx.recording()) return;
    const c = this.caller!;
    this.eventPrincipal ??= { ...c.principal, owners: c.owners, ...(c.addr ? { ip: c.addr } : {}) };
    const p = { principal: this.eventPrincipal, target: this.target(text), decision: d, outcome, us: t0 === 0 ? 0 : (performance.now() - t0) * 1000, policy, at: Date.now(), ...(approval ? { approval } : {}) };
    if (outcome === "allow" && d.effect === "allow") this.ctx.batch.later(p);
    else this.ctx.batch.now(p);
  }

  /** refused records the refusal of a message that is not a statement (Bind, Execute, FunctionCall). */
  private refused(why: string): string {
    const reason = `refused at the database gateway: ${why}`;
    this.record("", { effect: "deny", reason }, "deny", 0, this.ctx.policy());
    return reason;
  }
}

/** writeOrWait writes to `to`; when its buffer is full, `from` is not read until it drains (one wait at a time). */
function writeOrWait(to: net.Socket, from: net.Socket, b: Buffer, full: { server: boolean; client: boolean }, which: "server" | "client"): void {
  if (to.write(b) || full[which]) return;
  full[which] = true;
  from.pause();
  to.once("drain", () => {
    full[which] = false;
    from.resume();
  });
}

/** A Terminate message: the upstream session ends cleanly. */
const TERMINATE = Buffer.from([0x58, 0, 0, 0, 4]);
