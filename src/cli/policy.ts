/**
 * `meshguard policy test|explain|learn`: check a policy file's tests, explain
 * a decision rule by rule, and propose a policy from an observation log.
 * `serve` and `apply` (the guard's commands) plug in through `extra`.
 *
 * Exit status: 0 success, 1 the policy (or log) is invalid or its tests
 * fail, 2 bad usage.
 */

import { readFile, writeFile } from "node:fs/promises";
import { parseArgs } from "node:util";

import { isMeshguardError } from "../errors.js";
import {
  describePrincipal,
  learnPolicy,
  loadPolicy,
  parsePrincipal,
  parseRequest,
  PolicyInvalidError,
  readDecisionEvents,
  type DecisionRequest,
  type RequestExtras,
} from "../policy/index.js";

export interface PolicyIO {
  stdout?: NodeJS.WritableStream;
  stderr?: NodeJS.WritableStream;
  /** Reads a file ("-" is standard input); injectable for tests. */
  readText?: (path: string) => Promise<string>;
}

/** A `meshguard policy` subcommand (the guard adds `serve` and `apply`). */
export interface PolicySubcommand {
  summary: string;
  run: (argv: string[], io?: PolicyIO) => Promise<number>;
}

const USAGE = `usage: meshguard policy <command> [options]

commands:
  test FILE                          run the policy's tests (exit 1 if any fails or the file is invalid)
  explain FILE --as WHO REQUEST      show the decision and why each rule did or did not match
  learn LOG [--out FILE]             propose a least-privilege policy from an observation log (JSON lines)

REQUEST is one of:
  "GET https://api.example.com/v2/users/7?page=2"
  "tcp db.internal:5432"   "tls db.internal:5432"   ("... tailnet" for a MeshNode dial)
  'mcp github create_issue {"repo":"acme/app"}'
  "llm openai/gpt-4o 4096"  (the number is max tokens)
WHO is "tag:x", "alice@example.com", "alice@", "node:name", or a comma-separated list.

options:
  --json                 one JSON object on standard output
  --at ISO-TIME          (explain) decide as of this time, e.g. 2026-03-09T14:00:00Z
  --header NAME:VALUE    (explain) a request header; repeatable
  --body-size N          (explain) the body size in bytes (default: unknown, as for a stream)
  --peer-tag tag:x       (explain) the target is a tailnet peer with this tag; repeatable
  --out FILE             (learn) write the policy to FILE instead of standard output
  -h, --help             show this help
`;

class UsageError extends Error {}

/** policyCommand runs `meshguard policy ...` and resolves with the exit status. */
export async function policyCommand(argv: string[], io: PolicyIO = {}, extra: Record<string, PolicySubcommand> = {}): Promise<number> {
  const stdout = io.stdout ?? process.stdout;
  const stderr = io.stderr ?? process.stderr;
  const [sub, ...rest] = argv;
  const own: Record<string, (a: string[]) => Promise<number>> = {
    test: (a) => testCommand(a, io),
    explain: (a) => explainCommand(a, io),
    learn: (a) => learnCommand(a, io),
  };
  if (sub === undefined || sub === "--help" || sub === "-h" || sub === "help") {
    (sub === undefined ? stderr : stdout).write(usage(extra));
    return sub === undefined ? 2 : 0;
  }
  try {
    if (Object.hasOwn(own, sub)) return await own[sub]!(rest);
    if (Object.hasOwn(extra, sub)) return await extra[sub]!.run(rest, io);
    throw new UsageError(`unknown command ${JSON.stringify(sub)}`);
  } catch (err) {
    if (err instanceof UsageError) {
      stderr.write(`meshguard policy: ${err.message}\n\n${usage(extra)}`);
      return 2;
    }
    if (isMeshguardError(err)) {
      stderr.write(`meshguard policy ${sub}: ${err.message}\n`);
      return 1;
    }
    throw err;
  }
}

function usage(extra: Record<string, PolicySubcommand>): string {
  const more = Object.entries(extra).map(([name, c]) => `  ${name.padEnd(34)} ${c.summary}\n`);
  return more.length ? USAGE.replace("\nREQUEST is", `${more.join("")}\nREQUEST is`) : USAGE;
}

type OptionSpec = Record<string, { type: "string" | "boolean"; multiple?: boolean; short?: string }>;

