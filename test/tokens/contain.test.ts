/**
 * Glob containment and overlap (src/policy/contain.ts), the check behind
 * every token grant: a requested location is granted only when a rule's
 * location contains it. Checked three ways:
 * - documented examples (docs/tokens.md, "Containment");
 * - generated cases against brute force: every path over a small alphabet up
 *   to a length is matched with the RegExp form, and the automaton's answer
 *   must agree (a "no" must come with a witness that really separates the
 *   globs; a "yes" must have no counterexample);
 * - the brute-force oracle must catch a plausible wrong algorithm (matching
 *   the inner glob's text with the outer glob), so this test can fail.
 */

import { describe, expect, test } from "vitest";
import { compileGlob, globContains, globMatches, globsOverlap, locationContains, parseLocation, type Location } from "../../src/policy/index.js";

/** A small seeded PRNG (mulberry32): the same cases every run. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const PIECES = ["a", "b", "/", "*", "**"];

function randomGlob(r: () => number): string {
  const n = 1 + Math.floor(r() * 6);
  let s = "/";
  for (let i = 0; i < n; i++) s += PIECES[Math.floor(r() * PIECES.length)];
  return s;
}

/** Every string over the alphabet up to `max` characters (the alphabet includes a character no glob writes). */
function allPaths(alphabet: string[], max: number): string[] {
  const out = [""];
  let layer = [""];
  for (let n = 1; n <= max; n++) {
    layer = layer.flatMap((p) => alphabet.map((c) => p + c));
    out.push(...layer);
  }
  return out;
}

const PATHS = allPaths(["a", "b", "/", "x"], 7);

describe("documented examples", () => {
  test.each([
    ["/v2/*", "/v2/a*", true],
    ["/v2/*", "/v2/transactions", true],
    ["/v2/*", "/v2/**", false],
    ["/v2/**", "/v2/*/items/*", true],
    ["/v2/**", "/v2", false],
    ["/v2/*/items", "/v2/**/items", false],
    ["/a*b*", "/a*b*b", true],
    ["/*", "/*/*", false],
    ["/**", "/anything/at/all", true],
    ["/v2/transactions/*", "/v2/transactions/*", true],
  ])("%s contains %s: %s", (outer, inner, want) => {
    const r = globContains(outer, inner);
    expect(r.answer).toBe(want);
    if (!want) {
      expect(compileGlob(inner)(r.witness!)).toBe(true);
      expect(compileGlob(outer)(r.witness!)).toBe(false);
    }
  });

  test("a witness names what the inner glob covers and the outer does not: /v2/** is wider than /v2/* by paths with more segments", () => {
    expect(globContains("/v2/*", "/v2/**")).toEqual({ answer: false, witness: "/v2//" });
  });

  test("overlap: /a/*/c and /a/b/* share /a/b/c; /a/*/c and /a/b/d share nothing", () => {
    expect(globsOverlap("/a/*/c", "/a/b/*")).toEqual({ answer: true, witness: "/a/b/c" });
    expect(globsOverlap("/a/*/c", "/a/b/d").answer).toBe(false);
  });

  test("locations: same origin required (scheme, host, port; the default port is the same as none)", () => {
    const loc = (s: string) => parseLocation(s) as Location;
    expect(locationContains(loc("https://billing/v2/**"), loc("https://billing:443/v2/x")).answer).toBe(true);
    expect(locationContains(loc("https://billing/v2/**"), loc("http://billing/v2/x")).answer).toBe(false);
    expect(locationContains(loc("https://billing/v2/**"), loc("https://billing:8443/v2/x")).answer).toBe(false);
    expect(locationContains(loc("https://billing/v2/**"), loc("https://Billing/v2/x")).answer).toBe(true);
    expect(locationContains(loc("https://billing/v2/**"), loc("https://billing2/v2/x")).answer).toBe(false);
  });

  test("locations that are not: no scheme, a host glob, query, dot segments, empty segments, non-ASCII", () => {
    for (const bad of ["billing/v2", "ftp://billing/x", "https://*.billing/x", "https://billing/x?y=1", "https://billing/a/../b", "https://billing/a//b", "https://billing/ä", "https://u@billing/x"]) {
      expect(typeof parseLocation(bad), bad).toBe("string");
    }
  });
});

