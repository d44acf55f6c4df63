/**
 * The `token` rule kind (policy format version 4): what loads, what is
 * refused with which message, and how the engine decides a token request
 * line ("token AUDIENCE METHOD LOCATION") — containment for allow rules,
 * overlap for deny rules, deny wins, deny by default.
 */

import { readFileSync } from "node:fs";
import { describe, expect, test } from "vitest";
import { loadPolicy, parseRequest, type Principal } from "../../src/policy/index.js";

const AGENT: Principal = { tags: ["tag:agent"], node: "agent-1.tailnet.example" };

function policy(rules: object[], tests: object[] = [], version = 4) {
  return loadPolicy(JSON.stringify({ version, groups: { "group:ops": ["ops@example.com"] }, rules, tests }));
}

function loadError(rules: object[], version = 4): string {
  try {
    policy(rules, [], version);
  } catch (err) {
    return (err as Error).message;
  }
  return "(loaded)";
}

const BILLING = {
  id: "billing-read",
  src: ["tag:agent"],
  token: { audience: ["http://billing"], actions: [{ methods: ["GET"], locations: ["https://billing/v2/transactions/*"] }, "http:POST:billing/v2/reports"], maxTtl: "10m" },
};

const decide = (p: ReturnType<typeof policy>, line: string, who: Principal = AGENT) => p.evaluate({ principal: who, target: parseRequest(line) });

describe("loading", () => {
  test("a version-4 file with a token rule loads; the rule's maxTtl is known by rule id", () => {
    const p = policy([BILLING]);
    expect(p.version).toBe(4);
    expect(p.tokenMaxTtl.get("billing-read")).toBe(600_000);
  });

  test("a token rule in a version-3 file is refused with a message that says to use version 4", () => {
    expect(loadError([BILLING], 3)).toMatch(/rules\[0\]: token rules need "version": 4 \(version 3 has no token rules\)/);
  });

  test("shape errors of a token rule are reported with their paths", () => {
    const msg = loadError([{ src: ["*"], token: { audience: [], actions: [{ methods: ["get"], locations: ["https://billing/x"] }], maxTtl: "15" } }]);
    expect(msg).toMatch(/rules\[0\]\.token\.audience: list at least one audience/);
    expect(msg).toMatch(/rules\[0\]\.token\.actions\[0\]\.methods\[0\]: must be an upper-case HTTP method/);
    expect(msg).toMatch(/rules\[0\]\.token\.maxTtl: must be a duration/);
  });

  test("every wrong meaning in a token rule is reported with its path", () => {
    const msg = loadError([
      {
        src: ["*"],
        effect: "approve",
        token: {
          audience: ["http://billing/path", "Http://*.X"],
          actions: [{ methods: ["GET"], locations: ["billing/x"] }, "http:GET", "http:GET:https://*.b/x", "http:get:billing/x"],
        },
      },
      { src: ["*"], effect: "deny", token: { audience: ["*"], actions: ["http:*:billing/**"], maxTtl: "1m" } },
    ]);
    expect(msg).toMatch(/rules\[0\]\.effect: a token rule allows or denies/);
    expect(msg).toMatch(/rules\[0\]\.token\.audience\[0\]: "http:\/\/billing\/path": an audience URL is an http\(s\) origin/);
    expect(msg).toMatch(/rules\[0\]\.token\.audience\[1\]: audience pattern "Http:\/\/\*\.X": write it in lower case/);
    expect(msg).toMatch(/rules\[0\]\.token\.actions\[0\]: "billing\/x" is not a location: write scheme:\/\/host\/path/);
    expect(msg).toMatch(/rules\[0\]\.token\.actions\[1\]: "http:GET" is not a scope/);
    expect(msg).toMatch(/rules\[0\]\.token\.actions\[2\]: "http:GET:https:\/\/\*\.b\/x": .*the host is exact/);
    expect(msg).toMatch(/rules\[0\]\.token\.actions\[3\]: "http:get:billing\/x": "get" is not an upper-case HTTP method/);
    expect(msg).toMatch(/rules\[1\]\.token: a deny rule grants nothing, so maxTtl has no meaning/);
  });

  test("a rule with token and http targets is told to split", () => {
    expect(loadError([{ src: ["*"], http: { host: ["a"] }, token: BILLING.token }])).toMatch(/this one has http and token: split it into 2 rules/);
  });

  test("policy tests can state token requests, and a failing one rejects the policy", () => {
    expect(() => policy([BILLING], [{ as: "tag:agent", request: "token http://billing GET https://billing/v2/transactions/*", expect: "allow", ruleId: "billing-read" }])).not.toThrow();
    expect(() => policy([BILLING], [{ as: "tag:agent", request: "token http://billing GET https://billing/v2/**", expect: "allow" }])).toThrow(/tests/);
  });

  test("a malformed token request line says what is expected", () => {
    expect(() => parseRequest("token http://billing GET")).toThrow(/expected "token AUDIENCE METHOD LOCATION"/);
    expect(() => parseRequest("token http://billing/x GET https://billing/x")).toThrow(/an audience URL is an http\(s\) origin/);
    expect(() => parseRequest("token billing GE-T? https://billing/x")).toThrow(/is not an HTTP method/);
  });
});

