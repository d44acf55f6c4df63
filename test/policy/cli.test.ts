/**
 * The `meshguard` command line: the policy commands end to end (in-process),
 * and the shape every command shares — help with examples, usage errors
 * (MESHGUARD_USAGE, exit 2), the --json error document, exit statuses, the
 * installed executable, and docs/cli.md generated from the command table.
 * Regenerate the reference part of docs/cli.md with:
 *   MESHGUARD_UPDATE_DOCS=1 vitest run --config test/vitest.config.ts test/policy/cli.test.ts
 */

import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, test } from "vitest";

import { COMMANDS } from "../../src/cli/commands.js";
import { commandHelp, indexHelp } from "../../src/cli/help.js";
import { errorDocument } from "../../src/cli/report.js";
import { runCliCaptured } from "../cli-run.js";
import { ErrorCode, MeshguardError } from "../../src/index.js";
import { decisionEvent, parseRequest } from "../../src/policy/index.js";

const EXAMPLE = readFileSync(new URL("./fixtures/example.hujson", import.meta.url), "utf8");

/** cli runs `meshguard ARGV` in-process with the given files and captures its output. */
const cli = runCliCaptured;

/** run is `meshguard policy ARGV`. */
const run = (argv: string[], files: Record<string, string> = {}) => cli(["policy", ...argv], files);

