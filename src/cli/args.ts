/**
 * The one argument parser of every command: `node:util` parseArgs in strict
 * mode over the command's option table plus `--json` and `-h/--help`, and
 * the positional count from its `args`. Every mistake is a MESHGUARD_USAGE
 * error whose hint is the command's usage line.
 */

import { parseArgs } from "node:util";

import { ErrorCode, MeshguardError } from "../index.js";
import type { Command, OptionSpec } from "./command.js";

/** COMMON_OPTIONS are added to every command. */
export const COMMON_OPTIONS: Record<"json" | "help", OptionSpec> = {
  json: { type: "boolean", help: "print the result as one JSON document on standard output (progress and errors stay on stderr)" },
  help: { type: "boolean", short: "h", help: "show this help" },
};

export type OptionValue = string | boolean | string[] | undefined;

export interface ParsedArgs {
  values: Record<string, OptionValue>;
  positionals: string[];
}

/** usageError is the MESHGUARD_USAGE error of `command` (or of the dispatcher, with its own usage). */
export function usageError(message: string, usage: Usage): MeshguardError {
  return new MeshguardError(ErrorCode.USAGE, message, { hint: `${usage.lines.map((l) => `usage: ${l}`).join("\n")}\nrun \`${usage.help}\` for ${usage.helpShows ?? "the options and examples"}` });
}

/** Usage is what a usage error shows: the usage lines, the help command, and what that help shows. */
export interface Usage {
  lines: string[];
  help: string;
  helpShows?: string;
}

/** commandUsage is what a usage error of `command` shows: its usage lines and where its help is. */
export function commandUsage(command: Command): Usage {
  return { lines: command.usage.map((u) => `meshguard ${command.name}${u ? ` ${u}` : ""}`), help: `meshguard ${command.name} --help` };
}

/**
 * parseCommand parses a command's argv. `--help` wins over everything else
 * (a help request with a wrong option still shows the help), so it is looked
 * for before the strict parse.
 */
export function parseCommand(command: Command, argv: string[]): ParsedArgs | "help" {
  if (wantsHelp(argv)) return "help";
  let parsed: { values: Record<string, OptionValue>; positionals: string[] };
  try {
    parsed = parseArgs({ args: argv, options: { ...strip(command.options), ...strip(COMMON_OPTIONS) }, allowPositionals: command.args.length > 0, strict: true }) as typeof parsed;
  } catch (err) {
    throw usageError(parseArgsMessage(err as Error), commandUsage(command));
  }
  const n = parsed.positionals.length;
  const min = command.minArgs ?? command.args.length;
  if (n < min || (n > command.args.length && command.variadic !== true)) {
    const got = n === 0 ? "none" : `${n}: ${parsed.positionals.map((p) => JSON.stringify(p)).join(" ")}`;
    const want = command.args.map((a, i) => (i < min ? a : `[${a}]`)).join(" ");
    throw usageError(`expected ${want}, got ${got}`, commandUsage(command));
  }
  return parsed;
}

/** wantsHelp: `-h` or `--help` before a `--` terminator. */
export function wantsHelp(argv: string[]): boolean {
  for (const a of argv) {
    if (a === "--") return false;
    if (a === "--help" || a === "-h") return true;
  }
  return false;
}

/** wantsJson: `--json` before a `--` terminator, read before parsing so that a usage error is reported as JSON too. */
export function wantsJson(argv: string[]): boolean {
  for (const a of argv) {
    if (a === "--") return false;
    if (a === "--json") return true;
  }
  return false;
}

function strip(options: Record<string, OptionSpec>): Record<string, { type: "string" | "boolean"; short?: string; multiple?: boolean }> {
  const out: Record<string, { type: "string" | "boolean"; short?: string; multiple?: boolean }> = {};
  for (const [name, o] of Object.entries(options)) out[name] = { type: o.type, ...(o.short ? { short: o.short } : {}), ...(o.multiple ? { multiple: true } : {}) };
  return out;
}

/**
 * parseArgsMessage keeps the first sentence of parseArgs' message ("Unknown
 * option '--x'"); the rest explains `--`, which is noise for these commands.
 */
function parseArgsMessage(err: Error): string {
  const first = err.message.split("\n")[0]!.split(". ")[0]!.replace(/\.$/, "");
  return first.charAt(0).toLowerCase() + first.slice(1);
}
