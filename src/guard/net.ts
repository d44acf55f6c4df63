/**
 * The lowest layer: `net.Socket.prototype.connect`. Every outbound TCP, TLS
 * and unix-socket connection a Node process makes from JavaScript passes
 * here — `net.connect`, `tls.connect`, every `http`/`https` Agent (custom
 * ones and the ones axios or got use), undici (global `fetch`), database
 * drivers that do `new net.Socket().connect()`.
 *
 * Each call is judged on its own destination, read once when the call is
 * made: the options are copied (getters run once) and Node is handed the
 * copy, so what Node connects to is what was judged, and a later
 * `connect()` on the same socket — even one Node rejects at once — cannot
 * change what an earlier pending call is judged as. Nothing is stored on
 * the socket: what the guard knows about a socket lives in WeakMaps of this
 * module.
 *
 * Node performs the actual connect(2) later than `connect()` returns: on the
 * next tick for an IP literal, after the `lookup` callback for a name. The
 * guard decides in that gap, once the caller's synchronous code has run —
 * so an HTTP request has been attached to its socket (http.ts):
 *
 *  - IP literal: a nextTick queued before Node's own; a deny destroys the
 *    socket (Node's tick then sees `connecting === false` and does nothing).
 *    A host that normalises to a literal ("127.0.0.1.", "[::1]") is handed
 *    to Node as that literal: judged and connected the same.
 *  - name: a `lookup` wrapper screens first (a name no rule could allow is
 *    denied without a look-up), then resolves (resolve.ts: the caller's
 *    lookup or the guard's resolver), refuses answers that are not fit for
 *    the name (localhost is loopback only; rebinding), judges the call
 *    with the address (`resolvedIp`: CIDR rules, allow and deny, apply to
 *    it), and hands Node exactly that one address.
 *  - unix socket: decided synchronously against `allowIpc` (Node connects a
 *    pipe synchronously).
 *
 * Whose call a socket is:
 *  - an HTTP request's (http.ts attached a Carrier) when it goes to the
 *    request's own host and port: the request's one decision covers it;
 *  - undici's, when undici announced the connection (undici.ts) for an
 *    origin with a request the guard allowed waiting for it: each request
 *    on it was judged at the HTTP layer, the address is screened here;
 *  - the guard's own (internal.ts);
 *  - else raw TCP/TLS, which a policy must allow explicitly (a proxy, a
 *    database driver).
 */

import dns from "node:dns";
import net from "node:net";
import tls from "node:tls";
import { normalizeHost } from "../policy/hosts.js";
import { isIpLiteral } from "../policy/ip.js";
import type { HttpTarget, TcpTarget } from "../policy/types.js";
import { errorText, type GuardCore, type Verdict } from "./core.js";
import { PolicyDeniedError } from "./errors.js";
import { isInternalConnect, isInternalSocket } from "./internal.js";
import { hostConnections } from "./revoke.js";
import { callerLookup, refusedAddress, resolveName, type LookupFn, type Resolved } from "./resolve.js";
import { current } from "./state.js";
import { takeUndiciConnect } from "./undici.js";

/** Where one connect() call goes, read once when it was made. */
export interface Dest {
  readonly host: string;
  readonly port: number;
  readonly tls: boolean;
  /** The host is an IP literal (no look-up). */
  readonly literal: boolean;
  /** A unix socket path (host and port are then meaningless). */
  readonly ipc?: string;
  /** The address a name resolved to, once it has. */
  resolvedIp?: string;
}

/**
 * Carrier is what rides on a socket: an HTTP request (http.ts). The socket
 * is the carrier's own connection when it goes to the carrier's host and
 * port; the carrier then decides for both.
 */
export interface Carrier {
  readonly host: string;
  readonly port: number;
  /** screen runs before anything is resolved or opened: a denial when the call cannot be allowed (it is then decided), else its verdict so far. */
  screen(): Verdict;
  /** connecting says the connection's address is known (a literal: undefined); the carrier decides now if it can. */
  connecting(resolvedIp: string | undefined): Verdict;
}

/** The latest connect() of each socket (what an HTTP request on it reads; each call's check keeps its own). */
const dests = new WeakMap<net.Socket, Dest>();
/** The request each socket carries (http.ts). */
const carriers = new WeakMap<net.Socket, Carrier>();

/** socketDest is where the socket's latest connect() goes, if the guard saw it. */
export function socketDest(s: net.Socket): Readonly<Dest> | undefined {
  return dests.get(s);
}

/** attachCarrier records the request a socket carries (http.ts, when Node hands the request its socket). */
export function attachCarrier(s: net.Socket, c: Carrier): void {
  carriers.set(s, c);
}

