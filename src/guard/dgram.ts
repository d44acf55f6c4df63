/**
 * node:dgram, judged. Every datagram a socket sends is a `udp` target
 * `{ host, port }`, decided before its destination is looked up and before
 * it is handed to the operating system: a datagram to a host the policy
 * does not allow never leaves.
 *
 *  - `send` (every overload; `sendto` calls it) on an unconnected socket:
 *    Node resolves the destination through the socket's own lookup (the
 *    `lookup` option, else dns.lookup for names) and then sends to the
 *    address it got. The guard wraps that per-socket lookup: the datagram is
 *    judged there, with the host as the caller wrote it and the port it
 *    goes to. An address is judged as written. A name is screened first
 *    (a name no rule could allow is denied and never looked up), then
 *    resolved once, as part of this decision (not judged again as a dns
 *    target), and judged once with the address it resolved to, so CIDR
 *    rules, allow and deny, apply to where the datagram goes; a
 *    name resolving to a loopback, link-local or unspecified address is
 *    refused unless `allowResolved` says yes (as for TCP), and Node sends to
 *    exactly the address that was resolved — also when a custom lookup
 *    would answer differently the next time.
 *  - `connect(port, host)`: judged the same way when Node resolves the peer;
 *    a denied peer fails the connect (its callback, or `error`) and nothing
 *    is connected. `connectSync(port, ip)` (newer Node) is judged at once; a
 *    deny throws.
 *  - `send` on a connected socket: judged every time against the peer the
 *    connect resolved (its name and address), so a policy change applies to
 *    the next datagram.
 *
 * A deny reaches the caller as a failed send or look-up does in Node: the
 * send callback gets the PolicyDeniedError, and without a callback the
 * socket emits `error` with it. `bind` (local) is not judged; a bind to a
 * name resolves it through dns.lookup, which judges it as a dns target.
 *
 * The per-socket state (lookup, connect state) is Node's own
 * `socket[kStateSymbol]`, found once at install on a probe socket; a Node
 * without it makes installGuard fail rather than leave UDP unjudged.
 */

import dgram from "node:dgram";
import { isIP } from "node:net";
import { normalizeHost } from "../policy/hosts.js";
import { ipRange } from "../policy/ip.js";
import type { UdpTarget } from "../policy/types.js";
import type { GuardCore, Verdict } from "./core.js";
import { lookupAsPartOf } from "./dns.js";
import { PolicyDeniedError } from "./errors.js";
import { current } from "./state.js";

type Fn = (this: dgram.Socket, ...args: unknown[]) => unknown;
type LookupCallback = (err: Error | null, address?: string, family?: number) => void;
/** A socket handle's lookup: Node binds it to the socket's family and lookup function. */
type HandleLookup = (address: string | undefined, callback: LookupCallback) => void;

interface SocketState {
  handle: { lookup: HandleLookup } | null;
}

/** The property of a dgram.Socket that holds Node's state for it (found at install). */
let stateKey: symbol | undefined;
let saved: Array<{ key: string; fn: Fn }> | undefined;

/** What the next lookup of a socket is for: a send being made now, or a connect. */
interface Pending {
  what: "send" | "connect";
  sock: dgram.Socket;
  /** The destination port as Node validated it; NaN when the guard could not read it (the lookup then denies). */
  port: number;
}

/** The send being made right now: Node looks its destination up synchronously within send(). */
let sending: Pending | undefined;
/** Connects waiting for their lookup (Node may look up after a bind completes). */
const connecting = new WeakMap<dgram.Socket, Pending>();
/** The destination a socket's connect was judged and resolved to. */
const peers = new WeakMap<dgram.Socket, UdpTarget>();
/** Lookups the guard has wrapped (a socket is wrapped once). */
const wrapped = new WeakSet<HandleLookup>();
/** Depth of bind() calls under way: their lookup resolves a local address. */
let binding = 0;

/** installDgramPatch intercepts node:dgram sends (idempotent); the patches do nothing while no guard is current. */
export function installDgramPatch(): void {
  if (saved) return;
  stateKey = findStateKey();
  const proto = dgram.Socket.prototype as unknown as Record<string, Fn>;
  const done: Array<{ key: string; fn: Fn }> = [];
  const replace = (key: string, make: (orig: Fn) => Fn) => {
    const fn = proto[key];
    if (typeof fn !== "function") return; // connectSync is newer than Node 22
    done.push({ key, fn });
    proto[key] = make(fn);
  };
  replace("send", guardSend);
  replace("connect", guardConnect);
  replace("connectSync", guardConnectSync);
  replace("bind", guardBind);
  saved = done;
}

export function uninstallDgramPatch(): void {
  if (!saved) return;
  const proto = dgram.Socket.prototype as unknown as Record<string, Fn>;
  for (const s of saved.reverse()) proto[s.key] = s.fn;
  saved = undefined;
}

