/**
 * Policy.mayAllow, the guard's screen before it connects or looks a name up
 * (issue 7, item 3): it must never say "no" to a call `evaluate` would let
 * through — else the guard would deny an allowed call without asking — and
 * it must say "no" where no rule could allow the host and port, so a denied
 * name is never looked up.
 */

import fc from "fast-check";
import { describe, expect, test } from "vitest";
import { Evaluator, loadPolicy } from "../../src/policy/index.js";
import { isIpLiteral } from "../../src/policy/ip.js";
import type { DecisionRequest, HttpTarget, TcpTarget } from "../../src/policy/types.js";
import { policyDoc, requestsFor } from "./gen.js";

const CLOCK = () => new Date(0);
const P = { node: "agent", tags: ["tag:agent"] };
const policy = (rules: object[]) => loadPolicy(JSON.stringify({ version: 1, rules }), { runTests: false, clock: CLOCK });
const http = (host: string, extra: Partial<HttpTarget> = {}): DecisionRequest => ({ principal: P, target: { kind: "http", scheme: "https", host, port: 443, method: "GET", path: "/", query: "", headers: {}, ...extra } });
const tcp = (host: string, port: number, extra: Partial<TcpTarget> = {}): DecisionRequest => ({ principal: P, target: { kind: "tcp", tls: false, host, port, ...extra } });

describe("mayAllow", () => {
  test("a name no rule names is screened out; a CIDR allow rule keeps every name in (it may resolve into the range)", () => {
    const byName = policy([{ id: "api", src: ["tag:agent"], http: { host: ["api.example.com", "*.svc.example"], path: ["/v1/**"] } }]);
    expect(byName.mayAllow(http("api.example.com"))).toBe(true); // the path is not known yet: could be allowed
    expect(byName.mayAllow(http("x.svc.example"))).toBe(true);
    expect(byName.mayAllow(http("evil.example"))).toBe(false);
    expect(byName.mayAllow(http("10.0.0.1"))).toBe(false);
    const byRange = policy([{ id: "lan", src: ["tag:agent"], tcp: { host: ["10.0.0.0/8"], port: [5432] } }]);
    expect(byRange.mayAllow(tcp("db.internal", 5432))).toBe(true);
    expect(byRange.mayAllow(tcp("db.internal", 5432, { resolvedIp: "10.1.2.3" }))).toBe(true);
    expect(byRange.mayAllow(tcp("db.internal", 5432, { resolvedIp: "192.0.2.1" }))).toBe(false);
    expect(byRange.mayAllow(tcp("db.internal", 22))).toBe(false); // the port is known
    expect(byRange.mayAllow(tcp("10.9.9.9", 5432))).toBe(true);
    expect(byRange.mayAllow(tcp("11.0.0.1", 5432))).toBe(false);
  });

  test("a deny rule that matches on host and port alone screens out; one that needs more of the call does not", () => {
    const p = policy([
      { id: "all", src: ["*"], http: { host: ["*"] } },
      { id: "no-meta", src: ["*"], effect: "deny", http: { host: ["169.254.0.0/16"] } },
      { id: "no-admin", src: ["*"], effect: "deny", http: { host: ["admin.example"], path: ["/admin/**"] } },
    ]);
    expect(p.mayAllow(http("169.254.169.254"))).toBe(false);
    expect(p.mayAllow(http("metadata.internal", { resolvedIp: "169.254.169.254" }))).toBe(false);
    expect(p.mayAllow(http("metadata.internal"))).toBe(true); // not resolved yet: the deny cannot be known
    expect(p.mayAllow(http("admin.example"))).toBe(true); // the path decides later
  });

  test("who asks counts; kinds without hosts are not screened; a malformed request is", () => {
    const p = policy([{ id: "a", src: ["tag:other"], http: { host: ["*"] } }]);
    expect(p.mayAllow(http("api.example.com"))).toBe(false);
    expect(p.mayAllow({ principal: P, target: { kind: "mcp", server: "s", tool: "t", args: {} } })).toBe(true);
    expect(p.mayAllow({ principal: P } as unknown as DecisionRequest)).toBe(false);
  });

  test("never false where evaluate allows or asks (also before the name is resolved); false only where evaluate denies — random policies", () => {
    let allowed = 0;
    let screened = 0;
    fc.assert(
      fc.property(policyDoc.chain((doc) => fc.tuple(fc.constant(doc), requestsFor(doc))), ([doc, reqs]) => {
        const p = loadPolicy(JSON.stringify(doc), { runTests: false, clock: CLOCK });
        const fresh = new Evaluator(p.compiled, CLOCK);
        for (const r of reqs) {
          const may = p.mayAllow(r);
          const t = r.target as { host?: string; resolvedIp?: string };
          const before = typeof t.host === "string" && !isIpLiteral(t.host.replace(/^\[|\]$/g, "")) && t.resolvedIp !== undefined ? p.mayAllow({ ...r, target: { ...r.target, resolvedIp: undefined } as typeof r.target }) : may;
          const d = fresh.evaluate(r);
          if (d.effect !== "deny") {
            allowed++;
            expect(may, `mayAllow said no to a call evaluate ${d.effect}s: ${JSON.stringify(r)}`).toBe(true);
            expect(before, `mayAllow said no before resolution to a call evaluate ${d.effect}s: ${JSON.stringify(r)}`).toBe(true);
          }
          if (!may) screened++;
        }
      }),
      { numRuns: 400, seed: 20260307 },
    );
    // Not vacuous: both answers occur.
    expect(allowed).toBeGreaterThan(500);
    expect(screened).toBeGreaterThan(500);
  });
});
