#!/usr/bin/env node
// bench/guard — what the in-process guard costs a call, in one run:
//
//   fetch (unguarded)   global fetch to a local HTTP server (keep-alive)
//   fetch (guarded)     the same, with installGuard() and an allowing policy
//   http (unguarded)    node:http GET with a keep-alive agent
//   http (guarded)      the same, guarded
//   guard decision      one GuardCore-level check of an HTTP target (evaluation + bookkeeping)
//
// and what judging a call to a registered AI gateway as the gateway does
// costs (src/guard/gateways.ts):
//
//   fetch via gateway connector (guarded)  a guarded fetch to <gateway>/v1/connectors/api/v1/items,
//                                          judged as GET https://api.example.com/v1/items (the
//                                          local server plays the gateway)
//   gateway connector decode               decodeGatewayHttp alone: the upstream target built
//   gateway mcp name decode                decodeGatewayMcp alone: github__get_issue split
//
// "gateway decode overhead" is, per block, the median of the connector
// fetch minus the median of the same fetch to a plain allowed URL.
//
// and what the durable audit file sink (src/policy/sinks.ts) adds:
//
//   fetch (guarded, memory sink)       an allowed guarded fetch audited to memorySink(): the cost of
//                                      building the event, without any I/O
//   fetch (guarded, file sink)         the same with jsonLinesSink(file) (allows batched)
//   fetch denied (no audit)            a guarded fetch the policy denies, awaited to its rejection
//   fetch denied (memory sink)         the same, audited to memorySink()
//   fetch denied (file sink)           the same with jsonLinesSink(file): one synchronous write(2) per denial
//   fetch denied (file sink, fsync)    the same with { fsync: true }: write(2) + fdatasync(2) per denial
//   file sink write (...)              jsonLinesSink(file).write(event) alone, for a denial / an allow
//
// "audit overhead" rows are, per block, the audited median minus the
// median of the same calls without audit.
//
// Guarded and unguarded calls alternate in blocks so that drift (JIT, GC,
// CPU frequency) lands on both. The "overhead" rows are guarded minus
// unguarded per paired block median. Target (issue 3): a guarded fetch adds
// at most 20 µs at p50 — reported, not asserted.
//
//   node bench/guard.mjs [--json] [--smoke] [--n N]
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchArgs } from './lib/args.mjs';
import { deniedCause, installGuard, jsonLinesSink, memorySink } from '../dist/guard/index.js';
import { decisionEvent, loadPolicy } from '../dist/policy/index.js';
// The decoders alone are internal (not in dist's bundle): read from the sources (Node strips the types).
import '../test/gateway/fixtures/ts-source.mjs';
const { decodeGatewayHttp, decodeGatewayMcp, parseGateway, registerGateways } = await import('../src/guard/gateways.ts');
import { formatTable, row, toJson } from './lib/stats.mjs';

const { values: o } = benchArgs(import.meta.url, { options: { json: { type: 'boolean', default: false }, smoke: { type: 'boolean', default: false }, n: { type: 'string' } } });
const n = Number(o.n ?? (o.smoke ? 200 : 5000));
const block = o.smoke ? 50 : 250;
const progress = (m) => process.stderr.write(`[bench/guard] ${m}\n`);

const server = http.createServer((_req, res) => res.end('ok'));
server.keepAliveTimeout = 60_000;
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const port = server.address().port;
const url = `http://127.0.0.1:${port}/v1/items?page=1`;

// A policy of realistic size: 100 rules for other hosts, the allowing rule last.
const rules = [];
for (let i = 0; i < 99; i++) rules.push({ id: `r${i}`, src: ['tag:other'], http: { host: [`svc${i}.example.com`], path: ['/api/**'] } });
rules.push({ id: 'bench', src: ['tag:agent'], http: { host: ['127.0.0.1'], method: ['GET'], path: ['/v1/**'] } });
rules.push({ id: 'bench-upstream', src: ['tag:agent'], http: { host: ['api.example.com'], method: ['GET'], path: ['/v1/**'] } });
const policy = loadPolicy(JSON.stringify({ version: 1, rules }));

