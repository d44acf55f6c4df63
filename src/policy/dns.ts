/**
 * The DNS vocabulary of the policy (format version 2): record types, name
 * patterns, DNS server patterns, the server a query goes to, and the name a
 * reverse look-up asks for. One place, read by the schema, the compiler and
 * the guard, so a rule and the look-up it judges spell a server the same way.
 */

import { cidrContains, ipFamily, parseCidr, type Cidr } from "./ip.js";
import { parseHostPattern, type HostPattern } from "./hosts.js";

export { RRTYPES, type RrType } from "./schema.js";

/** The port a DNS server listens on unless told otherwise (Node's getServers() leaves it out). */
export const DNS_PORT = 53;

/** A name pattern of a `dns` rule: `*`, an exact name, or `*.example.com` (subdomains, never the apex). */
export type DnsNamePattern = Extract<HostPattern, { kind: "any" | "exact" | "suffix" }>;

/** parseDnsNamePattern classifies a name pattern, or returns why it is not one. */
export function parseDnsNamePattern(p: string): DnsNamePattern | string {
  const hp = parseHostPattern(p);
  if (typeof hp !== "string" && (hp.kind === "any" || hp.kind === "exact" || hp.kind === "suffix")) return hp;
  if (typeof hp !== "string" && hp.kind === "cidr") {
    return `an address is never looked up: a dns rule names names ("api.example.com", "*.example.com", "*"); a reverse look-up asks for "4.3.2.1.in-addr.arpa"`;
  }
  return `not a DNS name pattern: use lower-case letters, digits, "-", "_" and ".", "*.example.com" for subdomains, or "*"`;
}

/**
 * A server pattern of a `dns` rule: "system" (the system's resolver, the
 * default), "*" (any server), or an address or CIDR range with an optional
 * port ("192.0.2.53", "127.0.0.1:5353", "10.0.0.0/8", "[2001:db8::53]:5353";
 * no port means 53).
 */
export type ServerPattern = { kind: "system" } | { kind: "any" } | { kind: "addr"; cidr: Cidr; port: number };

const BRACKETED = /^\[([^\]]+)\]:(\d{1,5})$/;
const V4_PORT = /^([\d.]+(?:\/\d{1,2})?):(\d{1,5})$/;

function portOf(s: string): number | undefined {
  const n = Number(s);
  return n >= 1 && n <= 65535 ? n : undefined;
}

/** splitServer reads "addr", "addr:port" (IPv4) or "[addr]:port" into the address part (maybe a CIDR) and the port. */
function splitServer(s: string): { addr: string; port: number } | undefined {
  const b = BRACKETED.exec(s);
  if (b) {
    const port = portOf(b[2]!);
    return port === undefined ? undefined : { addr: b[1]!, port };
  }
  const v4 = V4_PORT.exec(s);
  if (v4) {
    const port = portOf(v4[2]!);
    return port === undefined ? undefined : { addr: v4[1]!, port };
  }
  return { addr: s, port: DNS_PORT };
}

const SERVER_HELP = `a DNS server is "system", "*", an address or CIDR range with an optional port: "192.0.2.53", "127.0.0.1:5353", "10.0.0.0/8", "[2001:db8::53]:5353" (no port: 53)`;

/** parseServerPattern classifies a server pattern, or returns why it is not one. */
export function parseServerPattern(s: string): ServerPattern | string {
  if (s === "system") return { kind: "system" };
  if (s === "*") return { kind: "any" };
  const parts = splitServer(s);
  const cidr = parts ? parseCidr(parts.addr) : undefined;
  if (!parts || !cidr) return `not a DNS server: ${SERVER_HELP}`;
  return { kind: "addr", cidr, port: parts.port };
}

/** A DNS server a query goes to. */
export interface ServerAddress {
  ip: string;
  port: number;
}

/** parseServer reads a target's `server` ("192.0.2.53", "127.0.0.1:5353", "[::1]:5353"); undefined when it is not one address. */
export function parseServer(s: string): ServerAddress | undefined {
  const parts = splitServer(s);
  if (!parts || ipFamily(parts.addr) === 0) return undefined;
  return { ip: parts.addr, port: parts.port };
}

/** formatServer writes a server as Node's `getServers()` does: the port only when it is not 53, IPv6 then in brackets. */
export function formatServer(ip: string, port: number): string {
  if (port === DNS_PORT) return ip;
  return ip.includes(":") ? `[${ip}]:${port}` : `${ip}:${port}`;
}

/** serverMatches tells whether a query to `server` (undefined: the system's resolver) is one the pattern names. */
export function serverMatches(p: ServerPattern, server: string | undefined): boolean {
  if (p.kind === "any") return true;
  if (p.kind === "system") return server === undefined;
  if (server === undefined) return false;
  const a = parseServer(server);
  return a !== undefined && a.port === p.port && cidrContains(p.cidr, a.ip);
}

/**
 * reverseName is the name a reverse look-up of `ip` asks for:
 * "4.3.2.1.in-addr.arpa" for 1.2.3.4, the nibbles of the address under
 * "ip6.arpa" for IPv6. Undefined for a string that is not an address.
 */
export function reverseName(ip: string): string | undefined {
  const f = ipFamily(ip);
  if (f === 4) return `${ip.split(".").reverse().join(".")}.in-addr.arpa`;
  if (f !== 6) return undefined;
  const groups = expandIpv6(ip.includes("%") ? ip.slice(0, ip.indexOf("%")) : ip);
  if (!groups) return undefined;
  const nibbles = groups.map((g) => g.toString(16).padStart(4, "0")).join("");
  return `${[...nibbles].reverse().join(".")}.ip6.arpa`;
}

/** expandIpv6 turns an IPv6 literal (with "::" and an embedded IPv4 tail allowed) into its eight 16-bit groups. */
function expandIpv6(ip: string): number[] | undefined {
  let s = ip.toLowerCase();
  const tail = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(s);
  if (tail) {
    const b = tail.slice(1).map(Number);
    s = `${s.slice(0, tail.index)}${((b[0]! << 8) | b[1]!).toString(16)}:${((b[2]! << 8) | b[3]!).toString(16)}`;
  }
  const halves = s.split("::");
  if (halves.length > 2) return undefined;
  const head = halves[0] ? halves[0].split(":") : [];
  const rest = halves.length === 2 && halves[1] ? halves[1].split(":") : [];
  const fill = halves.length === 2 ? 8 - head.length - rest.length : 0;
  const all = [...head, ...Array<string>(Math.max(0, fill)).fill("0"), ...rest];
  if (all.length !== 8) return undefined;
  return all.map((g) => parseInt(g, 16));
}
