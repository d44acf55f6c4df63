/**
 * The target kinds of policy format version 2: `dns` (a look-up: name,
 * record type, server) and `udp` (a datagram: host, port). The format
 * change is versioned: version-1 files keep loading and meaning what they
 * meant; a version-1 file that names dns or udp is an error that says to
 * use version 2.
 */

import { describe, expect, test } from "vitest";

import {
  decisionEvent,
  formatTarget,
  learnPolicy,
  loadPolicy,
  parseRequest,
  readDecisionEvents,
  type DecisionEvent,
  type Principal,
  type Target,
} from "../../src/policy/index.js";

const AGENT: Principal = { tags: ["tag:agent"] };

function policy(rules: object[], version = 2, tests: object[] = []) {
  return loadPolicy(JSON.stringify({ version, rules, tests }));
}

const decide = (p: ReturnType<typeof policy>, line: string, principal = AGENT) => p.evaluate({ principal, target: parseRequest(line) });

describe("format version 2", () => {
  test("a version-1 file loads as before (its version is 1); the same rules load as version 2", () => {
    const rules = [{ id: "web", src: ["*"], http: { host: ["api.example.com"] } }];
    expect(policy(rules, 1).version).toBe(1);
    expect(policy(rules, 2).version).toBe(2);
    expect(decide(policy(rules, 1), "GET https://api.example.com/x")).toMatchObject({ effect: "allow", ruleId: "web" });
  });

  test("a version-1 file with dns or udp rules is rejected with a message that says to use version 2", () => {
    const load = () => policy([{ src: ["*"], dns: { name: ["a.example"] } }, { src: ["*"], udp: { host: ["a.example"], port: [53] } }], 1);
    expect(load).toThrow(/rules\[0\]: dns rules need "version": 2[\s\S]*rules\[1\]: udp rules need "version": 2/);
  });

  test("an unknown version names the versions this meshguard reads", () => {
    expect(() => loadPolicy(JSON.stringify({ version: 7, rules: [] }))).toThrow(/version: must be 1, 2, 3, 4, 5 or 6 .*got 7/);
  });

  test("dns and udp rules are checked like the others: names, servers, record types, hosts, ports", () => {
    let msg = "";
    try {
      policy([
        { src: ["*"], dns: { name: ["10.0.0.0/8", "*x.example", "ok.example"], server: ["bogus", "127.0.0.1:70000", "system"] } },
        { src: ["*"], udp: { host: ["*.ok.example", "*x"], port: ["9-1"] } },
      ]);
    } catch (err) {
      msg = (err as Error).message;
    }
    expect(msg).toMatch(/rules\[0\]\.dns\.name\[0\]: an address is never looked up/);
    expect(msg).toMatch(/rules\[0\]\.dns\.name\[1\]: not a DNS name pattern/);
    expect(msg).toMatch(/rules\[0\]\.dns\.server\[0\]: not a DNS server/);
    expect(msg).toMatch(/rules\[0\]\.dns\.server\[1\]: not a DNS server/);
    expect(msg).not.toMatch(/dns\.name\[2\]|dns\.server\[2\]/);
    expect(msg).toMatch(/rules\[1\]\.udp\.host\[1\]: a wildcard must be the whole first label/);
    expect(msg).toMatch(/rules\[1\]\.udp\.port\[0\]: port range "9-1"/);
    expect(() => policy([{ src: ["*"], dns: { name: ["a.example"], rrtype: ["a"] } }])).toThrow(/rrtype\[0\]: must be one of "A", "AAAA"/);
  });
});

describe("request lines", () => {
  test.each([
    ["dns api.example.com", { kind: "dns", name: "api.example.com" }],
    ["dns API.Example.com. txt", { kind: "dns", name: "api.example.com", rrtype: "TXT" }],
    ["dns _db._tcp.example.com SRV @127.0.0.1:5353", { kind: "dns", name: "_db._tcp.example.com", rrtype: "SRV", server: "127.0.0.1:5353" }],
    ["dns a.example @192.0.2.53:53", { kind: "dns", name: "a.example", server: "192.0.2.53" }],
    ["dns a.example AAAA @[2001:db8::53]:5353", { kind: "dns", name: "a.example", rrtype: "AAAA", server: "[2001:db8::53]:5353" }],
    ["udp metrics.internal:8125", { kind: "udp", host: "metrics.internal", port: 8125 }],
    ["udp [::1]:53", { kind: "udp", host: "::1", port: 53 }],
  ])("%s", (line, want) => {
    expect(parseRequest(line)).toEqual(want);
  });

  test("formatTarget writes them back, and parseRequest reads the result to the same target", () => {
    for (const line of ["dns api.example.com", "dns a.example TXT", "dns a.example PTR @127.0.0.1:5353", "dns a.example @[::1]:5353", "udp 10.0.0.1:8125", "udp [fd00::1]:53", "udp svc.internal:9"]) {
      expect(formatTarget(parseRequest(line))).toBe(line);
      expect(parseRequest(formatTarget(parseRequest(line)))).toEqual(parseRequest(line));
    }
  });

  test.each(["dns", "dns @127.0.0.1", "dns a.example FOO", "dns a.example A @not-an-address", "dns a.example A @1.2.3.4 extra", "udp host", "udp host:0", "udp host:53 tailnet"])("rejects %j", (line) => {
    expect(() => parseRequest(line)).toThrow(/MESHGUARD_POLICY_REQUEST_INVALID|cannot read request/);
  });
});

