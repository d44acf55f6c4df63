/**
 * The lowest layer: `net.Socket.prototype.connect`. Every outbound TCP, TLS
 * and unix-socket connection a Node process makes from JavaScript passes
 * here — `net.connect`, `tls.connect`, every `http`/`https` Agent (custom
 * ones and the ones axios or got use), undici (global `fetch`), database
 * drivers that do `new net.Socket().connect()`.
 *
 * Node performs the actual connect(2) later than `connect()` returns: on the
 * next tick for an IP literal, after the `lookup` callback for a name. The
 * guard decides in that gap, once the caller's synchronous code has run —
 * so an HTTP request has been attached to its socket (see http.ts) and the
 * decision can be about the request, not just the address:
 *
 *  - IP literal: a nextTick queued before Node's own; a deny destroys the
 *    socket (Node's tick then sees `connecting === false` and does nothing).
 *  - name: a `lookup` wrapper decides before any DNS query (a denied name is
 *    never resolved), then resolves, refuses names that resolve to
 *    loopback/link-local/unspecified addresses (rebinding, cloud metadata),
 *    and hands Node exactly one address: the connection goes to the address
 *    that was checked.
 *  - unix socket: decided synchronously against `allowIpc` (Node connects a
 *    pipe synchronously).
 *
 * A socket belongs to an HTTP request when http.ts attached one, or when
 * undici announced it (its `undici:client:beforeConnect` channel) for an
 * origin the HTTP layer allowed. Such a socket is allowed when it goes to
 * the request's own host and port; anything else (a proxy) is judged as a
 * raw TCP connection, which a policy must allow explicitly.
 */

import dns from "node:dns";
import net from "node:net";
import tls from "node:tls";
import type { TcpTarget } from "../policy/types.js";
import type { GuardCore, Verdict } from "./core.js";
import { PolicyDeniedError } from "./errors.js";
import { isInternalConnect, kInternal } from "./internal.js";
import { current, shared } from "./state.js";
import { normalizeHost } from "../policy/hosts.js";
import { ipFamily, ipRange, isIpLiteral } from "../policy/ip.js";

/** Where a socket connects: set synchronously by the patch. */
export const kDest = Symbol.for("meshguard.guard.dest");
/** The HTTP request a socket carries and its verdict: set by http.ts. */
export const kHttp = Symbol.for("meshguard.guard.http");
/** A socket undici opened for an HTTP origin. */
const kUndici = Symbol.for("meshguard.guard.undici");
/** Re-entry after an approval: connect again without a second check. */
const kPass = Symbol.for("meshguard.guard.pass");

export interface SocketDest {
  host: string;
  port: number;
  tls: boolean;
  resolvedIp?: string;
}

export interface HttpAttachment {
  host: string;
  port: number;
  verdict: Verdict;
}

type Sock = net.Socket & Record<symbol, unknown>;
type ConnectFn = (this: net.Socket, ...args: unknown[]) => net.Socket;
type NormalizeArgs = (args: unknown[]) => [Record<string, unknown> & { host?: string; port?: number | string; path?: string; lookup?: LookupFn }, ((...a: unknown[]) => void) | null];
type LookupFn = (hostname: string, options: dns.LookupOptions, cb: (err: Error | null, address?: string | dns.LookupAddress[], family?: number) => void) => void;

const normalizeArgs = (net as unknown as { _normalizeArgs: NormalizeArgs })._normalizeArgs;
let original: ConnectFn | undefined;

/** installNetPatch replaces Socket.prototype.connect (idempotent); the patch does nothing while no guard is current. */
export function installNetPatch(): void {
  if (original) return;
  if (typeof normalizeArgs !== "function") throw new Error("this Node.js has no net._normalizeArgs; the guard cannot intercept connections");
  original = net.Socket.prototype.connect as unknown as ConnectFn;
  net.Socket.prototype.connect = guardedConnect as unknown as typeof net.Socket.prototype.connect;
}

export function uninstallNetPatch(): void {
  if (!original) return;
  net.Socket.prototype.connect = original as unknown as typeof net.Socket.prototype.connect;
  original = undefined;
}

function guardedConnect(this: Sock, ...args: unknown[]): net.Socket {
  const orig = original!;
  const core = current();
  if (core === undefined || this[kPass] === true || this[kInternal] === true) return orig.apply(this, args);
  if (isInternalConnect()) {
    this[kInternal] = true;
    return orig.apply(this, args);
  }
  // net.connect passes its already-normalized [options, cb] array as the one argument.
  const [options, cb] = Array.isArray(args[0]) ? (args[0] as ReturnType<NormalizeArgs>) : normalizeArgs(args);
  const secure = this instanceof tls.TLSSocket;

  if (options.path !== undefined && options.path !== null) {
    const path = String(options.path);
    const ok = core.allowIpc.some((p) => (p.endsWith("/") ? path.startsWith(p) : path === p));
    if (ok) return orig.apply(this, args);
    const target: TcpTarget = { kind: "tcp", tls: secure, host: `unix:${path}`, port: 0 };
    const reason = "unix socket connections are denied unless listed in installGuard({ allowIpc })";
    if (core.mode === "observe") {
      core.events.emit("warning", new Error(`observe: would deny ${path}: ${reason}`));
      return orig.apply(this, args);
    }
    const err = new PolicyDeniedError(target, reason);
    core.warn(err);
    process.nextTick(() => this.destroy(err));
    return this;
  }

  const host = normalizeHost(String(options.host ?? "localhost"));
  const port = Number(options.port);
  const dest: SocketDest = { host, port, tls: secure };
  this[kDest] = dest;
  const pending = shared.undiciConnect;
  if (pending !== undefined && pending.host === host && pending.port === port) this[kUndici] = true;

  if (isIpLiteral(host)) {
    // Queued before Node's own connect tick: it runs first.
    process.nextTick(checkBeforeConnect, this, options);
    return orig.apply(this, args);
  }
  const guarded = { ...options, lookup: guardedLookup(this, options.lookup) };
  return cb === null ? orig.call(this, guarded) : orig.call(this, guarded, cb);
}