const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
const httpGet = () =>
  new Promise((resolve, reject) => {
    http
      .get(url, { agent }, (res) => {
        res.resume();
        res.on('end', resolve);
      })
      .on('error', reject);
  });
const fetchGet = async () => {
  const r = await fetch(url);
  await r.arrayBuffer();
};

async function time(fn, count, out) {
  for (let i = 0; i < count; i++) {
    const t0 = performance.now();
    await fn();
    out.push((performance.now() - t0) * 1000);
  }
}

// The policy allows GET /v1/** only: this one is denied before a byte leaves.
const deniedUrl = `http://127.0.0.1:${port}/admin`;
const fetchDenied = async () => {
  try {
    await fetch(deniedUrl);
  } catch (err) {
    if (deniedCause(err)) return;
    throw err;
  }
  throw new Error('bench policy did not deny the denied URL');
};

// Audit files go to the temporary directory's disk (not a tmpfs here: fsync is a real disk flush).
const auditDir = mkdtempSync(join(tmpdir(), 'mg-bench-audit-'));
let files = 0;
const fileSink = (opts) => jsonLinesSink(join(auditDir, `audit-${files++}.jsonl`), opts);
const identity = { node: 'bench', tags: ['tag:agent'] };
const guarded = (audit) => installGuard({ identity, policy, intercept: { sdk: false }, ...(audit ? { audit } : {}) });

const median = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
const samples = { 'fetch (unguarded)': [], 'fetch (guarded)': [], 'fetch (guarded, memory sink)': [], 'fetch (guarded, file sink)': [], 'http (unguarded)': [], 'http (guarded)': [] };
const overhead = { fetch: [], http: [], memory: [], file: [] };

progress(`n=${n} per system, blocks of ${block}${o.smoke ? ' (smoke)' : ''}`);
// warm-up: both paths, guarded and not
for (let i = 0; i < 200; i++) await fetchGet(), await httpGet();
let guard = installGuard({ identity: { node: 'bench', tags: ['tag:agent'] }, policy, intercept: { sdk: false } });
for (let i = 0; i < 200; i++) await fetchGet(), await httpGet();
guard.uninstall();

for (let done = 0; done < n; done += block) {
  for (const kind of ['fetch', 'http']) {
    const fn = kind === 'fetch' ? fetchGet : httpGet;
    const u = [];
    const g = [];
    await time(fn, block, u);
    guard = installGuard({ identity: { node: 'bench', tags: ['tag:agent'] }, policy, intercept: { sdk: false } });
    await time(fn, block, g);
    guard.uninstall();
    samples[`${kind} (unguarded)`].push(...u);
    samples[`${kind} (guarded)`].push(...g);
    overhead[kind].push(median(g) - median(u));
    if (kind === 'fetch') {
      // Allowed calls audited: to memory, and to the file sink (events batched, written every flushMs = 100 ms).
      for (const [sys, sink] of [['memory', memorySink()], ['file', fileSink()]]) {
        const a = [];
        guard = guarded(sink);
        await time(fn, block, a);
        guard.uninstall();
        await sink.close?.();
        samples[`fetch (guarded, ${sys} sink)`].push(...a);
        overhead[sys].push(median(a) - median(g));
      }
    }
  }
}

// Denied calls: no audit, then the durable file sink (one synchronous
// write(2) per denial), then with fsync, alternating in blocks. An fsync
// costs a disk flush, so its blocks are smaller.
progress('denied fetch: no audit vs memory sink vs file sink vs file sink + fsync');
const denied = { none: [], memory: [], file: [], fsync: [] };
const deniedOver = { memory: [], file: [], fsync: [] };
guard = guarded(fileSink());
for (let i = 0; i < 200; i++) await fetchDenied();
guard.uninstall();
const fsyncBlock = Math.max(10, Math.floor(block / 5));
for (let done = 0; done < n; done += block) {
  const b = { none: [], memory: [], file: [], fsync: [] };
  for (const [kind, count, makeSink] of [
    ['none', block, () => undefined],
    ['memory', block, () => memorySink()],
    ['file', block, () => fileSink()],
    ['fsync', fsyncBlock, () => fileSink({ fsync: true })],
  ]) {
    const sink = makeSink();
    guard = guarded(sink);
    await time(fetchDenied, count, b[kind]);
    guard.uninstall();
    await sink?.close?.();
    denied[kind].push(...b[kind]);
  }
  for (const kind of ['memory', 'file', 'fsync']) deniedOver[kind].push(median(b[kind]) - median(b.none));
}

