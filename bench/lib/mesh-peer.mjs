// The meshguard peer of bench/tailnet: a Node process that is a tailnet node
// through meshguard's native backend (or the wasm one, MESHGUARD_BACKEND=wasm), speaking the same command line and
// JSON-lines contract as `tsnetbench` (go/cmd/tsnetbench), so gopeer.mjs's
// runGoPeer drives both:
//
//   node mesh-peer.mjs serve  --control URL --authkey KEY --dir DIR --hostname NAME --port P
//   node mesh-peer.mjs client --control URL --authkey KEY --dir DIR --hostname NAME
//                             --target HOST:PORT --rtt N --bytes B --dials D
//
// It also samples the event loop from process start: the largest stall and
// the p99 while the node starts, dials and transfers (loopDelayMs).
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { MeshNode } from '../../dist/index.js';
import { echoRounds, serve, sink } from './protocol.mjs';

const loop = monitorEventLoopDelay({ resolution: 1 });
loop.enable();
const t0 = performance.now();

const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
const vmKiB = (field) => Number(readFileSync('/proc/self/status', 'utf8').match(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm'))?.[1] ?? 0);
const loopDelayMs = () => ({ max: loop.max / 1e6, p99: loop.percentile(99) / 1e6, p50: loop.percentile(50) / 1e6, n: loop.count });

const [role, ...rest] = process.argv.slice(2);
const { values: a } = parseArgs({
  args: rest,
  options: Object.fromEntries(['control', 'authkey', 'dir', 'hostname', 'port', 'target', 'rtt', 'bytes', 'dials'].map((k) => [k, { type: 'string' }])),
});

try {
  const node = await MeshNode.start({ controlUrl: a.control, authKey: a.authkey, dir: a.dir, hostname: a.hostname, ephemeral: true, timeoutMs: 45_000 });
  emit({ event: 'online', ms: performance.now() - t0, upMs: node.onlineMs, ips: node.ips, rssKiB: vmKiB('VmRSS') });
  if (role === 'serve') {
    const server = await node.listen(Number(a.port));
    server.on('connection', serve);
    process.stdin.resume();
    await new Promise((r) => process.stdin.on('end', r));
    server.close();
    await node.close();
    emit({ event: 'stopped', rssKiB: vmKiB('VmRSS'), rssPeakKiB: vmKiB('VmHWM'), loopDelayMs: loopDelayMs() });
  } else if (role === 'client') {
    const i = a.target.lastIndexOf(':');
    const host = a.target.slice(0, i).replace(/^\[|\]$/g, '');
    const port = Number(a.target.slice(i + 1));
    const connect = () => node.dial(host, port);
    // Cold start: process start (performance's time origin) to the first
    // byte echoed back over the tailnet.
    await echoRounds(connect, 1);
    const firstByteMs = performance.now();
    const dialMs = [];
    for (let d = 0; d < Number(a.dials ?? 5); d++) {
      const s0 = performance.now();
      const sock = await node.dial(host, port);
      dialMs.push(performance.now() - s0);
      sock.destroy();
    }
    // The process's CPU time (every thread: the worker of the wasm core, the
    // Go threads of the addon) per round trip and per MiB sent.
    const cpuMs = (from) => {
      const u = process.cpuUsage(from);
      return (u.user + u.system) / 1000;
    };
    const c0 = process.cpuUsage();
    const rttUs = await echoRounds(connect, Number(a.rtt));
    const cpuPerRttUs = (cpuMs(c0) * 1000) / Number(a.rtt);
    const c1 = process.cpuUsage();
    const throughputMiBps = await sink(connect, Number(a.bytes));
    const cpuPerMiBMs = cpuMs(c1) / (Number(a.bytes) / 2 ** 20);
    emit({ event: 'result', firstByteMs, backend: node.backendKind, dialMs, rttUs, cpuPerRttUs, throughputMiBps, cpuPerMiBMs, bytes: Number(a.bytes), rssKiB: vmKiB('VmRSS'), rssPeakKiB: vmKiB('VmHWM'), loopDelayMs: loopDelayMs(), path: '' });
    await node.close();
  } else {
    throw new Error(`unknown role ${role}: use serve or client`);
  }
} catch (err) {
  emit({ event: 'error', message: String(err?.message ?? err) });
  process.exitCode = 1;
}