/** jsonDoc parses stdout, which must be exactly one JSON document on one line. */
function jsonDoc(stdout: string): Record<string, unknown> {
  expect(stdout.endsWith("\n") && stdout.indexOf("\n") === stdout.length - 1, `stdout is not one line: ${JSON.stringify(stdout)}`).toBe(true);
  return JSON.parse(stdout) as Record<string, unknown>;
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
    const j = jsonDoc(r.stdout);
    expect(j).toMatchObject({ ok: false, passed: 15, failed: 1 });
    expect((j.results as { pass: boolean }[]).find((x) => !x.pass)).toMatchObject({ request: "llm openai/gpt-4o 1024", expect: "allow", got: { effect: "deny" } });
    const t = await run(["test", "p.hujson"], { "p.hujson": text });
    expect(t.code).toBe(1);
    expect(t.stdout).toMatch(/^FAIL p\.hujson:\d+ as tag:research-agent: llm openai\/gpt-4o 1024 -> deny\n {6}expected allow, got deny/m);
  });
  test("an invalid policy: exit 1 with every issue", async () => {
    const r = await run(["test", "bad.hujson"], { "bad.hujson": `{"version":1,"rules":[{"src":["tag:a"],"http":{"host":["a"]},"when":{"hours":"9-5"}}]}` });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^meshguard policy test: invalid policy/);
    expect(r.stderr).toMatch(/bad\.hujson:1:\d+ rules\[0\]\.when\.hours: must be "HH:MM-HH:MM"/);
    const j = await run(["test", "bad.hujson", "--json"], { "bad.hujson": `{"version":1,"rules":[{}]}` });
    expect(j.code).toBe(1);
    expect(jsonDoc(j.stdout).error).toMatchObject({ code: "MESHGUARD_POLICY_INVALID", issues: expect.any(Array) });
  });
  test("an unreadable file: exit 1, MESHGUARD_POLICY_FILE_UNREADABLE naming it", async () => {
    const r = await run(["test", "missing.hujson"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^meshguard policy test: cannot read missing\.hujson: ENOENT$/m);
    const j = await run(["test", "missing.hujson", "--json"]);
    expect(jsonDoc(j.stdout)).toEqual({ error: { code: "MESHGUARD_POLICY_FILE_UNREADABLE", message: "cannot read missing.hujson: ENOENT" } });
  });
  test("usage errors exit 2", async () => {
    expect((await run([])).code).toBe(2);
    expect((await run(["test"])).code).toBe(2);
    expect((await run(["test", "a", "b"])).code).toBe(2);
    expect((await run(["frobnicate"])).code).toBe(2);
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
    const ex = async (...a: string[]) => jsonDoc((await run(["explain", "p.hujson", "--json", ...a], files)).stdout).decision;
    expect(await ex("--as", "tag:research-agent", "tcp db.internal:5432")).toMatchObject({ effect: "allow", ruleId: "db" });
    expect(await ex("--as", "tag:research-agent", 'mcp github create_issue {"repo":"acme/x"}')).toMatchObject({ effect: "approve" });
    expect(await ex("--as", "tag:research-agent", "llm openai/gpt-4o-mini 100")).toMatchObject({ effect: "allow" });
    expect(await ex("--as", "bob@", "GET https://api.github.com/users/x")).toMatchObject({ effect: "allow" });
    expect(await ex("--as", "tag:billing-agent", "--at", "2026-03-09T10:00:00Z", "--body-size", "10", "POST https://payments.internal/v2/transactions/1")).toMatchObject({ effect: "allow" });
    expect(await ex("--as", "tag:billing-agent", "--at", "2026-03-09T10:00:00Z", "POST https://payments.internal/v2/transactions/1")).toMatchObject({ effect: "deny" });
  });
  test("sql: the statement's accesses, each with every sql rule and why it did or did not match", async () => {
    const policy = JSON.stringify({
      version: 5,
      rules: [
        { id: "read", src: ["tag:a"], sql: { database: ["appdb"], operation: ["select"], table: ["public.*"] } },
        { id: "web", src: ["tag:a"], http: { host: ["x"] } },
      ],
    });
    const r = await run(["explain", "p.json", "--as", "tag:a", "sql appdb SELECT id FROM orders WHERE note = 'llama-9931'; DELETE FROM orders"], { "p.json": policy });
    expect(r.code).toBe(0);
    expect(r.stdout.split("\n")[0]).toBe('DENY: delete public.orders: no rule allows tag:a to sql appdb delete public.orders (deny by default)');
    expect(r.stdout).toContain("  request: sql appdb [select public.orders (id, note); delete public.orders]");
    expect(r.stdout).toMatch(/for select public\.orders \(id, note\):\nMATCH {3}read \(allow, sql\)/);
    expect(r.stdout).toMatch(/for delete public\.orders:\n- {7}read \(allow, sql\)\n {10}✗ operation: operation delete is not one of select/);
    expect(r.stdout).not.toContain("web");
    expect(r.stdout).not.toContain("llama-9931");
  });
  test("usage errors exit 2: missing --as, bad --at, --header or --body-size; an unreadable request or identity exits 1", async () => {
    const files = { "p.hujson": EXAMPLE };
    const noAs = await run(["explain", "p.hujson", "GET https://a/"], files);
    expect(noAs.code).toBe(2);
    expect(noAs.stderr).toMatch(/--as WHO is required/);
    expect((await run(["explain", "p.hujson", "--as", "tag:a", "--at", "yesterday", "GET https://a/"], files)).code).toBe(2);
    expect((await run(["explain", "p.hujson", "--as", "tag:a", "--header", "nocolon", "GET https://a/"], files)).code).toBe(2);
    expect((await run(["explain", "p.hujson", "--as", "tag:a", "--body-size", "-3", "GET https://a/"], files)).code).toBe(2);
    const bad = await run(["explain", "p.hujson", "--as", "tag:a", "FETCH it"], files);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/cannot read request "FETCH it"/);
    const who = await run(["explain", "p.hujson", "--as", "not an identity!", "GET https://a/"], files);
    expect(who.code).toBe(1);
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
    const j = jsonDoc((await run(["learn", "obs.jsonl", "--json"], { "obs.jsonl": log })).stdout);
    expect(j).toMatchObject({ ok: true, rules: 2, tests: 4, used: 3 });
  });
  test("a malformed log exits 1 naming the line", async () => {
    const r = await run(["learn", "obs.jsonl"], { "obs.jsonl": "{}\n" });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/obs\.jsonl:1: unsupported event version/);
  });
});

/** An argv that reaches each command's parser: its required arguments, as placeholders. */
function argvOf(name: string): string[] {
  return name.split(" ");
}

