// The benchmarks' command lines: node:util's parseArgs, plus `--help` (the
// script's header comment, which says what it measures and its flags) and a
// one-line error for a flag it does not know, instead of a stack trace.
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

/** benchArgs parses `config` (parseArgs') for the script at `fileUrl` (its import.meta.url); --help and bad flags end the process. */
export function benchArgs(fileUrl, config) {
  const path = fileURLToPath(fileUrl);
  const name = `bench/${basename(path)}`;
  let r;
  try {
    r = parseArgs({ ...config, options: { ...config.options, help: { type: 'boolean', short: 'h', default: false } } });
  } catch (err) {
    process.stderr.write(`${name}: ${err.message}\nrun \`node ${name} --help\` for what it measures and its flags\n`);
    process.exit(2);
  }
  if (r.values.help) {
    process.stdout.write(usage(path));
    process.exit(0);
  }
  delete r.values.help;
  return r;
}

/** usage is the script's leading `//` comment, without the comment marks. */
export function usage(path) {
  const lines = readFileSync(path, 'utf8').split('\n');
  const out = [];
  for (const line of lines.slice(lines[0]?.startsWith('#!') ? 1 : 0)) {
    if (!line.startsWith('//')) break;
    out.push(line.replace(/^\/\/ ?/, ''));
  }
  return out.join('\n') + '\n';
}
