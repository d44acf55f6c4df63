/**
 * Does a token's `authorization_details` cover one request? The verifier's
 * side of the action language of types.ts: a detail covers a request when
 * its `actions` hold the method (or "*") and one of its `locations` matches
 * the request URL — the same origin (scheme, host, port exact, the default
 * port left out) and a path the glob matches, where `*` matches within one
 * segment and `**` (two or more `*`) across segments.
 *
 * The URL compared is the service's own origin (the verifier's `origin`
 * option, never the request's Host header, which the caller writes) plus
 * the request path as sent. A path whose text changes when parsed as a URL
 * (dot segments, `%2e`, characters a client must percent-encode) is refused
 * by the caller of `pathOf`: the check must look at the path the server's
 * router sees. A path holding an encoded "/" or "\" (`%2F`, `%5C`), which a
 * router may decode into a separator, matches only a location with the same
 * literal path (no glob): src/policy/location.ts, compileLocation.
 */

import { compileLocation, parseLocation, type UrlParts } from "../policy/index.js";
import { BoundedCache } from "./bounded-cache.js";
import { HTTP_DETAIL_TYPE } from "./types.js";

/** A compiled grant: does it cover `method` on `path` (of the verifier's origin)? */
export type GrantCheck = (method: string, path: string) => boolean;

/** canonicalOrigin normalizes an origin as token locations write it ("HTTP://Billing:80" → "http://billing"); undefined if it is not one. */
export function canonicalOrigin(origin: string): string | undefined {
  const l = parseLocation(`${origin.replace(/\/$/, "")}/`);
  return typeof l === "string" ? undefined : l.origin;
}

/**
 * compileGrant compiles the details of a token for one origin with the
 * policy's location matcher (the issuer grants with the same language, so
 * both sides read a location the same way). Locations of other origins can
 * never match a request to this service and are dropped; details of another
 * `type`, and locations that do not parse, grant nothing.
 */
export function compileGrant(details: unknown, origin: string): GrantCheck {
  // Methods as an array: a token names one to a few, where includes() is as fast as a Set and costs no Set to build.
  const rules: { methods: readonly string[] | "*"; match: (u: UrlParts) => boolean }[] = [];
  let base: Omit<UrlParts, "path"> | undefined;
  if (Array.isArray(details)) {
    for (const d of details as Record<string, unknown>[]) {
      if (typeof d !== "object" || d === null || d.type !== HTTP_DETAIL_TYPE || !Array.isArray(d.actions) || !Array.isArray(d.locations)) continue;
      const all = d.actions as unknown[];
      // A copy: the claims' arrays are the handler's to read (and mutate); what is checked must not change.
      const methods = all.includes("*") ? "*" : all.every((a) => typeof a === "string") ? (all.slice() as string[]) : all.filter((a): a is string => typeof a === "string");
      for (const loc of d.locations as unknown[]) {
        if (typeof loc !== "string") continue;
        const c = compiled(loc);
        if (c === null || c.origin !== origin) continue;
        base ??= c.base;
        rules.push({ methods, match: c.match });
      }
    }
  }
  return (method, path) => {
    if (base === undefined) return false;
    const url: UrlParts = { scheme: base.scheme, host: base.host, port: base.port, path };
    for (const r of rules) if ((r.methods === "*" || r.methods.includes(method)) && r.match(url)) return true;
    return false;
  };
}

interface CompiledLocation {
  origin: string;
  base: Omit<UrlParts, "path">;
  match: (u: UrlParts) => boolean;
}

/**
 * Compiled locations by text. The tokens of one agent (and of one task)
 * repeat the same few locations; compiling one costs a RegExp, several
 * times a table look-up, so a first verify of a token whose locations were
 * seen before compiles nothing. Bounded; the oldest entry goes first.
 */
const locationCache = new BoundedCache<string, CompiledLocation | null>(4096);

function compiled(text: string): CompiledLocation | null {
  let c = locationCache.get(text);
  if (c === undefined) {
    const l = parseLocation(text);
    c = typeof l === "string" ? null : { origin: l.origin, base: { scheme: l.scheme, host: l.host, port: l.port }, match: compileLocation(l) };
    locationCache.set(text, c);
  }
  return c;
}

/**
 * pathOf returns the path of an origin-form request target (`/a/b?q`) as the
 * check compares it, or undefined when the target is not in that form or its
 * path is not already in the form a URL parser gives (dot segments, `%2e`
 * segments, backslashes, characters that must be percent-encoded).
 */
export function pathOf(target: string): string | undefined {
  if (!target.startsWith("/") || target.startsWith("//")) return undefined;
  const q = target.indexOf("?");
  const raw = q < 0 ? target : target.slice(0, q);
  // Fast path: only characters a URL path carries as they are (no "%", no "\\"), and no dot segment:
  // the URL parser would return it unchanged.
  if (PLAIN_PATH.test(raw) && !DOT_SEGMENT.test(raw)) return raw;
  let parsed: string;
  try {
    parsed = new URL(raw, "http://x").pathname;
  } catch {
    return undefined;
  }
  return parsed === raw ? raw : undefined;
}

const PLAIN_PATH = /^[A-Za-z0-9\-._~!$&'()*+,;=:@/]*$/;
const DOT_SEGMENT = /\/\.{1,2}(?:\/|$)/;
