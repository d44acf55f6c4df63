/**
 * Host patterns: what a rule's `host` list can say, classified once so the
 * compiler can index exact names and wildcard suffixes and keep only the
 * rest (addresses, peer tags, `*`) for a per-request check.
 */

import { parseCidr, type Cidr } from "./ip.js";
import { TAG_RE } from "./schema.js";

export type HostPattern =
  | { kind: "any" }
  | { kind: "exact"; host: string }
  /** `*.example.com`: any name ending in ".example.com" (one or more labels), never the apex. */
  | { kind: "suffix"; suffix: string }
  | { kind: "cidr"; cidr: Cidr }
  /** A tailnet peer carrying this tag. */
  | { kind: "peerTag"; tag: string };

const NAME_RE = /^[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*$/;

/** parseHostPattern classifies a pattern, or returns why it is not one. */
export function parseHostPattern(p: string): HostPattern | string {
  if (p === "*") return { kind: "any" };
  if (TAG_RE.test(p)) return { kind: "peerTag", tag: p };
  if (/^[\d.]+(\/\d+)?$/.test(p) || p.includes(":")) {
    const cidr = parseCidr(p);
    return cidr ? { kind: "cidr", cidr } : `not a valid IP address or CIDR range (e.g. "10.0.0.0/8", "192.0.2.7", "fd7a:115c:a1e0::/48")`;
  }
  const name = p.endsWith(".") ? p.slice(0, -1) : p;
  if (name.startsWith("*.") && NAME_RE.test(name.slice(2))) return { kind: "suffix", suffix: name.slice(2) };
  if (name.includes("*")) return `a wildcard must be the whole first label, as in "*.example.com"`;
  if (NAME_RE.test(name)) return { kind: "exact", host: name };
  return `not a host name: use lower-case letters, digits, "-" and ".", "*.example.com" for subdomains, an IP/CIDR, "tag:x" for tailnet peers, or "*"`;
}

/** normalizeHost lower-cases a host and drops a trailing dot and IPv6 brackets, as the compiled index expects. */
export function normalizeHost(h: string): string {
  let s = hasUpperCase(h) ? h.toLowerCase() : h; // toLowerCase copies even a lower-case string (V8): look first
  if (s.charCodeAt(0) === 91 /* [ */ && s.charCodeAt(s.length - 1) === 93 /* ] */) s = s.slice(1, -1);
  if (s.charCodeAt(s.length - 1) === 46 /* . */) s = s.slice(0, -1);
  return s;
}

/** hasUpperCase is true when toLowerCase could change s (an ASCII capital, or any non-ASCII character). */
function hasUpperCase(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if ((c >= 65 && c <= 90) || c > 127) return true;
  }
  return false;
}
