import { readFileSync } from "node:fs";
import { describe, expect, test } from "vitest";

import { ErrorCode, isMeshguardError } from "../../src/errors.js";
import { loadPolicy, parseRequest, PolicyInvalidError, PolicyTestsFailedError, tailnetPart, type DecisionRequest } from "../../src/policy/index.js";

const EXAMPLE = readFileSync(new URL("./fixtures/example.hujson", import.meta.url), "utf8");

/** invalid loads `text` and returns the PolicyInvalidError it must throw. */
function invalid(text: string): PolicyInvalidError {
  try {
    loadPolicy(text, { file: "p.hujson" });
  } catch (err) {
    expect(isMeshguardError(err, ErrorCode.POLICY_INVALID), String(err)).toBe(true);
    return err as PolicyInvalidError;
  }
  throw new Error("policy was accepted");
}

const req = (as: string[] | string, line: string, extra: Partial<DecisionRequest> = {}): DecisionRequest => ({
  principal: typeof as === "string" ? { tags: [as] } : { tags: as },
  target: parseRequest(line),
  ...extra,
});

describe("loading", () => {
  test("the example combined file loads and all its tests pass", () => {
    const p = loadPolicy(EXAMPLE, { file: "example.hujson" });
    const results = p.runTests();
    expect(results.length).toBe(16);
    expect(results.filter((r) => !r.pass)).toEqual([]);
    expect(p.version).toBe(1);
    expect(p.hash).toMatch(/^[0-9a-f]{64}$/);
    expect(loadPolicy(EXAMPLE).hash).toBe(p.hash);
  });

  test("a standalone meshguard file (no tailnet part) loads; an empty rule list denies everything", () => {
    const p = loadPolicy(`{ "version": 1, "rules": [], }`);
    expect(p.evaluate(req("tag:a", "GET https://example.com/")).effect).toBe("deny");
    expect(p.tailnetPart()).toBeUndefined();
  });

  test("tailnetPart drops meshguard's key and keeps the tailnet part's comments", () => {
    const text = tailnetPart(EXAMPLE);
    expect(text).toContain("// A tailnet policy file");
    expect(text).toContain('"grants"');
    expect(text).not.toMatch(/"meshguard"\s*:/);
    expect(loadPolicy(EXAMPLE).tailnetPart()).toBe(text);
    expect(tailnetPart({ acls: [], meshguard: { version: 1 } })).toEqual({ acls: [] });
  });
});

