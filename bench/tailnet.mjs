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
//   meshguard-derp  (only when named in --systems) the native backend with
//               every packet through the local DERP relay
//               (TS_DEBUG_ALWAYS_USE_DERP=1), with the wasm rows' sizes:
//               what the relay path itself costs, the wasm core's baseline
//   loopback    Node ↔ Node over plain 127.0.0.1 TCP: the floor
//
// Sender and receiver are separate processes in every row, on one local
// headscale (started here, on loopback). Metrics: request/response RTT,
// single-stream throughput, dial time, start-to-online time, process RSS,
// and (meshguard) the event-loop stall while nodes start, dial and transfer.
//
//   node bench/tailnet.mjs [--json] [--smoke] [--rtt N] [--bytes B] [--runs R] [--dials D]
//                          [--systems loopback,go-tsnet,meshguard,meshguard-derp,meshguard-wasm]
//                          [--baseline-addon PATH]
//   node bench/tailnet.mjs --first-dial [--pairs N] [--json] [--smoke]
//   node bench/tailnet.mjs --nodes N [--concurrency C] [--modes trimmed,all-to-all] [--keys unhashed|hashed] [--runs R] [--json] [--smoke]
//
// --first-dial is the first-call stall probe (issue 13): fresh node pairs,
// again and again (new state, so new keys and a new tailnet address each
// time), each client dialing its server the moment it is online; it reports
// the first dial's time to connected (p50, p99, max, and how many took ≥ 1 s)
// for meshguard and for pure Go tsnet, in blocks that alternate between the
// two so both see the same machine load. 200 pairs per system (--smoke: 5).
//
// --baseline-addon PATH adds a row meshguard-baseline: the native backend
// with that addon build (e.g. main's, to compare a data-path change against
// it in the same run), with its own ratios to go-tsnet.
//
// Runs alternate: the systems run in one order in odd runs and the reverse
// in even ones (go-tsnet, meshguard, meshguard-derp, meshguard-wasm), so all
// see the same machine load. The meshguard clients also report their
// process's CPU time (every thread) per round trip and per MiB sent: on a
// loaded machine CPU time is steadier than wall time, and it is what turns
// into latency when the CPUs are shared. Besides the rows over all
// samples, each run's own p50 (RTT, warm dial) goes into a "… (per run)" row
// — its p50 is the median over runs — and each run's meshguard / go-tsnet
// ratio of the two p50s and of throughput into "(ratio)" rows; the summary
// on stderr gives each ratio's median and min–max over the runs.
//
// --nodes N is many nodes in one process (issue 13): N nodes of one system in
// one child process on one local headscale, each reaching a service node
// (bench/lib/many-nodes.mjs), under a trimmed policy (agents see only the
// service) and all-to-all. Per system and policy it reports the time until
// all are online and have reached the service, resident memory per added
// node, each node's start-to-online, the event-loop delay while they come up
// (meshguard) and headscale's CPU time. Node 1 starts alone, the rest C at
// a time (default 10). meshguard and Go tsnet alternate within each run.
// --keys: the agents' pre-auth key, unhashed (default: headscale compares it
// as it is) or hashed (headscale's bcrypt, ~60 ms of its CPU per node).
// --smoke: 3 nodes, one run.
//
// Run it through `npm run bench` (builds, then enters a network namespace
// holding only loopback when root).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import { benchArgs } from './lib/args.mjs';
import { LocalControl } from '../dist/control/index.js';
import { GO_BENCH_BIN, runGoPeer } from './lib/gopeer.mjs';
import { runFirstDial } from './lib/first-dial.mjs';
import { runLoopback } from './lib/loopback.mjs';
import { MODES, runManyNodes } from './lib/many-nodes.mjs';
import { formatTable, row, toJson } from './lib/stats.mjs';

