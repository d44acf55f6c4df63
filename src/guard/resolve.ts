/**
 * Names and addresses: the one place the guard turns a host name into the
 * address a connection goes to, and decides whether that address may be
 * used for that name.
 *
 * - A connection by name is judged with the address it resolved to
 *   (`resolvedIp`), and goes to that address and no other: the guard hands
 *   Node exactly one address, the one judged (pinned).
 * - Who resolves: the caller's own `lookup` when the call has one (what it
 *   answers is judged like any answer), else the guard's resolver —
 *   `installGuard({ resolver })` for service discovery, by default the
 *   system's (getaddrinfo, as Node's own connections use). Answers of the
 *   guard's resolver are remembered for PIN_TTL_MS, so that an HTTP request
 *   judged with an address (fetch resolves before it dispatches) and the
 *   connection undici opens for it a moment later agree.
 * - `localhost` (and `*.localhost`) is loopback only: any other answer is
 *   refused. Any other name that resolves to a loopback, link-local (cloud
 *   metadata) or unspecified address is refused unless `allowResolved`
 *   says yes (DNS rebinding).
 *
 * The guard's own look-ups are not `dns` targets: they are part of the
 * connection's decision. They call the system resolver captured when this
 * module loaded, before any interception is installed.
 */

import dns from "node:dns";
import { normalizeHost } from "../policy/hosts.js";
import { ipFamily, ipRange } from "../policy/ip.js";
import type { GuardCore } from "./core.js";

/** One address a name resolved to. */
export interface Resolved {
  address: string;
  family: 4 | 6;
}

/**
 * Resolver is the guard's resolver (GuardOptions.resolver): every address
 * `hostname` has, best first; `family` 4 or 6 asks for that family only
 * (0: either). It may return the list or a Promise of it.
 */
export type Resolver = (hostname: string, opts: { family: 0 | 4 | 6 }) => Promise<ReadonlyArray<{ address: string; family?: number }>> | ReadonlyArray<{ address: string; family?: number }>;

/** A `lookup` function as net.connect and http.request take it. */
export type LookupFn = (hostname: string, options: dns.LookupOptions, cb: (err: Error | null, address?: string | dns.LookupAddress[], family?: number) => void) => void;

const systemLookup = dns.lookup;

/** The default resolver: the system's, with the hints Node's connections use. */
function systemResolve(hostname: string, family: 0 | 4 | 6): Promise<dns.LookupAddress[]> {
  return new Promise((resolve, reject) => {
    systemLookup(hostname, { all: true, family, ...(family === 0 ? { hints: dns.ADDRCONFIG } : {}) }, (err, addrs) => (err ? reject(err) : resolve(addrs)));
  });
}

/** How long an answer of the guard's resolver is reused. */
const PIN_TTL_MS = 15_000;
const MAX_PINS = 1024;

interface Pin {
  list: Resolved[];
  expires: number;
}

/** Answers of the guard's resolver, per guard (a new guard, or a new resolver, starts empty). */
const pinsOf = new WeakMap<GuardCore, Map<string, Pin>>();

function pins(core: GuardCore): Map<string, Pin> {
  let m = pinsOf.get(core);
  if (m === undefined) pinsOf.set(core, (m = new Map()));
  return m;
}

/** pinned is the guard resolver's remembered answer for a name, if it is still fresh (no look-up). */
export function pinned(core: GuardCore, hostname: string, family: 0 | 4 | 6 = 0): Resolved[] | undefined {
  const p = pins(core).get(`${family}|${hostname}`);
  if (p === undefined) return undefined;
  if (p.expires < Date.now()) {
    pins(core).delete(`${family}|${hostname}`);
    return undefined;
  }
  return p.list;
}

/** resolveName asks the guard's resolver (or uses its remembered answer) for every address of `hostname`. */
export async function resolveName(core: GuardCore, hostname: string, family: 0 | 4 | 6 = 0): Promise<Resolved[]> {
  const hit = pinned(core, hostname, family);
  if (hit !== undefined) return hit;
  const raw = core.resolver !== undefined ? await core.resolver(hostname, { family }) : await systemResolve(hostname, family);
  const list = toResolved(raw, hostname);
  const m = pins(core);
  if (m.size >= MAX_PINS) m.delete(m.keys().next().value!);
  m.set(`${family}|${hostname}`, { list, expires: Date.now() + PIN_TTL_MS });
  return list;
}

/**
 * callerLookup calls a caller-supplied `lookup` once and reads its answer,
 * whatever shape it has: an error, one address, or a list. A second
 * callback, a throw or an answer that is not an IP address fails the call.
 */
export function callerLookup(lookup: LookupFn, hostname: string, opts: dns.LookupOptions): Promise<Resolved[]> {
  return new Promise((resolve, reject) => {
    let done = false;
    const cb = (err: Error | null, address?: unknown, family?: unknown) => {
      if (done) return;
      done = true;
      if (err) return reject(err instanceof Error ? err : new Error(`lookup ${hostname} failed: ${String(err)}`));
      try {
        const list = Array.isArray(address) ? address : [{ address, family }];
        resolve(toResolved(list, hostname));
      } catch (e) {
        reject(e);
      }
    };
    try {
      lookup(hostname, { ...opts, all: true }, cb as Parameters<LookupFn>[2]);
    } catch (err) {
      // A lookup that throws fails this connection, not the process.
      cb(err instanceof Error ? err : new Error(`lookup ${hostname} threw: ${String(err)}`));
    }
  });
}

/** toResolved validates an answer: IP literals only, at least one. */
function toResolved(raw: unknown, hostname: string): Resolved[] {
  if (!Array.isArray(raw)) throw notFound(hostname, "answered no list of addresses");
  const out: Resolved[] = [];
  for (const a of raw as unknown[]) {
    const address = typeof a === "object" && a !== null ? (a as { address?: unknown }).address : undefined;
    if (typeof address !== "string" || ipFamily(address) === 0) throw notFound(hostname, `answered ${describe(address)}, which is not an IP address`);
    out.push({ address, family: ipFamily(address) as 4 | 6 });
  }
  if (out.length === 0) throw notFound(hostname, "returned no address");
  return out;
}

function describe(v: unknown): string {
  if (typeof v === "string") return JSON.stringify(v.slice(0, 64));
  return typeof v;
}

function notFound(hostname: string, what: string): Error {
  return Object.assign(new Error(`lookup ${hostname} ${what}`), { code: "ENOTFOUND", hostname });
}

/**
 * refusedAddress says why `host` may not be used at `ip` (see the file
 * comment), or undefined when it may. Checked for every address of an
 * answer: a mixed answer (a public address and 127.0.0.1) is refused whole.
 */
export function refusedAddress(core: GuardCore, host: string, ip: string): string | undefined {
  const h = normalizeHost(host);
  const range = ipRange(ip);
  if (h === "localhost" || h.endsWith(".localhost")) {
    return range === "loopback" ? undefined : `${host} is loopback only, but resolves to ${ip}`;
  }
  if (range !== "loopback" && range !== "linkLocal" && range !== "unspecified") return undefined;
  if (core.allowResolved !== undefined) {
    try {
      if (core.allowResolved(host, ip) === true) return undefined;
    } catch {
      // a throwing allowResolved allows nothing
    }
  }
  return `${host} resolves to ${ip}, a loopback, link-local or unspecified address (possible DNS rebinding); allow it with installGuard({ allowResolved })`;
}
