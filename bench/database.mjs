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
//
// Then the database gateway's added latency per query, one client issuing
// the same typical query (`SELECT id, v FROM items WHERE id = $1`, extended
// protocol, a row-secured table) in sequence, against a real PostgreSQL 15
// (Debian's, started by test/gateway/pg-server.ts), the systems interleaved
// query by query so they share the machine's load:
//
//   direct        node-postgres → PostgreSQL on loopback: the floor
//   pgbouncer     node-postgres → pgbouncer (Debian's, session mode, on
//                 loopback) → PostgreSQL
//   tailnet forward   client node → a node that pipes each connection
//                 straight to PostgreSQL (bench/lib/forward-node.mjs): the
//                 tailnet's own cost, the floor of the gateway's path
//   meshguard db-gateway   client node → the database gateway node (its own
//                 process, bench/lib/db-gateway-node.mjs) → PostgreSQL
//
//   node pipe (loopback)   node-postgres → a Node process piping bytes to
//                 PostgreSQL on loopback (bench/lib/forward-node.mjs --loopback):
//                 what one hop through Node costs, without the tailnet
//   meshguard db-gateway (loopback)   the same gateway code on loopback,
//                 every connection the bench's tagged node (the gateway's
//                 own cost, without the tailnet's noise)
//
// Added latency: pgbouncer − direct, and meshguard − tailnet forward (each
// at p50, p99 and mean). Target: meshguard's added ≤ 1.2 × pgbouncer's. The
// client reaches each tailnet node through a loopback forwarder in this
// process (psql's path through `meshguard connect`); both tailnet systems
// pay it alike. On loopback: db-gateway − node pipe (the gateway's own
// work) and node pipe − direct (Node's hop, the floor of any gateway
// written in Node). Every added figure is also given as the median of the
// per-round differences (rounds interleave the systems, so each difference
// compares two queries made moments apart: less noise on a loaded machine).
//
//   node test/netns.mjs node bench/database.mjs [--json] [--smoke] [--n N] [--q N] [--no-gateway]
//   node bench/database.mjs --setup      installs PostgreSQL and pgbouncer when missing (root, outside the namespace)
//
// Build first (`npx tsup`): it reads dist/. --smoke uses tiny counts and
// checks the output's shape; without PostgreSQL, pgbouncer or a network
// namespace the gateway rows are reported as skipped (stderr), with why.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { benchArgs } from './lib/args.mjs';
import pg from 'pg';

import { loadPolicy } from '../dist/policy/index.js';
import { startJsonChild } from './lib/child.mjs';
import { setupPostgres, startBenchPostgres } from './lib/gateway-pg.mjs';
import { installPgbouncer, startPgbouncer } from './lib/pgbouncer.mjs';
import { formatTable, row, toJson } from './lib/stats.mjs';

const { values: o } = benchArgs(import.meta.url, {
  options: {
    json: { type: 'boolean', default: false },
    smoke: { type: 'boolean', default: false },
    setup: { type: 'boolean', default: false },
    'no-gateway': { type: 'boolean', default: false },
    n: { type: 'string' },
    q: { type: 'string' },
  },
});
if (o.setup) {
  const why = setupPostgres() ?? installPgbouncer();
  process.stderr.write(why ? `[bench/database] setup: ${why}\n` : '[bench/database] setup: PostgreSQL and pgbouncer are installed\n');
  process.exit(why ? 1 : 0);
}
const N = Number(o.n ?? (o.smoke ? 500 : 20_000));
/** Queries per system in the gateway figure. */
const Q = Number(o.q ?? (o.smoke ? 40 : 5000));
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

if (!o['no-gateway']) await gatewayFigure();
if (o.json) process.stdout.write(`${JSON.stringify(toJson('database', rows), null, 2)}\n`);
else process.stdout.write(`${formatTable(rows)}\n`);