// The sink alone: one event written, a denial (synchronous) and an allow (buffered; every
// flushMs one write(2) carries the batch, and that sample pays for it).
const sinkWrite = { deny: [], allow: [] };
{
  const target = { kind: 'http', scheme: 'http', host: '127.0.0.1', port, method: 'GET', path: '/admin', query: '', headers: {} };
  const principal = identity;
  const evDeny = decisionEvent(principal, target, { effect: 'deny', reason: 'no rule allows this call' }, { layer: 'fetch', outcome: 'deny', latencyUs: 1, policyHash: policy.hash });
  const evAllow = decisionEvent(principal, target, { effect: 'allow', ruleId: 'bench', reason: 'allowed by rule "bench"' }, { layer: 'fetch', outcome: 'allow', latencyUs: 1, policyHash: policy.hash });
  for (const kind of ['deny', 'allow']) {
    const sink = fileSink();
    const ev = kind === 'deny' ? evDeny : evAllow;
    for (let i = 0; i < 1000; i++) sink.write(ev); // warm-up
    for (let done = 0; done < n * 4; done += block) {
      for (let i = 0; i < block; i++) {
        const t0 = performance.now();
        sink.write(ev);
        sinkWrite[kind].push((performance.now() - t0) * 1000);
      }
      // Let the flush timer run between blocks, as it would between calls.
      await new Promise((r) => setImmediate(r));
    }
    await sink.close();
  }
}

// Calls to a registered AI gateway: the local server plays the gateway, its connector "api" is https://api.example.com.
progress('fetch through a registered gateway connector vs a plain allowed fetch');
const gatewaySpec = { url: `http://127.0.0.1:${port}`, mcpServers: ['github'], connectors: { api: { baseUrl: 'https://api.example.com', credentialHeader: 'X-Api-Key' } } };
const viaUrl = `http://127.0.0.1:${port}/v1/connectors/api/v1/items?page=1`;
const fetchVia = async () => {
  const r = await fetch(viaUrl);
  await r.arrayBuffer();
};
const viaSamples = { plain: [], via: [] };
const viaOver = [];
guard = installGuard({ identity, policy, intercept: { sdk: false }, gateways: [gatewaySpec] });
for (let i = 0; i < 200; i++) await fetchVia(), await fetchGet();
for (let done = 0; done < n; done += block) {
  const a = [];
  const b = [];
  await time(fetchGet, block, a);
  await time(fetchVia, block, b);
  viaSamples.plain.push(...a);
  viaSamples.via.push(...b);
  viaOver.push(median(b) - median(a));
}
guard.uninstall();
const decodeHttp = [];
const decodeMcp = [];
{
  const core = {};
  registerGateways(core, [parseGateway(gatewaySpec, 'bench')]);
  const gw = parseGateway(gatewaySpec, 'bench');
  const t = { kind: 'http', scheme: 'http', host: '127.0.0.1', port, method: 'GET', path: '/v1/connectors/api/v1/items', query: 'page=1', headers: { host: `127.0.0.1:${port}`, accept: '*/*', 'user-agent': 'node' } };
  for (let i = 0; i < 10_000; i++) decodeGatewayHttp(core, t), decodeGatewayMcp(gw, 'tools/call', 'github__get_issue', { repo: 'acme/app' });
  for (let i = 0; i < n * 4; i++) {
    let t0 = performance.now();
    const d = decodeGatewayHttp(core, t);
    decodeHttp.push((performance.now() - t0) * 1000);
    if (d?.target?.host !== 'api.example.com') throw new Error('bench: the connector call did not decode');
    t0 = performance.now();
    decodeGatewayMcp(gw, 'tools/call', 'github__get_issue', { repo: 'acme/app' });
    decodeMcp.push((performance.now() - t0) * 1000);
  }
}

