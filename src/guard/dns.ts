/**
 * node:dns, judged. Every DNS look-up the process makes from JavaScript is a
 * `dns` target `{ name, rrtype?, server? }`, decided before the query is
 * made: a name the policy does not allow is never asked for.
 *
 *  - `dns.lookup`, `dns.promises.lookup` (getaddrinfo, the system resolver;
 *    no record type, or "A"/"AAAA" for family 4/6): the module's functions
 *    are replaced, and Node's ESM named exports synced with them. IP
 *    literals and empty names are answered by Node without a query: not
 *    judged.
 *  - `dns.lookupService`, `dns.promises.lookupService` (getnameinfo): a PTR
 *    look-up of the address's reverse name.
 *  - every `resolve*` and `reverse` of every Resolver — `dns.resolve4` and
 *    friends (the default Resolver), `dns.promises.*`, `new dns.Resolver()`
 *    and `new dns.promises.Resolver()`, ones given their own servers with
 *    `setServers` (also `dns.setServers`): each of their queries goes through
 *    one method of Node's c-ares channel (ChannelWrap.prototype.queryA,
 *    queryTxt, ..., getHostByAddr), which is where the guard judges it, with
 *    the servers that channel will ask. A server that is not one of the
 *    system's (the servers a fresh Resolver starts with, read when the guard
 *    is installed) is named in the target, one target per such server: the
 *    policy must allow each (a `dns` rule's `server` list; without one, only
 *    the system's resolver).
 *
 * A denied look-up fails as Node fails a look-up: the callback gets the
 * PolicyDeniedError, the promise rejects with it. An approve rule holds the
 * query until a human answers.
 *
 * Look-ups that are part of another decision are not judged again: a
 * connection to a name (tcp/http/udp, already decided for that name) resolves
 * it through `lookupAsPartOf`, which marks the look-ups of that one name made
 * until the connection's look-up calls back (a module-private
 * AsyncLocalStorage: nothing outside the guard can set it); and the guard's
 * own connections (src/guard/internal.ts) resolve while `isInternalConnect()`.
 * Every other caller of `dns.lookup` is judged, including Node itself where
 * no guard decision covers the name (`server.listen(port, name)`, or a
 * connection while `intercept.net` is off).
 */

import { AsyncLocalStorage } from "node:async_hooks";
import dns from "node:dns";
import { syncBuiltinESMExports } from "node:module";
import { formatServer, reverseName } from "../policy/dns.js";
import { normalizeHost } from "../policy/hosts.js";
import { isIpLiteral } from "../policy/ip.js";
import type { DnsTarget } from "../policy/types.js";
import type { GuardCore, Verdict } from "./core.js";
import { PolicyDeniedError } from "./errors.js";
import { isInternalConnect } from "./internal.js";
import { current } from "./state.js";

type Fn = (this: unknown, ...args: unknown[]) => unknown;
type Callback = (err: Error | null, ...rest: unknown[]) => void;

/** The look-up of one name that a connection's decision covers, open until that look-up calls back. */
interface Covered {
  name: string;
  open: boolean;
}

const covered = new AsyncLocalStorage<Covered>();

/**
 * lookupAsPartOf runs `start` (which begins the look-up of `name` and calls
 * `done` once) so that the look-ups and queries of `name` it makes — through
 * `dns.lookup`, a caller-supplied lookup, or a Resolver — are part of the
 * decision already made for the call (a connection or a datagram to `name`)
 * and not judged again as dns targets. The cover ends when `done` is called;
 * look-ups of other names are judged as usual.
 */
export function lookupAsPartOf<A extends unknown[]>(name: string, start: (done: (...a: A) => void) => void, callback: (...a: A) => void): void {
  const cover: Covered = { name: normalizeHost(name), open: true };
  const done = (...a: A) => {
    cover.open = false;
    callback(...a);
  };
  try {
    covered.run(cover, () => start(done));
  } catch (err) {
    cover.open = false;
    throw err;
  }
}

/** The lookup function of a connection: net.LookupFunction's shape. */
export type LookupFn = (hostname: string, options: dns.LookupOptions, callback: (err: NodeJS.ErrnoException | null, address?: string | dns.LookupAddress[], family?: number) => void) => void;

/**
 * resolveForConnection resolves the host of a connection whose decision is
 * made (the guard's connect path): through the caller's `lookup` or, by
 * default, `dns.lookup`, without judging that look-up as a dns target.
 */
export function resolveForConnection(lookup: LookupFn | undefined, hostname: string, options: dns.LookupOptions, callback: Parameters<LookupFn>[2]): void {
  const fn = lookup ?? (dns.lookup as unknown as LookupFn);
  lookupAsPartOf(hostname, (done) => fn(hostname, options, done), callback);
}

/** partOfDecision: a look-up of `name` that another decision covers (see the file comment). */
function partOfDecision(name: string): boolean {
  if (isInternalConnect()) return true;
  const c = covered.getStore();
  return c !== undefined && c.open && c.name === normalizeHost(name);
}

interface Saved {
  obj: Record<string, unknown>;
  key: string;
  fn: Fn;
}