/** gatewayFigure adds the database gateway's rows (or says on stderr why it cannot). */
async function gatewayFigure() {
  const skip = (why) => progress(`database gateway figure skipped: ${why}`);
  if (process.env.MESHGUARD_NETNS !== '1') return skip('not in a network namespace (run: node test/netns.mjs node bench/database.mjs): nodes must not reach a network');
  const why = installPgbouncer();
  if (why) return skip(why);
  const started = await startBenchPostgres();
  if (started.skip) return skip(started.skip);
  const server = started.pg;
  const cleanups = [() => server.stop()];
  const here = (p) => fileURLToPath(new URL(p, import.meta.url));
  const work = mkdtempSync(join(tmpdir(), 'mg-bench-db-'));
  cleanups.push(() => rmSync(work, { recursive: true, force: true }));
  try {
    const { meshguardSchemaSql, quoteIdent, roleForTag } = await import('../dist/database/index.js');
    const DB = 'benchdb';
    const GW = 'mg_gateway';
    const PW = 'bench-gateway-password';
    // direct and pgbouncer log in as a client role with the caller's privileges: the gateway's own role has none.
    const CLIENT = 'bench_client';
    const role = quoteIdent(roleForTag('tag:bench'));
    await server.createDatabase(DB);
    for (const q of [
      ...meshguardSchemaSql(),
      `CREATE ROLE ${GW} LOGIN NOINHERIT PASSWORD '${PW}'`,
      `CREATE ROLE ${role} NOLOGIN`,
      `GRANT ${role} TO ${GW}`,
      'CREATE TABLE public.items (id int PRIMARY KEY, v text NOT NULL)',
      "INSERT INTO public.items SELECT g, 'value ' || g FROM generate_series(1, 1000) g",
      `CREATE ROLE ${CLIENT} LOGIN PASSWORD '${PW}'`,
      `GRANT SELECT ON public.items TO ${role}, ${CLIENT}`,
      'ALTER TABLE public.items ENABLE ROW LEVEL SECURITY',
      'ALTER TABLE public.items FORCE ROW LEVEL SECURITY',
      `CREATE POLICY bench ON public.items TO ${role} USING (id > 0)`,
      `CREATE POLICY client ON public.items TO ${CLIENT} USING (id > 0)`,
    ])
      await server.sql(DB, q);

    progress('starting pgbouncer (session mode, loopback)');
    const bouncer = await startPgbouncer({ pgPort: server.port, db: DB, user: CLIENT, password: PW });
    cleanups.push(() => bouncer.stop());

    progress('starting headscale, the gateway node (own process), the forward node and the client node');
    const { LocalControl } = await import('../dist/control/index.js');
    const { MeshNode } = await import('../dist/index.js');
    const control = await LocalControl.start({
      policy: { tagOwners: { 'tag:bench': ['bench@'], 'tag:dbgw': ['bench@'], 'tag:fwd': ['bench@'] }, grants: [{ src: ['*'], dst: ['*'], ip: ['*'] }] },
    });
    cleanups.push(() => control.close());
    await control.createUser('bench');
    const key = (tag) => control.createAuthKey({ tags: [tag], reusable: true, ephemeral: true, expiration: '1h' });
    writeFileSync(join(work, 'gw.key'), await key('tag:dbgw'));
    writeFileSync(join(work, 'pg.pw'), PW);
    writeFileSync(
      join(work, 'policy.hujson'),
      JSON.stringify({ version: 5, rules: [{ id: 'read', src: ['tag:bench'], sql: { database: [DB], operation: ['select'], table: ['public.items'], rows: 'id > 0' } }] }),
    );
    writeFileSync(
      join(work, 'db-gateway.hujson'),
      JSON.stringify({
        policy: 'policy.hujson',
        listen: 5432,
        upstream: { host: '127.0.0.1', port: server.port, user: GW, password: { file: 'pg.pw' } },
        tailnet: { controlUrl: control.url, authKey: { file: 'gw.key' }, hostname: 'db-gateway', dir: 'gw-state', ephemeral: true },
      }),
    );
    const gwChild = startJsonChild('db-gateway node', process.execPath, [here('./lib/db-gateway-node.mjs'), '--config', join(work, 'db-gateway.hujson')]);
    cleanups.push(() => gwChild.stop());
    const fwd = startJsonChild('forward node', process.execPath, [here('./lib/forward-node.mjs'), '--control', control.url, '--authkey', await key('tag:fwd'), '--dir', mkdtempSync(join(work, 'fwd-')), '--hostname', 'pg-forward', '--to', `127.0.0.1:${server.port}`]);
    cleanups.push(() => fwd.stop());
    const gwLoop = startJsonChild('db-gateway (loopback)', process.execPath, [here('./lib/db-gateway-node.mjs'), '--config', join(work, 'db-gateway.hujson'), '--loopback', 'tag:bench']);
    cleanups.push(() => gwLoop.stop());
    const pipeLoop = startJsonChild('node pipe (loopback)', process.execPath, [here('./lib/forward-node.mjs'), '--loopback', '--to', `127.0.0.1:${server.port}`]);
    cleanups.push(() => pipeLoop.stop());
    const gwOnline = await gwChild.next('online', 60_000);
    const fwdOnline = await fwd.next('online', 60_000);
    const gwLoopOnline = await gwLoop.next('online', 60_000);
    const pipeLoopOnline = await pipeLoop.next('online', 60_000);
    const v4 = (ips) => ips.find((ip) => !ip.includes(':'));
    const client = await MeshNode.start({ controlUrl: control.url, authKey: await key('tag:bench'), dir: mkdtempSync(join(work, 'client-')), hostname: 'bench-client', ephemeral: true, timeoutMs: 45_000 });
    cleanups.push(() => client.close());
    /** A loopback port whose connections reach host:port over the tailnet as the client node. */
    const forwarder = async (host, port) => {
      const srv = net.createServer((local) => {
        local.setNoDelay(true);
        local.pause();
        client.dial(host, port).then(
          (remote) => {
            local.pipe(remote).pipe(local);
            local.resume();
            const end = () => (local.destroy(), remote.destroy());
            local.on('error', end).on('close', end);
            remote.on('error', end).on('close', end);
          },
          () => local.destroy(),
        );
      });
      await new Promise((r) => srv.listen(0, '127.0.0.1', r));
      cleanups.push(() => new Promise((r) => srv.close(() => r())));
      return srv.address().port;
    };
    const systems = [
      { name: 'direct', port: server.port, password: PW },
      { name: 'pgbouncer', port: bouncer.port },
      { name: 'tailnet forward', port: await forwarder(v4(fwdOnline.ips), 80), password: PW },
      { name: 'meshguard db-gateway', port: await forwarder(v4(gwOnline.ips), gwOnline.port) },
      { name: 'node pipe (loopback)', port: pipeLoopOnline.port, password: PW },
      { name: 'meshguard db-gateway (loopback)', port: gwLoopOnline.port },
    ];
    for (const s of systems) {
      s.client = new pg.Client({ host: '127.0.0.1', port: s.port, user: CLIENT, database: DB, ...(s.password ? { password: s.password } : {}) });
      await s.client.connect();
      cleanups.push(() => s.client.end().catch(() => {}));
      s.samples = [];
    }
    const query = (c, i) => c.query('SELECT id, v FROM items WHERE id = $1', [1 + (i % 1000)]);
    const load0 = loadavg();
    progress(`warm-up; load average ${load0.map((x) => x.toFixed(2)).join(' ')} on ${(await import('node:os')).cpus().length} cores`);
    for (const s of systems) for (let i = 0; i < Math.min(200, Q); i++) await query(s.client, i);
    // Interleaved query by query: every system sees the machine's load at the same moments.
    for (let i = 0; i < Q; i++) {
      for (const s of systems) {
        const t0 = performance.now();
        const res = await query(s.client, i);
        s.samples.push((performance.now() - t0) * 1000);
        if (res.rows.length !== 1) throw new Error(`${s.name}: expected one row, got ${res.rows.length}`);
      }
      if ((i + 1) % Math.max(1, Math.floor(Q / 5)) === 0) progress(`gateway figure: ${i + 1}/${Q} queries per system`);
    }
    const load1 = loadavg();
    progress(`load average after: ${load1.map((x) => x.toFixed(2)).join(' ')}`);
    const byName = new Map(systems.map((s) => [s.name, row(s.name, 'query latency 1 client', 'us', s.samples)]));
    rows.push(...byName.values());
    const added = (system, via, base, metric = 'added latency per query') => ({ system, metric, unit: 'us', p50: via.p50 - base.p50, p99: via.p99 - base.p99, mean: via.mean - base.mean, n: via.n });
    const bouncerAdded = added('pgbouncer', byName.get('pgbouncer'), byName.get('direct'));
    const mgAdded = added('meshguard db-gateway', byName.get('meshguard db-gateway'), byName.get('tailnet forward'));
    rows.push(bouncerAdded, mgAdded);
    // Target: ≤ 1.2.
    rows.push({ system: 'meshguard db-gateway', metric: "added latency as a fraction of pgbouncer's", unit: 'x', p50: mgAdded.p50 / bouncerAdded.p50, p99: mgAdded.p99 / bouncerAdded.p99, mean: mgAdded.mean / bouncerAdded.mean, n: mgAdded.n });
    rows.push(added('meshguard db-gateway (loopback)', byName.get('meshguard db-gateway (loopback)'), byName.get('node pipe (loopback)'), 'added latency per query (over a node pipe)'));
    rows.push(added('node pipe (loopback)', byName.get('node pipe (loopback)'), byName.get('direct'), 'added latency per query (over direct)'));
    // Paired: percentiles of the per-round differences (a difference may be negative).
    const paired = (via, base) => {
      const a = systems.find((x) => x.name === via).samples;
      const b = systems.find((x) => x.name === base).samples;
      return row(via, `added latency per query, paired (over ${base})`, 'us', a.map((v, i) => v - b[i]));
    };
    rows.push(paired('pgbouncer', 'direct'), paired('meshguard db-gateway', 'tailnet forward'), paired('meshguard db-gateway (loopback)', 'node pipe (loopback)'), paired('node pipe (loopback)', 'direct'));
  } finally {
    for (const f of cleanups.reverse()) await Promise.resolve().then(f).catch(() => {});
  }
}
