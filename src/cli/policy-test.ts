/** `meshguard policy test FILE`: run a policy file's `tests` and show each case. */

import { ErrorCode } from "../index.js";
import { loadPolicy } from "../policy/index.js";
import type { Command, Context } from "./command.js";

async function run(ctx: Context): Promise<number> {
  const file = ctx.positionals[0]!;
  // runTests: false, so that a failing case is a result to show, not a load error.
  const policy = loadPolicy(await ctx.read(file, ErrorCode.POLICY_FILE_UNREADABLE), { file, runTests: false });
  const results = policy.runTests();
  const failed = results.filter((r) => !r.pass);
  ctx.result({ ok: failed.length === 0, file, hash: policy.hash, rules: policy.rules.length, passed: results.length - failed.length, failed: failed.length, results }, () => {
    const lines = results.map((r) => {
      const mark = r.pass ? "ok  " : "FAIL";
      const why = r.pass ? "" : `\n      expected ${r.expect}${r.ruleId ? ` by "${r.ruleId}"` : ""}, got ${r.got.effect}${r.got.ruleId ? ` by "${r.got.ruleId}"` : ""}: ${r.got.reason}`;
      return `${mark} ${file}:${r.line} as ${Array.isArray(r.as) ? r.as.join(",") : r.as}: ${r.request} -> ${r.got.effect}${why}\n`;
    });
    lines.push(`${file}: ${policy.rules.length} rules, ${results.length - failed.length} passed, ${failed.length} failed${results.length === 0 ? " (the policy has no tests)" : ""}\n`);
    return lines.join("");
  });
  return failed.length ? 1 : 0;
}

export const policyTestCommand: Command = {
  name: "policy test",
  summary: "run a policy file's tests",
  usage: ["FILE [--json]"],
  description: `Loads FILE (a meshguard policy, or a tailnet policy file with a "meshguard" key;
"-" reads standard input), runs every case of its "tests" section and prints one
line per case and a summary. A failing case shows what was expected and what
the policy decided, by which rule.`,
  args: ["FILE"],
  options: {},
  json: 'print { ok, file, hash, rules, passed, failed, results: [{ as, request, expect, got, pass, line, ... }] }',
  examples: [
    { cmd: "policy test policy.hujson", about: "run the tests; exit 1 if one fails" },
    { cmd: "policy test policy.hujson --json | jq '.results[] | select(.pass | not)'", about: "the failing cases, for a script" },
  ],
  exits: {
    0: "the policy is valid and every test passes",
    1: "a test fails (the results document, with --json), or FILE is unreadable (MESHGUARD_POLICY_FILE_UNREADABLE) or invalid (MESHGUARD_POLICY_INVALID, every issue listed)",
    2: "usage error",
  },
  run,
};