describe("one shape for every command", () => {
  test("the table: every command has a summary, a usage line, at least one example and its exit statuses", () => {
    expect(COMMANDS.map((c) => c.name)).toEqual(["dev", "status", "whois", "ping", "connect", "policy test", "policy explain", "policy learn", "policy apply", "policy serve", "gateway", "db-gateway", "tokens serve", "run"]);
    for (const c of COMMANDS) {
      expect(c.summary, c.name).not.toBe("");
      expect(c.usage.length, c.name).toBeGreaterThan(0);
      expect(c.examples.length, c.name).toBeGreaterThan(0);
      for (const e of c.examples) expect(e.cmd.startsWith(`${c.name} `) || e.cmd === c.name, `${c.name}: example "${e.cmd}" runs another command`).toBe(true);
      expect(Object.keys(c.exits).map(Number), c.name).toEqual(expect.arrayContaining([0, 1, 2]));
    }
  });

  test.each(COMMANDS.map((c) => [c.name, c] as const))("meshguard %s --help: usage, every option, an example, the exit statuses (stdout, exit 0)", async (name, c) => {
    for (const argv of [[...argvOf(name), "--help"], [...argvOf(name), "-h"], ["help", ...argvOf(name)]]) {
      const r = await cli(argv);
      expect(r.code, argv.join(" ")).toBe(0);
      expect(r.stderr).toBe("");
      expect(r.stdout).toBe(commandHelp(c));
    }
    const { stdout } = await cli([...argvOf(name), "--help"]);
    expect(stdout).toContain(`usage: meshguard ${name} `);
    for (const o of [...Object.keys(c.options), "json", "help"]) expect(stdout).toContain(`--${o}`);
    expect(stdout).toMatch(new RegExp(`examples:\\n {2}\\$ meshguard ${name}`));
    expect(stdout).toMatch(/exit status:\n {2}0 +\S/);
  });

  test("meshguard --help and meshguard policy --help list the commands from the table", async () => {
    const root = await cli(["--help"]);
    expect(root.code).toBe(0);
    expect(root.stdout).toBe(indexHelp(COMMANDS));
    for (const c of COMMANDS) expect(root.stdout).toMatch(new RegExp(`^ {2}${c.name} +${c.summary.replace(/[()]/g, "\\$&")}$`, "m"));
    const group = await cli(["policy", "--help"]);
    expect(group.code).toBe(0);
    expect(group.stdout).toContain("usage: meshguard policy <command> [options]");
    expect(group.stdout).toMatch(/^ {2}explain +show a decision/m);
    expect(group.stdout).not.toMatch(/^ {2}dev /m);
    expect((await cli(["help"])).stdout).toBe(root.stdout);
  });

  test.each(COMMANDS.map((c) => [c.name] as const))("meshguard %s --no-such-flag: exit 2, MESHGUARD_USAGE, the usage line", async (name) => {
    const c = COMMANDS.find((x) => x.name === name)!;
    const usageLine = `usage: meshguard ${name} ${c.usage[0]}`;
    const r = await cli([...argvOf(name), "--no-such-flag"]);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe("");
    expect(r.stderr).toContain(`meshguard ${name}: unknown option '--no-such-flag'\n${usageLine}\n`);
    expect(r.stderr).toContain(`\`meshguard ${name} --help\``);
    const j = await cli([...argvOf(name), "--no-such-flag", "--json"]);
    expect(j.code).toBe(2);
    const doc = jsonDoc(j.stdout);
    expect(doc).toEqual({ error: { code: "MESHGUARD_USAGE", message: "unknown option '--no-such-flag'", hint: expect.stringContaining(usageLine) } });
  });

  test("unknown and missing commands: exit 2, MESHGUARD_USAGE", async () => {
    const cases: [string[], RegExp][] = [
      [[], /^meshguard: missing command; one of: dev, status, whois, ping, connect, policy test, /],
      [["frobnicate"], /^meshguard: unknown command "frobnicate"\nusage: meshguard <command> \[options\]\n/],
      [["policy"], /^meshguard policy: missing command; one of: test, explain, learn, apply, serve\nusage: meshguard policy <command>/],
      [["policy", "frobnicate"], /^meshguard: unknown command "policy frobnicate"; one of: policy test, /],
      [["--verbose"], /^meshguard: unknown option '--verbose'/],
    ];
    for (const [argv, stderr] of cases) {
      const r = await cli(argv);
      expect(r.code, argv.join(" ")).toBe(2);
      expect(r.stderr).toMatch(stderr);
      const j = await cli([...argv, "--json"]);
      expect(j.code).toBe(2);
      expect(jsonDoc(j.stdout).error).toMatchObject({ code: "MESHGUARD_USAGE" });
    }
  });

  test("the --json error document: code, message without the hint, hint; the text goes to stderr as well", async () => {
    const r = await run(["explain", "p.hujson", "--as", "tag:a", "--json", "FETCH it"], { "p.hujson": EXAMPLE });
    expect(r.code).toBe(1);
    const doc = jsonDoc(r.stdout) as { error: Record<string, string> };
    expect(Object.keys(doc)).toEqual(["error"]);
    expect(Object.keys(doc.error)).toEqual(["code", "message", "hint"]);
    expect(doc.error.code).toBe("MESHGUARD_POLICY_REQUEST_INVALID");
    expect(doc.error.message).toMatch(/^cannot read request "FETCH it": /);
    expect(doc.error.message).not.toContain("hint:");
    expect(doc.error.hint).toMatch(/GET https:\/\/host\/path/);
    expect(r.stderr).toBe(`meshguard policy explain: ${doc.error.message}\n  hint: ${doc.error.hint}\n`);
  });

  test("a failure that is not a MeshguardError is reported as MESHGUARD_INTERNAL", () => {
    expect(errorDocument(new TypeError("x is undefined")).error).toMatchObject({ code: "MESHGUARD_INTERNAL", message: "internal error: x is undefined" });
    expect(errorDocument(new MeshguardError(ErrorCode.TIMEOUT, "slow", { hint: "wait" }))).toEqual({ error: { code: "MESHGUARD_TIMEOUT", message: "slow", hint: "wait" } });
  });
});

