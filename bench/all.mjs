#!/usr/bin/env node
// bench/all — every benchmark, several times, into one report: what a reader
// checking meshguard's figures runs (`npm run bench:all`).
//
//   node bench/all.mjs [--runs N] [--only a,b] [--out DIR] [--json] [--smoke]
//
// Each of the N runs (default 5) runs every benchmark once with --json, in
// the order below (reversed on every other run, so no benchmark always
// meets the machine in the same state); each benchmark measures meshguard
// and its peers side by side, alternating, within its own run. The report
// (DIR/README.md, default docs/bench-report/) gives for every metric and
// system the median over runs of the run's p50, the spread (min–max of the
// run p50s) and the median p99, with one SVG chart per benchmark
// (bench/lib/report.mjs), and the load average around every run: this
// machine is shared.
//
// --smoke checks the report's shape quickly (CI): the fast benchmarks
// (database, policy) with their own --smoke, two runs, into a temporary
// directory; it fails when a benchmark yields no rows, a chart is missing or
// malformed, or a table row lacks its spread.
//
// Run it inside the network namespace (the npm script does).
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { benchArgs } from './lib/args.mjs';
import { compared, fold, markdown } from './lib/report.mjs';
import { toJson } from './lib/stats.mjs';

const ROOT = fileURLToPath(new URL('../', import.meta.url));

/** BENCHES: name, script and arguments of a full run, and of a smoke run. */
export const BENCHES = Object.freeze([
  { name: 'tailnet', args: ['bench/tailnet.mjs'], smoke: ['bench/tailnet.mjs', '--smoke'] },
  { name: 'first-dial', args: ['bench/tailnet.mjs', '--first-dial'], smoke: ['bench/tailnet.mjs', '--first-dial', '--smoke'] },
  { name: 'nodes', args: ['bench/tailnet.mjs', '--nodes', '100', '--runs', '1'], smoke: ['bench/tailnet.mjs', '--nodes', '3', '--smoke'] },
  { name: 'policy', args: ['bench/policy.mjs'], smoke: ['bench/policy.mjs', '--smoke'] },
  { name: 'guard', args: ['bench/guard.mjs'], smoke: ['bench/guard.mjs', '--smoke'] },
  { name: 'tokens', args: ['bench/tokens.mjs'], smoke: ['bench/tokens.mjs', '--smoke'] },
  { name: 'gateway', args: ['bench/gateway.mjs'], smoke: ['bench/gateway.mjs', '--smoke'] },
  { name: 'gateway-store', args: ['bench/gateway-store.mjs'], smoke: ['bench/gateway-store.mjs', '--smoke'] },
  { name: 'database', args: ['bench/database.mjs'], smoke: ['bench/database.mjs', '--smoke'] },
]);
const SMOKE_DEFAULT = ['database', 'policy'];

const { values: o } = benchArgs(import.meta.url, {
  options: {
    runs: { type: 'string' },
    only: { type: 'string' },
    out: { type: 'string' },
    json: { type: 'boolean', default: false },
    smoke: { type: 'boolean', default: false },
  },
});
const runs = Number(o.runs ?? (o.smoke ? 2 : 5));
if (!Number.isSafeInteger(runs) || runs < 1) throw new TypeError(`--runs must be a positive integer, got ${o.runs}`);
const only = o.only ? o.only.split(',') : o.smoke ? SMOKE_DEFAULT : BENCHES.map((b) => b.name);
for (const n of only) if (!BENCHES.some((b) => b.name === n)) throw new TypeError(`--only: unknown benchmark ${n} (have ${BENCHES.map((b) => b.name).join(', ')})`);
const outDir = o.out ?? (o.smoke ? mkdtempSync(join(tmpdir(), 'bench-all-')) : join(ROOT, 'docs', 'bench-report'));
const progress = (m) => process.stderr.write(`[bench/all] ${m}\n`);

