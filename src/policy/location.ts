/**
 * Token locations: `scheme://host[:port]/path-glob`, the URLs an access
 * token's actions apply to (RFC 9396 `locations`). Scheme, host and port are
 * exact (the host lower-case, the scheme's default port left out); the path
 * is a glob of ./contain.ts (`*` within one segment, `**` across segments).
 *
 * Invariant: a parsed location's text is canonical — two locations that
 * match the same URLs after parsing have the same `origin` and, when their
 * paths are equal as strings, the same text — so the issuer can compare
 * granted and requested locations as strings after parseLocation.
 */

import { compileGlob, globContains, globsOverlap, MAX_GLOB_LENGTH, type GlobAnswer } from "./contain.js";
import { normalizeHost } from "./hosts.js";

export interface Location {
  scheme: "http" | "https";
  /** Lower-case; an IPv6 literal without brackets. */
  host: string;
  port: number;
  /** "scheme://host[:port]" with the default port left out. */
  origin: string;
  /** The path glob, starting with "/". */
  path: string;
  /** The canonical text: origin + path. */
  text: string;
}

const HOST_RE = /^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*|\[[0-9a-f:.]+\])$/;
/** Path characters a URL carries unencoded (RFC 3986 pchar and "/"), plus `*` for globs. */
const PATH_RE = /^\/[A-Za-z0-9\-._~!$&'()*+,;=:@%/]*$/;

/** parseLocation reads a location, or returns a message saying what is wrong with it. */
export function parseLocation(text: string): Location | string {
  if (typeof text !== "string" || text.length === 0) return "a location must be a non-empty string";
  if (text.length > MAX_GLOB_LENGTH) return `a location is at most ${MAX_GLOB_LENGTH} characters`;
  const m = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/?#]*)(.*)$/.exec(text);
  if (!m) return `"${text}" is not a location: write scheme://host/path, e.g. "https://billing/v2/transactions/*"`;
  const scheme = m[1]!.toLowerCase();
  if (scheme !== "http" && scheme !== "https") return `"${text}": the scheme must be http or https`;
  const authority = m[2]!;
  if (authority.includes("@")) return `"${text}": a location carries no user name or password`;
  const hp = /^(\[[^\]]*\]|[^:]*)(?::(\d{1,5}))?$/.exec(authority);
  const rawHost = hp?.[1] ?? "";
  if (!hp || rawHost === "") return `"${text}": expected a host, and optionally ":port", after "${scheme}://"`;
  if (rawHost.includes("*")) return `"${text}": the host is exact (no "*"): list each host as a location of its own`;
  const host = rawHost.toLowerCase();
  if (!HOST_RE.test(host)) return `"${text}": "${rawHost}" is not a host name or IP address`;
  const defaultPort = scheme === "https" ? 443 : 80;
  const port = hp[2] !== undefined ? Number(hp[2]) : defaultPort;
  if (!(port >= 1 && port <= 65535)) return `"${text}": ports are 1-65535`;
  const path = m[3] === "" ? "/" : m[3]!;
  if (!path.startsWith("/")) return `"${text}": the path must start with "/"`;
  if (path.includes("?") || path.includes("#")) return `"${text}": a location is a path without query or fragment`;
  if (!PATH_RE.test(path)) return `"${text}": the path has characters a URL must percent-encode (spaces, non-ASCII, quotes): percent-encode them`;
  const segs = path.split("/").slice(1);
  if (segs.some((s) => s === "." || s === "..")) return `"${text}": "." and ".." segments are not allowed (clients resolve them before sending)`;
  if (segs.slice(0, -1).some((s) => s === "")) return `"${text}": empty path segments ("//") are not allowed`;
  // `host` keeps the brackets of an IPv6 literal; the stored host drops them (as normalizeHost does).
  const origin = `${scheme}://${host}${port === defaultPort ? "" : `:${port}`}`;
  return { scheme, host: normalizeHost(host), port, origin, path, text: origin + path };
}

/** locationContains: does every URL `inner` matches also match `outer`? (Same origin, and the path glob contained.) */
export function locationContains(outer: Location, inner: Location): GlobAnswer {
  if (outer.origin !== inner.origin) return { answer: false, witness: inner.text.replace(/\*+/g, "x") };
  const r = globContains(outer.path, inner.path);
  return r.witness === undefined ? r : { answer: r.answer, witness: inner.origin + r.witness };
}

/** locationsOverlap: is there a URL both locations match? */
export function locationsOverlap(a: Location, b: Location): GlobAnswer {
  if (a.origin !== b.origin) return { answer: false };
  const r = globsOverlap(a.path, b.path);
  return r.witness === undefined ? r : { answer: r.answer, witness: a.origin + r.witness };
}

/** What a request URL is compared with: its parts as the WHATWG URL parser gives them. */
export interface UrlParts {
  scheme: string;
  host: string;
  port: number;
  /** The path as sent, dot segments resolved (no query). */
  path: string;
}

/**
 * compileLocation returns a matcher of concrete request URLs. The path is
 * compared as sent (no percent-decoding), with one exception that fails
 * closed: a path holding an encoded "/" or "\" (`%2F`, `%5C`), which servers
 * may decode into a separator, matches only a location whose path is the
 * same literal text.
 */
export function compileLocation(loc: Location): (url: UrlParts) => boolean {
  const glob = compileGlob(loc.path);
  const literal = !loc.path.includes("*");
  return (u) => {
    if (u.scheme !== loc.scheme || u.port !== loc.port || normalizeHost(u.host) !== loc.host) return false;
    if (/%2f|%5c/i.test(u.path)) return literal && u.path === loc.path;
    return glob(u.path);
  };
}

/** urlParts reads a URL (string or URL) into UrlParts; undefined for a URL that is not http(s). */
export function urlParts(url: string | URL): UrlParts | undefined {
  let u: URL;
  try {
    u = typeof url === "string" ? new URL(url) : url;
  } catch {
    return undefined;
  }
  if (u.protocol !== "http:" && u.protocol !== "https:") return undefined;
  const scheme = u.protocol.slice(0, -1);
  return { scheme, host: u.hostname, port: u.port ? Number(u.port) : scheme === "https" ? 443 : 80, path: u.pathname || "/" };
}