describe("the installed executable (dist/cli/main.js)", () => {
  const main = fileURLToPath(new URL("../../dist/cli/main.js", import.meta.url));
  const exe = (...argv: string[]) => spawnSync(process.execPath, [main, ...argv], { encoding: "utf8", timeout: 30_000, input: "" });

  test("exit statuses 0, 1 and 2 reach the shell; the JSON error is on stdout", () => {
    expect(existsSync(main), "dist/cli/main.js is missing: run node test/build.mjs first").toBe(true);
    const help = exe("--help");
    expect(help.status).toBe(0);
    expect(help.stdout).toContain("policy explain");
    const usage = exe("policy", "test", "--nope");
    expect(usage.status).toBe(2);
    expect(usage.stderr).toContain("usage: meshguard policy test FILE");
    const failed = exe("policy", "test", "/nonexistent/policy.hujson", "--json");
    expect(failed.status).toBe(1);
    expect(JSON.parse(failed.stdout)).toEqual({ error: { code: "MESHGUARD_POLICY_FILE_UNREADABLE", message: "cannot read /nonexistent/policy.hujson: ENOENT" } });
    const stdin = spawnSync(process.execPath, [main, "policy", "test", "-"], { encoding: "utf8", timeout: 30_000, input: EXAMPLE });
    expect(stdin.status, stdin.stderr).toBe(0);
    expect(stdin.stdout).toMatch(/-: 8 rules, 16 passed, 0 failed/);
  });
});

describe("docs/cli.md", () => {
  const FILE = fileURLToPath(new URL("../../docs/cli.md", import.meta.url));
  const BEGIN = "<!-- BEGIN GENERATED: the --help of every command (test/policy/cli.test.ts) -->";
  const END = "<!-- END GENERATED -->";

  test("its reference part is every command's --help, up to date", () => {
    const body = COMMANDS.map((c) => `### meshguard ${c.name}\n\n\`\`\`text\n${commandHelp(c)}\`\`\`\n`).join("\n");
    const want = `${BEGIN}\n\n${body}\n${END}`;
    const section = (doc: string): [number, number] => {
      const a = doc.indexOf(BEGIN);
      const b = doc.indexOf(END);
      expect(a >= 0 && b > a, `docs/cli.md lacks the ${BEGIN} ... ${END} markers`).toBe(true);
      return [a, b + END.length];
    };
    let doc = readFileSync(FILE, "utf8");
    if (process.env.MESHGUARD_UPDATE_DOCS === "1") {
      const [a, b] = section(doc);
      doc = doc.slice(0, a) + want + doc.slice(b);
      writeFileSync(FILE, doc);
    }
    expect(doc.slice(...section(doc)), "docs/cli.md is stale: regenerate it with MESHGUARD_UPDATE_DOCS=1 (see the top of this test)").toBe(want);
  });

  test("its exit-status table and command list match the table", () => {
    const doc = readFileSync(FILE, "utf8");
    for (const c of COMMANDS) expect(doc).toContain(`| [\`meshguard ${c.name}\`](#meshguard-${c.name.replace(/ /g, "-")}) | ${c.summary} |`);
    for (const code of [0, 1, 2, 130]) expect(doc).toMatch(new RegExp(`^\\| ${code} \\|`, "m"));
  });
});