/** socketVerdict decides a socket about to connect (see the file comment). */
function socketVerdict(core: GuardCore, sock: Sock): Verdict {
  const dest = sock[kDest] as SocketDest;
  const att = sock[kHttp] as HttpAttachment | undefined;
  if (att !== undefined) {
    if (att.verdict instanceof PolicyDeniedError) return att.verdict;
    if (att.host === dest.host && att.port === dest.port) return att.verdict;
  } else if (sock[kUndici] === true && core.originAllowed(dest.host, dest.port)) {
    return undefined;
  }
  const target: TcpTarget = { kind: "tcp", tls: dest.tls, host: dest.host, port: dest.port };
  return core.check(target, dest.tls ? "tls" : "net");
}

function checkBeforeConnect(sock: Sock, options: Record<string, unknown>): void {
  if (!sock.connecting || sock.destroyed) return;
  const core = current();
  if (core === undefined) return;
  const v = socketVerdict(core, sock);
  if (v === undefined) return;
  if (v instanceof PolicyDeniedError) {
    sock.destroy(v);
    return;
  }
  // Held for approval: stop Node's pending connect, connect again once approved.
  (sock as { connecting: boolean }).connecting = false;
  v.then(
    () => {
      if (sock.destroyed) return;
      const { lookup: _l, ...rest } = options;
      sock[kPass] = true;
      try {
        original!.call(sock, rest);
      } catch (err) {
        sock.destroy(err as Error);
      } finally {
        sock[kPass] = false; // a later connect() of this socket is checked again
      }
    },
    (err: unknown) => sock.destroy(err as Error),
  );
}

function guardedLookup(sock: Sock, userLookup: LookupFn | undefined): LookupFn {
  return (hostname, dnsOpts, callback) => {
    // Deferred: the caller's synchronous code (attaching an HTTP request) runs first.
    process.nextTick(() => {
      const core = current();
      const lookup = () => resolvePinned(core, sock, hostname, dnsOpts, userLookup, callback);
      if (core === undefined) return lookup();
      const v = socketVerdict(core, sock);
      if (v === undefined) return lookup();
      if (v instanceof PolicyDeniedError) return callback(v);
      v.then(lookup, (err: unknown) => callback(err as Error));
    });
  };
}

function resolvePinned(core: GuardCore | undefined, sock: Sock, hostname: string, dnsOpts: dns.LookupOptions, userLookup: LookupFn | undefined, callback: Parameters<LookupFn>[2]): void {
  const lookup = userLookup ?? (dns.lookup as unknown as LookupFn);
  const done = (err: Error | null, addresses?: string | dns.LookupAddress[]) => {
    if (err) return callback(err);
    const list: dns.LookupAddress[] = Array.isArray(addresses)
      ? addresses
      : typeof addresses === "string"
        ? [{ address: addresses, family: ipFamily(addresses) }]
        : [];
    const first = list[0];
    if (first === undefined) return callback(Object.assign(new Error(`lookup ${hostname} returned no address`), { code: "ENOTFOUND" }));
    if (core !== undefined) {
      const bad = list.find((a) => !resolvedAllowed(core, hostname, a.address));
      if (bad !== undefined) {
        const dest = sock[kDest] as SocketDest;
        const target: TcpTarget = { kind: "tcp", tls: dest.tls, host: dest.host, port: dest.port, resolvedIp: bad.address };
        const reason = `${hostname} resolves to ${bad.address}, a loopback, link-local or unspecified address (possible DNS rebinding); allow it with installGuard({ allowResolved })`;
        if (core.mode !== "observe") {
          core.warn(new PolicyDeniedError(target, reason));
          return callback(new PolicyDeniedError(target, reason));
        }
      }
      (sock[kDest] as SocketDest).resolvedIp = first.address;
    }
    // Exactly one address, the one checked: Node connects to it and nowhere else.
    if (dnsOpts.all === true) callback(null, [first]);
    else callback(null, first.address, first.family);
  };
  try {
    lookup(hostname, { ...dnsOpts, all: true }, done);
  } catch (err) {
    // A user lookup that throws must fail this connection, not the process.
    callback(err as Error);
  }
}

/** Addresses a *name* may not resolve to unless allowed: loopback, link-local (incl. 169.254.169.254 metadata), unspecified. */
function resolvedAllowed(core: GuardCore, host: string, ip: string): boolean {
  if (core.allowResolved !== undefined) {
    try {
      if (core.allowResolved(host, ip)) return true;
    } catch {
      return false;
    }
  }
  const h = normalizeHost(host);
  if (h === "localhost" || h.endsWith(".localhost")) return true;
  return !isSpecialAddress(ip);
}

/** isSpecialAddress: loopback, link-local or unspecified (IPv4-mapped forms included), by the one classifier in policy/ip.ts. */
export function isSpecialAddress(ip: string): boolean {
  const r = ipRange(ip);
  return r === "loopback" || r === "linkLocal" || r === "unspecified";
}
