#!/usr/bin/env node
/**
 * The `meshguard` command: one file per subcommand in this folder, each
 * exporting `xxxCommand(argv): Promise<number>` (the exit status).
 */

import { devCommand } from "./dev.js";
import { policyCommand, type PolicySubcommand } from "./policy.js";
import { policyApply } from "./policy-apply.js";
import { policyServe } from "./policy-serve.js";

/**
 * POLICY_EXTRA: the policy subcommands that need the tailnet or a control
 * server (`serve`, `apply`); `test`, `explain` and `learn` live in ./policy.ts.
 */
const POLICY_EXTRA: Record<string, PolicySubcommand> = { serve: policyServe, apply: policyApply };

const COMMANDS: Record<string, { summary: string; run: (argv: string[]) => Promise<number> }> = {
  dev: { summary: "run a local tailnet (headscale on 127.0.0.1) until interrupted", run: devCommand },
  policy: { summary: "test, explain and learn policies (meshguard policy --help)", run: (argv) => policyCommand(argv, {}, POLICY_EXTRA) },
};

function usage(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((c) => c.length));
  const lines = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`);
  return `usage: meshguard <command> [options]\n\ncommands:\n${lines.join("\n")}\n\nRun \`meshguard <command> --help\` for a command's options.\n`;
}

/** main dispatches to a subcommand and resolves with the exit status. */
export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === "help" || name === "--help" || name === "-h") {
    (name === undefined ? process.stderr : process.stdout).write(usage());
    return name === undefined ? 2 : 0;
  }
  const command = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
  if (!command) {
    process.stderr.write(`meshguard: unknown command ${JSON.stringify(name)}\n\n${usage()}`);
    return 2;
  }
  return command.run(rest);
}

process.exitCode = await main(process.argv.slice(2));
