// Part of the vitest suite (test/vitest.config.ts).
import { test } from 'vitest';
import assert from 'node:assert/strict';
import { summarize, row, toJson, formatTable, COLUMNS } from './stats.mjs';

test('nearest-rank percentiles are observed samples, input untouched', () => {
  const xs = [5, 1, 4, 2, 3];
  assert.deepEqual(summarize(xs), { p50: 3, p99: 5, mean: 3, n: 5 });
  assert.deepEqual(xs, [5, 1, 4, 2, 3]);
  // 1..100: p50 is the 50th value, p99 the 99th (no interpolation).
  const hundred = Array.from({ length: 100 }, (_, i) => 100 - i);
  assert.deepEqual(summarize(hundred), { p50: 50, p99: 99, mean: 50.5, n: 100 });
  // Even count: p50 is the lower middle, not the average of the two.
  assert.equal(summarize([1, 2, 3, 4]).p50, 2);
  assert.deepEqual(summarize([7]), { p50: 7, p99: 7, mean: 7, n: 1 });
  // Numeric, not lexicographic, sort.
  assert.equal(summarize([10, 9, 100]).p50, 10);
});

test('summarize rejects what would make a meaningless row', () => {
  for (const bad of [undefined, null, 3, '1,2', {}]) assert.throws(() => summarize(bad), TypeError);
  assert.throws(() => summarize([]), RangeError);
  for (const x of [NaN, Infinity, '3', null]) assert.throws(() => summarize([1, x]), TypeError);
});

test('toJson emits exactly the published shape', () => {
  const r = { ...row('tsnet (Go)', 'rtt', 'us', [3, 1, 2]), extra: 1 };
  const doc = toJson('tailnet', [r]);
  assert.deepEqual(Object.keys(doc), ['bench', 'rows']);
  assert.deepEqual(Object.keys(doc.rows[0]), [...COLUMNS]);
  assert.deepEqual(doc.rows[0], { system: 'tsnet (Go)', metric: 'rtt', unit: 'us', p50: 2, p99: 3, mean: 2, n: 3 });
  assert.throws(() => toJson('', []), TypeError);
  assert.throws(() => toJson('x', [{ system: 'a' }]), TypeError);
});

test('row takes a single number as one sample', () => {
  assert.equal(row('a', 'throughput', 'MiB/s', 250).n, 1);
  assert.throws(() => row('', 'm', 'u', [1]), TypeError);
});

test('formatTable aligns columns', () => {
  const out = formatTable([row('loopback TCP (Node)', 'rtt', 'us', [28.5, 30]), row('tsnet', 'throughput', 'MiB/s', 1971.2)]);
  const lines = out.split('\n');
  assert.equal(lines.length, 4);
  assert.match(lines[0], /^system\s+metric\s+unit\s+p50\s+p99\s+mean\s+n$/);
  // Right-aligned numbers: every row's last column ends at the same offset.
  const ends = lines.filter((_, i) => i !== 1).map((l) => l.length);
  assert.equal(new Set(ends).size, 1);
});
