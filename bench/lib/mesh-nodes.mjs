// The meshguard side of bench/tailnet --nodes: N MeshNodes in this one
// process, the same command line and JSON lines as `tsnetbench nodes`
// (go/cmd/tsnetbench/nodes.go), so many-nodes.mjs drives both.
//
//   node mesh-nodes.mjs nodes --control URL --authkey KEY --dir DIR --hostname PREFIX
//                             --n N --concurrency C --target HOST:PORT
//
// Node 1 starts alone (it loads the Go runtime), then nodes 2..N start with
// at most C coming up at a time. Each node, once online, dials the service at
// --target and makes one 64-byte echo round trip ("reached"). The event loop
// is sampled (1 ms resolution) from the first start until every node has
// reached the service.
//
// Lines: {"event":"loaded","rssKiB"} (library imported, no node yet),
//        {"event":"first","ms","rssKiB"} (node 1 reached the service),
//        {"event":"result", see NodesResult in many-nodes.mjs},
//        after stdin closes: {"event":"stopped","closeMs"}.
import { readFileSync } from 'node:fs';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { MeshNode } from '../../dist/index.js';
import { MSG_SIZE } from './protocol.mjs';

const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
const vmKiB = (field) => Number(readFileSync('/proc/self/status', 'utf8').match(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm'))?.[1] ?? 0);

const [role, ...rest] = process.argv.slice(2);
const { values: a } = parseArgs({
  args: rest,
  options: Object.fromEntries(['control', 'authkey', 'dir', 'hostname', 'n', 'concurrency', 'target', 'settle'].map((k) => [k, { type: 'string' }])),
});

/** reach dials the service and makes one echo round trip. */
async function reach(node, host, port) {
  const sock = await node.dial(host, port, { timeoutMs: 60_000 });
  try {
    await new Promise((resolve, reject) => {
      let got = 0;
      sock.on('data', (b) => {
        got += b.length;
        if (got >= MSG_SIZE) resolve();
      });
      sock.on('error', reject);
      sock.on('end', () => reject(new Error('service closed the connection before echoing')));
      sock.write(Buffer.concat([Buffer.from('E'), Buffer.alloc(MSG_SIZE, 0x61)]));
    });
  } finally {
    sock.destroy();
  }
}

const nodes = [];
try {
  if (role !== 'nodes') throw new Error(`unknown role ${role}: use nodes`);
  for (const k of ['control', 'authkey', 'dir', 'hostname', 'n', 'target']) if (!a[k]) throw new Error(`--${k} is required`);
  const n = Number(a.n);
  const concurrency = Number(a.concurrency ?? 1);
  const settleMs = Number(a.settle ?? 2000);
  if (!Number.isSafeInteger(n) || n < 2) throw new Error(`--n must be an integer ≥ 2, got ${a.n}`);
  if (!Number.isSafeInteger(concurrency) || concurrency < 1) throw new Error(`--concurrency must be a positive integer, got ${a.concurrency}`);
  const i = a.target.lastIndexOf(':');
  const host = a.target.slice(0, i).replace(/^\[|\]$/g, '');
  const port = Number(a.target.slice(i + 1));
  emit({ event: 'loaded', rssKiB: vmKiB('VmRSS') });

  const upMs = new Array(n);
  const reachMs = new Array(n);
  const bringUp = async (k) => {
    const s0 = performance.now();
    const node = await MeshNode.start({ controlUrl: a.control, authKey: a.authkey, dir: join(a.dir, String(k)), hostname: `${a.hostname}-${k}`, ephemeral: true, timeoutMs: 120_000 });
    nodes.push(node);
    const s1 = performance.now();
    upMs[k] = s1 - s0;
    await reach(node, host, port);
    reachMs[k] = performance.now() - s1;
    return s1;
  };

  const loop = monitorEventLoopDelay({ resolution: 1 });
  loop.enable();
  const t0 = performance.now();
  await bringUp(0);
  const firstMs = performance.now() - t0;
  const rss1KiB = vmKiB('VmRSS');
  emit({ event: 'first', ms: firstMs, rssKiB: rss1KiB });

  let next = 1;
  let lastOnline = 0;
  const worker = async () => {
    while (next < n) {
      const k = next++;
      lastOnline = Math.max(lastOnline, await bringUp(k));
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, n - 1) }, worker));
  const tAll = performance.now();
  loop.disable();
  const rssAllKiB = vmKiB('VmRSS');
  await new Promise((r) => setTimeout(r, settleMs));
  emit({
    event: 'result',
    n,
    concurrency,
    firstMs,
    allOnlineMs: lastOnline - t0,
    allReachedMs: tAll - t0,
    upMs,
    reachMs,
    rss1KiB,
    rssAllKiB,
    rssSettledKiB: vmKiB('VmRSS'),
    rssPeakKiB: vmKiB('VmHWM'),
    loopDelayMs: { max: loop.max / 1e6, p99: loop.percentile(99) / 1e6, p50: loop.percentile(50) / 1e6, n: loop.count },
  });
  process.stdin.resume();
  await new Promise((r) => process.stdin.on('end', r));
  const c0 = performance.now();
  await Promise.all(nodes.map((nd) => nd.close()));
  emit({ event: 'stopped', closeMs: performance.now() - c0 });
} catch (err) {
  emit({ event: 'error', message: String(err?.stack ?? err?.message ?? err) });
  await Promise.allSettled(nodes.map((nd) => nd.close()));
  process.exitCode = 1;
}
