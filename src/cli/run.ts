/**
 * runCli: `meshguard ARGV`. Finds the command in the table (./commands.ts),
 * prints help, parses the arguments, runs the command and reports its
 * failure; resolves with the exit status and never rejects.
 */

import { sqlParserReady } from "../policy/index.js";
import { readFile } from "node:fs/promises";

import { ErrorCode, MeshguardError } from "../index.js";
import { commandUsage, parseCommand, usageError, wantsHelp, wantsJson, type OptionValue, type Usage } from "./args.js";
import type { CliIO, Command, Context, Stopper } from "./command.js";
import { COMMANDS, GROUPS } from "./commands.js";
export type { CliIO } from "./command.js";
import { commandHelp, indexHelp } from "./help.js";
import { reportError } from "./report.js";

const ROOT_USAGE: Usage = { lines: ["meshguard <command> [options]"], help: "meshguard --help", helpShows: "the commands" };

function groupUsage(group: string): Usage {
  return { lines: [`meshguard ${group} <command> [options]`], help: `meshguard ${group} --help`, helpShows: "the commands" };
}

/** runCli runs `meshguard ...argv` and resolves with the exit status. */
export async function runCli(argv: string[], io: CliIO = {}): Promise<number> {
  // Policies with sql rules are tested and explained with PostgreSQL's parser (loaded asynchronously).
  await sqlParserReady();
  const stdout = io.stdout ?? process.stdout;
  const stderr = io.stderr ?? process.stderr;
  const json = wantsJson(argv);
  const words = argv[0] === "help" ? argv.slice(1) : argv;
  const helpOnly = argv[0] === "help";
  let found: ReturnType<typeof resolve>;
  try {
    found = resolve(words);
  } catch (err) {
    return reportError("meshguard", err, json, { stdout, stderr });
  }
  if (found.kind === "index") {
    if (helpOnly || wantsHelp(found.rest)) return void stdout.write(indexHelp(found.commands, found.group)), 0;
    const where = found.group ? `meshguard ${found.group.name}` : "meshguard";
    const usage = found.group ? groupUsage(found.group.name) : ROOT_USAGE;
    const unknown = found.rest.filter((a) => a !== "--json");
    const err = unknown.length ? usageError(`${unknown[0]!.startsWith("-") ? "unknown option" : "unexpected argument"} '${unknown[0]}'`, usage) : usageError(`missing command; one of: ${found.commands.map((c) => c.name.slice(found.group ? found.group.name.length + 1 : 0)).join(", ")}`, usage);
    return reportError(where, err, json, { stdout, stderr });
  }
  const { command, rest } = found;
  if (helpOnly) return void stdout.write(commandHelp(command)), 0;
  return runCommand(command, rest, json, { ...io, stdout, stderr });
}

async function runCommand(command: Command, argv: string[], json: boolean, io: CliIO & { stdout: NodeJS.WritableStream; stderr: NodeJS.WritableStream }): Promise<number> {
  const who = `meshguard ${command.name}`;
  const cleanup: (() => void)[] = [];
  try {
    const parsed = parseCommand(command, argv);
    if (parsed === "help") return void io.stdout.write(commandHelp(command)), 0;
    const ctx = context(command, parsed.values, parsed.positionals, io, cleanup);
    return await command.run(ctx);
  } catch (err) {
    return reportError(who, err, json, io);
  } finally {
    for (const f of cleanup) f();
  }
}

type Resolved = { kind: "command"; command: Command; rest: string[] } | { kind: "index"; commands: readonly Command[]; group?: { name: string; summary: string }; rest: string[] };

/** resolve finds the command named by the leading words of argv (the longest match). */
function resolve(argv: string[]): Resolved {
  const [first, second] = argv;
  if (first === undefined || first.startsWith("-")) return { kind: "index", commands: COMMANDS, rest: argv };
  if (second !== undefined && !second.startsWith("-")) {
    const c = COMMANDS.find((x) => x.name === `${first} ${second}`);
    if (c) return { kind: "command", command: c, rest: argv.slice(2) };
  }
  const c = COMMANDS.find((x) => x.name === first);
  if (c) return { kind: "command", command: c, rest: argv.slice(1) };
  const group = Object.hasOwn(GROUPS, first) ? { name: first, summary: GROUPS[first]! } : undefined;
  if (!group) throw usageError(`unknown command ${JSON.stringify(first)}`, ROOT_USAGE);
  const members = COMMANDS.filter((x) => x.name.startsWith(`${first} `));
  if (second !== undefined && !second.startsWith("-")) {
    throw usageError(`unknown command ${JSON.stringify(`${first} ${second}`)}; one of: ${members.map((m) => m.name).join(", ")}`, groupUsage(first));
  }
  return { kind: "index", commands: members, group, rest: argv.slice(1) };
}

function context(command: Command, values: Record<string, OptionValue>, positionals: string[], io: CliIO & { stdout: NodeJS.WritableStream; stderr: NodeJS.WritableStream }, cleanup: (() => void)[]): Context {
  const json = values.json === true;
  const who = `meshguard ${command.name}`;
  return {
    command,
    positionals,
    json,
    stdout: io.stdout,
    stderr: io.stderr,
    str: (o) => (typeof values[o] === "string" ? (values[o] as string) : undefined),
    flag: (o) => values[o] === true,
    list: (o) => (Array.isArray(values[o]) ? (values[o] as string[]) : []),
    progress: (msg) => void io.stderr.write(`${who}: ${msg}\n`),
    result: (doc, text) => void io.stdout.write(json ? JSON.stringify(doc) + "\n" : typeof text === "function" ? text() : text),
    read: (path, code) => readText(path, code, io),
    usage: (message) => usageError(message, commandUsage(command)),
    stopper: () => stopper(io.signal, cleanup),
  };
}

async function readText(path: string, code: ErrorCode, io: CliIO): Promise<string> {
  try {
    if (io.readText) return await io.readText(path);
    if (path === "-") {
      const chunks: Buffer[] = [];
      for await (const c of process.stdin) chunks.push(c as Buffer);
      return Buffer.concat(chunks).toString("utf8");
    }
    return await readFile(path, "utf8");
  } catch (err) {
    const why = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    throw new MeshguardError(code, `cannot read ${path === "-" ? "standard input" : path}: ${why}`, { cause: err });
  }
}

/**
 * stopper listens for SIGINT, SIGTERM and the caller's AbortSignal. A
 * long-running command must handle the signals from its start: an unhandled
 * SIGINT ends the process without its 'exit' hooks, leaving children (headscale)
 * running.
 */
function stopper(signal: AbortSignal | undefined, cleanup: (() => void)[]): Stopper {
  let reason: string | undefined;
  let wake: (r: string) => void = () => {};
  const stopped = new Promise<string>((resolve) => (wake = resolve));
  const abort = new AbortController();
  const stop = (r: string): void => {
    reason ??= r;
    wake(reason);
    abort.abort(new MeshguardError(ErrorCode.CLOSED, `stopped by ${reason}`));
  };
  const onSigint = (): void => stop("SIGINT");
  const onSigterm = (): void => stop("SIGTERM");
  const onAbort = (): void => stop("abort");
  process.on("SIGINT", onSigint);
  process.on("SIGTERM", onSigterm);
  signal?.addEventListener("abort", onAbort, { once: true });
  if (signal?.aborted) onAbort();
  cleanup.push(() => {
    process.off("SIGINT", onSigint);
    process.off("SIGTERM", onSigterm);
    signal?.removeEventListener("abort", onAbort);
  });
  return {
    stopped,
    signal: abort.signal,
    get reason() {
      return reason;
    },
  };
}