describe("deciding", () => {
  test("allowed: a requested action contained in the rule's (method and location); the request line round-trips", () => {
    const p = policy([BILLING]);
    expect(decide(p, "token http://billing GET https://billing/v2/transactions/*")).toMatchObject({ effect: "allow", ruleId: "billing-read" });
    expect(decide(p, "token http://billing GET https://billing/v2/transactions/t-1")).toMatchObject({ effect: "allow" });
    expect(decide(p, "token http://billing POST http://billing/v2/reports")).toMatchObject({ effect: "allow" });
    expect(decide(p, "token HTTP://BILLING/ get https://BILLING:443/v2/transactions/x")).toMatchObject({ effect: "allow" });
  });

  test("refused: wider path, other method, other scheme, other audience, other caller — deny by default, naming the caller", () => {
    const p = policy([BILLING]);
    for (const line of [
      "token http://billing GET https://billing/v2/transactions/**",
      "token http://billing GET https://billing/v2/*",
      "token http://billing DELETE https://billing/v2/transactions/x",
      "token http://billing * https://billing/v2/transactions/x",
      "token http://billing GET http://billing/v2/transactions/x",
      "token http://ledger GET https://billing/v2/transactions/x",
    ]) {
      expect(decide(p, line), line).toMatchObject({ effect: "deny", reason: expect.stringMatching(/no rule allows tag:agent/) });
    }
    expect(decide(p, "token http://billing GET https://billing/v2/transactions/x", { tags: ["tag:other"] }).effect).toBe("deny");
  });

  test("a deny rule that overlaps the request wins over an allow rule that contains it", () => {
    const p = policy([
      { id: "all-billing", src: ["*"], token: { audience: ["http://billing"], actions: ["http:*:billing/**"] } },
      { id: "no-admin", src: ["*"], effect: "deny", token: { audience: ["*"], actions: ["http:*:billing/admin/**"] } },
    ]);
    expect(decide(p, "token http://billing GET https://billing/v2/x")).toMatchObject({ effect: "allow", ruleId: "all-billing" });
    expect(decide(p, "token http://billing GET https://billing/**")).toMatchObject({ effect: "deny", ruleId: "no-admin" });
    expect(decide(p, "token http://billing GET https://billing/*/users")).toMatchObject({ effect: "deny", ruleId: "no-admin" });
    expect(decide(p, "token http://billing GET https://billing/admin")).toMatchObject({ effect: "allow" });
  });

  test("a scope without a scheme stands for http and https; audience patterns match with *", () => {
    const p = policy([{ id: "r", src: ["group:ops"], token: { audience: ["http://*.internal", "reports"], actions: ["http:GET,HEAD:billing:8080/r/*"] } }]);
    const ops: Principal = { tags: [], user: "ops@example.com" };
    expect(decide(p, "token http://billing.internal GET http://billing:8080/r/1", ops).effect).toBe("allow");
    expect(decide(p, "token reports HEAD https://billing:8080/r/1", ops).effect).toBe("allow");
    expect(decide(p, "token http://billing.external GET http://billing:8080/r/1", ops).effect).toBe("deny");
    expect(decide(p, "token reports GET https://billing/r/1", ops).effect).toBe("deny");
  });

  test("explain says which URL makes a request wider than the rule", () => {
    const p = policy([BILLING]);
    const e = p.explain({ principal: AGENT, target: parseRequest("token http://billing GET https://billing/v2/transactions/**") });
    const check = e.rules[0]!.checks.find((c) => c.what === "token.actions")!;
    expect(check).toMatchObject({ ok: false, detail: expect.stringContaining("it covers https://billing/v2/transactions//") });
  });

  test("a token target whose location cannot be read is denied (fails closed), also under an allow-everything rule", () => {
    const p = policy([{ id: "all", src: ["*"], token: { audience: ["*"], actions: ["http:*:billing/**"] } }]);
    const d = p.evaluate({ principal: AGENT, target: { kind: "token", audience: "http://billing", method: "GET", location: "billing/v2" } });
    expect(d).toMatchObject({ effect: "deny", ruleId: "all", reason: expect.stringMatching(/needs a readable location/) });
  });
});

test("the token rule example of docs/policy.md loads and grants what the page says", () => {
  const doc = readFileSync(new URL("../../docs/policy.md", import.meta.url), "utf8");
  const block = /\*\*`token`\*\* \(version 4\)[\s\S]*?```jsonc\n([\s\S]*?)```/.exec(doc)?.[1];
  expect(block, "docs/policy.md has a jsonc example after **`token`**").toBeDefined();
  const p = loadPolicy(`{ "version": 4, "rules": [ ${block} ] }`);
  const who: Principal = { tags: ["tag:research-agent"] };
  expect(decide(p, "token http://billing GET https://billing/v2/transactions/t-1", who)).toMatchObject({ effect: "allow", ruleId: "billing-read" });
  expect(decide(p, "token http://billing POST http://billing/v2/reports", who).effect).toBe("allow");
  expect(decide(p, "token http://billing GET https://billing/v2/**", who).effect).toBe("deny");
  expect(p.tokenMaxTtl.get("billing-read")).toBe(600_000);
});

test("the policy example of docs/tokens.md loads and its tests pass", () => {
  const doc = readFileSync(new URL("../../docs/tokens.md", import.meta.url), "utf8");
  const block = /## Policy[\s\S]*?```jsonc\n([\s\S]*?)```/.exec(doc)?.[1];
  expect(block, "docs/tokens.md has a jsonc example under ## Policy").toBeDefined();
  const p = loadPolicy(block!);
  expect(p.runTests().every((r) => r.pass)).toBe(true);
  expect(p.runTests()).toHaveLength(2);
});
