#!/usr/bin/env node
// bench/gateway-trace — where the slow requests of bench/gateway's 1-client
// figure spend their time. Not a benchmark (no peers): a diagnosis tool.
//
// It runs the simulated provider and meshguard's gateway (bench/lib/
// gateway-server.mjs, the CLI's Node options, default configuration: full
// logs to SQLite) as bench/gateway does, each with bench/lib/trace-preload.mjs,
// and sends N sequential requests, alternating blocks with direct calls to
// the provider. Every request of the gateway is cut into segments on the
// machine's one clock:
//
//   to-gateway     client start → the gateway has the request's headers
//   gateway-in     → the gateway sent it upstream (identity, policy, quota, hooks)
//   to-provider    → the provider has it
//   provider       → the provider wrote its answer
//   from-provider  → the gateway has the answer's headers
//   gateway-out    → the client has the whole answer (body, scrub, write, client)
//
// The same is done for a bare proxy (bench/lib/plain-proxy-server.mjs:
// node:http in, undici out, nothing else; the "bare proxy" of
// bench/gateway), whose requests are cut at the same points: what any Node
// proxy spends in each segment on this machine, beside the gateway's.
//
// A request of the gateway slower than direct's median + 1 ms is put down to one
// cause: its processes waited for a CPU (each process's run-queue wait
// while it served the request, from Linux's per-thread schedstat: the
// machine's other load), a GC of the gateway, the provider or this client,
// a log batch whose hand-off to the store's worker thread held the gateway
// ≥ 0.25 ms, or none of these (named by its slowest segment). It also
// prints each process's run-queue wait per request, latency minus that
// wait, and the CPU time per request of every thread of the gateway, the
// bare proxy, the provider and the client.
// Usage:
//
//   node test/netns.mjs node bench/gateway-trace.mjs [--n 4000] [--block 200] [--json]
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { benchArgs } from './lib/args.mjs';
import { PerformanceObserver, performance } from 'node:perf_hooks';
import { startJsonChild } from './lib/child.mjs';
import { cliNodeOptions } from './lib/cli-options.mjs';
import { chatBody, closedLoop, closeTarget, once, target } from './lib/llm-load.mjs';
import { schedstatReader, threadCpuMs } from './lib/schedstat.mjs';
import { formatTable, row, toJson } from './lib/stats.mjs';

const { values: o } = benchArgs(import.meta.url, { options: { n: { type: 'string', default: '4000' }, block: { type: 'string', default: '200' }, json: { type: 'boolean', default: false } } });
const N = Number(o.n);
const BLOCK = Number(o.block);
if (!Number.isInteger(N) || !Number.isInteger(BLOCK) || N < BLOCK || BLOCK < 1) throw new Error('bench/gateway-trace: --n and --block must be positive integers, --n at least --block');
const here = (p) => fileURLToPath(new URL(p, import.meta.url));
const progress = (m) => process.stderr.write(`[bench/gateway-trace] ${m}\n`);
const KEY = 'sk-bench-provider-key';
const clock = () => performance.timeOrigin + performance.now();
const myRunQueueWaitMs = schedstatReader();

const nodeOptions = cliNodeOptions();

const clientGc = [];
new PerformanceObserver((l) => {
  for (const e of l.getEntries()) clientGc.push([performance.timeOrigin + e.startTime, e.duration]);
}).observe({ entryTypes: ['gc'] });

