/**
 * The contract between the `meshguard` runner (./run.ts) and its commands.
 * A command is a row of the table in ./commands.ts: its name, summary,
 * usage, options and examples drive `--help`, docs/cli.md and argument
 * parsing; its `run` gets a Context and resolves with the exit status, or
 * throws a MeshguardError that the runner reports (stderr, and one JSON
 * object on stdout with --json) and turns into status 1 (2 for
 * MESHGUARD_USAGE).
 */

import type { ErrorCode, MeshguardError } from "../index.js";

/** CliIO is what the runner talks to; every field defaults to the process's own. */
export interface CliIO {
  stdout?: NodeJS.WritableStream;
  stderr?: NodeJS.WritableStream;
  /** Reads a file named on the command line ("-" is standard input); injectable for tests. */
  readText?: (path: string) => Promise<string>;
  /** Stops a long-running command (dev, policy serve) as SIGINT does; for embedding and tests. */
  signal?: AbortSignal;
}

/** OptionSpec is one `--name` of a command: parseArgs' shape plus its help. */
export interface OptionSpec {
  type: "string" | "boolean";
  short?: string;
  /** May be given several times; the values come back as a list. */
  multiple?: boolean;
  /** The value's placeholder in help and docs ("FILE"); string options only. */
  arg?: string;
  help: string;
}

export interface Example {
  /** The command line without the leading `meshguard `. */
  cmd: string;
  about: string;
}

export interface Command {
  /** The words that select the command: "dev", "policy test". */
  name: string;
  /** One line for the command list. */
  summary: string;
  /** Usage lines without the leading `meshguard NAME `; the first is the one usage errors show. */
  usage: string[];
  /** Paragraphs for `--help` and docs/cli.md. */
  description: string;
  /** The positional arguments' names, in order. */
  args: string[];
  /** How many of `args` are required (default: all); the command checks the rest itself. */
  minArgs?: number;
  /** The last of `args` takes every remaining argument (`meshguard run -- node agent.js ...`). */
  variadic?: boolean;
  /** The command's own options; `--json` and `-h/--help` are added to every command. */
  options: Record<string, OptionSpec>;
  /** What `--json` prints on success. */
  json: string;
  /** At least one. */
  examples: Example[];
  /** The exit statuses and what each means for this command (0, 1 and 2 at least). */
  exits: Record<number, string>;
  run(ctx: Context): Promise<number>;
}

/** Stopper tells a long-running command that it was asked to stop. */
export interface Stopper {
  /** Resolves with "SIGINT", "SIGTERM" or "abort" (CliIO.signal). */
  readonly stopped: Promise<string>;
  /** The reason once stopped, else undefined. */
  readonly reason: string | undefined;
  /** Aborted when stopped: pass it to what can be cancelled (MeshNode.start). */
  readonly signal: AbortSignal;
}

/** Context is one invocation of a command, parsed. */
export interface Context {
  readonly command: Command;
  readonly positionals: string[];
  /** `--json` was given: the result is one JSON document on stdout. */
  readonly json: boolean;
  readonly stdout: NodeJS.WritableStream;
  readonly stderr: NodeJS.WritableStream;
  str(option: string): string | undefined;
  flag(option: string): boolean;
  list(option: string): string[];
  /** progress reports a step on stderr ("meshguard NAME: msg"); stdout carries only the result. */
  progress(msg: string): void;
  /** result prints the success output: `doc` as one JSON line with --json, else `text`. */
  result(doc: unknown, text: string | (() => string)): void;
  /** read reads a file named on the command line ("-" is stdin); an unreadable one throws `code`. */
  read(path: string, code: ErrorCode): Promise<string>;
  /** usage is the MESHGUARD_USAGE error for a wrong invocation the parser cannot see (a missing option, a bad value). */
  usage(message: string): MeshguardError;
  /** stopper starts listening for SIGINT, SIGTERM and CliIO.signal; the runner stops listening when the command ends. */
  stopper(): Stopper;
}
