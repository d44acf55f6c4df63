// Guarded vs unguarded `fetch` to a local server, for bench/policy: the
// guard's own benchmark (bench/guard.mjs) is run as a child process and its
// rows are merged into this run's table, so there is one way to measure it.
//
// measureGuardedFetch({ smoke }) resolves with { rows } (published-shape rows,
// already summarized) or { skipped: "why" }.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const GUARD_BENCH = fileURLToPath(new URL('../guard.mjs', import.meta.url));
const DIST_GUARD = fileURLToPath(new URL('../../dist/guard/index.js', import.meta.url));

/** measureGuardedFetch runs bench/guard.mjs --json and returns its rows. */
export async function measureGuardedFetch({ smoke = false } = {}) {
  if (!existsSync(GUARD_BENCH)) return { skipped: 'bench/guard.mjs is not there (the guard is not built into this tree)' };
  if (!existsSync(DIST_GUARD)) return { skipped: 'dist/guard is not built (run node test/build.mjs)' };
  const args = [GUARD_BENCH, '--json', ...(smoke ? ['--smoke'] : [])];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (c) => (out += c));
  child.stderr.on('data', (c) => (err = (err + c).slice(-2000)));
  const code = await new Promise((resolve) => child.on('close', resolve));
  if (code !== 0) return { skipped: `bench/guard.mjs exited with ${code}: ${err.trim().split('\n').slice(-2).join(' | ')}` };
  try {
    const doc = JSON.parse(out);
    return { rows: doc.rows };
  } catch (e) {
    return { skipped: `bench/guard.mjs printed no JSON: ${e.message}` };
  }
}