const { values: o } = benchArgs(import.meta.url, {
  options: {
    json: { type: 'boolean', default: false },
    smoke: { type: 'boolean', default: false },
    rtt: { type: 'string' },
    bytes: { type: 'string' },
    runs: { type: 'string' },
    dials: { type: 'string' },
    'first-dial': { type: 'boolean', default: false },
    pairs: { type: 'string' },
    block: { type: 'string' },
    'go-warmup': { type: 'string', default: 'none' },
    nodes: { type: 'string' },
    concurrency: { type: 'string' },
    keys: { type: 'string', default: 'unhashed' },
    modes: { type: 'string' },
    'wasm-rtt': { type: 'string' },
    'wasm-bytes': { type: 'string' },
    systems: { type: 'string' },
    'baseline-addon': { type: 'string' },
  },
});
const pairs = Number(o.pairs ?? (o.smoke ? 5 : 200));
const block = Number(o.block ?? 25);
const rtt = Number(o.rtt ?? (o.smoke ? 50 : 2000));
const bytes = Number(o.bytes ?? (o.smoke ? 1 << 20 : 256 << 20));
const runs = Number(o.runs ?? (o.smoke ? 1 : o.nodes !== undefined ? 3 : 5));
const dials = Number(o.dials ?? (o.smoke ? 5 : 21));
const nodes = o.nodes === undefined ? undefined : Number(o.smoke ? 3 : o.nodes);
const concurrency = Number(o.concurrency ?? 10);
const modes = (o.modes ?? MODES.join(',')).split(',');
if (nodes !== undefined && (!Number.isSafeInteger(nodes) || nodes < 2)) throw new TypeError(`--nodes must be an integer ≥ 2, got ${o.nodes}`);
if (!Number.isSafeInteger(concurrency) || concurrency < 1) throw new TypeError(`--concurrency must be a positive integer, got ${o.concurrency}`);
if (o.keys !== 'hashed' && o.keys !== 'unhashed') throw new TypeError(`--keys must be hashed or unhashed, got ${o.keys}`);
for (const m of modes) if (!MODES.includes(m)) throw new TypeError(`--modes: unknown policy ${m} (use ${MODES.join(', ')})`);
const wasmRtt = Number(o['wasm-rtt'] ?? (o.smoke ? 20 : 300));
const wasmBytes = Number(o['wasm-bytes'] ?? (o.smoke ? 256 << 10 : 8 << 20));
// --systems picks the rows to run (default: all but meshguard-derp), e.g.
// `--systems meshguard-wasm,meshguard-derp` while working on the wasm core.
// --baseline-addon PATH adds the system meshguard-baseline: the native
// backend with another addon build (MESHGUARD_ADDON=PATH, e.g. main's), same
// JS, alternating with the others in the same run, with its own ratios to
// Go tsnet — how a data-path change is compared against the code before it.
const SYSTEMS = ['loopback', 'go-tsnet', 'meshguard', 'meshguard-baseline', 'meshguard-derp', 'meshguard-wasm'];
const baselineAddon = o['baseline-addon'];
if (baselineAddon !== undefined && !existsSync(baselineAddon)) throw new TypeError(`--baseline-addon: no file at ${baselineAddon} (give the path of a built meshguard.node)`);
const chosen = new Set((o.systems ?? SYSTEMS.filter((s) => s !== 'meshguard-derp' && s !== 'meshguard-baseline').join(',')).split(','));
if (baselineAddon !== undefined) chosen.add('meshguard-baseline');
if (chosen.has('meshguard-baseline') && baselineAddon === undefined) throw new TypeError('--systems: meshguard-baseline needs --baseline-addon PATH (the addon build to compare against)');
for (const s of chosen) if (!SYSTEMS.includes(s)) throw new TypeError(`--systems: unknown system ${s} (use ${SYSTEMS.join(', ')})`);
const WASM_BUILT = existsSync(fileURLToPath(new URL('../wasm/meshguard.wasm', import.meta.url)));
const progress = (m) => process.stderr.write(`[bench/tailnet] ${m}\n`);
// The Go peer is built by `npm run bench` (test/build.mjs gobench), not by
// the test command: without it the go-tsnet rows are skipped, and said so.
const goPeerMissing = existsSync(GO_BENCH_BIN) ? undefined : `${GO_BENCH_BIN} is not built (run \`node test/build.mjs --only gobench\` or \`npm run bench\`)`;
const skipped = goPeerMissing ? [{ system: 'go-tsnet', reason: goPeerMissing }] : [];
if (!WASM_BUILT) skipped.push({ system: 'meshguard-wasm', reason: 'wasm/meshguard.wasm is not built (`node test/build.mjs --only wasm`)' });

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

const median = (xs) => [...xs].sort((x, y) => x - y)[Math.ceil(xs.length / 2) - 1];

/** perRun are the figures each run contributes once: its own p50s and throughput. */
function perRun(r) {
  return { rtt: median(r.rttUs), throughput: r.throughputMiBps, 'dial (warm)': median(r.dialMs.slice(1)) };
}

/** addRatios records one run's system / go-tsnet ratio of each per-run figure. */
function addRatios(mesh, go, system = 'meshguard') {
  const m = perRun(mesh);
  const g = perRun(go);
  for (const k of Object.keys(m)) add(`${system} / go-tsnet`, `${k} (ratio)`, 'x', m[k] / g[k]);
}

