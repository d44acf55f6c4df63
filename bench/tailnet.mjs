#!/usr/bin/env node
// bench/tailnet — what a tailnet costs a Node process, side by side in one run:
//
//   meshguard   Node ↔ Node, each process a tailnet node through meshguard's
//               native backend (Go tsnet core in-process, socketpair data path)
//   go-tsnet    Go ↔ Go, two tsnetbench processes on tailscale.com/tsnet
//   meshguard-wasm  Node ↔ Node through meshguard's WebAssembly backend (the
//               Go core built for GOOS=js in a worker thread; DERP-relayed
//               only, see docs/wasm.md), with fewer round trips and bytes
//               (--wasm-rtt, --wasm-bytes): it is far slower
//   loopback    Node ↔ Node over plain 127.0.0.1 TCP: the floor
//
// Sender and receiver are separate processes in every row, on one local
// headscale (started here, on loopback). Metrics: request/response RTT,
// single-stream throughput, dial time, start-to-online time, process RSS,
// and (meshguard) the event-loop stall while nodes start, dial and transfer.
//
//   node bench/tailnet.mjs [--json] [--smoke] [--rtt N] [--bytes B] [--runs R]
//   node bench/tailnet.mjs --first-dial [--pairs N] [--json] [--smoke]
//
// --first-dial is the first-call stall probe (issue 13): fresh node pairs,
// again and again (new state, so new keys and a new tailnet address each
// time), each client dialing its server the moment it is online; it reports
// the first dial's time to connected (p50, p99, max, and how many took ≥ 1 s)
// for meshguard and for pure Go tsnet, in blocks that alternate between the
// two so both see the same machine load. 200 pairs per system (--smoke: 5).
//
// Run it through `npm run bench` (builds, then enters a network namespace
// holding only loopback when root).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { LocalControl } from '../dist/control/index.js';
import { GO_BENCH_BIN, runGoPeer } from './lib/gopeer.mjs';
import { runFirstDial } from './lib/first-dial.mjs';
import { runLoopback } from './lib/loopback.mjs';
import { formatTable, row, toJson } from './lib/stats.mjs';

const { values: o } = parseArgs({
  options: {
    json: { type: 'boolean', default: false },
    smoke: { type: 'boolean', default: false },
    rtt: { type: 'string' },
    bytes: { type: 'string' },
    runs: { type: 'string' },
    'first-dial': { type: 'boolean', default: false },
    pairs: { type: 'string' },
    block: { type: 'string' },
    'go-warmup': { type: 'string', default: 'none' },
    'wasm-rtt': { type: 'string' },
    'wasm-bytes': { type: 'string' },
  },
});
const pairs = Number(o.pairs ?? (o.smoke ? 5 : 200));
const block = Number(o.block ?? 25);
const rtt = Number(o.rtt ?? (o.smoke ? 50 : 2000));
const bytes = Number(o.bytes ?? (o.smoke ? 1 << 20 : 256 << 20));
const runs = Number(o.runs ?? (o.smoke ? 1 : 3));
const wasmRtt = Number(o['wasm-rtt'] ?? (o.smoke ? 20 : 300));
const wasmBytes = Number(o['wasm-bytes'] ?? (o.smoke ? 256 << 10 : 8 << 20));
const WASM_BUILT = existsSync(fileURLToPath(new URL('../wasm/meshguard.wasm', import.meta.url)));
if (!WASM_BUILT) skipped.push({ system: 'meshguard-wasm', reason: 'wasm/meshguard.wasm is not built (`node test/build.mjs --only wasm`)' });
const progress = (m) => process.stderr.write(`[bench/tailnet] ${m}\n`);
// The Go peer is built by `npm run bench` (test/build.mjs gobench), not by
// the test command: without it the go-tsnet rows are skipped, and said so.
const goPeerMissing = existsSync(GO_BENCH_BIN) ? undefined : `${GO_BENCH_BIN} is not built (run \`node test/build.mjs --only gobench\` or \`npm run bench\`)`;
const skipped = goPeerMissing ? [{ system: 'go-tsnet', reason: goPeerMissing }] : [];

