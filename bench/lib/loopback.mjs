// The loopback floor: what a Node process gets over plain 127.0.0.1 TCP to
// another Node process, with no tailnet and no meshguard in the way. It
// measures the same things, over the same protocol, as the tailnet peers
// (`tsnetbench`, and meshguard nodes in bench/tailnet.mjs), so every other
// row can be read against it.

import net from 'node:net';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { startJsonChild } from './child.mjs';
import { echoRounds, sink } from './protocol.mjs';

const SERVER = fileURLToPath(new URL('./loopback-server.mjs', import.meta.url));

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

    const connect = async () => (await dial(target)).sock;
    const rttUs = await echoRounds(connect, rtt);
    const throughputMiBps = await sink(connect, bytes);
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

