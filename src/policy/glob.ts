/**
 * Glob matchers, compiled once at policy load (picomatch turns each pattern
 * into one RegExp).
 *
 * Two flavours:
 * - path globs: `*` matches within one path segment, `**` any number of
 *   whole segments (so `/v2/**` also matches `/v2`), `?` one character,
 *   `[a-z]` and `{a,b}` as in a shell. A segment written `:name` (URL-pattern
 *   style) is the same as `*`. Segments `.` and `..` never match a wildcard.
 * - flat globs (tools, models, header and query values, arguments): `*`
 *   crosses `/` too, so `openai/*` and `*-mini` work on `provider/model`; a
 *   lone `*` matches every value, including the empty one.
 */

import picomatch from "picomatch";

export type Matcher = (s: string) => boolean;

const always: Matcher = () => true;
const GLOB_CHARS = /[*?[\]{}()!+@\\]/;

/** hasGlob tells whether a pattern needs a matcher at all (a literal compares with ===). */
export function hasGlob(p: string): boolean {
  return GLOB_CHARS.test(p);
}

/** pathGlob compiles a path pattern such as "/v2/users/*" or "/v2/users/:id/**". */
export function pathGlob(pattern: string): Matcher {
  const p = pattern
    .split("/")
    .map((seg) => (/^:[A-Za-z_][A-Za-z0-9_]*$/.test(seg) ? "*" : seg))
    .join("/");
  if (p === "**" || p === "/**") return p === "**" ? always : (s) => s.startsWith("/");
  if (!hasGlob(p)) return (s) => s === p;
  // Fast path for the commonest shape, "/literal/prefix/**": a prefix test.
  // Anything with a "." right after a slash goes to the RegExp, which is the
  // definition (it refuses "." and ".." segments); that RegExp is built on
  // first need, so loading 10,000 such rules builds none.
  const m = /^(\/[^*?[\]{}()!+@\\]*)\/\*\*$/.exec(p);
  if (m) {
    const prefix = `${m[1]}/`;
    let re: RegExp | undefined;
    return (s) => s.startsWith(prefix) && (!s.includes("/.") || (re ??= picomatch.makeRe(p, PATH_OPTS)).test(s));
  }
  const re = picomatch.makeRe(p, PATH_OPTS);
  return (s) => re.test(s);
}

const PATH_OPTS = { dot: true, strictSlashes: true };

/** flatGlob compiles a pattern over a whole value, where `*` also crosses "/". */
export function flatGlob(pattern: string): Matcher {
  if (pattern === "*") return always;
  if (!hasGlob(pattern)) return (s) => s === pattern;
  const re = picomatch.makeRe(pattern, { dot: true, bash: true });
  return (s) => re.test(s);
}

/** anyOf combines matchers; a list with "*" matches everything. */
export function anyOf(ms: Matcher[]): Matcher {
  if (ms.includes(always)) return always;
  if (ms.length === 1) return ms[0]!;
  return (s) => {
    for (let i = 0; i < ms.length; i++) if (ms[i]!(s)) return true;
    return false;
  };
}

/** isAlways tells whether a matcher accepts everything (lets the compiler drop the check). */
export function isAlways(m: Matcher): boolean {
  return m === always;
}