const meshPeer = (extraEnv) => ({ goBin: process.execPath, prefixArgs: [MESH_PEER], label: 'mesh-peer', hostPrefix: 'bench-mg', extraEnv });
const MESH_PEER = fileURLToPath(new URL('./lib/mesh-peer.mjs', import.meta.url));
const KiB2MB = (k) => k / 1024;

/** bareNodeRssMB is the RSS of a Node process that does nothing: the baseline for meshguard's memory. */
function bareNodeRssMB() {
  const r = spawnSync(process.execPath, ['-e', 'setTimeout(()=>{console.log(process.memoryUsage().rss)},200)'], { encoding: 'utf8' });
  return Number(r.stdout.trim()) / 2 ** 20;
}

const acc = new Map(); // "system|metric|unit" -> samples
const add = (system, metric, unit, v) => {
  const k = `${system}|${metric}|${unit}`;
  const xs = [v].flat().filter(Number.isFinite);
  if (xs.length === 0) return; // a metric this system does not report (cold start of the loopback floor)
  if (!acc.has(k)) acc.set(k, []);
  acc.get(k).push(...xs);
};

function addPeer(system, r) {
  add(system, 'rtt', 'us', r.rttUs);
  add(system, 'throughput', 'MiB/s', r.throughputMiBps);
  // The first dial may wait for the WireGuard handshake; it is reported apart.
  add(system, 'dial (first)', 'ms', r.dialMs[0]);
  add(system, 'dial (warm)', 'ms', r.dialMs.slice(1));
  add(system, 'start-to-online', 'ms', r.onlineMs);
  add(system, 'cold start to first byte', 'ms', r.firstByteMs);
  if (r.inProcess?.client?.upMs !== undefined) add(system, 'start-to-online (in-process)', 'ms', [r.inProcess.client.upMs, r.inProcess.server.upMs]);
  if (r.clientRssOnlineKiB) add(system, 'rss online', 'MB', KiB2MB(r.clientRssOnlineKiB));
  if (r.clientRssKiB) add(system, 'rss after run', 'MB', KiB2MB(r.clientRssKiB));
  if (r.clientLoopDelayMs) {
    add(system, 'event-loop stall (max)', 'ms', [r.clientLoopDelayMs.max, r.serverLoopDelayMs?.max]);
    add(system, 'event-loop delay p99', 'ms', [r.clientLoopDelayMs.p99, r.serverLoopDelayMs?.p99]);
  }
}

/** firstDial runs the first-call stall probe: `pairs` fresh pairs per system, in alternating blocks. */
async function firstDial(authKey) {
  const systems = goPeerMissing ? ['meshguard'] : ['meshguard', 'go-tsnet'];
  const all = Object.fromEntries(systems.map((s) => [s, []]));
  for (let done = 0; done < pairs; done += block) {
    const n = Math.min(block, pairs - done);
    for (const system of systems) {
      progress(`first dial: ${system} pairs ${done + 1}-${done + n} of ${pairs}`);
      const r = await runFirstDial({
        system,
        controlUrl: control.url,
        authKey,
        pairs: n,
        warmup: system === 'go-tsnet' ? o['go-warmup'] : 'none',
        onPair: (p) => {
          if (p.dialMs >= 1000) progress(`  ${system} pair ${done + p.i + 1}: first dial ${p.dialMs.toFixed(0)} ms`);
        },
      });
      all[system].push(...r.dialMs);
      add(system, 'start-to-online (in-process)', 'ms', [...r.serverUpMs, ...r.clientUpMs]);
    }
  }
  for (const system of systems) {
    const d = all[system];
    add(system, 'first dial', 'ms', d);
    add(system, 'first dial (max)', 'ms', Math.max(...d));
    add(system, 'first dials >= 1 s', 'count', d.filter((x) => x >= 1000).length);
    const sorted = [...d].sort((x, y) => x - y);
    progress(`${system}: first dial over ${d.length} pairs: p50 ${sorted[Math.ceil(d.length / 2) - 1].toFixed(1)} ms, p99 ${sorted[Math.ceil(d.length * 0.99) - 1].toFixed(1)} ms, max ${sorted.at(-1).toFixed(1)} ms, ${d.filter((x) => x >= 1000).length} ≥ 1 s`);
  }
}