function addPeer(system, r) {
  // Throughput is one figure a run already: only the p50s get per-run rows.
  const p = perRun(r);
  add(system, 'rtt (per run)', 'us', p.rtt);
  add(system, 'dial (warm) (per run)', 'ms', p['dial (warm)']);
  add(system, 'rtt', 'us', r.rttUs);
  add(system, 'throughput', 'MiB/s', r.throughputMiBps);
  add(system, 'client cpu per round trip', 'us', r.cpuPerRttUs);
  add(system, 'client cpu per MiB sent', 'ms', r.cpuPerMiBMs);
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

/** manyNodes runs --nodes: per run, per policy, meshguard then Go tsnet, each on a fresh headscale. */
async function manyNodes() {
  const systems = goPeerMissing ? ['meshguard'] : ['meshguard', 'go-tsnet'];
  for (let i = 0; i < runs; i++) {
    for (const mode of modes) {
      // Alternate which system goes first, so neither always meets the warmer machine.
      for (const system of i % 2 ? [...systems].reverse() : systems) {
        progress(`run ${i + 1}/${runs}: ${nodes} ${system} nodes, ${mode}, ${concurrency} at a time`);
        const r = await runManyNodes({ system, mode, n: nodes, concurrency, keys: o.keys, progress });
        const m = (what) => `${nodes} nodes ${mode}: ${what}`;
        add(system, m('all online'), 'ms', r.allOnlineMs);
        add(system, m('all reached service'), 'ms', r.allReachedMs);
        add(system, m('rss per added node'), 'MB', r.perNodeMB);
        add(system, m('rss with 1 node'), 'MB', KiB2MB(r.rss1KiB));
        add(system, m(`rss with ${nodes} nodes`), 'MB', KiB2MB(r.rssSettledKiB));
        add(system, m('start-to-online per node'), 'ms', r.upMs);
        add(system, m('dial + echo per node'), 'ms', r.reachMs);
        if (r.loopDelayMs) {
          add(system, m('event-loop delay max'), 'ms', r.loopDelayMs.max);
          add(system, m('event-loop delay p99'), 'ms', r.loopDelayMs.p99);
        }
        add(`headscale (${system} run)`, m('cpu time'), 's', r.headscale.cpuS);
        add(system, m('nodes process cpu time'), 's', r.nodesCpuS);
        add(`service (${system} run)`, m('cpu time'), 's', r.serviceCpuS);
        add(`headscale (${system} run)`, m('rss'), 'MB', r.headscale.rssMB);
        progress(
          `  ${system} ${mode}: all ${nodes} reached the service in ${(r.allReachedMs / 1000).toFixed(1)} s, ${r.perNodeMB.toFixed(2)} MB per added node` +
            (r.loopDelayMs ? `, event-loop delay max ${r.loopDelayMs.max.toFixed(0)} ms` : '') +
            `; CPU: nodes process ${r.nodesCpuS.toFixed(1)} s, service ${r.serviceCpuS.toFixed(1)} s, headscale ${r.headscale.cpuS.toFixed(1)} s`,
        );
      }
    }
  }
}

let control;
try {
  if (nodes !== undefined) {
    progress(`${nodes} nodes in one process, policies ${modes.join(', ')}, ${o.keys} pre-auth keys, ${runs} run(s)${o.smoke ? ' (smoke)' : ''}; load average ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
    await manyNodes();
  } else {
    progress(o['first-dial'] ? `first dial: ${pairs} fresh pairs per system${o.smoke ? ' (smoke)' : ''}` : `rtt=${rtt} bytes=${bytes} runs=${runs}${o.smoke ? ' (smoke)' : ''}`);
    progress('starting local headscale');
    control = await LocalControl.start({});
    await control.createUser('bench');
    const key = () => control.createAuthKey({ user: 'bench', reusable: true, ephemeral: true, expiration: '1h' });
    const [serverKey, clientKey] = [await key(), await key()];
    if (o['first-dial']) await firstDial(serverKey);
    else add('node (bare)', 'rss', 'MB', bareNodeRssMB());
    for (let i = 0; i < (o['first-dial'] ? 0 : runs); i++) {
      if (chosen.has('loopback')) {
        progress(`run ${i + 1}/${runs}: loopback`);
        const lb = await runLoopback({ rtt, bytes });
        addPeer('loopback', { ...lb, clientRssOnlineKiB: 0, clientRssKiB: 0 });
      }
      const got = {};
      const native = { MESHGUARD_BACKEND: 'native', ...(process.env.MESH_GOMAXPROCS ? { GOMAXPROCS: process.env.MESH_GOMAXPROCS } : {}) };
      // The relayed rows (wasm, and native forced through DERP) move fewer
      // round trips and bytes: DERP is far slower than a direct path.
      const relayed = { rtt: wasmRtt, bytes: wasmBytes };
      const peers = {
        'go-tsnet': () => runGoPeer({ controlUrl: control.url, serverKey, clientKey, rtt, bytes, dials, goBin: GO_BENCH_BIN }),
        meshguard: () => runGoPeer({ controlUrl: control.url, serverKey, clientKey, rtt, bytes, dials, ...meshPeer(native) }),
        'meshguard-baseline': () => runGoPeer({ controlUrl: control.url, serverKey, clientKey, rtt, bytes, dials, ...meshPeer({ ...native, MESHGUARD_ADDON: baselineAddon }) }),
        // The native backend with every packet through the local DERP, as
        // the wasm core always is: what the relay itself costs.
        'meshguard-derp': () => runGoPeer({ controlUrl: control.url, serverKey, clientKey, ...relayed, dials, ...meshPeer({ ...native, TS_DEBUG_ALWAYS_USE_DERP: '1' }) }),
        'meshguard-wasm': () => runGoPeer({ controlUrl: control.url, serverKey, clientKey, ...relayed, dials, ...meshPeer({ MESHGUARD_BACKEND: 'wasm' }) }),
      };
      const order = SYSTEMS.slice(1).filter((s) => chosen.has(s));
      for (const system of i % 2 === 0 ? order : order.reverse()) {
        const missing = skipped.find((k) => k.system === system);
        if (missing) {
          progress(`run ${i + 1}/${runs}: ${system} skipped: ${missing.reason}`);
          continue;
        }
        progress(`run ${i + 1}/${runs}: ${system} (load average ${loadavg()[0].toFixed(2)})`);
        got[system] = await peers[system]();
        addPeer(system, got[system]);
      }
      if (got['go-tsnet'] && got.meshguard) {
        addRatios(got.meshguard, got['go-tsnet']);
        const m = perRun(got.meshguard);
        const g = perRun(got['go-tsnet']);
        progress(`run ${i + 1}/${runs}: rtt p50 ${m.rtt.toFixed(0)} vs ${g.rtt.toFixed(0)} us, throughput ${m.throughput.toFixed(0)} vs ${g.throughput.toFixed(0)} MiB/s, warm dial p50 ${m['dial (warm)'].toFixed(2)} vs ${g['dial (warm)'].toFixed(2)} ms (meshguard vs go-tsnet)`);
      }
      if (got['go-tsnet'] && got['meshguard-baseline']) {
        addRatios(got['meshguard-baseline'], got['go-tsnet'], 'meshguard-baseline');
        const b = perRun(got['meshguard-baseline']);
        progress(`run ${i + 1}/${runs}: meshguard-baseline: rtt p50 ${b.rtt.toFixed(0)} us, throughput ${b.throughput.toFixed(0)} MiB/s, warm dial p50 ${b['dial (warm)'].toFixed(2)} ms`);
      }
      for (const system of ['meshguard-derp', 'meshguard-wasm']) {
        if (!got[system]) continue;
        const w = perRun(got[system]);
        progress(`run ${i + 1}/${runs}: ${system}: cold start ${got[system].firstByteMs.toFixed(0)} ms, rtt p50 ${w.rtt.toFixed(0)} us, throughput ${w.throughput.toFixed(2)} MiB/s`);
      }
    }
  }
} finally {
  await control?.close();
}

for (const [k, xs] of acc) {
  const [system, metric] = k.split('|');
  if (!system.endsWith(' / go-tsnet')) continue;
  progress(`${metric.replace(' (ratio)', '')}: ${system}, median of ${xs.length} runs ${median(xs).toFixed(2)}x (min–max ${Math.min(...xs).toFixed(2)}–${Math.max(...xs).toFixed(2)})`);
}

const order = ['meshguard', 'meshguard-baseline', 'meshguard-derp', 'meshguard-wasm', 'go-tsnet', 'meshguard / go-tsnet', 'meshguard-baseline / go-tsnet', 'loopback', 'node (bare)'];
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
  const [metric, systems] =
    nodes !== undefined ? [`${nodes} nodes ${modes[0]}: rss per added node`, ['meshguard', 'go-tsnet']] : o['first-dial'] ? ['first dial', ['meshguard', 'go-tsnet']] : ['rtt', ['meshguard', 'meshguard-wasm', 'go-tsnet', 'loopback']];
  for (const s of systems) if (chosen.has(s) && !skipped.some((k) => k.system === s) && !out.rows.some((r) => r.system === s && r.metric === metric)) bad.push({ missing: s });
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
