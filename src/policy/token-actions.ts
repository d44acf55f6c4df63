/**
 * The vocabulary of token rules and token requests: audiences, HTTP methods
 * and actions (methods on locations), and the space-free scope syntax
 *
 *   http:GET:billing/v2/transactions/*          (either scheme)
 *   http:GET,POST:https://billing/v2/**         (this scheme only)
 *   http:*:billing:8080/reports/*               (any method)
 *
 * `http` names the detail type (meshguard.dev/http); then the methods
 * (comma-separated, upper-case, or `*`); then the location. A location
 * written without a scheme stands for both its http:// and https:// forms.
 *
 * Containment of one requested (method, location) in a rule's actions:
 * the method is one of an entry's methods (a requested `*` needs a `*`), and
 * the location is contained in ONE of that entry's locations (./location.ts,
 * ./contain.ts) — not in their union: `/a/**` is not granted by the pair
 * `/a/x/**`, `/a/y/**`; request the two separately.
 */

import { locationContains, locationsOverlap, parseLocation, type Location } from "./location.js";
import type { GlobAnswer } from "./contain.js";

/** An HTTP method token (RFC 9110), upper-case, or `*`. */
export const METHOD_RE = /^(?:[A-Z][A-Z0-9_-]*|\*)$/;

/** One action of a rule or a request, parsed: methods (or "*") on locations. */
export interface TokenAction {
  /** Upper-case methods; ["*"] for any. */
  methods: string[];
  locations: Location[];
}

/** parseMethods checks a method list; returns a message on error. */
export function parseMethods(methods: readonly string[]): string[] | string {
  if (!methods.length) return 'list at least one method (or "*")';
  for (const m of methods) if (typeof m !== "string" || !METHOD_RE.test(m)) return `${JSON.stringify(m)} is not an upper-case HTTP method (such as "GET") or "*"`;
  return methods.includes("*") ? ["*"] : [...new Set(methods)];
}

/** parseAction reads `{ methods, locations }`; returns a message on error. */
export function parseAction(methods: readonly string[], locations: readonly string[]): TokenAction | string {
  const ms = parseMethods(methods);
  if (typeof ms === "string") return ms;
  if (!locations.length) return "list at least one location";
  const locs: Location[] = [];
  for (const l of locations) {
    const p = parseLocation(l);
    if (typeof p === "string") return p;
    locs.push(p);
  }
  return { methods: ms, locations: locs };
}

/** parseScope reads one scope string ("http:GET:billing/v2/*"); returns a message on error. */
export function parseScope(scope: string): TokenAction | string {
  const m = /^http:([^:]+):(.+)$/.exec(scope);
  if (!m) return `"${scope}" is not a scope: write http:METHOD:host/path, e.g. "http:GET:billing/v2/transactions/*" (methods comma-separated, or "*")`;
  const methods = parseMethods(m[1]!.split(","));
  if (typeof methods === "string") return `"${scope}": ${methods}`;
  const target = m[2]!;
  const texts = /^[A-Za-z][A-Za-z0-9+.-]*:\/\//.test(target) ? [target] : [`http://${target}`, `https://${target}`];
  const locations: Location[] = [];
  for (const t of texts) {
    const l = parseLocation(t);
    if (typeof l === "string") return `"${scope}": ${l}`;
    locations.push(l);
  }
  return { methods, locations };
}

/** formatScope writes an action back as scope strings (one per location). */
export function formatScope(a: TokenAction): string[] {
  return a.locations.map((l) => `http:${a.methods.join(",")}:${l.text}`);
}

/** methodContained: is `method` (or "*") among `allowed`? */
export function methodContained(allowed: readonly string[], method: string): boolean {
  return allowed.includes("*") || (method !== "*" && allowed.includes(method));
}

/** methodsOverlap: could a request with `method` be one of `others`? */
export function methodsOverlap(others: readonly string[], method: string): boolean {
  return method === "*" || others.includes("*") || others.includes(method);
}

