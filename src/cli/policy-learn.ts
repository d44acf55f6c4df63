/** `meshguard policy learn LOG`: propose a least-privilege policy from an observation log. */

import { writeFile } from "node:fs/promises";

import { ErrorCode, MeshguardError } from "../index.js";
import { learnPolicy, readDecisionEvents } from "../policy/index.js";
import type { Command, Context } from "./command.js";

async function run(ctx: Context): Promise<number> {
  const log = ctx.positionals[0]!;
  const out = ctx.str("out");
  const r = learnPolicy(readDecisionEvents(await ctx.read(log, ErrorCode.AUDIT_LOG_INVALID), log));
  if (out !== undefined) {
    try {
      await writeFile(out, r.text);
    } catch (err) {
      throw new MeshguardError(ErrorCode.INVALID_OPTIONS, `--out ${out}: cannot write it: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
    }
  }
  ctx.result({ ok: true, ...r, ...(out !== undefined ? { out } : {}) }, out !== undefined ? "" : r.text);
  ctx.progress(`${r.rules} rules and ${r.tests} tests from ${r.used} observed calls${r.skipped ? ` (${r.skipped} skipped: denied in enforce mode or without identity)` : ""}${out !== undefined ? `; wrote ${out}` : ""}`);
  return 0;
}

export const policyLearnCommand: Command = {
  name: "policy learn",
  summary: "propose a least-privilege policy from an observation log",
  usage: ["LOG [--out FILE] [--json]"],
  description: `Reads LOG, the JSON lines of decision events a guard in observe mode writes
("-" reads standard input), and prints a policy that allows what was observed
and nothing else, with a "tests" case per observed call. The proposal loads
and its tests pass; review it before enforcing it.`,
  args: ["LOG"],
  options: {
    out: { type: "string", arg: "FILE", help: "write the policy to FILE instead of standard output" },
  },
  json: "print { ok, text, rules, tests, used, skipped, out? } (text is the policy)",
  examples: [
    { cmd: "policy learn audit.jsonl --out policy.hujson", about: "propose a policy from a week in observe mode" },
    { cmd: "policy learn audit.jsonl | meshguard policy test -", about: "check the proposal without writing it" },
  ],
  exits: {
    0: "a policy was proposed",
    1: "LOG is unreadable or malformed (MESHGUARD_AUDIT_LOG_INVALID, naming the line), or --out cannot be written",
    2: "usage error",
  },
  run,
};