const work = mkdtempSync(join(tmpdir(), 'mg-gw-trace-'));
const children = [];
try {
  const traced = (name, script, args, file) => {
    const c = startJsonChild(name, process.execPath, [...(name === 'provider' ? [] : nodeOptions), '--import', here('./lib/trace-preload.mjs'), here(script), ...args], { env: { ...process.env, MESHGUARD_TRACE_OUT: file } });
    children.push(c);
    return c;
  };
  const simFile = join(work, 'sim.json');
  const gwFile = join(work, 'gateway.json');
  const sim = traced('provider', './lib/llm-sim-server.mjs', ['--key', KEY], simFile);
  const simUrl = (await sim.next('listening', 15_000)).url;
  const gw = traced('gateway', './lib/gateway-server.mjs', ['--sim', simUrl, '--sim-key', KEY, '--dir', mkdtempSync(join(work, 'gw-'))], gwFile);
  const { loopbackUrl } = await gw.next('listening', 60_000);
  const bareFile = join(work, 'bare.json');
  const bareChild = traced('bare proxy', './lib/plain-proxy-server.mjs', [`${simUrl}/`], bareFile);
  const bareOrigin = new URL((await bareChild.next('listening', 15_000)).url).origin;
  const bare = target({ name: 'bare proxy', origin: bareOrigin, headers: { authorization: `Bearer ${KEY}` } });
  const direct = target({ name: 'direct', origin: simUrl, headers: { authorization: `Bearer ${KEY}` } });
  const mg = target({ name: 'meshguard', origin: loopbackUrl, headers: { authorization: 'Bearer sk-client-key-the-gateway-drops' } });
  const body = chatBody();
  progress('warm-up: 2000 requests at 50 clients each');
  for (const t of [mg, bare, direct]) await closedLoop(() => once(t, body), 50, 2000);
  const spans = { meshguard: [], 'bare proxy': [], direct: [] };
  const cpuOf = () => ({ gateway: threadCpuMs(gw.pid), bare: threadCpuMs(bareChild.pid), provider: threadCpuMs(sim.pid), client: threadCpuMs(process.pid) });
  const cpuBefore = cpuOf();
  progress(`${N} sequential requests each, alternating in blocks of ${BLOCK}`);
  for (let b = 0; b < N / BLOCK; b++) {
    for (const t of [mg, bare, direct]) {
      // Past the store's flush interval: a log batch the last block left lands in this gap. Then a
      // few requests not measured: the first after a pause wakes cold processes (as bench/gateway).
      await new Promise((r) => setTimeout(r, 150));
      for (let i = 0; i < 3; i++) await once(t, body);
      for (let i = 0; i < BLOCK; i++) {
        const w = myRunQueueWaitMs();
        const a = clock();
        await once(t, body);
        spans[t.name].push([a, clock(), myRunQueueWaitMs() - w]);
      }
    }
  }
  const cpuAfter = cpuOf();
  for (const c of [gw, bareChild, sim]) process.kill(c.pid, 'SIGUSR2');
  const read = async (file) => {
    for (let i = 0; i < 100; i++) {
      try {
        return JSON.parse(readFileSync(file, 'utf8'));
      } catch {
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    throw new Error(`bench/gateway-trace: no trace in ${file}`);
  };
  const gev = await read(gwFile);
  const sev = await read(simFile);
  const bev = await read(bareFile);
  await Promise.all([closeTarget(mg), closeTarget(bare), closeTarget(direct)]);

  // Events by kind, sorted by time, and the first of a kind inside [a, b].
  const byKind = (ev) => {
    const m = new Map();
    for (const e of ev) (m.get(e[1]) ?? m.set(e[1], []).get(e[1])).push(e);
    for (const l of m.values()) l.sort((x, y) => x[0] - y[0]);
    return m;
  };
  const G = byKind(gev);
  const S = byKind(sev);
  const P = byKind(bev);
  const firstIndexIn = (list = [], a, b) => {
    let lo = 0;
    let hi = list.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (list[mid][0] < a) lo = mid + 1;
      else hi = mid;
    }
    return lo < list.length && list[lo][0] <= b ? lo : undefined;
  };
  const firstIn = (list = [], a, b) => {
    const i = firstIndexIn(list, a, b);
    return i === undefined ? undefined : list[i][0];
  };
  const overlaps = (list = [], a, b) => list.some((e) => e[0] < b && e[0] + (e[2] ?? 0) > a);
  const median = (xs) => [...xs].sort((x, y) => x - y)[Math.max(0, Math.ceil(xs.length / 2) - 1)];

  const SEGMENTS = ['to-gateway', 'gateway-in', 'to-provider', 'provider', 'from-provider', 'gateway-out'];
  // How long a process's main thread waited on the run queue while it served the request in [a, b]:
  // its total at the answer's 'fin' minus its total at the 'fin' before (a sequential client: the
  // one request in flight). Undefined where the process has no schedstat.
  const waitOf = (fins = [], a, b) => {
    const i = firstIndexIn(fins, a, b);
    if (i === undefined || i === 0 || fins[i][2] < 0) return undefined;
    return fins[i][2] - fins[i - 1][2];
  };
  /** The requests of a proxy (X: its events by kind) cut into segments, with each process's run-queue wait. */
  const cut = (X, list) => {
    const out = [];
    for (const [a, b, clientWait] of list) {
      const t = [a, firstIn(X.get('req'), a, b), firstIn(X.get('up-send'), a, b), firstIn(S.get('req'), a, b), firstIn(S.get('fin'), a, b), firstIn(X.get('up-head'), a, b), b];
      if (t.some((x) => x === undefined)) continue;
      const seg = Object.fromEntries(SEGMENTS.map((s, i) => [s, t[i + 1] - t[i]]));
      out.push({ a, b, ms: b - a, seg, wait: { gateway: waitOf(X.get('fin'), a, b), provider: waitOf(S.get('fin'), a, b), client: clientWait } });
    }
    return out;
  };
  const reqs = cut(G, spans.meshguard);
  const bareReqs = cut(P, spans['bare proxy']);
  const directReqs = spans.direct.map(([a, b, clientWait]) => ({ ms: b - a, wait: { provider: waitOf(S.get('fin'), a, b), client: clientWait } }));
  const directMs = spans.direct.map(([a, b]) => b - a);
  const rows = [];
  rows.push(row('direct', 'latency 1 client', 'ms', directMs));
  rows.push(row('bare proxy', 'latency 1 client', 'ms', spans['bare proxy'].map(([a, b]) => b - a)));
  rows.push(row('meshguard', 'latency 1 client', 'ms', spans.meshguard.map(([a, b]) => b - a)));
  const med = {};
  for (const s of SEGMENTS) {
    const xs = reqs.map((r) => r.seg[s]);
    med[s] = median(xs);
    rows.push(row('bare proxy', `segment ${s}`, 'ms', bareReqs.map((r) => r.seg[s])));
    rows.push(row('meshguard', `segment ${s}`, 'ms', xs));
  }
  const slowAt = median(directMs) + 1;
  const totalWait = (w) => Object.values(w).reduce((x, y) => x + (y ?? 0), 0);
  if (reqs.some((r) => r.wait.gateway !== undefined)) {
    rows.push(row('direct', 'run-queue wait per request (provider + client)', 'ms', directReqs.map((r) => totalWait(r.wait))));
    rows.push(row('bare proxy', 'run-queue wait per request (proxy + provider + client)', 'ms', bareReqs.map((r) => totalWait(r.wait))));
    for (const who of ['gateway', 'provider', 'client']) rows.push(row('bare proxy', `  of which ${who === 'gateway' ? 'proxy' : who}`, 'ms', bareReqs.map((r) => r.wait[who] ?? 0)));
    rows.push(row('meshguard', 'run-queue wait per request (gateway + provider + client)', 'ms', reqs.map((r) => totalWait(r.wait))));
    for (const who of ['gateway', 'provider', 'client']) rows.push(row('meshguard', `  of which ${who}`, 'ms', reqs.map((r) => r.wait[who] ?? 0)));
    const slowReqs = reqs.filter((r) => r.ms > slowAt);
    if (slowReqs.length) rows.push(row('meshguard', 'run-queue wait per slow request', 'ms', slowReqs.map((r) => totalWait(r.wait))));
    // What the request took minus what its processes waited for a CPU: the work itself, on an idle machine.
    rows.push(row('direct', 'latency minus run-queue wait', 'ms', directReqs.map((r) => r.ms - totalWait(r.wait))));
    rows.push(row('bare proxy', 'latency minus run-queue wait', 'ms', bareReqs.map((r) => r.ms - totalWait(r.wait))));
    rows.push(row('meshguard', 'latency minus run-queue wait', 'ms', reqs.map((r) => r.ms - totalWait(r.wait))));
  }
  // Each slow request is put down to one cause, the first that holds:
  //   waited for a CPU   its processes' run-queue wait covers at least half of what it is over
  //                      the gateway's median (the machine's other load: nothing of ours ran)
  //   gateway GC / provider GC / client GC   a pause of that process overlapped it
  //   log batch hand-off  a hand-off ≥ 0.25 ms to the store's worker happened inside it
  //   unexplained        none of these; named by the segment most over its median
  const gwMedian = median(reqs.map((r) => r.ms));
  const blame = new Map();
  for (const r of reqs) {
    if (r.ms <= slowAt) continue;
    const worst = SEGMENTS.reduce((w, s) => (r.seg[s] - med[s] > r.seg[w] - med[w] ? s : w), SEGMENTS[0]);
    const cause =
      (totalWait(r.wait) >= (r.ms - gwMedian) / 2 && `waited for a CPU (mostly the ${Object.entries(r.wait).reduce((w, e) => ((e[1] ?? 0) > (w[1] ?? 0) ? e : w))[0]})`) ||
      (overlaps(G.get('gc'), r.a, r.b) && 'gateway GC') ||
      (overlaps(S.get('gc'), r.a, r.b) && 'provider GC') ||
      (clientGc.some(([t, d]) => t < r.b && t + d > r.a) && 'client GC') ||
      // A hand-off shorter than this is not what made a request a millisecond late.
      ((G.get('handoff') ?? []).some((e) => e[0] >= r.a && e[0] <= r.b && e[2] >= 0.25) && 'log batch hand-off') ||
      `unexplained (slowest segment: ${worst})`;
    blame.set(cause, (blame.get(cause) ?? 0) + 1);
  }
  const slow = [...blame.values()].reduce((x, y) => x + y, 0);
  rows.push(row('meshguard', `requests slower than direct's median + 1 ms (${slowAt.toFixed(3)} ms)`, 'count', slow));
  for (const [k, v] of [...blame].sort((x, y) => y[1] - x[1])) rows.push(row('meshguard', `  cause: ${k}`, 'count', v));
  // CPU per request, by process and thread: the work itself, which the machine's load does not change much.
  // The gateway and the bare proxy served N requests each; the provider 3N (theirs and direct's); the client sent 3N.
  for (const [who, per] of [['gateway', N], ['bare', N], ['provider', 3 * N], ['client', 3 * N]]) {
    for (const [thread, ms] of cpuAfter[who]) {
      const us = ((ms - (cpuBefore[who].get(thread) ?? 0)) / per) * 1000;
      if (us >= 0.5) rows.push(row(who === 'gateway' ? 'meshguard' : who === 'bare' ? 'bare proxy' : who, `CPU per request, ${who === 'bare' ? 'bare proxy' : who} thread ${thread}`, 'us', us));
    }
  }
  const gcs = (G.get('gc') ?? []).filter((e) => e[0] >= spans.meshguard[0][0]);
  if (gcs.length) rows.push(row('meshguard', 'gateway GC pauses while measured', 'ms', gcs.map((e) => e[2])));
  const handoffs = (G.get('handoff') ?? []).filter((e) => e[0] >= spans.meshguard[0][0] && e[3] > 0);
  if (handoffs.length) {
    rows.push(row('meshguard', 'log batch hand-off to the store worker', 'ms', handoffs.map((e) => e[2])));
    rows.push(row('meshguard', 'rows per hand-off', 'count', handoffs.map((e) => e[3])));
  }
  const reconnects = (G.get('up-conn') ?? []).filter((e) => e[0] >= spans.meshguard[0][0]).length;
  rows.push(row('meshguard', 'upstream connections opened while measured', 'count', reconnects));
  if (o.json) process.stdout.write(JSON.stringify(toJson('gateway-trace', rows), null, 2) + '\n');
  else process.stdout.write(formatTable(rows) + '\n');
} finally {
  for (const c of children) await c.stop(20_000).catch(() => c.kill());
  rmSync(work, { recursive: true, force: true });
}