describe("generated cases against brute force", () => {
  /** The containment oracle: no path up to the bound is matched by inner and not by outer. */
  const bruteContains = (outer: string, inner: string) => {
    const o = compileGlob(outer);
    const i = compileGlob(inner);
    return !PATHS.some((p) => i(p) && !o(p));
  };
  const bruteOverlaps = (a: string, b: string) => {
    const x = compileGlob(a);
    const y = compileGlob(b);
    return PATHS.some((p) => x(p) && y(p));
  };

  test("the automaton and the RegExp form match the same paths (300 globs × a seventh of the paths up to 7 characters each)", () => {
    const r = rng(7);
    const differ: string[] = [];
    let matched = 0;
    for (let n = 0; n < 300; n++) {
      const g = randomGlob(r);
      const re = compileGlob(g);
      for (let i = n % 7; i < PATHS.length; i += 7) {
        const p = PATHS[i]!;
        const want = re(p);
        if (want) matched++;
        if (globMatches(g, p) !== want) differ.push(`${g} on ${p}`);
      }
    }
    expect(differ).toEqual([]);
    expect(matched).toBeGreaterThan(1000);
  });

  test("containment agrees with brute force on 3000 generated pairs, and every 'no' carries a true witness", () => {
    const r = rng(42);
    let yes = 0;
    let no = 0;
    for (let n = 0; n < 3000; n++) {
      const outer = randomGlob(r);
      // Half the inner globs are made from the outer one, so both answers are common.
      const inner = r() < 0.5 ? outer.replace(/\*+/, r() < 0.5 ? "a" : "*b") + (r() < 0.3 ? "a" : "") : randomGlob(r);
      const got = globContains(outer, inner);
      expect(got.answer, `${outer} ⊇ ${inner}`).not.toBeUndefined();
      if (got.answer) {
        yes++;
        expect(bruteContains(outer, inner), `${outer} ⊇ ${inner}: the automaton says yes, brute force found a counterexample`).toBe(true);
      } else {
        no++;
        expect(compileGlob(inner)(got.witness!) && !compileGlob(outer)(got.witness!), `${outer} ⊇ ${inner}: witness ${got.witness}`).toBe(true);
        // The witness is the shortest: brute force finds one too when it is within its bound.
        if (got.witness!.length <= 7) expect(bruteContains(outer, inner)).toBe(false);
      }
    }
    expect(yes).toBeGreaterThan(300);
    expect(no).toBeGreaterThan(300);
  });

  test("overlap agrees with brute force on 3000 generated pairs", () => {
    const r = rng(9);
    for (let n = 0; n < 3000; n++) {
      const a = randomGlob(r);
      const b = randomGlob(r);
      const got = globsOverlap(a, b);
      if (got.answer) expect(compileGlob(a)(got.witness!) && compileGlob(b)(got.witness!), `${a} ∩ ${b}: ${got.witness}`).toBe(true);
      else expect(bruteOverlaps(a, b), `${a} ∩ ${b}: the automaton says empty`).toBe(false);
    }
  });

  test("the oracle catches a plausible wrong algorithm (matching the inner glob's text with the outer glob)", () => {
    const naive = (outer: string, inner: string) => compileGlob(outer)(inner);
    const r = rng(1);
    const wrong: string[] = [];
    for (let n = 0; n < 3000 && wrong.length < 3; n++) {
      const outer = randomGlob(r);
      const inner = randomGlob(r);
      if (naive(outer, inner) !== bruteContains(outer, inner)) wrong.push(`${outer} ⊇ ${inner}`);
    }
    expect(wrong.length, "the naive check should be caught on some generated case").toBeGreaterThan(0);
  });

  test("long globs with many wildcards get an answer that is never a wrong yes (undefined past the bound: callers refuse)", () => {
    // Many alternations of * and literals blow up the subset construction.
    const outer = `/${"*a".repeat(40)}`;
    const inner = `/${"a*".repeat(40)}b`;
    const got = globContains(outer, inner);
    expect([false, undefined]).toContain(got.answer);
  });
});
