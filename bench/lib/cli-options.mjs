// The Node options `meshguard gateway` runs with: its executable's
// `#!/usr/bin/env -S node ...` line (src/cli/main.ts, built to
// dist/cli/main.js). The benches start their gateway processes with the
// same, so they are the CLI's process.
import { readFileSync } from 'node:fs';

/** cliNodeOptions reads the options off the first line of dist/cli/main.js. */
export function cliNodeOptions() {
  const file = new URL('../../dist/cli/main.js', import.meta.url);
  const first = readFileSync(file, 'utf8').split('\n', 1)[0];
  const m = /^#!\/usr\/bin\/env(?:\s+-S)?\s+node((?:\s+--[\w-]+(?:=\S+)?)*)\s*$/.exec(first);
  if (!m) throw new Error(`bench: cannot read the node options of dist/cli/main.js from its first line: ${first}`);
  return m[1].split(/\s+/).filter(Boolean);
}
