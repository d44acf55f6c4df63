#!/usr/bin/env node
// bench/gateway-store — what the gateway's store costs, per engine, in one
// run: SQLite (one file, one gateway process) and PostgreSQL (shared by
// several gateway instances; Debian's postgresql started by the bench on
// 127.0.0.1, as the tests do), side by side:
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
// PostgreSQL only (its reason to exist):
//   bucketTx, 2 instances     two stores (two pools, as two gateway instances)
//                             each running 8 transactions at a time: on one
//                             shared bucket (every transaction waits for the
//                             row lock), and on 50 per-user buckets; tx/s.
//
// "postgres" commits as the server is configured (synchronous_commit on, its
// default: every commit waits for the WAL to reach the disk); "postgres,
// synchronous_commit off" is storage.synchronousCommit "off" (a PostgreSQL
// crash may lose the last ~0.6 s; a gateway crash loses nothing), measured
// on the writes only.
//
// Each of flush and the reads has two rows: "latency" (until the promise
// resolves: durable, or answered) and "event-loop time" (how long the main
// thread was busy meanwhile, from performance.eventLoopUtilization): the
// gateway's other requests wait for the second.
//
//   node bench/gateway-store.mjs [--json] [--smoke] [--rows N] [--engines sqlite,postgres]
import { randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchArgs } from './lib/args.mjs';
import { formatTable, row, toJson } from './lib/stats.mjs';

const { values: o } = benchArgs(import.meta.url, { options: { json: { type: 'boolean', default: false }, smoke: { type: 'boolean', default: false }, rows: { type: 'string' }, engines: { type: 'string', default: 'sqlite,postgres' } } });
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

/** Fills the store with `dbRows` records; pushes the throughput row. */
async function fill(system, store, rows) {
  progress(`${system}: filling a database with ${dbRows} records`);
  const t0 = performance.now();
  const start = Date.now() - dbRows;
  for (let i = 0; i < dbRows; i++) {
    store.appendLog(rec(start + i));
    // Batches as the flush interval makes them under load, not one giant one.
    if (i % 5_000 === 4_999) await store.flush();
  }
  await store.flush();
  rows.push(row(system, 'append throughput', 'records/s', dbRows / ((performance.now() - t0) / 1000)));
}

/** appendLog, flushes and bucket transactions. */
async function writes(system, store, rows) {
  const append = [];
  for (let r = 0; r < reps * 50; r++) {
    const x = rec(Date.now());
    const a = performance.now();
    store.appendLog(x);
    append.push((performance.now() - a) * 1000);
    if (r % 300 === 299) await store.flush();
  }
  await store.flush();
  rows.push(row(system, 'appendLog', 'us', append));

  for (const n of [30, 300]) {
    const lat = [];
    const loop = [];
    for (let r = 0; r < reps; r++) {
      for (let i = 0; i < n; i++) store.appendLog(rec(Date.now()));
      await timed(() => store.flush(), lat, loop);
    }
    rows.push(row(system, `flush (${n} records) latency`, 'ms', lat));
    rows.push(row(system, `flush (${n} records) event-loop time`, 'ms', loop));
  }

  const tx = [];
  const tag = randomUUID().slice(0, 8);
  for (let r = 0; r < reps * 10; r++) {
    const keys = [`daily/user:${users[r % users.length]}`, 'monthly/all'];
    const a = performance.now();
    await store.bucketTx(keys, spend(keys, `r-${tag}-${r}`, r > 0 ? `r-${tag}-${r - 1}` : undefined));
    tx.push((performance.now() - a) * 1000);
  }
  rows.push(row(system, 'bucketTx (2 buckets + reservation)', 'us', tx));
}

/** A quota-reservation-like transaction: take 0.01 from each key, add reservation `id`, remove `prev`. */
function spend(keys, id, prev) {
  return (m) => ({
    states: keys.map((key) => ({ key, level: (m.get(key)?.level ?? 1e9) - 0.01, updatedAt: Date.now() })),
    add: { id, holds: keys.map((key) => ({ key, amount: 0.01 })), time: Date.now() },
    ...(prev ? { remove: prev } : {}),
    result: true,
  });
}

/** Reads for the logs API over the filled database. */
async function reads(system, store, rows) {
  const reads = { page: [[], []], one: [[], []], sess: [[], []] };
  const some = (await store.queryLogs({ limit: 1000 })).records.map((r) => r.id);
  for (let r = 0; r < reps; r++) {
    const user = users[r % users.length];
    await timed(() => store.queryLogs({ user, limit: 100 }), ...reads.page);
    await timed(() => store.getLog(some[r % some.length]), ...reads.one);
    await timed(() => store.sessions({ user, limit: 100 }), ...reads.sess);
  }
  for (const [name, [lat, loop]] of [[`queryLogs (user, 100 of ${dbRows})`, reads.page], ['getLog', reads.one], [`sessions (user, of ${dbRows})`, reads.sess]]) {
    rows.push(row(system, `${name} latency`, 'ms', lat));
    rows.push(row(system, `${name} event-loop time`, 'ms', loop));
  }
}

