import { readFileSync } from "node:fs";
import { PassThrough } from "node:stream";
import { describe, expect, test } from "vitest";

import { policyCommand } from "../../src/cli/policy.js";
import { decisionEvent, parseRequest } from "../../src/policy/index.js";

const EXAMPLE = readFileSync(new URL("./fixtures/example.hujson", import.meta.url), "utf8");

/** run invokes `meshguard policy ...` in-process with the given files and captures its output. */
async function run(argv: string[], files: Record<string, string> = {}) {
  const out = new PassThrough();
  const err = new PassThrough();
  let stdout = "";
  let stderr = "";
  out.on("data", (c) => (stdout += c));
  err.on("data", (c) => (stderr += c));
  const code = await policyCommand(argv, {
    stdout: out,
    stderr: err,
    readText: async (p) => {
      if (!(p in files)) throw Object.assign(new Error(`ENOENT ${p}`), { code: "ENOENT" });
      return files[p]!;
    },
  });
  return { code, stdout, stderr };
}

describe("meshguard policy test", () => {
  test("passing tests: exit 0, one line per case and a summary", async () => {
    const r = await run(["test", "p.hujson"], { "p.hujson": EXAMPLE });
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^ok {3}p\.hujson:\d+ as tag:research-agent: GET https:\/\/api\.github\.com\/repos\/acme\/app\/issues -> allow$/m);
    expect(r.stdout).toMatch(/p\.hujson: 8 rules, 16 passed, 0 failed/);
  });
  test("a failing test: exit 1 and the case is shown with why", async () => {
    const text = EXAMPLE.replace(`"request": "llm openai/gpt-4o 1024", "expect": "deny"`, `"request": "llm openai/gpt-4o 1024", "expect": "allow"`);
    const r = await run(["test", "p.hujson", "--json"], { "p.hujson": text });
    expect(r.code).toBe(1);
    const j = JSON.parse(r.stdout);
    expect(j).toMatchObject({ ok: false, passed: 15, failed: 1 });
    expect(j.results.find((x: { pass: boolean }) => !x.pass)).toMatchObject({ request: "llm openai/gpt-4o 1024", expect: "allow", got: { effect: "deny" } });
  });
  test("an invalid policy: exit 1 with every issue", async () => {
    const r = await run(["test", "bad.hujson"], { "bad.hujson": `{"version":1,"rules":[{"src":["tag:a"],"http":{"host":["a"]},"when":{"hours":"9-5"}}]}` });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/bad\.hujson:1:\d+ rules\[0\]\.when\.hours: must be "HH:MM-HH:MM"/);
    const j = await run(["test", "bad.hujson", "--json"], { "bad.hujson": `{"version":1,"rules":[{}]}` });
    expect(j.code).toBe(1);
    expect(JSON.parse(j.stdout).error).toMatchObject({ code: "MESHGUARD_POLICY_INVALID", issues: expect.any(Array) });
  });
  test("usage errors exit 2", async () => {
    expect((await run([])).code).toBe(2);
    expect((await run(["test"])).code).toBe(2);
    expect((await run(["test", "a", "b"])).code).toBe(2);
    expect((await run(["frobnicate"])).code).toBe(2);
    expect((await run(["test", "missing.hujson"])).stderr).toMatch(/cannot read missing\.hujson/);
    expect((await run(["--help"])).code).toBe(0);
  });
});

describe("meshguard policy explain", () => {
  test("HTTP: the decision first, then each rule and why it did or did not match", async () => {
    const r = await run(["explain", "p.hujson", "--as", "tag:research-agent", "GET https://api.github.com/admin/users"], { "p.hujson": EXAMPLE });
    expect(r.code).toBe(0);
    expect(r.stdout.split("\n")[0]).toBe('DENY by rule "no-admin": denied by rule "no-admin"');
    expect(r.stdout).toMatch(/MATCH {3}no-admin \(deny, http\)/);
    expect(r.stdout).toMatch(/- {7}research-web \(allow, http\)\n {10}✗ path: path \/admin\/users does not match/);
    expect(r.stdout).toMatch(/- {7}db \(allow, tcp\)\n {10}✗ kind: the request is http, the rule is about tcp/);
  });
  test("tcp, mcp and llm targets, users, times, headers and body sizes", async () => {
    const files = { "p.hujson": EXAMPLE };
    const ex = async (...a: string[]) => JSON.parse((await run(["explain", "p.hujson", "--json", ...a], files)).stdout).decision;
    expect(await ex("--as", "tag:research-agent", "tcp db.internal:5432")).toMatchObject({ effect: "allow", ruleId: "db" });
    expect(await ex("--as", "tag:research-agent", 'mcp github create_issue {"repo":"acme/x"}')).toMatchObject({ effect: "approve" });
    expect(await ex("--as", "tag:research-agent", "llm openai/gpt-4o-mini 100")).toMatchObject({ effect: "allow" });
    expect(await ex("--as", "bob@", "GET https://api.github.com/users/x")).toMatchObject({ effect: "allow" });
    expect(await ex("--as", "tag:billing-agent", "--at", "2026-03-09T10:00:00Z", "--body-size", "10", "POST https://payments.internal/v2/transactions/1")).toMatchObject({ effect: "allow" });
    expect(await ex("--as", "tag:billing-agent", "--at", "2026-03-09T10:00:00Z", "POST https://payments.internal/v2/transactions/1")).toMatchObject({ effect: "deny" });
  });
  test("usage errors exit 2: missing --as, unreadable request or identity, bad --at", async () => {
    const files = { "p.hujson": EXAMPLE };
    expect((await run(["explain", "p.hujson", "GET https://a/"], files)).code).toBe(2);
    expect((await run(["explain", "p.hujson", "--as", "tag:a", "--at", "yesterday", "GET https://a/"], files)).code).toBe(2);
    const bad = await run(["explain", "p.hujson", "--as", "tag:a", "FETCH it"], files);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/cannot read request "FETCH it"/);
  });
});

describe("meshguard policy learn", () => {
  test("reads a JSON-lines log and prints a policy that passes `policy test`", async () => {
    const log = ["GET https://api.example.com/v2/users/1", "GET https://api.example.com/v2/users/2", "tcp db.internal:5432"]
      .map((line) => JSON.stringify(decisionEvent({ tags: ["tag:agent"] }, parseRequest(line), { effect: "deny", reason: "observe" }, { layer: "fetch", outcome: "allow", latencyUs: 1, mode: "observe", time: new Date("2026-03-09T10:00:00Z") })))
      .join("\n");
    const r = await run(["learn", "obs.jsonl"], { "obs.jsonl": log });
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('"/v2/users/*"');
    expect(r.stderr).toMatch(/2 rules and 4 tests from 3 observed calls/);
    expect((await run(["test", "learned.hujson"], { "learned.hujson": r.stdout })).code).toBe(0);
    const j = JSON.parse((await run(["learn", "obs.jsonl", "--json"], { "obs.jsonl": log })).stdout);
    expect(j).toMatchObject({ ok: true, rules: 2, tests: 4, used: 3 });
  });
  test("a malformed log exits 1 naming the line", async () => {
    const r = await run(["learn", "obs.jsonl"], { "obs.jsonl": "{}\n" });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/obs\.jsonl:1: unsupported event version/);
  });
});
