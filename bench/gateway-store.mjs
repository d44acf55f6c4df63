#!/usr/bin/env node
// bench/gateway-store — what the gateway's SQLite store costs, in one run:
//
//   appendLog                 one call, as the request path makes it (queues only)
//   flush (N records)         one batch write of N records of ~4 KiB (a request
//                             and a response body). 30 records is 100 ms at
//                             300 req/s, 300 records 100 ms at 3000 req/s.
//   append throughput         records/s sustained: append and flush M records
//   bucketTx                  one bucket transaction (read 2 states, write them
//                             and a reservation, commit): a quota reservation
//   queryLogs / getLog /      reads over a database of `--rows` records
//   sessions
//
// Each of flush and the reads has two rows: "latency" (until the promise
// resolves: durable, or answered) and "event-loop time" (how long the main
// thread was busy meanwhile, from performance.eventLoopUtilization): the
// store does its SQLite work on a worker thread, so the second is what the
// gateway's other requests wait for.
//
//   node bench/gateway-store.mjs [--json] [--smoke] [--rows N]
import { randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { formatTable, row, toJson } from './lib/stats.mjs';

const { values: o } = parseArgs({ options: { json: { type: 'boolean', default: false }, smoke: { type: 'boolean', default: false }, rows: { type: 'string' } } });
const progress = (m) => process.stderr.write(`[bench/gateway-store] ${m}\n`);

/** The built library when its gateway entry exports the store; else the sources (a gateway entry not built yet). */
async function loadOpenStore() {
  const dist = new URL('../dist/gateway/index.js', import.meta.url);
  if (existsSync(dist)) {
    const m = await import(dist.href);
    if (typeof m.openStore === 'function') return m.openStore;
  }
  await import('../test/gateway/fixtures/ts-source.mjs');
  return (await import('../src/gateway/store/index.ts')).openStore;
}
const openStore = await loadOpenStore();

const dbRows = Number(o.rows ?? (o.smoke ? 2_000 : 100_000));
const reps = o.smoke ? 20 : 200;
const users = Array.from({ length: 50 }, (_, i) => `user${i}@example.com`);
const body = (n) => JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 1024, messages: [{ role: 'user', content: 'x'.repeat(n) }] });
const REQ = body(1800);
const RES = JSON.stringify({ id: 'msg_1', type: 'message', content: [{ type: 'text', text: 'y'.repeat(1800) }], usage: { input_tokens: 512, output_tokens: 300 } });

let seq = 0;
function rec(time) {
  seq++;
  const user = users[seq % users.length];
  return {
    id: randomUUID(),
    time,
    sessionId: `s-${user}-${Math.floor(seq / 200)}`,
    caller: { node: `node-${seq % 20}`, user, tags: ['tag:agent'], addr: '100.64.0.9', via: 'tailnet' },
    operation: 'anthropic.messages',
    provider: 'anthropic',
    model: 'claude-sonnet-4-5',
    stream: false,
    status: 200,
    outcome: 'ok',
    usage: { inputTokens: 512, outputTokens: 300, estimated: false },
    costUsd: 0.006,
    overheadMs: 0.2,
    durationMs: 900,
    requestHeaders: { 'content-type': 'application/json', 'user-agent': 'claude-cli/2.0.0', 'anthropic-version': '2023-06-01' },
    requestBody: REQ,
    responseBody: RES,
  };
}

/** Runs `fn`, pushing its latency and the main thread's busy time meanwhile (ms). */
async function timed(fn, lat, loop) {
  const e0 = performance.eventLoopUtilization();
  const t0 = performance.now();
  await fn();
  lat.push(performance.now() - t0);
  loop.push(performance.eventLoopUtilization(e0).active);
}