let saved: Saved[] | undefined;
/** The system's DNS servers ("ip" or "ip:port", as formatServer writes them), read at install. */
let systemServers: ReadonlySet<string> = new Set();

/** The c-ares channel methods every Resolver query goes through, and the record type each asks for. */
const QUERIES: Readonly<Record<string, string>> = {
  queryAny: "ANY",
  queryA: "A",
  queryAaaa: "AAAA",
  queryCaa: "CAA",
  queryCname: "CNAME",
  queryMx: "MX",
  queryNaptr: "NAPTR",
  queryNs: "NS",
  queryPtr: "PTR",
  querySoa: "SOA",
  querySrv: "SRV",
  queryTlsa: "TLSA",
  queryTxt: "TXT",
  getHostByAddr: "PTR",
};

interface Channel {
  getServers(): Array<[string, number]> | undefined;
}

/** installDnsPatch intercepts node:dns (idempotent); the patches do nothing while no guard is current. */
export function installDnsPatch(): void {
  if (saved) return;
  const probe = (new dns.Resolver() as unknown as { _handle?: object })._handle;
  const proto = probe ? (Object.getPrototypeOf(probe) as Record<string, unknown>) : undefined;
  if (!proto || typeof proto.queryA !== "function" || typeof proto.getServers !== "function") {
    throw new Error("this Node.js has no c-ares channel behind dns.Resolver (Resolver#_handle); the guard cannot judge DNS queries");
  }
  systemServers = new Set(serversOf(probe as unknown as Channel));
  const done: Saved[] = [];
  const replace = (obj: Record<string, unknown>, key: string, make: (orig: Fn) => Fn) => {
    const fn = obj[key];
    if (typeof fn !== "function") return;
    done.push({ obj, key, fn: fn as Fn });
    obj[key] = withOwnSymbols(make(fn as Fn), fn as Fn);
  };
  const promises = dns.promises as unknown as Record<string, unknown>;
  const cb = dns as unknown as Record<string, unknown>;
  replace(cb, "lookup", guardLookup);
  replace(promises, "lookup", guardLookupPromise);
  replace(cb, "lookupService", guardLookupService);
  replace(promises, "lookupService", guardLookupServicePromise);
  for (const [key, rrtype] of Object.entries(QUERIES)) replace(proto, key, (orig) => guardQuery(orig, rrtype, key === "getHostByAddr"));
  saved = done;
  // `import { lookup } from "node:dns"` binds at link time: sync those bindings with the patched functions.
  syncBuiltinESMExports();
}

export function uninstallDnsPatch(): void {
  if (!saved) return;
  for (const s of saved.reverse()) s.obj[s.key] = s.fn;
  saved = undefined;
  syncBuiltinESMExports();
}

/** withOwnSymbols gives the wrapper the original's symbol-keyed properties (util.promisify reads dns.lookup's). */
function withOwnSymbols(wrapper: Fn, orig: Fn): Fn {
  for (const s of Object.getOwnPropertySymbols(orig)) Object.defineProperty(wrapper, s, Object.getOwnPropertyDescriptor(orig, s)!);
  return wrapper;
}

function serversOf(channel: Channel): string[] {
  try {
    return (channel.getServers() ?? []).map(([ip, port]) => formatServer(ip, port));
  } catch {
    // Which servers a query would reach is unknown: name none the policy could match but "*".
    return ["unknown"];
  }
}

/** A look-up by name that Node would answer with a query: not an IP literal, not empty. */
function queried(hostname: unknown): hostname is string {
  return typeof hostname === "string" && hostname !== "" && !hostname.includes("\0") && !isIpLiteral(hostname);
}

/** The record type of a getaddrinfo look-up: A or AAAA for one family, none (both) otherwise. */
function familyType(options: unknown): string | undefined {
  const f = typeof options === "number" ? options : typeof options === "object" && options !== null ? (options as { family?: unknown }).family : undefined;
  return f === 4 || f === "IPv4" ? "A" : f === 6 || f === "IPv6" ? "AAAA" : undefined;
}

function dnsTarget(name: string, rrtype: string | undefined, server?: string): DnsTarget {
  const t: DnsTarget = { kind: "dns", name: normalizeHost(name) };
  if (rrtype !== undefined) t.rrtype = rrtype;
  if (server !== undefined) t.server = server;
  return t;
}

/** check decides the targets of one look-up; never throws (a failure to judge denies). */
function check(core: GuardCore, targets: DnsTarget[]): Verdict {
  try {
    return targets.length === 1 ? core.check(targets[0]!, "dns") : core.checkAll(targets, "dns");
  } catch (err) {
    return new PolicyDeniedError(targets[0]!, `the guard could not judge this look-up (fails closed): ${(err as Error)?.message ?? String(err)}`);
  }
}

/**
 * decide runs `go` now (allowed), after an approval (held), or not at all
 * (denied: `fail` gets the error). `go` throwing after an approval goes to
 * `fail` too. Returns go()'s result when it ran now, else `instead`.
 */
