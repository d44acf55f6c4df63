/**
 * Policy format version 6: `mcp` rules about resources (`resource`: URI
 * globs) and prompts (`prompt`: name globs, with `args`) beside tools. The
 * change is versioned: older files keep loading and meaning what they meant
 * — a tool rule, even `"tool": ["*"]`, never allows a resource read or a
 * prompt get — and an older file naming resources or prompts is an error
 * that says to use version 6.
 */

import { describe, expect, test } from "vitest";

import { decisionEvent, formatTarget, loadPolicy, parseRequest, readDecisionEvents, type Principal } from "../../src/policy/index.js";

const AGENT: Principal = { tags: ["tag:agent"] };

function policy(rules: object[], version = 6, tests: object[] = []) {
  return loadPolicy(JSON.stringify({ version, rules, tests }));
}

const decide = (p: ReturnType<typeof policy>, line: string, principal = AGENT) => p.evaluate({ principal, target: parseRequest(line) });

describe("request lines", () => {
  test.each([
    ["mcp-resource docs file:///handbook/intro.md", { kind: "mcp", server: "docs", tool: "", args: {}, resource: "file:///handbook/intro.md" }],
    ['mcp-prompt github summarize {"repo":"acme/app"}', { kind: "mcp", server: "github", tool: "", args: { repo: "acme/app" }, prompt: "summarize" }],
    ["mcp-prompt github summarize", { kind: "mcp", server: "github", tool: "", args: {}, prompt: "summarize" }],
  ])("%s", (line, want) => {
    expect(parseRequest(line)).toEqual(want);
    expect(parseRequest(formatTarget(parseRequest(line), { reveal: { mcpArgs: true } }))).toEqual(want);
  });

  test("prompt arguments are redacted like tool arguments", () => {
    expect(formatTarget(parseRequest('mcp-prompt github summarize {"repo":"acme/app"}'))).toBe('mcp-prompt github summarize {"repo":"<redacted>"}');
  });

  test.each(["mcp-resource docs", "mcp-resource docs a b", "mcp-prompt github", 'mcp-prompt github p {"a":'])("rejects %j", (line) => {
    expect(() => parseRequest(line)).toThrow(/MESHGUARD_POLICY_REQUEST_INVALID|cannot read request/);
  });
});