describe("dns decisions", () => {
  const p = policy([
    { id: "corp", src: ["tag:agent"], dns: { name: ["*.corp.example", "corp.example"] } },
    { id: "srv", src: ["tag:agent"], dns: { name: ["_db._tcp.corp.example"], rrtype: ["SRV"], server: ["10.0.0.0/8", "127.0.0.1:5353"] } },
    { id: "addresses", src: ["tag:agent"], dns: { name: ["api.example.com"], rrtype: ["A", "AAAA"] } },
    { id: "v4-only", src: ["tag:agent"], dns: { name: ["v4.example.com"], rrtype: ["A"] } },
    { id: "no-exfil", effect: "deny", src: ["*"], dns: { name: ["*.evil.example"], server: ["*"] } },
    { id: "anything-anywhere", src: ["tag:wide"], dns: { name: ["*"], server: ["*"] } },
  ]);

  test.each([
    ["dns corp.example", "allow", "corp"],
    ["dns a.b.corp.example TXT", "allow", "corp"],
    ["dns xcorp.example", "deny", undefined],
    ["dns _db._tcp.corp.example SRV @10.1.2.3", "allow", "srv"],
    ["dns _db._tcp.corp.example SRV @127.0.0.1:5353", "allow", "srv"],
    // "srv" names port 5353 on 127.0.0.1, not 53; "corp" allows the system's resolver only.
    ["dns _db._tcp.corp.example SRV @127.0.0.1", "deny", undefined],
    ["dns api.example.com", "allow", "addresses"],
    ["dns api.example.com TXT", "deny", undefined],
    ["dns v4.example.com A", "allow", "v4-only"],
    ["dns v4.example.com", "deny", undefined], // an address look-up of any family asks for AAAA too
  ])("%s → %s", (line, effect, ruleId) => {
    const d = decide(p, line);
    expect(d.effect).toBe(effect);
    expect(d.ruleId).toBe(ruleId);
  });

  test("a custom server must be named: a rule without `server` allows the system's resolver only", () => {
    expect(decide(p, "dns corp.example")).toMatchObject({ effect: "allow", ruleId: "corp" });
    expect(decide(p, "dns corp.example @192.0.2.53")).toEqual(expect.objectContaining({ effect: "deny" }));
    expect(decide(p, "dns corp.example @192.0.2.53").ruleId).toBeUndefined();
    expect(decide(p, "dns corp.example @192.0.2.53").reason).toContain("dns corp.example @192.0.2.53");
  });

  test("deny wins, whatever the server; case and a trailing dot do not dodge it", () => {
    for (const line of ["dns x.evil.example", "dns X.EVIL.example.", "dns x.evil.example TXT @8.8.8.8"]) {
      expect(decide(p, line, { tags: ["tag:wide"] })).toMatchObject({ effect: "deny", ruleId: "no-exfil" });
    }
    expect(decide(p, "dns x.example TXT @8.8.8.8", { tags: ["tag:wide"] })).toMatchObject({ effect: "allow", ruleId: "anything-anywhere" });
  });

  test("a malformed dns or udp target is denied, never read as the system's resolver", () => {
    const wide = { tags: ["tag:wide"] };
    const sys = policy([{ id: "sys", src: ["*"], dns: { name: ["*"] } }, { id: "u", src: ["*"], udp: { host: ["*"], port: ["*"] } }]);
    for (const target of [{ kind: "dns", name: "a.example", server: 53 }, { kind: "dns", name: "a.example", rrtype: 1 }, { kind: "dns" }, { kind: "udp", host: "a.example" }, { kind: "udp", port: 53 }]) {
      const d = sys.evaluate({ principal: wide, target: target as unknown as Target });
      expect(d.effect, JSON.stringify(target)).toBe("deny");
      expect(d.reason).toMatch(/malformed/);
    }
    expect(sys.evaluate({ principal: wide, target: { kind: "dns", name: "a.example" } }).effect).toBe("allow");
  });

  test("explain says which name, record type and server a rule checked", () => {
    const ex = p.explain({ principal: AGENT, target: parseRequest("dns _db._tcp.corp.example TXT @10.0.0.53") });
    const srv = ex.rules.find((r) => r.ruleId === "srv")!;
    expect(srv.result).toBe("no-match");
    expect(srv.checks.map((c) => [c.what, c.ok])).toEqual([["src", true], ["kind", true], ["name", true], ["rrtype", false], ["server", true]]);
    expect(ex.request).toBe("dns _db._tcp.corp.example TXT @10.0.0.53");
  });

  test("policy tests can be written for dns and udp", () => {
    expect(() =>
      policy([{ id: "m", src: ["tag:agent"], udp: { host: ["metrics.internal"], port: [8125] } }], 2, [
        { as: "tag:agent", request: "udp metrics.internal:8125", expect: "allow", ruleId: "m" },
        { as: "tag:agent", request: "udp metrics.internal:8126", expect: "deny" },
        { as: "tag:agent", request: "dns metrics.internal", expect: "deny" },
      ]),
    ).not.toThrow();
  });
});