/**
 * actionContains: is the single requested (method, location) contained in
 * one of the actions? The answer carries a witness URL when it is no
 * (undefined when the globs were too complex to decide: treat as no).
 */
export function actionContains(actions: readonly TokenAction[], method: string, loc: Location): GlobAnswer {
  let witness: string | undefined;
  let undecided = false;
  for (const a of actions) {
    if (!methodContained(a.methods, method)) continue;
    for (const l of a.locations) {
      const r = locationContains(l, loc);
      if (r.answer === true) return r;
      if (r.answer === undefined) undecided = true;
      else witness ??= r.witness;
    }
  }
  return undecided && witness === undefined ? { answer: undefined } : witness === undefined ? { answer: false } : { answer: false, witness };
}

/** actionOverlaps: could some URL the requested (method, location) covers fall under one of the actions? (Undecidable counts as yes.) */
export function actionOverlaps(actions: readonly TokenAction[], method: string, loc: Location): GlobAnswer {
  for (const a of actions) {
    if (!methodsOverlap(a.methods, method)) continue;
    for (const l of a.locations) {
      const r = locationsOverlap(l, loc);
      if (r.answer !== false) return r.answer === undefined ? { answer: true } : r;
    }
  }
  return { answer: false };
}

const NAME_AUD_RE = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,252}$/;

/**
 * normalizeAudience returns an audience's canonical form, or a message: a
 * service origin ("http://billing", host lower-case, default port and
 * trailing "/" dropped) or a plain name ("billing-api").
 */
export function normalizeAudience(aud: string): string | { error: string } {
  if (typeof aud !== "string" || aud === "") return { error: "the audience must be a non-empty string" };
  if (/^[A-Za-z][A-Za-z0-9+.-]*:\/\//.test(aud)) {
    let u: URL;
    try {
      u = new URL(aud);
    } catch {
      return { error: `"${aud}" is not a URL` };
    }
    if ((u.protocol !== "http:" && u.protocol !== "https:") || u.username || u.password || u.search || u.hash || (u.pathname !== "/" && u.pathname !== "")) {
      return { error: `"${aud}": an audience URL is an http(s) origin such as "http://billing" (no path, query or user)` };
    }
    return u.origin;
  }
  if (!NAME_AUD_RE.test(aud)) return { error: `"${aud}" is neither an origin ("http://billing") nor a name (letters, digits, . _ : -)` };
  return aud;
}

/**
 * audienceMatcher compiles a rule's audience patterns: an exact audience
 * (normalized as a request's is), or a pattern with `*`, which matches any
 * characters ("http://*.internal" matches "http://billing.internal").
 */
export function audienceMatcher(patterns: readonly string[]): (aud: string) => boolean {
  const exact = new Set<string>();
  const globs: RegExp[] = [];
  for (const p of patterns) {
    if (p === "*") return () => true;
    if (p.includes("*")) globs.push(new RegExp(`^${p.split("*").map((s) => s.replace(/[\\^$.+?()[\]{}|/]/g, "\\$&")).join(".*")}$`));
    else {
      const n = normalizeAudience(p);
      exact.add(typeof n === "string" ? n : p);
    }
  }
  return (aud) => exact.has(aud) || globs.some((g) => g.test(aud));
}

/** A pattern's check at load: a message when it is not an audience or an audience pattern. */
export function audiencePatternError(p: string): string | undefined {
  if (p === "*") return undefined;
  if (p.includes("*")) {
    if (p !== p.toLowerCase()) return `audience pattern "${p}": write it in lower case (audiences are compared in canonical form)`;
    if (/^[a-z][a-z0-9+.-]*:\/\/.*\/$/.test(p)) return `audience pattern "${p}": leave out the trailing "/" (an origin has none)`;
    return undefined;
  }
  const n = normalizeAudience(p);
  return typeof n === "string" ? undefined : n.error;
}