const dir = mkdtempSync(join(tmpdir(), 'mg-bench-store-'));
// A long interval: the bench flushes itself, so batches are exactly the sizes measured.
const store = await openStore({ flushIntervalMs: 10_000 }, { dataDir: dir, retention: { mode: 'full' }, secrets: ['sk-ant-api03-bench-secret-key'] });
const rows = [];
try {
  progress(`filling a database with ${dbRows} records`);
  const t0 = performance.now();
  const start = Date.now() - dbRows;
  for (let i = 0; i < dbRows; i++) store.appendLog(rec(start + i));
  await store.flush();
  const fillS = (performance.now() - t0) / 1000;
  rows.push(row('sqlite', 'append throughput', 'records/s', dbRows / fillS));

  const append = [];
  for (let r = 0; r < reps * 50; r++) {
    const x = rec(Date.now());
    const a = performance.now();
    store.appendLog(x);
    append.push((performance.now() - a) * 1000);
    if (r % 300 === 299) await store.flush();
  }
  await store.flush();
  rows.push(row('sqlite', 'appendLog', 'us', append));

  for (const n of [30, 300]) {
    const lat = [];
    const loop = [];
    for (let r = 0; r < reps; r++) {
      for (let i = 0; i < n; i++) store.appendLog(rec(Date.now()));
      await timed(() => store.flush(), lat, loop);
    }
    rows.push(row('sqlite', `flush (${n} records) latency`, 'ms', lat));
    rows.push(row('sqlite', `flush (${n} records) event-loop time`, 'ms', loop));
  }

  const tx = [];
  for (let r = 0; r < reps * 10; r++) {
    const keys = [`daily/user:${users[r % users.length]}`, 'monthly/all'];
    const a = performance.now();
    await store.bucketTx(keys, (m) => ({
      states: keys.map((key) => ({ key, level: (m.get(key)?.level ?? 1000) - 0.01, updatedAt: Date.now() })),
      add: { id: `r${r}`, holds: keys.map((key) => ({ key, amount: 0.01 })), time: Date.now() },
      ...(r > 0 ? { remove: `r${r - 1}` } : {}),
      result: true,
    }));
    tx.push((performance.now() - a) * 1000);
  }
  rows.push(row('sqlite', 'bucketTx (2 buckets + reservation)', 'us', tx));

  const reads = { page: [[], []], one: [[], []], sess: [[], []] };
  const some = (await store.queryLogs({ limit: 1000 })).records.map((r) => r.id);
  for (let r = 0; r < reps; r++) {
    const user = users[r % users.length];
    await timed(() => store.queryLogs({ user, limit: 100 }), ...reads.page);
    await timed(() => store.getLog(some[r % some.length]), ...reads.one);
    await timed(() => store.sessions({ user, limit: 100 }), ...reads.sess);
  }
  for (const [name, [lat, loop]] of [[`queryLogs (user, 100 of ${dbRows})`, reads.page], ['getLog', reads.one], [`sessions (user, of ${dbRows})`, reads.sess]]) {
    rows.push(row('sqlite', `${name} latency`, 'ms', lat));
    rows.push(row('sqlite', `${name} event-loop time`, 'ms', loop));
  }
} finally {
  await store.close();
  rmSync(dir, { recursive: true, force: true });
}

const out = toJson('gateway-store', rows);
if (o.smoke) {
  const bad = out.rows.filter((r) => ['p50', 'p99', 'mean', 'n'].some((k) => typeof r[k] !== 'number' || !Number.isFinite(r[k])));
  if (bad.length || out.rows.length !== 13) {
    progress(`smoke: malformed rows: ${JSON.stringify(bad)} (${out.rows.length} rows)`);
    process.exitCode = 1;
  }
}
const f30 = out.rows.find((r) => r.metric === 'flush (30 records) event-loop time');
progress(`a flush of 100 ms at 300 req/s holds the event loop ${f30.p50.toFixed(3)} ms (p99 ${f30.p99.toFixed(3)} ms)`);
if (o.json) process.stdout.write(JSON.stringify(out, null, 2) + '\n');
else process.stdout.write(formatTable(out.rows) + '\n');