type ConnectFn = (this: net.Socket, ...args: unknown[]) => net.Socket;
type Options = Record<string, unknown> & { host?: unknown; port?: unknown; path?: unknown; lookup?: unknown; family?: unknown };
type Normalized = [Options, ((...a: unknown[]) => void) | null];

const normalizeArgs = (net as unknown as { _normalizeArgs?: (args: unknown[]) => Normalized })._normalizeArgs;
/** Node's mark on an argument array it already normalized (net.connect passes one): read off a normalized array. */
const kNormalized: symbol | undefined = (() => {
  try {
    return typeof normalizeArgs === "function" ? Object.getOwnPropertySymbols(normalizeArgs([]))[0] : undefined;
  } catch {
    return undefined;
  }
})();

/** Node's own connect, kept after uninstall: a reference to the patch taken while installed still works then. */
let original: ConnectFn | undefined;
let patched = false;

/** installNetPatch replaces Socket.prototype.connect (idempotent); the patch does nothing while no guard is current. */
export function installNetPatch(): void {
  if (patched) return;
  if (typeof normalizeArgs !== "function") throw new Error("this Node.js has no net._normalizeArgs; the guard cannot intercept connections");
  original = net.Socket.prototype.connect as unknown as ConnectFn;
  net.Socket.prototype.connect = guardedConnect as unknown as typeof net.Socket.prototype.connect;
  patched = true;
}

export function uninstallNetPatch(): void {
  hostConnections.clear();
  if (!patched) return;
  net.Socket.prototype.connect = original as unknown as typeof net.Socket.prototype.connect;
  patched = false;
}

/** One connect() call: its destination and whose call it is. */
interface Call {
  sock: net.Socket;
  dest: Dest;
  /** undici announced this connection: the origin's requests are judged at the HTTP layer. */
  undici: boolean;
  /** The options Node was given (re-used to connect again after an approval). */
  opts: Options;
  /** False when Node rejected the call at once (it connects nowhere: nothing to judge). */
  live: boolean;
}

function guardedConnect(this: net.Socket, ...args: unknown[]): net.Socket {
  const orig = original!;
  const core = current();
  if (core === undefined || !(this instanceof net.Socket) || isInternalSocket(this)) return orig.apply(this, args);
  // A TLS socket over a parent that is still connecting: Node does nothing.
  if ((this as { _parent?: { connecting?: boolean } })._parent?.connecting) return orig.apply(this, args);
  if (isInternalConnect()) return orig.apply(this, args); // the guard's own connection (internal.ts)

  let call: Call;
  let pass: unknown[];
  try {
    const normalized = Array.isArray(args[0]) && kNormalized !== undefined && (args[0] as unknown as Record<symbol, unknown>)[kNormalized] === true ? (args[0] as unknown as Normalized) : normalizeArgs!(args);
    const [given, cb] = normalized;
    const opts = copyOptions(given);
    const secure = this instanceof tls.TLSSocket;
    const handle = (this as { _handle?: { constructor?: { name?: string } } | null })._handle;
    const pipe = Boolean(opts.path) && !(handle != null && handle.constructor?.name !== "Pipe");
    pass = repack(opts, cb);
    if (pipe) {
      const path = String(opts.path);
      dests.set(this, { host: `unix:${path}`, port: 0, tls: secure, literal: false, ipc: path });
      const denied = ipcVerdict(core, path, secure);
      if (denied !== undefined) {
        process.nextTick(() => this.destroy(denied));
        return this;
      }
      return orig.apply(this, pass);
    }
    // As Node reads them (lookupAndConnect: `options.host || "localhost"`); a host or port Node rejects throws below.
    const given0 = opts.host;
    const raw = given0 ? (typeof given0 === "string" ? given0 : String(given0)) : "localhost";
    const host = normalizeHost(raw);
    const literal = isIpLiteral(host);
    // "127.0.0.1." and "[::1]" are names to Node but literals to the policy: connect to the literal judged.
    if (literal && raw !== host && !isIpLiteral(raw)) opts.host = host;
    const port = Number(opts.port);
    const dest: Dest = { host, port, tls: secure, literal };
    dests.set(this, dest);
    call = { sock: this, dest, undici: takeUndiciConnect(host, port), opts, live: true };
    if (!literal) {
      opts.lookup = guardedLookup(call, typeof opts.lookup === "function" ? (opts.lookup as LookupFn) : undefined);
    }
  } catch (err) {
    // Options the guard cannot read: the call is refused, never let through unread.
    const e = core.failed({ kind: "tcp", tls: this instanceof tls.TLSSocket, host: "(unreadable)", port: 0 }, err);
    process.nextTick(() => this.destroy(e));
    return this;
  }
  // Queued before Node's own connect tick: it runs first.
  if (call.dest.literal) process.nextTick(checkLiteral, call);
  try {
    return orig.apply(this, pass);
  } catch (err) {
    call.live = false; // Node refused the call: it goes nowhere
    throw err;
  }
}