describe("udp decisions", () => {
  const p = policy([
    { id: "statsd", src: ["tag:agent"], udp: { host: ["metrics.internal", "10.0.0.0/8"], port: [8125, "9000-9010"] } },
    { id: "no-metadata", effect: "deny", src: ["*"], udp: { host: ["169.254.0.0/16"], port: ["*"] } },
    { id: "tcp-is-not-udp", src: ["tag:agent"], tcp: { host: ["db.internal"], port: [5432] } },
  ]);
  test.each([
    ["udp metrics.internal:8125", "allow", "statsd"],
    ["udp METRICS.internal.:9005", "allow", "statsd"],
    ["udp metrics.internal:8126", "deny", undefined],
    ["udp 10.1.2.3:8125", "allow", "statsd"],
    ["udp 11.1.2.3:8125", "deny", undefined],
    ["udp 169.254.169.254:8125", "deny", "no-metadata"],
    ["udp db.internal:5432", "deny", undefined],
    ["tcp metrics.internal:8125", "deny", undefined],
  ])("%s → %s", (line, effect, ruleId) => {
    const d = decide(p, line);
    expect(d.effect).toBe(effect);
    expect(d.ruleId).toBe(ruleId);
  });

  test("a CIDR rule matches the address a name resolved to", () => {
    const t = parseRequest("udp stats.example:8125") as Extract<Target, { kind: "udp" }>;
    expect(p.evaluate({ principal: AGENT, target: t }).effect).toBe("deny");
    expect(p.evaluate({ principal: AGENT, target: { ...t, resolvedIp: "10.9.9.9" } })).toMatchObject({ effect: "allow", ruleId: "statsd" });
  });
});

describe("decision events and learn", () => {
  const NOW = new Date("2026-03-09T10:00:00Z");
  const observed = (principal: Principal, line: string, layer: "dns" | "udp"): DecisionEvent =>
    decisionEvent(principal, parseRequest(line), { effect: "deny", reason: "observe" }, { layer, outcome: "allow", latencyUs: 1, mode: "observe", time: NOW });

  test("events carry the dns and udp targets and read back", () => {
    const evs = [observed(AGENT, "dns a.example TXT @127.0.0.1:5353", "dns"), observed(AGENT, "udp 10.0.0.1:8125", "udp")];
    expect(evs[0]!.target).toEqual({ kind: "dns", name: "a.example", rrtype: "TXT", server: "127.0.0.1:5353" });
    expect(evs[0]!.request).toBe("dns a.example TXT @127.0.0.1:5353");
    expect(evs[1]!.target).toEqual({ kind: "udp", host: "10.0.0.1", port: 8125 });
    expect(readDecisionEvents(evs.map((e) => JSON.stringify(e)).join("\n"))).toEqual(evs);
  });

  test("learn proposes dns and udp rules (version 2) that allow what was observed and nothing else", () => {
    const evs = [
      observed(AGENT, "dns api.example.com", "dns"),
      observed(AGENT, "dns _db._tcp.corp.example SRV", "dns"),
      observed(AGENT, "dns corp.example TXT @127.0.0.1:5353", "dns"),
      observed(AGENT, "udp metrics.internal:8125", "udp"),
      observed(AGENT, "udp metrics.internal:8126", "udp"),
      observed(AGENT, "dns *.weird.example", "dns"), // cannot be allowed alone: not learned
    ];
    const r = learnPolicy(evs);
    expect(r.text).toContain('"version": 2');
    expect(r.used).toBe(5);
    expect(r.skipped).toBe(1);
    const p = loadPolicy(r.text);
    for (const line of ["dns api.example.com", "dns _db._tcp.corp.example SRV", "dns corp.example TXT @127.0.0.1:5353", "udp metrics.internal:8125", "udp metrics.internal:8126"]) {
      expect(decide(p, line).effect, line).toBe("allow");
    }
    for (const line of ["dns other.example", "dns api.example.com TXT", "dns corp.example TXT", "dns corp.example TXT @127.0.0.1:5354", "dns api.example.com @127.0.0.1:5353", "udp metrics.internal:8127", "udp other.internal:8125"]) {
      expect(decide(p, line).effect, line).toBe("deny");
    }
  });

  test("learn writes version 1 when no rule needs version 2", () => {
    const ev = decisionEvent(AGENT, parseRequest("GET https://api.example.com/x"), { effect: "deny", reason: "observe" }, { layer: "fetch", outcome: "allow", latencyUs: 1, mode: "observe", time: NOW });
    expect(learnPolicy([ev]).text).toContain('"version": 1');
  });
});
