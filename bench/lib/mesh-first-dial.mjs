// The meshguard side of bench/tailnet --first-dial: the same command line and
// JSON lines as `tsnetbench firstdial` (go/cmd/tsnetbench/firstdial.go), so
// first-dial.mjs drives both.
//
//   node mesh-first-dial.mjs firstdial --control URL --authkey KEY --dir DIR
//                            --hostname PREFIX [--pairs N] [--port P] [--verbose]
//   (--warmup is accepted and ignored: meshguard's core does its own)
//
// Each pair: a fresh server node (new state directory: new keys, new tailnet
// address) listening on --port, then a fresh client node that dials it the
// moment it is online; the dial is timed from the call until the socket is
// connected. Both nodes are closed (and logged out) before the next pair.
//
// Lines: {"event":"pair","i":I,"dialMs":..,"serverUpMs":..,"clientUpMs":..}
//        per pair, then
//        {"event":"result","dialMs":[..]}; {"event":"error",...} on failure.
import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { MeshNode } from '../../dist/index.js';

const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');

const [role, ...rest] = process.argv.slice(2);
const { values: a } = parseArgs({
  args: rest,
  options: {
    ...Object.fromEntries(['control', 'authkey', 'dir', 'hostname', 'pairs', 'port', 'warmup'].map((k) => [k, { type: 'string' }])),
    verbose: { type: 'boolean', default: false },
  },
});

async function pair(i, port) {
  const dir = await mkdtemp(join(a.dir, `${i}-`));
  const start = (r) =>
    MeshNode.start({ controlUrl: a.control, authKey: a.authkey, dir: join(dir, r), hostname: `${a.hostname}-${i}-${r}`, ephemeral: true, timeoutMs: 45_000, verbose: a.verbose });
  let server, client;
  try {
    server = await start('server');
    if (a.verbose) server.on('log', (l) => process.stderr.write(`[${i} server] ${l}\n`));
    const ln = await server.listen(port);
    ln.on('connection', (s) => s.destroy());
    client = await start('client');
    if (a.verbose) client.on('log', (l) => process.stderr.write(`[${i} client] ${l}\n`));
    const host = server.ips.find((ip) => !ip.includes(':')) ?? server.ips[0];
    const t0 = performance.now();
    const sock = await client.dial(host, port);
    const dialMs = performance.now() - t0;
    sock.destroy();
    return { dialMs, serverUpMs: server.onlineMs, clientUpMs: client.onlineMs };
  } finally {
    await Promise.all([client?.close(), server?.close()]);
    await rm(dir, { recursive: true, force: true });
  }
}

try {
  if (role !== 'firstdial') throw new Error(`unknown role ${role}: use firstdial`);
  for (const k of ['control', 'authkey', 'dir', 'hostname']) if (!a[k]) throw new Error(`--${k} is required`);
  const pairs = Number(a.pairs ?? 10);
  const port = Number(a.port ?? 4243);
  const all = [];
  for (let i = 0; i < pairs; i++) {
    const r = await pair(i, port);
    all.push(r.dialMs);
    emit({ event: 'pair', i, ...r });
  }
  emit({ event: 'result', dialMs: all });
} catch (err) {
  emit({ event: 'error', message: String(err?.stack ?? err?.message ?? err) });
  process.exitCode = 1;
}
