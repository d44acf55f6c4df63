/**
 * The one place meshguard reads IP addresses: which strings are address
 * literals, which range an address is in, and whether it lies in a CIDR
 * range. Built on Node's own parser and matcher (`net.isIP`,
 * `net.BlockList`), so the guard and the policy engine agree with what
 * Node's connection path does with the same string:
 *
 * - A literal is what `net.isIP` accepts (canonical dotted-quad IPv4, any
 *   IPv6 form, a zone suffix allowed). Shorthand such as "127.1" or
 *   "0x7f.0.0.1" is NOT a literal: Node hands it to the resolver like a
 *   name, and the guard judges it as one.
 * - An IPv4-mapped IPv6 address (::ffff:10.0.0.1) is the IPv4 address it
 *   carries: BlockList matches it against IPv4 ranges, so a rule about
 *   10.0.0.0/8 cannot be sidestepped by writing the address in IPv6.
 */

import { BlockList, isIP } from "node:net";

/** ipFamily is 4 or 6 for an IP literal (a zone suffix "%eth0" is allowed), 0 for anything else. */
export function ipFamily(s: string): 0 | 4 | 6 {
  return isIP(s) as 0 | 4 | 6;
}

/** isIpLiteral tells whether a host is an IP address rather than a name. */
export function isIpLiteral(s: string): boolean {
  return isIP(s) !== 0;
}

/** BlockList does not take zone suffixes; the zone does not change which range an address is in. */
function bare(ip: string): string {
  const pct = ip.indexOf("%");
  return pct < 0 ? ip : ip.slice(0, pct);
}

/** A compiled CIDR range ("10.0.0.0/8", "fd7a::/48", or one address). */
export interface Cidr {
  /** As written in the policy. */
  text: string;
  address: string;
  prefix: number;
  family: 4 | 6;
  /** The range as a BlockList (Node's matcher). */
  readonly list: BlockList;
}

/** parseCidr reads "10.0.0.0/8", "fd7a::/48" or a bare address (a /32 or /128); undefined if invalid. */
export function parseCidr(s: string): Cidr | undefined {
  const slash = s.indexOf("/");
  const address = slash < 0 ? s : s.slice(0, slash);
  if (address.includes("%")) return undefined; // a zone makes no sense in a policy range
  const family = ipFamily(address);
  if (family === 0) return undefined;
  const max = family === 4 ? 32 : 128;
  let prefix = max;
  if (slash >= 0) {
    const p = s.slice(slash + 1);
    if (!/^\d{1,3}$/.test(p) || Number(p) > max) return undefined;
    prefix = Number(p);
  }
  const list = new BlockList();
  list.addSubnet(address, prefix, family === 4 ? "ipv4" : "ipv6");
  return { text: s, address, prefix, family, list };
}

/** cidrContains tells whether the IP literal `ip` lies in `c` (false for a non-literal). */
export function cidrContains(c: Cidr, ip: string): boolean {
  const f = ipFamily(ip);
  if (f === 0) return false;
  return c.list.check(bare(ip), f === 4 ? "ipv4" : "ipv6");
}

/** IpRange names the special-purpose ranges the guard and the gateway care about. */
export type IpRange = "unspecified" | "loopback" | "linkLocal" | "private" | "tailnet" | "multicast" | "public";

// First match wins: the tailnet ULA prefix lies inside fc00::/7, so "tailnet" comes before "private".
const RANGES: Array<[IpRange, Array<[string, number, "ipv4" | "ipv6"]>]> = [
  ["unspecified", [["0.0.0.0", 8, "ipv4"], ["::", 128, "ipv6"]]],
  ["loopback", [["127.0.0.0", 8, "ipv4"], ["::1", 128, "ipv6"]]],
  // 169.254.169.254 (cloud metadata) is link-local.
  ["linkLocal", [["169.254.0.0", 16, "ipv4"], ["fe80::", 10, "ipv6"]]],
  // Tailscale's ranges: CGNAT space and its ULA prefix.
  ["tailnet", [["100.64.0.0", 10, "ipv4"], ["fd7a:115c:a1e0::", 48, "ipv6"]]],
  ["private", [["10.0.0.0", 8, "ipv4"], ["172.16.0.0", 12, "ipv4"], ["192.168.0.0", 16, "ipv4"], ["fc00::", 7, "ipv6"]]],
  ["multicast", [["224.0.0.0", 4, "ipv4"], ["ff00::", 8, "ipv6"]]],
];
const LISTS: Array<[IpRange, BlockList]> = RANGES.map(([name, subnets]) => {
  const l = new BlockList();
  for (const [a, p, f] of subnets) l.addSubnet(a, p, f);
  return [name, l];
});

/** ipRange classifies an IP literal; undefined for a string that is not one. */
export function ipRange(ip: string): IpRange | undefined {
  const f = ipFamily(ip);
  if (f === 0) return undefined;
  const a = bare(ip);
  const type = f === 4 ? "ipv4" : "ipv6";
  for (const [name, list] of LISTS) if (list.check(a, type)) return name;
  return "public";
}