describe("invalid policies are rejected whole, every issue with path, line and column", () => {
  test("a bad value deep in a combined file names meshguard.rules[N].when.hours, its line and column and what is valid", () => {
    const text = `{
  "acls": [],
  "meshguard": {
    "version": 1,
    "rules": [
      { "src": ["*"], "http": { "host": ["a.com"] } },
      { "src": ["*"], "http": { "host": ["b.com"] } },
      { "src": ["*"], "http": { "host": ["c.com"] } },
      { "src": ["*"], "http": { "host": ["d.com"] }, "when": { "hours": "9-17" } },
    ],
  },
}`;
    const e = invalid(text);
    expect(e.issues).toEqual([expect.objectContaining({ path: "meshguard.rules[3].when.hours", line: 9, column: 73 })]);
    expect(e.message).toContain("p.hujson:9:73 meshguard.rules[3].when.hours");
    expect(e.message).toContain('"HH:MM-HH:MM"');
    expect(e.message).toContain('got "9-17"');
  });

  test("all issues are listed, including unknown keys (with the valid ones) and missing fields", () => {
    const e = invalid(`{"version":1,"rules":[{"src":["tag:x"],"http":{"host":["a.com"],"port":[0]},"when":{"hours":"9-17","hour":1}},{"http":{"host":["b.com"]}}]}`);
    const paths = e.issues.map((i) => i.path);
    expect(paths).toEqual(expect.arrayContaining(["rules[0].http.port[0]", "rules[0].when.hours", "rules[0].when.hour", "rules[1].src"]));
    expect(e.issues.find((i) => i.path === "rules[0].when.hour")!.message).toMatch(/unknown key "hour"; valid keys here are: hours, weekdays, timeZone/);
    expect(e.issues.find((i) => i.path === "rules[1].src")!.message).toMatch(/missing/);
  });

  test("syntax errors point at the line and column", () => {
    const e = invalid(`{\n  "version": 1,\n  "rules": [\n    { "src": ["*"] "http": {} }\n  ]\n}`);
    expect(e.issues[0]).toMatchObject({ line: 4, column: 20 });
    expect(e.issues[0]!.message).toMatch(/syntax error: expected ","/);
  });

  test.each([
    ["duplicate keys", `{"version":1,"version":1,"rules":[]}`, /duplicate key "version"/],
    ["not an object", `[1,2]`, /a policy is a JSON object, not a list/],
    ["empty file", ``, /the file is empty/],
    ["wrong version", `{"version":7,"rules":[]}`, /must be 1, 2, 3, 4, 5 or 6/],
    ["an mcp resource rule in a version-5 file", `{"version":5,"rules":[{"src":["*"],"mcp":{"server":["s"],"resource":["file:///*"]}}]}`, /mcp resource rules need "version": 6/],
    ["an mcp prompt rule in a version-1 file", `{"version":1,"rules":[{"src":["*"],"mcp":{"server":["s"],"prompt":["p"]}}]}`, /mcp prompt rules need "version": 6/],
    ["an mcp rule with tool and resource", `{"version":6,"rules":[{"src":["*"],"mcp":{"server":["s"],"tool":["t"],"resource":["r"]}}]}`, /exactly one of tool, resource and prompt, this one has tool and resource/],
    ["an mcp rule about nothing", `{"version":6,"rules":[{"src":["*"],"mcp":{"server":["s"]}}]}`, /names what it is about: "tool"/],
    ["args on a resource rule", `{"version":6,"rules":[{"src":["*"],"mcp":{"server":["s"],"resource":["r"],"args":{"a":"x"}}}]}`, /a resource read has no arguments/],
    ["a dns rule in a version-1 file", `{"version":1,"rules":[{"src":["*"],"dns":{"name":["a"]}}]}`, /dns rules need "version": 2/],
    ["two targets in a rule", `{"version":1,"rules":[{"src":["*"],"http":{"host":["a"]},"tcp":{"host":["a"],"port":[1]}}]}`, /exactly one target, this one has http and tcp/],
    ["no target", `{"version":1,"rules":[{"src":["*"]}]}`, /exactly one target/],
    ["unknown group", `{"version":1,"groups":{"group:a":["x@"]},"rules":[{"src":["group:b"],"http":{"host":["a"]}}]}`, /group "group:b" is not defined.*group:a/],
    ["unknown time zone", `{"version":1,"rules":[{"src":["*"],"http":{"host":["a"]},"when":{"hours":"09:00-10:00","timeZone":"Mars/Olympus"}}]}`, /unknown time zone "Mars\/Olympus"/],
    ["a deny rule with a rate", `{"version":1,"rules":[{"effect":"deny","src":["*"],"http":{"host":["a"]},"when":{"rate":{"perMinute":1}}}]}`, /a deny rule cannot have a rate/],
    ["a bad CIDR", `{"version":1,"rules":[{"src":["*"],"tcp":{"host":["10.0.0.0/33"],"port":[1]}}]}`, /not a valid IP address or CIDR/],
    ["a mid-name wildcard", `{"version":1,"rules":[{"src":["*"],"http":{"host":["api.*.com"]}}]}`, /wildcard must be the whole first label/],
    ["a reversed port range", `{"version":1,"rules":[{"src":["*"],"tcp":{"host":["a"],"port":["90-80"]}}]}`, /LOW-HIGH/],
    ["headers on a tcp rule", `{"version":1,"rules":[{"src":["*"],"tcp":{"host":["a"],"port":[1]},"when":{"headers":{"x":"y"}}}]}`, /http rules only/],
    ["duplicate ids", `{"version":1,"rules":[{"id":"x","src":["*"],"http":{"host":["a"]}},{"id":"x","src":["*"],"http":{"host":["b"]}}]}`, /duplicate rule id "x"/],
    ["an unreadable test request", `{"version":1,"rules":[],"tests":[{"as":"tag:a","request":"FETCH","expect":"deny"}]}`, /cannot read request/],
    ["a test naming an unknown rule", `{"version":1,"rules":[],"tests":[{"as":"tag:a","request":"GET https://a/","expect":"deny","rule":"nope"}]}`, /no rule has the id "nope"/],
    ["too deep", "[".repeat(100) + "]".repeat(100), /nesting deeper than 64/],
  ])("%s", (_name, text, message) => {
    const e = invalid(text);
    expect(e.message).toMatch(message);
    for (const i of e.issues) {
      expect(i.line).toBeGreaterThan(0);
      expect(i.column).toBeGreaterThan(0);
    }
  });
});