// The decision alone: what the guard adds before a call goes on.
const decisions = [];
guard = installGuard({ identity: { node: 'bench', tags: ['tag:agent'] }, policy, intercept: { sdk: false, fetch: false, http: false, net: false, dial: false } });
const target = { kind: 'http', scheme: 'http', host: '127.0.0.1', port, method: 'GET', path: '/v1/items', query: 'page=1', headers: { host: `127.0.0.1:${port}` } };
for (let i = 0; i < n * 4; i++) {
  const t0 = performance.now();
  const d = guard.policy.evaluate({ principal: guard.principal, target });
  decisions.push((performance.now() - t0) * 1000);
  if (d.effect !== 'allow') throw new Error(`bench policy did not allow: ${d.reason}`);
}
guard.uninstall();
agent.destroy();
server.closeAllConnections();
server.close();
rmSync(auditDir, { recursive: true, force: true });

const rows = [
  ...Object.entries(samples).map(([system, s]) => row(system, 'request', 'us', s)),
  row('fetch', 'guard overhead (block medians)', 'us', overhead.fetch),
  row('http', 'guard overhead (block medians)', 'us', overhead.http),
  row('policy evaluate (100 rules)', 'decision', 'us', decisions),
  row('fetch (guarded, plain, same blocks)', 'request', 'us', viaSamples.plain),
  row('fetch via gateway connector (guarded)', 'request', 'us', viaSamples.via),
  row('fetch via gateway connector (guarded)', 'gateway decode overhead (block medians)', 'us', viaOver),
  row('gateway connector decode', 'decode', 'us', decodeHttp),
  row('gateway mcp name decode', 'decode', 'us', decodeMcp),
  row('fetch (guarded, memory sink)', 'audit overhead (block medians)', 'us', overhead.memory),
  row('fetch (guarded, file sink)', 'audit overhead (block medians)', 'us', overhead.file),
  row('fetch denied (no audit)', 'request', 'us', denied.none),
  row('fetch denied (memory sink)', 'request', 'us', denied.memory),
  row('fetch denied (file sink)', 'request', 'us', denied.file),
  row('fetch denied (file sink, fsync)', 'request', 'us', denied.fsync),
  row('fetch denied (memory sink)', 'audit overhead (block medians)', 'us', deniedOver.memory),
  row('fetch denied (file sink)', 'audit overhead (block medians)', 'us', deniedOver.file),
  row('fetch denied (file sink, fsync)', 'audit overhead (block medians)', 'us', deniedOver.fsync),
  row('file sink write (deny, sync)', 'event', 'us', sinkWrite.deny),
  row('file sink write (allow, batched)', 'event', 'us', sinkWrite.allow),
];
const out = toJson('guard', rows);
if (o.smoke) {
  const keys = ['system', 'metric', 'unit', 'p50', 'p99', 'mean', 'n'];
  const bad = out.rows.filter((r) => keys.some((k) => r[k] === undefined || (typeof r[k] === 'number' && !Number.isFinite(r[k]))));
  for (const s of ['fetch (guarded)', 'fetch (unguarded)', 'fetch denied (no audit)', 'fetch denied (file sink)', 'fetch (guarded, file sink)']) if (!out.rows.some((r) => r.system === s)) bad.push({ missing: s });
  if (bad.length) {
    process.stderr.write(`[bench/guard] smoke: malformed rows: ${JSON.stringify(bad)}\n`);
    process.exitCode = 1;
  }
}
const fetchOver = out.rows.find((r) => r.system === 'fetch' && r.metric.startsWith('guard overhead'));
progress(`guarded fetch adds ${fetchOver.p50.toFixed(1)} µs at p50 (target ≤ 20 µs)`);
const auditOver = out.rows.find((r) => r.system === 'fetch denied (file sink)' && r.metric.startsWith('audit overhead'));
progress(`the durable file sink adds ${auditOver.p50.toFixed(1)} µs at p50 to a denied fetch`);
if (o.json) process.stdout.write(JSON.stringify(out, null, 2) + '\n');
else process.stdout.write(formatTable(rows) + '\n');
