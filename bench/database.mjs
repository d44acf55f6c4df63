#!/usr/bin/env node
// bench/database — what judging a database statement costs (issue 15):
// parse (PostgreSQL 15's parser, libpg-query's wasm build) + decide (the
// compiled policy's sql rules), for typical statements,
//
//   cold     a text never seen before (each sample's literal differs, so the
//            analysis cache misses and the statement is parsed)
//   cached   the same text again (the analysis comes from the cache; the
//            rules are still evaluated for every access)
//
// Targets (issue 15): cold ≤ 50 µs p50 for a typical statement; cached ≤ 2 µs.
// The database gateway's added latency (against a direct connection and
// pgbouncer) is not measured here: the gateway is not built yet.
//
//   node bench/database.mjs [--json] [--smoke] [--n N]
//
// Build first (`npx tsup`): it reads dist/.
import { parseArgs } from 'node:util';

import { loadPolicy } from '../dist/policy/index.js';
import { formatTable, row, toJson } from './lib/stats.mjs';

const { values: o } = parseArgs({ options: { json: { type: 'boolean', default: false }, smoke: { type: 'boolean', default: false }, n: { type: 'string' } } });
const N = Number(o.n ?? (o.smoke ? 500 : 20_000));
const progress = (m) => process.stderr.write(`[bench/database] ${m}\n`);

const policy = loadPolicy(
  JSON.stringify({
    version: 5,
    rules: [
      { id: 'deny-vault', src: ['*'], effect: 'deny', sql: { database: ['*'], operation: ['*'], table: ['vault.*'] } },
      { id: 'read', src: ['tag:agent'], sql: { database: ['appdb'], operation: ['select'], table: ['public.*'] } },
      { id: 'write', src: ['tag:agent'], sql: { database: ['appdb'], operation: ['insert', 'update'], table: ['public.orders', 'public.order_items'] } },
      { id: 'cols', src: ['tag:agent'], sql: { database: ['appdb'], operation: ['select'], table: ['public.users'], columns: ['id', 'name', 'email'] } },
    ],
  }),
);
const principal = { node: 'agent', tags: ['tag:agent'] };

/** Typical statements; $N in each is replaced by a number (a new text per sample when cold). */
const STATEMENTS = {
  'select by key': (i) => `SELECT id, total, created_at FROM orders WHERE id = ${i}`,
  'insert': (i) => `INSERT INTO orders (id, customer_id, total) VALUES (${i}, 42, 19.99)`,
  'update': (i) => `UPDATE orders SET total = total + 1 WHERE id = ${i}`,
  'join + aggregate': (i) => `SELECT o.customer_id, count(*), sum(i.qty) FROM orders o JOIN order_items i ON i.order_id = o.id WHERE o.created_at > now() - interval '${i} days' GROUP BY o.customer_id ORDER BY 2 DESC LIMIT 10`,
  'CTE + subquery': (i) => `WITH recent AS (SELECT id FROM orders WHERE total > ${i}) SELECT u.id, u.name FROM users u WHERE u.id IN (SELECT id FROM recent)`,
};

function decide(statement) {
  const d = policy.evaluate({ principal, target: { kind: 'sql', database: 'appdb', statement } });
  if (d.effect !== 'allow') throw new Error(`${statement}: ${d.reason} (the bench policy must allow every statement)`);
}

/** time returns µs per call of f(i) for i in [from, from + n). */
function time(f, n, from) {
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    f(from + i);
    out[i] = (performance.now() - t0) * 1000;
  }
  return Array.from(out);
}

const rows = [];
let base = 1_000_000;
for (const [name, make] of Object.entries(STATEMENTS)) {
  progress(`${name}: ${N} samples cold, ${N} cached`);
  time((i) => decide(make(i)), Math.min(N, 2000), (base += N)); // warm-up: JIT (its texts are never reused)
  rows.push(row('meshguard', `parse+decide cold: ${name}`, 'us', time((i) => decide(make(i)), N, (base += N))));
  const same = make(7);
  time(() => decide(same), Math.min(N, 2000), 0);
  rows.push(row('meshguard', `decide cached: ${name}`, 'us', time(() => decide(same), N, 0)));
}

if (o.json) process.stdout.write(`${JSON.stringify(toJson('database', rows), null, 2)}\n`);
else process.stdout.write(`${formatTable(rows)}\n`);