describe("tests section", () => {
  test("a policy whose tests fail is rejected, showing the failing case and where it is", () => {
    const text = `{
  "version": 1,
  "rules": [ { "id": "web", "src": ["tag:a"], "http": { "host": ["a.com"], "method": ["GET"] } } ],
  "tests": [
    { "as": "tag:a", "request": "GET https://a.com/", "expect": "allow" },
    { "as": "tag:a", "request": "POST https://a.com/", "expect": "allow" },
  ],
}`;
    let err: unknown;
    try {
      loadPolicy(text, { file: "t.hujson" });
    } catch (e) {
      err = e;
    }
    expect(isMeshguardError(err, ErrorCode.POLICY_TESTS_FAILED)).toBe(true);
    const e = err as PolicyTestsFailedError;
    expect(e.failures).toHaveLength(1);
    expect(e.failures[0]).toMatchObject({ index: 1, line: 6, request: "POST https://a.com/", expect: "allow", got: { effect: "deny" } });
    expect(e.message).toContain('t.hujson:6:5 tests[1]: as "tag:a" "POST https://a.com/": expected allow, got deny');
    // runTests: false loads it anyway (the CLI reports all results itself).
    expect(loadPolicy(text, { runTests: false }).runTests().map((r) => r.pass)).toEqual([true, false]);
  });

  test("tests run on fresh rate state and do not spend the policy's", () => {
    const text = `{"version":1,"rules":[{"id":"r","src":["tag:a"],"http":{"host":["a.com"]},"when":{"rate":{"perMinute":1}}}],
      "tests":[{"as":"tag:a","request":"GET https://a.com/","expect":"allow","at":"2026-01-01T00:00:00Z"}]}`;
    const p = loadPolicy(text, { clock: () => new Date("2026-01-01T00:00:00Z") });
    expect(p.runTests()[0]!.pass).toBe(true);
    expect(p.evaluate(req("tag:a", "GET https://a.com/")).effect).toBe("allow");
  });
});