/** copyOptions reads the caller's options once (own and inherited enumerable properties): Node then reads the copy. */
function copyOptions(given: unknown): Options {
  const out: Options = {};
  if (typeof given !== "object" || given === null) return out;
  for (const k in given) out[k] = (given as Record<string, unknown>)[k];
  return out;
}

/** repack hands Node the copied options as an already-normalized argument list (Node does not read the caller's again). */
function repack(opts: Options, cb: Normalized[1]): unknown[] {
  if (kNormalized === undefined) return cb === null ? [opts] : [opts, cb];
  const arr = [opts, cb] as unknown as Record<symbol, unknown>;
  arr[kNormalized] = true;
  return [arr];
}

function ipcVerdict(core: GuardCore, path: string, secure: boolean): PolicyDeniedError | undefined {
  const ok = core.allowIpc.some((p) => (p.endsWith("/") ? path.startsWith(p) : path === p));
  if (ok) return undefined;
  const target: TcpTarget = { kind: "tcp", tls: secure, host: `unix:${path}`, port: 0 };
  const reason = "unix socket connections are denied unless listed in installGuard({ allowIpc })";
  if (core.mode === "observe") {
    core.warn(new Error(`observe: would deny ${path}: ${reason}`));
    return undefined;
  }
  const err = new PolicyDeniedError(target, reason);
  core.warn(err);
  return err;
}

function tcpTarget(d: Dest, resolvedIp?: string): TcpTarget {
  const t: TcpTarget = { kind: "tcp", tls: d.tls, host: d.host, port: d.port };
  if (resolvedIp !== undefined) t.resolvedIp = resolvedIp;
  return t;
}

/** The carrier whose own connection this call is, if any. */
function carrierOf(call: Call): Carrier | undefined {
  const c = carriers.get(call.sock);
  return c !== undefined && c.host === call.dest.host && c.port === call.dest.port ? c : undefined;
}

/** The decision for a call to an IP literal (the address is the host). */
function literalVerdict(core: GuardCore, call: Call): Verdict {
  if (call.undici) return undefined;
  const c = carrierOf(call);
  if (c !== undefined) {
    const v = c.screen();
    return v !== undefined ? v : c.connecting(undefined);
  }
  const t = tcpTarget(call.dest);
  const v = core.check(t, call.dest.tls ? "tls" : "net");
  return follow(call.sock, t, v);
}

/**
 * follow keeps judging a raw TCP/TLS connection once it is allowed (now, or
 * once approved): a new policy that denies it closes it (./revoke.ts).
 */
function follow(sock: net.Socket, t: TcpTarget, v: Verdict): Verdict {
  if (v === undefined) hostConnections.add(sock, t);
  else if (!(v instanceof PolicyDeniedError)) return v.then(() => hostConnections.add(sock, t));
  return v;
}

function checkLiteral(call: Call): void {
  const sock = call.sock;
  if (!call.live || !sock.connecting || sock.destroyed) return;
  const core = current();
  if (core === undefined) return;
  let v: Verdict;
  try {
    v = literalVerdict(core, call);
  } catch (err) {
    v = core.failed(tcpTarget(call.dest), err);
  }
  if (v === undefined) return;
  if (v instanceof PolicyDeniedError) {
    sock.destroy(v);
    return;
  }
  // Held for approval: Node's pending connect (its tick, queued after this
  // one) must find the socket not connecting and do nothing; right after it
  // the socket reads as connecting again, so that reads and writes wait for
  // the connection made once approved.
  (sock as { connecting: boolean }).connecting = false;
  process.nextTick(() => {
    if (!sock.destroyed) (sock as { connecting: boolean }).connecting = true;
  });
  v.then(
    () => {
      if (sock.destroyed) return;
      try {
        original!.apply(sock, repack(call.opts, null));
      } catch (err) {
        sock.destroy(err as Error);
      }
    },
    (err: unknown) => sock.destroy(err as Error),
  );
}

/**
 * guardedLookup replaces the look-up of a connection by name (see the file
 * comment). It answers Node once, with the one address judged.
 */
