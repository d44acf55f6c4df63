// Part of the vitest suite (test/vitest.config.ts).
import { test } from 'vitest';
import assert from 'node:assert/strict';
import { chartSvg, compared, fold, markdown, median } from './report.mjs';

const run = (mesh, peer) => ({
  bench: 'x',
  rows: [
    { system: 'meshguard', metric: 'rtt', unit: 'us', p50: mesh, p99: mesh * 2, mean: mesh, n: 100 },
    { system: 'go-tsnet', metric: 'rtt', unit: 'us', p50: peer, p99: peer * 2, mean: peer, n: 100 },
    { system: 'meshguard', metric: 'alone', unit: 'ms', p50: 1, p99: 1, mean: 1, n: 1 },
  ],
});

test('fold: the median of run p50s, and their min–max, per system and metric', () => {
  const f = fold([run(300, 200), run(320, 210), run(280, 400)]);
  const mesh = f.find((e) => e.system === 'meshguard' && e.metric === 'rtt');
  assert.deepEqual([mesh.p50, mesh.min, mesh.max, mesh.p99, mesh.runs, mesh.samples], [300, 280, 320, 600, 3, 100]);
  const go = f.find((e) => e.system === 'go-tsnet');
  // One outlying run moves the spread, not the median.
  assert.deepEqual([go.p50, go.min, go.max], [210, 200, 400]);
  assert.equal(median([4, 1, 3, 2]), 2.5);
  assert.throws(() => median([]), /no values/);
});

test('compared keeps metrics meshguard shares with a peer; the chart draws each with its whisker', () => {
  const groups = compared(fold([run(300, 200), run(320, 210)]));
  assert.deepEqual(groups.map((g) => g.title), ['rtt (us)']);
  const svg = chartSvg('tailnet', groups);
  assert.match(svg, /^<svg [^>]*xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
  assert.equal((svg.match(/<rect /g) ?? []).length, 3); // background + one bar per system
  assert.match(svg, /310 \(300–320\)/); // meshguard: median and spread
  assert.match(svg, /205 \(200–210\)/);
});

test('markdown: a table row per system with its spread and the ratio to meshguard; skipped benchmarks say why', () => {
  const { md, svgs } = markdown(
    [
      { name: 'tailnet', command: 'node bench/tailnet.mjs', runs: [run(300, 200), run(320, 210)], load: [[1, 2], [2, 3]], seconds: [10, 12] },
      { name: 'gateway', command: 'node bench/gateway.mjs', runs: [], load: [], seconds: [], skipped: 'no PostgreSQL' },
    ],
    { date: 'd', commit: 'c', cpus: 2, node: 'v24', runs: 2 },
    '.',
  );
  assert.ok(svgs.has('tailnet.svg'));
  assert.match(md, /\| rtt \| us \| go-tsnet \| 205 \| 200–210 \| 410 \| 1\.51× \| 2 × 100 \|/);
  assert.match(md, /load average 1\.00–3\.00/);
  assert.match(md, /## gateway[\s\S]*Skipped: no PostgreSQL/);
});
