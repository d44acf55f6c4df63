// The verifier's request-side checks without a network: which paths it
// compares (pathOf, against the WHATWG URL parser as the oracle), which
// grants cover which requests, and the bounded caches of the hot path.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { BoundedCache } from "../../src/tokens/bounded-cache.js";
import { canonicalOrigin, compileGrant, pathOf } from "../../src/tokens/verify-actions.js";

/** The oracle: the path as a URL parser gives it, when that is the text sent; else refused. */
function oracle(target: string): string | undefined {
  if (!target.startsWith("/") || target.startsWith("//")) return undefined;
  const raw = target.split("?")[0]!;
  try {
    return new URL(raw, "http://x").pathname === raw ? raw : undefined;
  } catch {
    return undefined; // "/\\" reads as "//": no path at all
  }
}

describe("pathOf", () => {
  // "/" and "." weigh more: dot segments are what the check must catch.
  const alphabet = fc.oneof(
    { arbitrary: fc.constantFrom("/", "."), weight: 2 },
    { arbitrary: fc.constantFrom("a", "Z", "0", "%", "2", "e", "E", "f", "\\", " ", "*", "~", "?", "é", ";", "'", "`", "{", "#"), weight: 3 },
  );
  const targets = fc.array(alphabet, { maxLength: 14 }).map((cs) => `/${cs.join("")}`);

  it("answers as the URL parser on 20 000 generated request targets (dot segments, %2e, backslashes, characters to encode)", () => {
    let dotted = 0;
    let refused = 0;
    fc.assert(
      fc.property(targets, (t) => {
        if (/\/\.{1,2}(\/|$|\?)/.test(t)) dotted++;
        if (oracle(t) === undefined) refused++;
        expect(pathOf(t)).toBe(oracle(t));
      }),
      { numRuns: 20_000, seed: 10 },
    );
    // Not vacuous: the generator makes both kinds.
    expect(dotted).toBeGreaterThan(500);
    expect(refused).toBeGreaterThan(2_000);
  });

  it("examples", () => {
    expect(pathOf("/v2/transactions/42?x=/../y")).toBe("/v2/transactions/42");
    expect(pathOf("/v2/./x")).toBeUndefined();
    expect(pathOf("/v2/%2e%2e/x")).toBeUndefined();
    expect(pathOf("/v2/..")).toBeUndefined();
    expect(pathOf("/v2/a\\b")).toBeUndefined();
    expect(pathOf("//evil/x")).toBeUndefined();
    expect(pathOf("/\\evil/x")).toBeUndefined(); // a URL parser reads "/\\" as "//": host "evil"
    expect(pathOf("http://billing/v2")).toBeUndefined();
    expect(pathOf("/v2/file.json")).toBe("/v2/file.json");
    expect(pathOf("/v2/...")).toBe("/v2/...");
  });
});

describe("compileGrant", () => {
  const grant = (actions: string[], locations: string[]) => compileGrant([{ type: "meshguard.dev/http", actions, locations }], "http://billing");

  it("`*` stays within a segment, `**` crosses them, methods are exact unless `*`", () => {
    const one = grant(["GET"], ["http://billing/v2/transactions/*"]);
    expect(one("GET", "/v2/transactions/42")).toBe(true);
    expect(one("GET", "/v2/transactions/")).toBe(true);
    expect(one("GET", "/v2/transactions/42/refund")).toBe(false);
    expect(one("HEAD", "/v2/transactions/42")).toBe(false);
    const deep = grant(["*"], ["http://billing/v2/**"]);
    expect(deep("DELETE", "/v2/a/b/c")).toBe(true);
    expect(deep("GET", "/v2")).toBe(false);
  });

  it("locations of another origin, other detail types and malformed details grant nothing", () => {
    expect(grant(["GET"], ["http://payroll/v2/**"])("GET", "/v2/x")).toBe(false);
    expect(grant(["GET"], ["https://billing/v2/**"])("GET", "/v2/x")).toBe(false);
    expect(grant(["GET"], ["http://billing:8080/v2/**"])("GET", "/v2/x")).toBe(false);
    expect(compileGrant([{ type: "other", actions: ["GET"], locations: ["http://billing/**"] }], "http://billing")("GET", "/x")).toBe(false);
    expect(compileGrant("nonsense", "http://billing")("GET", "/x")).toBe(false);
    expect(compileGrant([{ type: "meshguard.dev/http", actions: "GET", locations: ["http://billing/**"] }], "http://billing")("GET", "/x")).toBe(false);
  });

  it("an encoded separator (%2F, %5C) matches only a literal location, never a glob", () => {
    expect(grant(["GET"], ["http://billing/v2/*"])("GET", "/v2/a%2Fb")).toBe(false);
    expect(grant(["GET"], ["http://billing/v2/**"])("GET", "/v2/a%5cb")).toBe(false);
    expect(grant(["GET"], ["http://billing/v2/a%2Fb"])("GET", "/v2/a%2Fb")).toBe(true);
  });

  it("origins are compared in canonical form", () => {
    expect(canonicalOrigin("HTTP://Billing:80/")).toBe("http://billing");
    expect(canonicalOrigin("https://billing:443")).toBe("https://billing");
    expect(canonicalOrigin("http://billing:8080")).toBe("http://billing:8080");
    expect(canonicalOrigin("billing")).toBeUndefined();
    expect(compileGrant([{ type: "meshguard.dev/http", actions: ["GET"], locations: ["HTTP://BILLING:80/v2/*"] }], "http://billing")("GET", "/v2/x")).toBe(true);
  });
});

describe("BoundedCache", () => {
  it("keeps at most max entries, evicting the oldest inserted; re-setting a key does not evict", () => {
    const c = new BoundedCache<string, number>(3);
    for (const k of ["a", "b", "c"]) c.set(k, 1);
    c.set("a", 2);
    expect([c.size, c.get("a")]).toEqual([3, 2]);
    c.set("d", 1);
    expect([c.has("a"), c.has("b"), c.has("c"), c.has("d"), c.size]).toEqual([false, true, true, true, 3]);
    for (let i = 0; i < 1000; i++) c.set(`k${i}`, i);
    expect(c.size).toBe(3);
    expect([c.get("k999"), c.get("k998"), c.get("k997"), c.get("k996")]).toEqual([999, 998, 997, undefined]);
  });

  it("a bound of 0 caches nothing", () => {
    const c = new BoundedCache<string, number>(0);
    c.set("a", 1);
    expect(c.get("a")).toBeUndefined();
  });
});