/** Two instances (two stores, two pools) on one database: bucket transactions per second, 8 at a time on each. */
async function twoInstances(system, open, rows) {
  const [a, b] = await Promise.all([open(), open()]);
  try {
    for (const [what, keyOf] of [['one shared bucket', () => ['pool/global']], ['50 per-user buckets', (i) => [`daily/user:${users[i % users.length]}`]]]) {
      const n = o.smoke ? 200 : 2_000;
      let next = 0;
      const tag = randomUUID().slice(0, 8);
      const t0 = performance.now();
      const worker = async (store) => {
        for (let i = next++; i < n; i = next++) {
          const id = `t-${tag}-${i}`;
          const keys = keyOf(i);
          await store.bucketTx(keys, spend(keys, id, undefined));
          await store.bucketTx(keys, (m) => ({ states: [], remove: id, result: m.size }));
        }
      };
      await Promise.all(Array.from({ length: 16 }, (_, w) => worker(w % 2 === 0 ? a : b)));
      rows.push(row(system, `bucketTx, 2 instances x 8 at a time, ${what}`, 'tx/s', (2 * n) / ((performance.now() - t0) / 1000)));
    }
  } finally {
    await Promise.all([a.close(), b.close()]);
  }
}

const engines = new Set(o.engines.split(','));
const rows = [];
const secrets = ['sk-ant-api03-bench-secret-key'];
// A long interval: the bench flushes itself, so batches are exactly the sizes measured.
const FLUSH = 10_000;

if (engines.has('sqlite')) {
  const dir = mkdtempSync(join(tmpdir(), 'mg-bench-store-'));
  const store = await openStore({ flushIntervalMs: FLUSH }, { dataDir: dir, retention: { mode: 'full' }, secrets });
  try {
    await fill('sqlite', store, rows);
    await writes('sqlite', store, rows);
    await reads('sqlite', store, rows);
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

if (engines.has('postgres')) {
  await import('../test/gateway/fixtures/ts-source.mjs');
  const { postgresUnavailable, startPostgres } = await import('../test/gateway/pg-server.ts');
  const why = postgresUnavailable();
  if (why) progress(`postgres rows skipped: ${why}`);
  else {
    const server = await startPostgres();
    try {
      const url = await server.createDatabase('gateway_bench');
      const pg = (schema, extra = {}) => openStore({ engine: 'postgres', url, schema, flushIntervalMs: FLUSH, ...extra }, { dataDir: '', retention: { mode: 'full' }, secrets });
      const store = await pg('bench');
      try {
        await fill('postgres', store, rows);
        await writes('postgres', store, rows);
        await reads('postgres', store, rows);
      } finally {
        await store.close();
      }
      await twoInstances('postgres', () => pg('bench_two'), rows);
      const off = 'postgres, synchronous_commit off';
      const fast = await pg('bench_off', { synchronousCommit: 'off' });
      try {
        await writes(off, fast, rows);
      } finally {
        await fast.close();
      }
      await twoInstances(off, () => pg('bench_two_off', { synchronousCommit: 'off' }), rows);
    } finally {
      await server.stop();
    }
  }
}

const out = toJson('gateway-store', rows);
if (o.smoke) {
  const bad = out.rows.filter((r) => ['p50', 'p99', 'mean', 'n'].some((k) => typeof r[k] !== 'number' || !Number.isFinite(r[k])));
  const expected = { sqlite: 13, postgres: 15, 'postgres, synchronous_commit off': 8 };
  const counts = {};
  for (const r of out.rows) counts[r.system] = (counts[r.system] ?? 0) + 1;
  const wrong = Object.entries(counts).filter(([sys, n]) => expected[sys] !== n);
  if (bad.length || wrong.length || (engines.has('sqlite') && !counts.sqlite)) {
    progress(`smoke: malformed rows: ${JSON.stringify(bad)}; rows per system ${JSON.stringify(counts)}, expected ${JSON.stringify(expected)}`);
    process.exitCode = 1;
  }
}
for (const f30 of out.rows.filter((r) => r.metric === 'flush (30 records) event-loop time')) {
  progress(`${f30.system}: a flush of 100 ms at 300 req/s holds the event loop ${f30.p50.toFixed(3)} ms (p99 ${f30.p99.toFixed(3)} ms)`);
}
if (o.json) process.stdout.write(JSON.stringify(out, null, 2) + '\n');
else process.stdout.write(formatTable(out.rows) + '\n');
