// Part of the vitest suite (test/vitest.config.ts).
import { test } from 'vitest';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const benchDir = fileURLToPath(new URL('..', import.meta.url));
const scripts = readdirSync(benchDir).filter((f) => f.endsWith('.mjs'));
const run = (args) => spawnSync(process.execPath, args, { cwd: benchDir, encoding: 'utf8', timeout: 30_000 });

test('every benchmark answers --help with what it measures, and a flag it does not know with one line and exit 2', () => {
  assert.ok(scripts.length >= 10, `bench scripts found: ${scripts.join(', ')}`);
  for (const f of scripts) {
    const help = run([f, '--help']);
    assert.equal(help.status, 0, `${f} --help: ${help.stderr}`);
    assert.match(help.stdout, new RegExp(`^bench/${f.replace('.mjs', '')} `), `${f} --help prints its header`);
    const bad = run([f, '--no-such-flag']);
    assert.equal(bad.status, 2, `${f} --no-such-flag exits 2`);
    assert.equal(bad.stderr.trim().split('\n').length, 2, `${f}: the error and the pointer to --help, no stack: ${bad.stderr}`);
    assert.match(bad.stderr, /Unknown option '--no-such-flag'/);
  }
});