describe("decisions", () => {
  const p = policy([
    { id: "all-tools", src: ["*"], mcp: { server: ["*"], tool: ["*"] } },
    { id: "handbook", src: ["tag:agent"], mcp: { server: ["docs"], resource: ["file:///handbook/*"] } },
    { id: "no-secrets", effect: "deny", src: ["*"], mcp: { server: ["*"], resource: ["file:///handbook/secret*"] } },
    { id: "summaries", src: ["tag:agent"], mcp: { server: ["github"], prompt: ["summarize"], args: { repo: "acme/*" } } },
    { id: "reviews", effect: "approve", src: ["tag:agent"], mcp: { server: ["github"], prompt: ["review_*"] } },
  ]);

  test("a tool rule, even for every tool, allows no resource read and no prompt get", () => {
    expect(decide(p, "mcp github create_issue").ruleId).toBe("all-tools");
    expect(decide(p, "mcp-resource docs file:///elsewhere/x").effect).toBe("deny");
    expect(decide(p, "mcp-prompt github other").effect).toBe("deny");
    expect(decide(p, "mcp-prompt github other").ruleId).toBeUndefined();
  });

  test("resource URIs: * crosses /, deny wins", () => {
    expect(decide(p, "mcp-resource docs file:///handbook/a/b.md")).toMatchObject({ effect: "allow", ruleId: "handbook" });
    expect(decide(p, "mcp-resource docs file:///handbook/secrets.md")).toMatchObject({ effect: "deny", ruleId: "no-secrets" });
    expect(decide(p, "mcp-resource other file:///handbook/a.md").effect).toBe("deny");
    expect(decide(p, "mcp-resource docs file:///handbook/a.md", { tags: ["tag:else"] }).effect).toBe("deny");
  });

  test("prompts: names, arguments and approve", () => {
    expect(decide(p, 'mcp-prompt github summarize {"repo":"acme/app"}')).toMatchObject({ effect: "allow", ruleId: "summaries" });
    expect(decide(p, 'mcp-prompt github summarize {"repo":"evil/app"}').effect).toBe("deny");
    expect(decide(p, "mcp-prompt github summarize").effect).toBe("deny");
    expect(decide(p, "mcp-prompt github review_pr")).toMatchObject({ effect: "approve", ruleId: "reviews" });
    // A prompt rule does not allow the tool of the same name.
    expect(decide(policy([{ src: ["*"], mcp: { server: ["*"], prompt: ["*"] } }]), "mcp github summarize").effect).toBe("deny");
  });

  test("explain names the item check", () => {
    const ex = p.explain({ principal: AGENT, target: parseRequest("mcp-resource docs file:///handbook/a.md") });
    const tools = ex.rules.find((r) => r.ruleId === "all-tools")!;
    expect(tools.checks.find((c) => c.what === "item")).toMatchObject({ ok: false });
  });

  test("policy tests can be written for resources and prompts", () => {
    expect(() =>
      policy([{ id: "h", src: ["tag:agent"], mcp: { server: ["docs"], resource: ["file:///handbook/*"] } }], 6, [
        { as: "tag:agent", request: "mcp-resource docs file:///handbook/a.md", expect: "allow", ruleId: "h" },
        { as: "tag:agent", request: "mcp docs file:///handbook/a.md", expect: "deny" },
      ]),
    ).not.toThrow();
  });
});

describe("versions", () => {
  test("a version-5 file with tool rules loads and means the same in version 6", () => {
    const rules = [{ id: "t", src: ["*"], mcp: { server: ["github"], tool: ["get_*"], args: { repo: "acme/*" } } }];
    for (const v of [1, 5, 6]) {
      const p = policy(rules, v);
      expect(decide(p, 'mcp github get_issue {"repo":"acme/x"}').effect).toBe("allow");
      expect(decide(p, 'mcp github get_issue {"repo":"x/x"}').effect).toBe("deny");
      expect(decide(p, "mcp-resource github get_issue").effect).toBe("deny");
    }
  });

  test.each([
    [5, { server: ["s"], resource: ["*"] }, /mcp resource rules need "version": 6/],
    [1, { server: ["s"], prompt: ["*"] }, /mcp prompt rules need "version": 6/],
    [6, { server: ["s"], tool: ["t"], prompt: ["p"] }, /exactly one of tool, resource and prompt/],
    [6, { server: ["s"] }, /names what it is about/],
    [6, { server: ["s"], resource: ["r"], args: { a: "x" } }, /a resource read has no arguments/],
  ])("version %i with %j is rejected", (version, mcp, msg) => {
    expect(() => policy([{ src: ["*"], mcp }], version)).toThrow(msg);
  });
});

test("decision events carry the resource or prompt, and read back", () => {
  const lines = ["mcp-resource docs file:///a", 'mcp-prompt github summarize {"repo":"acme/app"}'].map((l) =>
    JSON.stringify(decisionEvent(AGENT, parseRequest(l), { effect: "allow", ruleId: "r", reason: "x" }, { layer: "gateway", outcome: "allow", latencyUs: 1 })),
  );
  const evs = readDecisionEvents(lines.join("\n"));
  expect(evs[0]!.target).toMatchObject({ kind: "mcp", server: "docs", tool: "", resource: "file:///a" });
  expect(evs[1]!.target).toMatchObject({ kind: "mcp", server: "github", tool: "", prompt: "summarize", argKeys: ["repo"] });
  expect(JSON.stringify(evs[1])).not.toContain("acme/app");
});