function findStateKey(): symbol {
  const probe = dgram.createSocket("udp4");
  try {
    for (const s of Object.getOwnPropertySymbols(probe)) {
      const v = (probe as unknown as Record<symbol, unknown>)[s] as { handle?: { lookup?: unknown }; connectState?: unknown } | undefined;
      if (v && typeof v === "object" && typeof v.handle?.lookup === "function" && "connectState" in v) return s;
    }
  } finally {
    probe.close();
  }
  throw new Error("this Node.js keeps no recognisable state on dgram sockets; the guard cannot judge UDP sends");
}

function stateOf(sock: dgram.Socket): SocketState | undefined {
  return stateKey === undefined ? undefined : ((sock as unknown as Record<symbol, SocketState | undefined>)[stateKey] ?? undefined);
}

/** wrap puts the guard's lookup in front of a socket's own (once per handle). */
function wrap(sock: dgram.Socket): void {
  const handle = stateOf(sock)?.handle;
  if (!handle || wrapped.has(handle.lookup)) return;
  const guarded = guardedLookup(sock, handle.lookup);
  wrapped.add(guarded);
  handle.lookup = guarded;
}

/** validPort is Node's own port check of dgram (validatePort, zero not allowed): the port Node will send to, or NaN. */
function validPort(port: unknown): number {
  if (typeof port !== "number" && typeof port !== "string") return NaN;
  if (typeof port === "string" && port.trim().length === 0) return NaN;
  if (+port !== +port >>> 0 || +port > 0xffff || port === 0) return NaN;
  return +port | 0;
}

/** isConnected: Node's own test (remoteAddress throws unless the socket is connected). */
function isConnected(sock: dgram.Socket): boolean {
  try {
    sock.remoteAddress();
    return true;
  } catch {
    return false;
  }
}

/** The default destination of an empty address (Node's lookup4/lookup6). */
function defaultHost(sock: dgram.Socket): string {
  return (sock as { type?: string }).type === "udp6" ? "::1" : "127.0.0.1";
}

function familyOf(sock: dgram.Socket): 4 | 6 {
  return (sock as { type?: string }).type === "udp6" ? 6 : 4;
}

function check(core: GuardCore, t: UdpTarget): Verdict {
  try {
    return core.check(t, "udp");
  } catch (err) {
    return new PolicyDeniedError(t, `the guard could not judge this datagram (fails closed): ${(err as Error)?.message ?? String(err)}`);
  }
}

/**
 * guardedLookup is a socket's lookup with the guard in front: the one place
 * an unconnected send's or a connect's destination is judged and resolved.
 */
function guardedLookup(sock: dgram.Socket, inner: HandleLookup): HandleLookup {
  return (address, callback) => {
    const core = current();
    // A bind resolves the local address to bind to: nothing is sent.
    if (core === undefined || binding > 0) return inner(address, callback);
    let pending: Pending | undefined;
    if (sending !== undefined && sending.sock === sock) {
      pending = sending;
      sending = undefined;
    } else {
      pending = connecting.get(sock);
      connecting.delete(sock);
    }
    const host = normalizeHost(typeof address === "string" && address !== "" ? address : defaultHost(sock));
    const target: UdpTarget = { kind: "udp", host, port: pending?.port ?? NaN };
    if (pending === undefined || Number.isNaN(pending.port)) {
      // Not a send or connect the guard saw begin: refuse rather than guess.
      return callback(new PolicyDeniedError(target, "the guard could not tell where this datagram goes (fails closed)"));
    }
    const forConnect = pending.what === "connect";
    const resolve = () => {
      // An address of the socket's family goes out as it is (Node's own lookup does the same).
      if (isIP(host) === familyOf(sock)) return process.nextTick(() => settle(null, host, familyOf(sock)));
      lookupAsPartOf(host, (done: LookupCallback) => inner(address, done), settle);
    };
    const settle: LookupCallback = (err, ip, family) => {
      if (err) return callback(err);
      if (typeof ip !== "string" || isIP(ip) === 0) return callback(new PolicyDeniedError(target, `the lookup of ${host} returned no address`));
      // An address was judged as written: a socket lookup that maps it elsewhere would send where nothing was judged.
      if (isIP(host) !== 0 && ip !== host) return callback(new PolicyDeniedError({ ...target, resolvedIp: ip }, `the socket's lookup turned ${host} into ${ip}: the datagram would go elsewhere than judged`));
      if (ip !== host && !resolvedAllowed(core, host, ip)) {
        const denied = new PolicyDeniedError({ ...target, resolvedIp: ip }, `${host} resolves to ${ip}, a loopback, link-local or unspecified address (possible DNS rebinding); allow it with installGuard({ allowResolved })`);
        if (core.mode !== "observe") {
          core.warn(denied);
          return callback(denied);
        }
      }
      if (ip !== host) target.resolvedIp = ip;
      if (forConnect) peers.set(sock, target);
      // Exactly the address judged and resolved: Node sends (or connects) there and nowhere else.
      callback(null, ip, family ?? isIP(ip));
    };
    const judge = (t: UdpTarget, then: () => void) => {
      const v = check(core, t);
      if (v === undefined) return then();
      if (v instanceof PolicyDeniedError) return callback(v);
      v.then(then, (err: unknown) => callback(err as Error));
    };
    // An address, or an evaluator that cannot screen: judged as written, before any look-up.
    if (isIP(host) !== 0 || !core.screens) return judge(target, resolve);
    // A name: screened (no look-up for a name no rule could allow), resolved,
    // then judged once with its address, so that CIDR rules, allow and deny,
    // apply to where the datagram goes.
    if (!core.mayAllow(target)) return judge(target, resolve);
    const afterLookup = settle;
    lookupAsPartOf(host, (done: LookupCallback) => inner(address, done), (err, ip, family) => {
      if (err || typeof ip !== "string" || isIP(ip) === 0) return afterLookup(err, ip, family);
      judge({ ...target, resolvedIp: ip }, () => afterLookup(null, ip, family));
    });
  };
}