function guardedLookup(call: Call, userLookup: LookupFn | undefined): LookupFn {
  return (hostname, dnsOpts, callback) => {
    let answered = false;
    const answer = (err: Error | null, r?: Resolved) => {
      if (answered) return;
      answered = true;
      if (err !== null || r === undefined) return callback(err ?? new Error(`lookup ${hostname} gave no address`));
      call.dest.resolvedIp = r.address;
      // Exactly one address, the one judged: Node connects to it and nowhere else.
      if (dnsOpts?.all === true) callback(null, [{ address: r.address, family: r.family }]);
      else callback(null, r.address, r.family);
    };
    // Deferred: the caller's synchronous code (attaching an HTTP request) runs first.
    process.nextTick(() => {
      decideByName(call, hostname, dnsOpts ?? {}, userLookup).then(
        (r) => answer(null, r),
        (err: unknown) => answer(err instanceof Error ? err : new Error(errorText(err))),
      );
    });
  };
}

async function decideByName(call: Call, hostname: string, dnsOpts: dns.LookupOptions, userLookup: LookupFn | undefined): Promise<Resolved> {
  const core = current();
  const family = (dnsOpts.family === 4 || dnsOpts.family === 6 ? dnsOpts.family : 0) as 0 | 4 | 6;
  const resolve = async (): Promise<Resolved> => {
    let list: Resolved[];
    try {
      list = userLookup !== undefined ? await callerLookup(userLookup, hostname, dnsOpts) : core !== undefined ? await resolveName(core, hostname, family) : await callerLookup(dns.lookup as unknown as LookupFn, hostname, dnsOpts);
    } catch (err) {
      // The look-up's own failure (ENOTFOUND, a caller lookup's error) reaches the caller as it is.
      const e = err instanceof Error ? err : new Error(`lookup ${hostname} failed: ${errorText(err)}`);
      lookupErrors.add(e);
      throw e;
    }
    if (core !== undefined) {
      for (const a of list) {
        const why = refusedAddress(core, call.dest.host, a.address);
        if (why === undefined) continue;
        const err = new PolicyDeniedError(tcpTarget(call.dest, a.address), why);
        if (core.mode === "observe") {
          core.warn(new Error(`observe: would deny: ${why}`));
          break;
        }
        core.warn(err);
        throw err;
      }
    }
    return list[0]!;
  };
  if (core === undefined) return resolve();
  const layer = call.dest.tls ? "tls" : "net";
  try {
    if (call.undici) {
      // undici's connection: each request on it was judged at the HTTP layer; the address is screened.
      const r = await resolve();
      const t: HttpTarget = { kind: "http", scheme: call.dest.tls ? "https" : "http", host: call.dest.host, port: call.dest.port, method: "GET", path: "/", query: "", headers: {}, resolvedIp: r.address };
      if (!core.mayAllow(t) && core.mode !== "observe") {
        const err = new PolicyDeniedError(tcpTarget(call.dest, r.address), `${call.dest.host} resolves to ${r.address}, where no rule allows an HTTP call to ${call.dest.host}:${call.dest.port}`);
        core.warn(err);
        throw err;
      }
      return r;
    }
    const c = carrierOf(call);
    if (c !== undefined) {
      await settle(c.screen());
      const r = await resolve();
      await settle(c.connecting(r.address));
      return r;
    }
    // A raw connection by name: screened, resolved, then judged once with its address.
    if (!core.screens) {
      // A custom evaluator cannot screen: decide on the name, before any look-up.
      const t = tcpTarget(call.dest);
      await settle(follow(call.sock, t, core.check(t, layer)));
      return await resolve();
    }
    if (!core.mayAllow(tcpTarget(call.dest))) {
      const t = tcpTarget(call.dest);
      await settle(follow(call.sock, t, core.check(t, layer)));
      return await resolve(); // only when an evaluator's screen was wrong and it allowed after all
    }
    const r = await resolve();
    const t = tcpTarget(call.dest, r.address);
    await settle(follow(call.sock, t, core.check(t, layer)));
    return r;
  } catch (err) {
    if (err instanceof PolicyDeniedError || lookupErrors.has(err as Error)) throw err;
    // Anything else is the guard's own failure: contained, the call denied.
    throw core.failed(tcpTarget(call.dest), err);
  }
}

/** Errors that came from a look-up itself (not from judging). */
const lookupErrors = new WeakSet<Error>();

/** settle turns a verdict into a promise that rejects with the denial. */
function settle(v: Verdict): Promise<void> | void {
  if (v === undefined) return;
  if (v instanceof PolicyDeniedError) throw v;
  return v;
}