describe("decisions", () => {
  const policy = loadPolicy(`{
    "version": 1,
    "rules": [
      { "id": "allow-all-a", "src": ["tag:a"], "http": { "host": ["*"] } },
      { "id": "approve-pay", "effect": "approve", "src": ["*"], "http": { "host": ["pay.example.com"] } },
      { "id": "deny-evil", "effect": "deny", "src": ["*"], "http": { "host": ["evil.com", "*.evil.com"] } },
      { "id": "allow-pay-b", "src": ["tag:b"], "http": { "host": ["pay.example.com"] } },
      { "id": "limited", "src": ["tag:c"], "http": { "host": ["api.example.com"] }, "when": { "rate": { "perMinute": 2 } } },
      { "id": "fallback", "src": ["tag:c"], "http": { "host": ["api.example.com"], "method": ["GET"] } },
      { "id": "ip-range", "src": ["tag:d"], "tcp": { "host": ["10.0.0.0/8"], "port": ["5000-5999"] } },
    ],
  }`, { clock: () => new Date("2026-01-01T00:00:00Z") });

  test("deny wins over allow whatever the order; approve beats allow", () => {
    expect(policy.evaluate(req("tag:a", "GET https://evil.com/"))).toMatchObject({ effect: "deny", ruleId: "deny-evil" });
    expect(policy.evaluate(req("tag:a", "GET https://pay.example.com/"))).toMatchObject({ effect: "approve", ruleId: "approve-pay" });
    expect(policy.evaluate(req("tag:b", "GET https://pay.example.com/"))).toMatchObject({ effect: "approve", ruleId: "approve-pay" });
    expect(policy.evaluate(req("tag:a", "GET https://ok.example.com/"))).toMatchObject({ effect: "allow", ruleId: "allow-all-a" });
  });

  test("a deny rule cannot be dodged by case, a trailing dot or a subdomain", () => {
    for (const host of ["EVIL.com", "evil.com.", "x.evil.com", "a.b.evil.com"]) {
      expect(policy.evaluate({ principal: { tags: ["tag:a"] }, target: { kind: "http", scheme: "https", host, port: 443, method: "GET", path: "/", query: "", headers: {} } }).effect, host).toBe("deny");
    }
    expect(policy.evaluate(req("tag:a", "GET https://notevil.com/")).effect).toBe("allow");
  });

  test("a rate-limited rule falls through to the next matching allow, then denies for the rate; tokens refill with the clock", () => {
    const t0 = new Date("2026-01-01T00:00:00Z");
    const at = (ms: number) => new Date(t0.getTime() + ms);
    expect(policy.evaluate(req("tag:c", "POST https://api.example.com/", { now: at(0) })).ruleId).toBe("limited");
    expect(policy.evaluate(req("tag:c", "POST https://api.example.com/", { now: at(1) })).ruleId).toBe("limited");
    const third = policy.evaluate(req("tag:c", "POST https://api.example.com/", { now: at(2) }));
    expect(third).toMatchObject({ effect: "deny", ruleId: "limited" });
    expect(third.reason).toMatch(/2 calls per minute/);
    expect(policy.evaluate(req("tag:c", "GET https://api.example.com/", { now: at(3) }))).toMatchObject({ effect: "allow", ruleId: "fallback" });
    // Another agent with the same tag has its own bucket.
    expect(policy.evaluate({ principal: { tags: ["tag:c"], node: "other" }, target: parseRequest("POST https://api.example.com/"), now: at(4) }).ruleId).toBe("limited");
    // 30 s later one token is back (2 per minute).
    expect(policy.evaluate(req("tag:c", "POST https://api.example.com/", { now: at(30_000) })).effect).toBe("allow");
    expect(policy.evaluate(req("tag:c", "POST https://api.example.com/", { now: at(30_001) })).effect).toBe("deny");
  });

  test("giveBack returns the rate token a decision spent (a call decided again counts once), never past the rule's rate", () => {
    const p = loadPolicy(`{"version":1,"rules":[
      {"id":"limited","src":["tag:c"],"http":{"host":["api.example.com"]},"when":{"rate":{"perMinute":2}}},
      {"id":"free","src":["tag:c"],"http":{"host":["free.example.com"]}}]}`);
    const now = new Date("2026-01-01T00:00:00Z");
    const call = () => p.evaluate(req("tag:c", "POST https://api.example.com/", { now }));
    // Decided twice, the first token given back in between: one call, so a second call still fits.
    const first = call();
    p.giveBack(req("tag:c", "POST https://api.example.com/").principal, first);
    expect(call()).toMatchObject({ effect: "allow", ruleId: "limited" });
    expect(call()).toMatchObject({ effect: "allow", ruleId: "limited" });
    expect(call()).toMatchObject({ effect: "deny", ruleId: "limited" });
    // Giving back more than was spent never holds more than the rate: two back, two calls, then none.
    const principal = req("tag:c", "POST https://api.example.com/").principal;
    for (let i = 0; i < 5; i++) p.giveBack(principal, first);
    expect(call().effect).toBe("allow");
    expect(call().effect).toBe("allow");
    expect(call().effect).toBe("deny");
    // A decision of a rule without a rate, or a deny, gives nothing back.
    p.giveBack(principal, p.evaluate(req("tag:c", "GET https://free.example.com/", { now })));
    p.giveBack(principal, call());
    expect(call().effect).toBe("deny");
  });

  test("IP ranges match the host literal, IPv4-mapped IPv6 and the resolved address", () => {
    expect(policy.evaluate(req("tag:d", "tcp 10.1.2.3:5432")).effect).toBe("allow");
    expect(policy.evaluate(req("tag:d", "tcp [::ffff:10.1.2.3]:5432")).effect).toBe("allow");
    expect(policy.evaluate(req("tag:d", "tcp 10.1.2.3:6000")).effect).toBe("deny");
    expect(policy.evaluate(req("tag:d", "tcp 11.1.2.3:5432")).effect).toBe("deny");
    expect(policy.evaluate({ principal: { tags: ["tag:d"] }, target: { ...(parseRequest("tcp db.internal:5432") as object), resolvedIp: "10.9.9.9" } as never }).effect).toBe("allow");
  });

  test("evaluate never throws: malformed requests and a broken clock are denials with a reason", () => {
    const bad: unknown[] = [undefined, null, {}, { principal: {} }, { principal: { tags: [] } }, { principal: { tags: [] }, target: { kind: "ftp" } }, { principal: { tags: "x" }, target: parseRequest("GET https://a/") }];
    for (const r of bad) {
      const d = policy.evaluate(r as DecisionRequest);
      expect(d.effect).toBe("deny");
      expect(d.reason).toMatch(/malformed/);
    }
    const broken = loadPolicy(`{"version":1,"rules":[{"src":["*"],"http":{"host":["*"]},"when":{"hours":"00:00-24:00"}}]}`, {
      clock: () => {
        throw new Error("clock exploded");
      },
    });
    expect(broken.evaluate(req("tag:a", "GET https://a/"))).toMatchObject({ effect: "deny", reason: expect.stringMatching(/internal error.*clock exploded/) });
    expect(broken.explain(req("tag:a", "GET https://a/")).decision.effect).toBe("deny");
  });

  test("explain lists every rule with each check and agrees with evaluate", () => {
    const r = req("tag:a", "GET https://evil.com/x");
    const ex = policy.explain(r);
    expect(ex.decision).toEqual(policy.evaluate(r));
    expect(ex.rules.map((x) => x.ruleId)).toEqual(["allow-all-a", "approve-pay", "deny-evil", "allow-pay-b", "limited", "fallback", "ip-range"]);
    expect(ex.rules.find((x) => x.ruleId === "deny-evil")).toMatchObject({ result: "match", candidate: true });
    const pay = ex.rules.find((x) => x.ruleId === "approve-pay")!;
    expect(pay.result).toBe("no-match");
    expect(pay.checks.find((c) => c.what === "host")).toMatchObject({ ok: false });
    expect(ex.rules.find((x) => x.ruleId === "ip-range")!.checks.find((c) => c.what === "kind")).toMatchObject({ ok: false });
  });
});

