/**
 * `--help` text, rendered from the command table so that help, usage errors
 * and docs/cli.md cannot disagree.
 */

import { COMMON_OPTIONS } from "./args.js";
import type { Command, OptionSpec } from "./command.js";

/** EXIT_STATUSES are the statuses every command shares; a command may add its own. */
export const EXIT_STATUSES: Record<number, string> = {
  0: "success",
  1: "the operation failed: the error (code, message, hint) is on stderr, and on stdout as JSON with --json",
  2: "usage error (MESHGUARD_USAGE): unknown command or option, missing or extra argument, bad option value",
};

/** optionLabel is the left column of an option: "-h, --help", "--out FILE". */
export function optionLabel(name: string, o: OptionSpec): string {
  return `${o.short ? `-${o.short}, ` : ""}--${name}${o.type === "string" ? ` ${o.arg ?? "VALUE"}` : ""}`;
}

/** allOptions: the command's own options, then the common ones. */
export function allOptions(command: Command): [string, OptionSpec][] {
  return [...Object.entries(command.options), ["json", { ...COMMON_OPTIONS.json, help: command.json }], ["help", COMMON_OPTIONS.help]];
}

/** commandHelp is `meshguard NAME --help`. */
export function commandHelp(command: Command): string {
  const opts = allOptions(command).map(([n, o]) => [optionLabel(n, o), o.help + (o.multiple ? " (repeatable)" : "")] as const);
  const exits = Object.entries(command.exits).map(([code, what]) => [code, what] as const);
  return [
    `meshguard ${command.name}: ${command.summary}`,
    ``,
    ...command.usage.map((u, i) => `${i === 0 ? "usage:" : "      "} meshguard ${command.name}${u ? ` ${u}` : ""}`),
    ``,
    command.description.trim(),
    ``,
    `options:`,
    ...columns(opts),
    ``,
    `examples:`,
    ...command.examples.flatMap((e) => [`  $ meshguard ${e.cmd}`, `      ${e.about}`]),
    ``,
    `exit status:`,
    ...columns(exits),
    ``,
  ].join("\n");
}

/** indexHelp lists `commands` (all of them, or a group's) with their summaries. */
export function indexHelp(commands: readonly Command[], group?: { name: string; summary: string }): string {
  const prefix = group ? `${group.name} ` : "";
  const rows = commands.map((c) => [c.name.slice(prefix.length), c.summary] as const);
  return [
    group ? `meshguard ${group.name}: ${group.summary}` : `meshguard: a Node.js process as its own tailnet node, with an in-process policy guard`,
    ``,
    `usage: meshguard ${prefix}<command> [options]`,
    ``,
    `commands:`,
    ...columns(rows),
    ``,
    `Every command takes --json (one JSON document on stdout) and -h/--help.`,
    `Run \`meshguard ${prefix}<command> --help\` for its options and examples.`,
    `Exit status: 0 success, 1 the operation failed, 2 usage error; some commands add their own (see their --help).`,
    ``,
  ].join("\n");
}

/** columns aligns two columns; a long left cell puts the right one on the next line. */
function columns(rows: readonly (readonly [string, string])[]): string[] {
  const width = Math.min(24, Math.max(...rows.map(([l]) => l.length)));
  return rows.flatMap(([l, r]) => (l.length > width ? [`  ${l}`, `  ${" ".repeat(width)}  ${r}`] : [`  ${l.padEnd(width)}  ${r}`]));
}