let control;
try {
  progress(o['first-dial'] ? `first dial: ${pairs} fresh pairs per system${o.smoke ? ' (smoke)' : ''}` : `rtt=${rtt} bytes=${bytes} runs=${runs}${o.smoke ? ' (smoke)' : ''}`);
  progress('starting local headscale');
  control = await LocalControl.start({});
  await control.createUser('bench');
  const key = () => control.createAuthKey({ user: 'bench', reusable: true, ephemeral: true, expiration: '1h' });
  const [serverKey, clientKey] = [await key(), await key()];
  if (o['first-dial']) await firstDial(serverKey);
  else add('node (bare)', 'rss', 'MB', bareNodeRssMB());
  for (let i = 0; i < (o['first-dial'] ? 0 : runs); i++) {
    progress(`run ${i + 1}/${runs}: loopback`);
    const lb = await runLoopback({ rtt, bytes });
    addPeer('loopback', { ...lb, clientRssOnlineKiB: 0, clientRssKiB: 0 });
    if (goPeerMissing) progress(`run ${i + 1}/${runs}: go-tsnet skipped: ${goPeerMissing}`);
    else {
      progress(`run ${i + 1}/${runs}: go-tsnet`);
      addPeer('go-tsnet', await runGoPeer({ controlUrl: control.url, serverKey, clientKey, rtt, bytes, goBin: GO_BENCH_BIN }));
    }
    progress(`run ${i + 1}/${runs}: meshguard`);
    addPeer(
      'meshguard',
      await runGoPeer({ controlUrl: control.url, serverKey, clientKey, rtt, bytes, ...meshPeer({ MESHGUARD_BACKEND: 'native', ...(process.env.MESH_GOMAXPROCS ? { GOMAXPROCS: process.env.MESH_GOMAXPROCS } : {}) }) }),
    );
    if (WASM_BUILT) {
      progress(`run ${i + 1}/${runs}: meshguard-wasm`);
      addPeer('meshguard-wasm', await runGoPeer({ controlUrl: control.url, serverKey, clientKey, rtt: wasmRtt, bytes: wasmBytes, ...meshPeer({ MESHGUARD_BACKEND: 'wasm' }) }));
    }
  }
} finally {
  await control?.close();
}

const order = ['meshguard', 'meshguard-wasm', 'go-tsnet', 'loopback', 'node (bare)'];
const rows = [...acc.entries()]
  .map(([k, samples]) => {
    const [system, metric, unit] = k.split('|');
    return row(system, metric, unit, samples);
  })
  .sort((x, y) => x.metric.localeCompare(y.metric) || order.indexOf(x.system) - order.indexOf(y.system));

const out = toJson('tailnet', rows);
if (o.smoke) {
  // Shape check only: every row complete, the systems that ran present. No thresholds.
  const keys = ['system', 'metric', 'unit', 'p50', 'p99', 'mean', 'n'];
  const bad = out.rows.filter((r) => keys.some((k) => r[k] === undefined || (typeof r[k] === 'number' && !Number.isFinite(r[k]))));
  const [metric, systems] = o['first-dial'] ? ['first dial', ['meshguard', 'go-tsnet']] : ['rtt', ['meshguard', 'meshguard-wasm', 'go-tsnet', 'loopback']];
  for (const s of systems) if (!skipped.some((k) => k.system === s) && !out.rows.some((r) => r.system === s && r.metric === metric)) bad.push({ missing: s });
  if (bad.length) {
    process.stderr.write(`[bench/tailnet] smoke: malformed rows: ${JSON.stringify(bad)}\n`);
    process.exitCode = 1;
  }
}
for (const s of skipped) progress(`skipped: ${s.system}: ${s.reason}`);
if (o.json) process.stdout.write(JSON.stringify(out, null, 2) + '\n');
else {
  process.stdout.write(formatTable(rows) + '\n');
  if (skipped.length) process.stdout.write('\nskipped:\n' + skipped.map((s) => `  ${s.system}: ${s.reason}`).join('\n') + '\n');
}
