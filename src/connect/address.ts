/**
 * The two kinds of address `connect` reads: a tailnet target ("gateway:80",
 * "gateway.tailnet.internal:443", "100.64.0.7:80", "[fd7a:115c::7]:80") and
 * a local listen address ("127.0.0.1:8080", "[::1]:0", "localhost:8080", or
 * a bare port meaning 127.0.0.1). Each parser returns the parts or a
 * sentence saying what is wrong, for the options schema to report.
 */

import net from "node:net";

export interface HostPort {
  host: string;
  port: number;
}

/** A DNS name as MagicDNS accepts it: labels of letters, digits and '-', dot-separated. */
const dnsName = /^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*\.?$/i;

/** splitAddress splits "host:port" or "[v6]:port"; the port is the digits after the last colon. */
function splitAddress(text: string): { host: string; port: string } | undefined {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(text) ?? /^([^:[\]]+):(\d+)$/.exec(text);
  return m ? { host: m[1]!, port: m[2]! } : undefined;
}

/** parseTarget reads a tailnet target: a MagicDNS name (short or full) or tailnet IP, and a port 1-65535. */
export function parseTarget(text: string): HostPort | string {
  const parts = splitAddress(text);
  if (!parts) return `must be HOST:PORT with a tailnet host (a MagicDNS name or tailnet IP), e.g. gateway:80; got ${JSON.stringify(text)}`;
  const port = Number(parts.port);
  if (port < 1 || port > 65535) return `port must be 1-65535, got ${parts.port}`;
  if (net.isIP(parts.host) === 0 && !dnsName.test(parts.host)) return `${JSON.stringify(parts.host)} is neither a MagicDNS name nor an IP address`;
  return { host: parts.host, port };
}

/** parseListen reads a local listen address: an IP literal or "localhost" and a port 0-65535 (0: the system picks one); a bare port means 127.0.0.1. */
export function parseListen(text: string): HostPort | string {
  const parts = /^\d+$/.test(text) ? { host: "127.0.0.1", port: text } : splitAddress(text);
  if (!parts) return `must be HOST:PORT or PORT, e.g. 127.0.0.1:8080 (port 0 picks a free one); got ${JSON.stringify(text)}`;
  const port = Number(parts.port);
  if (port > 65535) return `port must be 0-65535, got ${parts.port}`;
  // "localhost" is the one name allowed: it is loopback by definition, and
  // binding 127.0.0.1 for it does not depend on the resolver's answer order.
  const host = parts.host.toLowerCase() === "localhost" ? "127.0.0.1" : parts.host;
  if (net.isIP(host) === 0) return `listen host must be an IP address of this machine (or localhost), got ${JSON.stringify(parts.host)}`;
  return { host, port };
}

/** LOOPBACK holds 127.0.0.0/8 and ::1; BlockList also matches their other spellings (::ffff:127.0.0.1, 0:0:0:0:0:0:0:1). */
const LOOPBACK = new net.BlockList();
LOOPBACK.addSubnet("127.0.0.0", 8, "ipv4");
LOOPBACK.addAddress("::1", "ipv6");

/** isLoopback tells whether an IP address is one only this machine can reach. */
export function isLoopback(ip: string): boolean {
  const family = net.isIP(ip);
  return family !== 0 && LOOPBACK.check(ip, family === 6 ? "ipv6" : "ipv4");
}

/** formatHostPort writes host and port back as "host:port", bracketing an IPv6 address. */
export function formatHostPort(host: string, port: number): string {
  return `${net.isIPv6(host) ? `[${host}]` : host}:${port}`;
}

/** urlHost is the host to put in a URL for a listener bound to `host`: a wildcard bind is reached at loopback. */
export function urlHost(host: string): string {
  if (host === "0.0.0.0") return "127.0.0.1";
  if (host === "::" || host === "::0") return "[::1]";
  return net.isIPv6(host) ? `[${host}]` : host;
}