function decide<R>(v: Verdict, go: () => R, fail: (err: Error) => void, instead: R): R {
  if (v === undefined) return go();
  if (v instanceof PolicyDeniedError) {
    fail(v);
    return instead;
  }
  v.then(
    () => {
      try {
        go();
      } catch (err) {
        fail(err as Error);
      }
    },
    (err: unknown) => fail(err as Error),
  );
  return instead;
}

function guardLookup(orig: Fn): Fn {
  return function lookup(this: unknown, hostname: unknown, options: unknown, callback: unknown) {
    const core = current();
    const cb = typeof options === "function" ? options : callback;
    // Anything Node answers without a query, or rejects before one (no callback), goes to Node as it is.
    if (core === undefined || !queried(hostname) || typeof cb !== "function" || partOfDecision(hostname)) return Reflect.apply(orig, this, arguments);
    const args = [...arguments];
    const v = check(core, [dnsTarget(hostname, familyType(options))]);
    // Node calls back asynchronously, also for an error found at once.
    return decide(v, () => Reflect.apply(orig, this, args), (err) => process.nextTick(cb as Callback, err), {});
  };
}

function guardLookupPromise(orig: Fn): Fn {
  return function lookup(this: unknown, hostname: unknown, options: unknown) {
    const core = current();
    if (core === undefined || !queried(hostname) || partOfDecision(hostname)) return Reflect.apply(orig, this, arguments);
    const args = [...arguments];
    const v = check(core, [dnsTarget(hostname, familyType(options))]);
    if (v === undefined) return Reflect.apply(orig, this, args);
    if (v instanceof PolicyDeniedError) return Promise.reject(v);
    return v.then(() => Reflect.apply(orig, this, args));
  };
}

/** The reverse name getnameinfo asks for, for an address Node would look up (undefined: Node rejects it or asks nothing). */
function serviceName(address: unknown): string | undefined {
  return typeof address === "string" ? reverseName(address) : undefined;
}

function guardLookupService(orig: Fn): Fn {
  return function lookupService(this: unknown, address: unknown, port: unknown, callback: unknown) {
    const core = current();
    const name = serviceName(address);
    if (core === undefined || name === undefined || typeof callback !== "function" || arguments.length !== 3) return Reflect.apply(orig, this, arguments);
    const args = [...arguments];
    const v = check(core, [dnsTarget(name, "PTR")]);
    return decide(v, () => Reflect.apply(orig, this, args), (err) => process.nextTick(callback as Callback, err), undefined);
  };
}

function guardLookupServicePromise(orig: Fn): Fn {
  return function lookupService(this: unknown, address: unknown) {
    const core = current();
    const name = serviceName(address);
    if (core === undefined || name === undefined) return Reflect.apply(orig, this, arguments);
    const args = [...arguments];
    const v = check(core, [dnsTarget(name, "PTR")]);
    if (v === undefined) return Reflect.apply(orig, this, args);
    if (v instanceof PolicyDeniedError) return Promise.reject(v);
    return v.then(() => Reflect.apply(orig, this, args));
  };
}

/** The request object Node hands a channel query: a callback (dns.Resolver) or a promise's resolve/reject (dns.promises.Resolver). */
interface QueryReq {
  callback?: (err: Error) => void;
  reject?: (err: Error) => void;
  oncomplete?: (this: QueryReq, err: number | string) => void;
}

/** failQuery delivers a refusal where Node delivers a failed query's error. */
function failQuery(req: QueryReq, err: Error): void {
  if (typeof req.callback === "function") req.callback(err);
  else if (typeof req.reject === "function") req.reject(err);
}

/**
 * guardQuery wraps one c-ares channel method: `query(req, name)` returns 0
 * when the query is under way, or an error code Node turns into an exception.
 */
function guardQuery(orig: Fn, rrtype: string, reverse: boolean): Fn {
  return function query(this: unknown, req: unknown, name: unknown) {
    const core = current();
    if (core === undefined || typeof name !== "string" || typeof req !== "object" || req === null) return Reflect.apply(orig, this, arguments);
    // reverse(ip) asks for the address's PTR name; anything else c-ares refuses itself.
    const qname = reverse ? reverseName(name) : name;
    if (qname === undefined || partOfDecision(qname)) return Reflect.apply(orig, this, arguments);
    const targets: DnsTarget[] = [];
    let viaSystem = false;
    for (const s of new Set(serversOf(this as Channel))) {
      if (systemServers.has(s)) viaSystem = true;
      else targets.push(dnsTarget(qname, rrtype, s));
    }
    if (viaSystem || targets.length === 0) targets.unshift(dnsTarget(qname, rrtype));
    const r = req as QueryReq;
    const args = [...arguments];
    const v = check(core, targets);
    return decide(
      v,
      () => {
        const code = Reflect.apply(orig, this, args) as number;
        // Later than Node's own call: a refusal by c-ares is reported as Node reports a failed query.
        if (v !== undefined && code && typeof r.oncomplete === "function") r.oncomplete(code);
        return code;
      },
      (err) => process.nextTick(failQuery, r, err),
      0,
    );
  };
}