/** Addresses a name may not resolve to unless allowed: loopback, link-local, unspecified (the TCP path's rule). */
function resolvedAllowed(core: GuardCore, host: string, ip: string): boolean {
  if (core.allowResolved !== undefined) {
    try {
      if (core.allowResolved(host, ip)) return true;
    } catch {
      return false;
    }
  }
  if (host === "localhost" || host.endsWith(".localhost")) return true;
  const r = ipRange(ip);
  return r !== "loopback" && r !== "linkLocal" && r !== "unspecified";
}

/** The callback of a send on a connected socket, found as Node finds it. */
function connectedCallback(args: unknown[]): ((err: Error) => void) | undefined {
  const [, offset, length, port, , callback] = args;
  const cb = typeof length === "number" ? (typeof port === "function" ? port : callback) : offset;
  return typeof cb === "function" ? (cb as (err: Error) => void) : undefined;
}

/** refuse fails a send as Node fails one: the callback, else an `error` event, on a later tick. */
function refuse(sock: dgram.Socket, cb: ((err: Error) => void) | undefined, err: Error): void {
  if (cb) process.nextTick(cb, err);
  else process.nextTick(() => sock.emit("error", err));
}

function guardSend(orig: Fn): Fn {
  return function send(this: dgram.Socket, ...args: unknown[]) {
    const core = current();
    if (core === undefined) return Reflect.apply(orig, this, args);
    if (isConnected(this)) {
      const peer = peers.get(this) ?? remotePeer(this);
      const v = check(core, { ...peer });
      if (v === undefined) return Reflect.apply(orig, this, args);
      const cb = connectedCallback(args);
      if (v instanceof PolicyDeniedError) return refuse(this, cb, v);
      v.then(
        () => {
          try {
            Reflect.apply(orig, this, args);
          } catch (err) {
            refuse(this, cb, err as Error);
          }
        },
        (err: unknown) => refuse(this, cb, err as Error),
      );
      return undefined;
    }
    // Unconnected: Node looks the destination up within this call (or queues
    // the call until the socket is bound, and makes it again then).
    wrap(this);
    // The port as Node reads it: send(buf, offset, length, port, address, cb) or send(buf, port, address, cb).
    const [, offset, , port, address] = args;
    const p: Pending = { what: "send", sock: this, port: validPort(address || (port && typeof port !== "function") ? port : offset) };
    const outer = sending;
    sending = p;
    try {
      return Reflect.apply(orig, this, args);
    } finally {
      sending = outer;
    }
  };
}

/** remotePeer is the destination of a socket connected before the guard saw its connect. */
function remotePeer(sock: dgram.Socket): UdpTarget {
  const r = sock.remoteAddress();
  return { kind: "udp", host: normalizeHost(r.address), port: r.port };
}

function guardConnect(orig: Fn): Fn {
  return function connect(this: dgram.Socket, port: unknown, ...rest: unknown[]) {
    if (current() === undefined) return Reflect.apply(orig, this, [port, ...rest]);
    wrap(this);
    connecting.set(this, { what: "connect", sock: this, port: validPort(port) });
    try {
      return Reflect.apply(orig, this, [port, ...rest]);
    } catch (err) {
      connecting.delete(this);
      throw err;
    }
  };
}

function guardConnectSync(orig: Fn): Fn {
  return function connectSync(this: dgram.Socket, port: unknown, address: unknown) {
    const core = current();
    const p = validPort(port);
    // Node takes only an IP literal here and throws on anything else: let it.
    if (core === undefined || Number.isNaN(p) || (address != null && address !== "" && (typeof address !== "string" || isIP(address) === 0))) return Reflect.apply(orig, this, arguments);
    const host = normalizeHost(typeof address === "string" && address !== "" ? address : defaultHost(this));
    const target: UdpTarget = { kind: "udp", host, port: p };
    const v = check(core, target);
    if (v instanceof PolicyDeniedError) throw v;
    if (v !== undefined) {
      v.catch(() => {});
      throw new PolicyDeniedError(target, "an approve rule cannot hold connectSync (it returns at once); use connect()");
    }
    const r = Reflect.apply(orig, this, arguments);
    peers.set(this, target);
    return r;
  };
}

function guardBind(orig: Fn): Fn {
  return function bind(this: dgram.Socket, ...args: unknown[]) {
    if (current() === undefined) return Reflect.apply(orig, this, args);
    wrap(this);
    binding++;
    try {
      return Reflect.apply(orig, this, args);
    } finally {
      binding--;
    }
  };
}
