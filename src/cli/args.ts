import { parseArgs, type ParseArgsConfig } from "node:util";

/** ParsedCommand is a subcommand's options and positionals after parsing. */
export interface ParsedCommand<V> {
  values: V & { json?: boolean; help?: boolean };
  positionals: string[];
}

/**
 * parseCommand parses a subcommand's argv the one way every command does:
 * strict options plus `--json` and `-h/--help`. A usage error prints the
 * message and the usage to stderr and yields exit status 2; `--help` prints
 * the usage to stdout and yields 0. Otherwise the parsed options come back.
 */
export function parseCommand<V>(
  command: string,
  argv: string[],
  options: NonNullable<ParseArgsConfig["options"]>,
  usage: string,
  io: { stdout: NodeJS.WritableStream; stderr: NodeJS.WritableStream },
  allowPositionals = true,
): ParsedCommand<V> | number {
  let parsed: { values: unknown; positionals: string[] };
  try {
    parsed = parseArgs({ args: argv, options: { ...options, json: { type: "boolean" }, help: { type: "boolean", short: "h" } }, allowPositionals, strict: true });
  } catch (err) {
    io.stderr.write(`meshguard ${command}: ${(err as Error).message}\n\n${usage}`);
    return 2;
  }
  const values = parsed.values as ParsedCommand<V>["values"];
  if (values.help) {
    io.stdout.write(usage);
    return 0;
  }
  return { values, positionals: parsed.positionals };
}
