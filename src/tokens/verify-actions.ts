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
 * literal path (no glob), as the issuer's matcher does.
 */

import { HTTP_DETAIL_TYPE } from "./types.js";

/** A compiled grant: does it cover `method` on `path` (of the verifier's origin)? */
export type GrantCheck = (method: string, path: string) => boolean;

function globToRegExp(glob: string): RegExp {
  let re = "^";
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c !== "*") {
      re += /[.+?^${}()|[\]\\/]/.test(c) ? `\\${c}` : c;
      continue;
    }
    let j = i;
    while (glob[j + 1] === "*") j++;
    re += j > i ? "[\\s\\S]*" : "[^/]*";
    i = j;
  }
  return new RegExp(re + "$");
}

/** The origin part of a location: "scheme://host[:port]" lower-cased, default port dropped; undefined if not a location. */
export function splitLocation(location: string): { origin: string; path: string } | undefined {
  const m = /^(https?):\/\/([^/?#@]+)(\/[^?#]*)?$/i.exec(location);
  if (!m) return undefined;
  const scheme = m[1]!.toLowerCase();
  let host = m[2]!.toLowerCase();
  const dflt = scheme === "https" ? ":443" : ":80";
  if (host.endsWith(dflt)) host = host.slice(0, -dflt.length);
  return { origin: `${scheme}://${host}`, path: m[3] ?? "/" };
}

/** canonicalOrigin normalizes an origin the way splitLocation does ("HTTP://Billing:80" → "http://billing"). */
export function canonicalOrigin(origin: string): string | undefined {
  const l = splitLocation(origin.replace(/\/$/, ""));
  return l && l.path === "/" ? l.origin : undefined;
}

/**
 * compileGrant compiles the details of a token for one origin (locations of
 * other origins can never match a request to this service and are dropped).
 * Details of another `type` grant nothing here.
 */
export function compileGrant(details: unknown, origin: string): GrantCheck {
  const rules: { methods: Set<string> | "*"; literal: string | undefined; glob: RegExp }[] = [];
  if (Array.isArray(details)) {
    for (const d of details as Record<string, unknown>[]) {
      if (typeof d !== "object" || d === null || d.type !== HTTP_DETAIL_TYPE || !Array.isArray(d.actions) || !Array.isArray(d.locations)) continue;
      const actions = (d.actions as unknown[]).filter((a): a is string => typeof a === "string");
      const methods = actions.includes("*") ? "*" : new Set(actions);
      for (const loc of d.locations as unknown[]) {
        if (typeof loc !== "string") continue;
        const l = splitLocation(loc);
        if (!l || l.origin !== origin) continue;
        rules.push({ methods, literal: l.path.includes("*") ? undefined : l.path, glob: globToRegExp(l.path) });
      }
    }
  }
  return (method, path) => {
    const encodedSeparator = /%2f|%5c/i.test(path);
    for (const r of rules) {
      if (r.methods !== "*" && !r.methods.has(method)) continue;
      if (encodedSeparator ? r.literal === path : r.glob.test(path)) return true;
    }
    return false;
  };
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
  let parsed: string;
  try {
    parsed = new URL(raw, "http://x").pathname;
  } catch {
    return undefined;
  }
  return parsed === raw ? raw : undefined;
}