/** runOne runs one benchmark with --json and returns its parsed output (stderr goes to ours, for progress). */
function runOne(args) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...args, '--json'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (s) => (out += s));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) return reject(new Error(`${args.join(' ')} exited with status ${code}`));
      try {
        resolve(JSON.parse(out));
      } catch (err) {
        reject(new Error(`${args.join(' ')} printed no JSON document: ${String(err)}`));
      }
    });
  });
}

const selected = BENCHES.filter((b) => only.includes(b.name));
const state = selected.map((b) => ({ name: b.name, command: `node ${(o.smoke ? b.smoke : b.args).join(' ')}`, runs: [], load: [], seconds: [], skipped: undefined }));
for (let r = 0; r < runs; r++) {
  const order = r % 2 ? [...selected].reverse() : selected;
  for (const b of order) {
    const s = state.find((x) => x.name === b.name);
    if (s.skipped) continue;
    const before = loadavg()[0];
    progress(`run ${r + 1}/${runs}: ${b.name} (load average ${before.toFixed(2)})`);
    const t0 = performance.now();
    try {
      const doc = await runOne(o.smoke ? b.smoke : b.args);
      s.runs.push(doc);
      s.seconds.push((performance.now() - t0) / 1000);
      s.load.push([before, loadavg()[0]]);
    } catch (err) {
      // A benchmark that cannot run here (a peer not installed, no PostgreSQL) is reported as skipped, with why.
      s.skipped = err.message;
      progress(`${b.name}: ${err.message}; left out of the report`);
    }
  }
}

// An exported tree without git has no commit to name: the report says "unknown".
const commit = spawnSync('git', ['rev-parse', '--short=12', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).stdout?.trim() || 'unknown';
const meta = { date: new Date().toISOString().slice(0, 16).replace('T', ' ') + ' UTC', commit, cpus: availableParallelism(), node: process.version, runs };
const chartDir = '.';
const { md, svgs } = markdown(state, meta, chartDir);
mkdirSync(outDir, { recursive: true });
writeFileSync(join(outDir, 'README.md'), md + '\n');
for (const [file, svg] of svgs) writeFileSync(join(outDir, file), svg);
progress(`report: ${relative(process.cwd(), join(outDir, 'README.md')) || join(outDir, 'README.md')} (${svgs.size} chart(s))`);

if (o.smoke) {
  const bad = [];
  for (const s of state) {
    if (s.skipped) bad.push(`${s.name}: ${s.skipped}`);
    else if (s.runs.length !== runs || s.runs.some((d) => !d.rows?.length)) bad.push(`${s.name}: a run produced no rows`);
    if (!s.skipped && compared(fold(s.runs)).length > 0 && !svgs.has(`${s.name}.svg`)) bad.push(`${s.name}: no chart`);
  }
  for (const [file, svg] of svgs) {
    const tags = (svg.match(/<(rect|line|text)\b/g) ?? []).length;
    const closed = (svg.match(/\/>|<\/text>/g) ?? []).length;
    if (!svg.startsWith('<svg ') || !svg.trimEnd().endsWith('</svg>') || tags === 0 || tags !== closed) bad.push(`${file}: malformed SVG`);
  }
  const rows = md.split('\n').filter((l) => l.startsWith('| ') && !l.startsWith('| metric'));
  if (rows.length === 0) bad.push('report: no table rows');
  for (const l of rows) if (!/\| [^|]+–[^|]+ \|/.test(l)) bad.push(`report row without a spread: ${l}`);
  if (bad.length) {
    progress(`smoke: ${bad.join('; ')}`);
    process.exitCode = 1;
  }
  if (!o.out) rmSync(outDir, { recursive: true, force: true });
}

if (o.json) {
  const rows = state.flatMap((s) =>
    s.runs.length ? fold(s.runs).map((e) => ({ system: e.system, metric: `${s.name}: ${e.metric}`, unit: e.unit, p50: e.p50, p99: e.p99, mean: e.mean, n: e.runs })) : [],
  );
  process.stdout.write(JSON.stringify(toJson('all', rows), null, 2) + '\n');
}
