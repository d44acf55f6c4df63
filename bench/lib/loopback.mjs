// The loopback floor: what a Node process gets over plain 127.0.0.1 TCP to
// another Node process, with no tailnet and no meshguard in the way. It
// measures the same things, over the same protocol, as the tailnet peers
// (`tsnetbench`, and meshguard nodes in bench/tailnet.mjs), so every other
// row can be read against it.

import net from 'node:net';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { startJsonChild } from './child.mjs';

const SERVER = fileURLToPath(new URL('./loopback-server.mjs', import.meta.url));
export const MSG_SIZE = 64;
export const CHUNK_SIZE = 256 << 10;

/**
 * runLoopback starts bench/lib/loopback-server.mjs as a child Node process
 * and measures, from this process:
 *
 *   onlineMs          spawn → the child's "listening" line (Node start-up
 *                     plus listen; the floor for "time to be reachable")
 *   dialMs[]          `dials` TCP connects, each to the 'connect' event
 *   rttUs[]           `rtt` round trips of one 64-byte message, one
 *                     connection, one message in flight
 *   throughputMiBps   `bytes` written in 256 KiB chunks (respecting
 *                     backpressure), end(), until the server's 8-byte count
 *                     arrives
 *   serverRssKiB / serverRssPeakKiB   the child's VmRSS / VmHWM after the run
 *   clientRssKiB      this process's RSS after the run (it includes whatever
 *                     else the calling process holds)
 *
 * @param {{ rtt: number, bytes: number, dials?: number, nodeBin?: string }} opts
 */
export async function runLoopback({ rtt, bytes, dials = 5, nodeBin = process.execPath }) {
  for (const [k, v] of [['rtt', rtt], ['bytes', bytes], ['dials', dials]]) {
    if (!Number.isSafeInteger(v) || v < 1) throw new TypeError(`runLoopback: ${k} must be a positive integer, got ${v}`);
  }
  const server = startJsonChild('loopback-server', nodeBin, [SERVER, '--port', '0']);
  try {
    const listening = await server.next('listening', 15_000);
    const onlineMs = listening.at - server.t0;
    const target = { host: '127.0.0.1', port: listening.port };

    const dialMs = [];
    for (let i = 0; i < dials; i++) {
      const { sock, ms } = await dial(target);
      dialMs.push(ms);
      sock.destroy();
    }

    const rttUs = await echoRounds(target, rtt);
    const throughputMiBps = await sink(target, bytes);
    const clientRssKiB = Math.round(process.memoryUsage().rss / 1024);

    const { lines } = await server.stop();
    const stopped = lines.find((l) => l.event === 'stopped');
    return {
      onlineMs,
      dialMs,
      rttUs,
      throughputMiBps,
      bytes,
      serverRssKiB: stopped?.rssKiB ?? listening.rssKiB,
      serverRssPeakKiB: stopped?.rssPeakKiB,
      clientRssKiB,
    };
  } finally {
    server.kill();
  }
}

function dial(target) {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const sock = net.connect(target);
    sock.once('connect', () => {
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      sock.removeListener('error', reject);
      sock.setNoDelay(true);
      resolve({ sock, ms });
    });
    sock.once('error', reject);
  });
}

/** reader returns read(n): the next n bytes of the socket's stream. */
function reader(sock) {
  const chunks = [];
  let have = 0;
  let want = 0;
  let wake = null;
  let failure = null;
  sock.on('data', (b) => {
    chunks.push(b);
    have += b.length;
    if (wake && have >= want) {
      const w = wake;
      wake = null;
      w.resolve();
    }
  });
  const fail = (err) => {
    failure = err;
    wake?.reject(err);
    wake = null;
  };
  sock.on('error', fail);
  sock.on('end', () => fail(new Error('connection closed by the server')));
  return async function read(n) {
    if (have < n) {
      if (failure) throw failure;
      want = n;
      await new Promise((resolve, reject) => (wake = { resolve, reject }));
    }
    const all = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks);
    chunks.length = 0;
    if (all.length > n) chunks.push(all.subarray(n));
    have -= n;
    return all.subarray(0, n);
  };
}

async function echoRounds(target, rounds) {
  const { sock } = await dial(target);
  try {
    const read = reader(sock);
    const msg = Buffer.alloc(MSG_SIZE, 0x61);
    sock.write('E');
    const out = [];
    for (let i = 0; i < rounds; i++) {
      const t0 = process.hrtime.bigint();
      sock.write(msg);
      await read(MSG_SIZE);
      out.push(Number(process.hrtime.bigint() - t0) / 1e3);
    }
    return out;
  } finally {
    sock.destroy();
  }
}

async function sink(target, bytes) {
  const { sock } = await dial(target);
  try {
    const read = reader(sock);
    const chunk = Buffer.alloc(CHUNK_SIZE, 0x5a);
    const t0 = process.hrtime.bigint();
    sock.write('S');
    for (let left = bytes; left > 0; left -= CHUNK_SIZE) {
      if (!sock.write(left >= CHUNK_SIZE ? chunk : chunk.subarray(0, left))) await once(sock, 'drain');
    }
    sock.end();
    const count = (await read(8)).readBigUInt64BE(0);
    const s = Number(process.hrtime.bigint() - t0) / 1e9;
    if (count !== BigInt(bytes)) throw new Error(`loopback sink: server counted ${count} bytes, sent ${bytes}`);
    return bytes / 2 ** 20 / s;
  } finally {
    sock.destroy();
  }
}