/** parse reads options and exactly `positionals` arguments (a wrong count is a usage error). */
function parse(argv: string[], options: OptionSpec, positionals: number): { values: Record<string, unknown>; positionals: string[]; help: boolean } {
  let r: { values: Record<string, unknown>; positionals: string[] };
  try {
    r = parseArgs({ args: argv, options: { ...options, json: { type: "boolean" }, help: { type: "boolean", short: "h" } }, allowPositionals: true, strict: true });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (r.values.help) return { ...r, help: true };
  if (r.positionals.length !== positionals) {
    throw new UsageError(`expected ${positionals} argument${positionals === 1 ? "" : "s"}, got ${r.positionals.length}${r.positionals.length ? `: ${r.positionals.map((p) => JSON.stringify(p)).join(" ")}` : ""}`);
  }
  return { ...r, help: false };
}

async function read(path: string, io: PolicyIO): Promise<string> {
  try {
    if (io.readText) return await io.readText(path);
    if (path === "-") {
      const chunks: Buffer[] = [];
      for await (const c of process.stdin) chunks.push(c as Buffer);
      return Buffer.concat(chunks).toString("utf8");
    }
    return await readFile(path, "utf8");
  } catch (err) {
    throw new UsageError(`cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

function invalidJson(err: unknown): object {
  const e = err as PolicyInvalidError & { failures?: unknown };
  return { ok: false, error: { code: e.code, message: e.message, ...(e.issues ? { issues: e.issues } : {}) } };
}

async function testCommand(argv: string[], io: PolicyIO): Promise<number> {
  const stdout = io.stdout ?? process.stdout;
  const { values, positionals, help } = parse(argv, {}, 1);
  if (help) return void stdout.write(USAGE), 0;
  const file = positionals[0]!;
  const text = await read(file, io);
  let policy;
  try {
    policy = loadPolicy(text, { file, runTests: false });
  } catch (err) {
    if (values.json && err instanceof PolicyInvalidError) return void stdout.write(JSON.stringify(invalidJson(err)) + "\n"), 1;
    throw err;
  }
  const results = policy.runTests();
  const failed = results.filter((r) => !r.pass);
  if (values.json) {
    stdout.write(JSON.stringify({ ok: failed.length === 0, file, hash: policy.hash, rules: policy.rules.length, passed: results.length - failed.length, failed: failed.length, results }) + "\n");
  } else {
    for (const r of results) {
      const mark = r.pass ? "ok  " : "FAIL";
      const why = r.pass ? "" : `\n      expected ${r.expect}${r.ruleId ? ` by "${r.ruleId}"` : ""}, got ${r.got.effect}${r.got.ruleId ? ` by "${r.got.ruleId}"` : ""}: ${r.got.reason}`;
      stdout.write(`${mark} ${file}:${r.line} as ${Array.isArray(r.as) ? r.as.join(",") : r.as}: ${r.request} -> ${r.got.effect}${why}\n`);
    }
    stdout.write(`${file}: ${policy.rules.length} rules, ${results.length - failed.length} passed, ${failed.length} failed${results.length === 0 ? " (the policy has no tests)" : ""}\n`);
  }
  return failed.length ? 1 : 0;
}

async function explainCommand(argv: string[], io: PolicyIO): Promise<number> {
  const stdout = io.stdout ?? process.stdout;
  const { values, positionals, help } = parse(
    argv,
    { as: { type: "string" }, at: { type: "string" }, header: { type: "string", multiple: true }, "body-size": { type: "string" }, "peer-tag": { type: "string", multiple: true } },
    2,
  );
  if (help) return void stdout.write(USAGE), 0;
  const [file, line] = positionals as [string, string];
  const as = values.as as string | undefined;
  if (!as) throw new UsageError("--as WHO is required (e.g. --as tag:research-agent)");
  const extras: RequestExtras = {};
  for (const h of (values.header as string[] | undefined) ?? []) {
    const i = h.indexOf(":");
    if (i <= 0) throw new UsageError(`--header ${JSON.stringify(h)}: expected NAME:VALUE`);
    (extras.headers ??= {})[h.slice(0, i).trim().toLowerCase()] = h.slice(i + 1).trim();
  }
  if (values["body-size"] !== undefined) {
    const n = Number(values["body-size"]);
    if (!Number.isInteger(n) || n < 0) throw new UsageError("--body-size must be a whole number of bytes");
    extras.bodySize = n;
  }
  if (values["peer-tag"]) extras.peerTags = values["peer-tag"] as string[];
  let now: Date | undefined;
  if (values.at !== undefined) {
    now = new Date(values.at as string);
    if (Number.isNaN(now.getTime())) throw new UsageError(`--at ${JSON.stringify(values.at)} is not a time (use ISO 8601, e.g. 2026-03-09T14:00:00Z)`);
  }
  const req: DecisionRequest = { principal: parsePrincipal(as), target: parseRequest(line, extras) };
  if (now) req.now = now;
  const policy = loadPolicy(await read(file, io), { file, runTests: false });
  const ex = policy.explain(req);
  if (values.json) {
    stdout.write(JSON.stringify(ex) + "\n");
    return 0;
  }
  const d = ex.decision;
  const out = [`${d.effect.toUpperCase()}${d.ruleId ? ` by rule "${d.ruleId}"` : ""}: ${d.reason}`, `  who:     ${describePrincipal(ex.principal)}`, `  request: ${ex.request}`, ``];
  for (const r of ex.rules) {
    const failed = r.checks.filter((c) => c.ok !== true);
    const mark = r.result === "match" ? "MATCH  " : r.result === "unknown" ? "UNKNOWN" : r.result === "rate-limited" ? "LIMITED" : "-      ";
    out.push(`${mark} ${r.ruleId} (${r.effect}, ${r.kind})`);
    for (const c of r.result === "no-match" ? failed : r.checks) out.push(`          ${c.ok === true ? "✓" : c.ok === false ? "✗" : "?"} ${c.what}: ${c.detail}`);
  }
  if (ex.rules.length === 0) out.push("(the policy has no rules: everything is denied)");
  stdout.write(out.join("\n") + "\n");
  return 0;
}

async function learnCommand(argv: string[], io: PolicyIO): Promise<number> {
  const stdout = io.stdout ?? process.stdout;
  const stderr = io.stderr ?? process.stderr;
  const { values, positionals, help } = parse(argv, { out: { type: "string" } }, 1);
  if (help) return void stdout.write(USAGE), 0;
  const log = positionals[0]!;
  const events = readDecisionEvents(await read(log, io), log);
  const r = learnPolicy(events);
  if (values.out) await writeFile(values.out as string, r.text);
  if (values.json) stdout.write(JSON.stringify({ ok: true, ...r, ...(values.out ? { out: values.out } : {}) }) + "\n");
  else if (!values.out) stdout.write(r.text);
  stderr.write(`meshguard policy learn: ${r.rules} rules and ${r.tests} tests from ${r.used} observed calls${r.skipped ? ` (${r.skipped} skipped: denied in enforce mode or without identity)` : ""}${values.out ? `; wrote ${values.out}` : ""}\n`);
  return 0;
}