describe("fail closed on facts the request lacks", () => {
  const p = loadPolicy(`{"version":1,"rules":[
    {"id":"small","src":["*"],"http":{"host":["up.example.com"]},"when":{"maxBodyBytes":1000}},
    {"id":"any","src":["*"],"http":{"host":["up.example.com"],"method":["GET"]}},
    {"id":"models","src":["*"],"llm":{"model":["openai/gpt-4o*"],"maxTokens":2000}}]}`);
  test("a streamed body of unknown size under a body-size rule is denied even when another rule would allow", () => {
    expect(p.evaluate(req("tag:a", "POST https://up.example.com/"))).toMatchObject({ effect: "deny", ruleId: "small" });
    expect(p.evaluate(req("tag:a", "GET https://up.example.com/")).effect).toBe("deny");
    expect(p.evaluate({ principal: { tags: [] }, target: parseRequest("POST https://up.example.com/", { bodySize: 999 }) }).effect).toBe("allow");
    expect(p.evaluate({ principal: { tags: [] }, target: parseRequest("POST https://up.example.com/", { bodySize: 1001 }) }).effect).toBe("deny");
  });
  test("an LLM call with an unknown model or undeclared max tokens is denied", () => {
    expect(p.evaluate(req("tag:a", "llm openai/gpt-4o 100")).effect).toBe("allow");
    expect(p.evaluate({ principal: { tags: [] }, target: { kind: "llm", provider: "openai", model: "", maxTokens: 100 } })).toMatchObject({ effect: "deny", ruleId: "models" });
    expect(p.evaluate(req("tag:a", "llm openai/gpt-4o")).reason).toMatch(/declared max tokens/);
    expect(p.evaluate(req("tag:a", "llm openai/gpt-4o 2001")).ruleId).toBeUndefined();
  });
});

describe("request lines", () => {
  test.each([
    ["GET https://Api.Example.com:8443/v2/x?y=1", { kind: "http", scheme: "https", host: "api.example.com", port: 8443, method: "GET", path: "/v2/x", query: "y=1" }],
    ["https://a.com", { kind: "http", method: "GET", port: 443, path: "/" }],
    ["tcp db.internal:5432", { kind: "tcp", tls: false, host: "db.internal", port: 5432 }],
    ["tls [fd7a::1]:443 tailnet", { kind: "tcp", tls: true, host: "fd7a::1", port: 443, tailnet: true }],
    ['mcp github create_issue {"repo":"acme/app"}', { kind: "mcp", server: "github", tool: "create_issue", args: { repo: "acme/app" } }],
    ["llm anthropic/claude-3-5-haiku 1024", { kind: "llm", provider: "anthropic", model: "claude-3-5-haiku", maxTokens: 1024 }],
  ])("%s", (line, want) => {
    expect(parseRequest(line)).toMatchObject(want);
  });
  test.each(["", "FETCH", "tcp db", "tcp db:99999", "mcp github", "mcp gh t {bad", "llm gpt-4o", "GET ftp://x/"])("rejects %j", (line) => {
    expect(() => parseRequest(line)).toThrow(expect.objectContaining({ code: ErrorCode.POLICY_REQUEST_INVALID }));
  });
});
