// The plain-TCP server of the loopback floor (bench/lib/loopback.mjs): a
// bare Node process on 127.0.0.1 speaking the same protocol as
// `tsnetbench serve` (go/cmd/tsnetbench):
//
//   first byte 'E': echo 64-byte messages until EOF;
//   first byte 'S': read to EOF, reply with the byte count as 8 bytes
//                   big-endian, close.
//
// Standard output carries JSON lines only:
//   {"event":"listening","port":P,"rssKiB":N}        once listening
//   {"event":"stopped","rssKiB":N,"rssPeakKiB":N}    after stdin closes
//
// Usage: node loopback-server.mjs [--port P]   (default 0: any free port)

import net from 'node:net';
import { readFileSync } from 'node:fs';
import { serve } from './protocol.mjs';


/** vmKiB reads one Vm* field of /proc/self/status; 0 where unavailable. */
function vmKiB(field) {
  try {
    const m = readFileSync('/proc/self/status', 'utf8').match(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

const i = process.argv.indexOf('--port');
const port = i === -1 ? 0 : Number(process.argv[i + 1]);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  emit({ event: 'error', message: `--port must be an integer in 0..65535, got ${process.argv[i + 1]}` });
  process.exit(1);
}

const server = net.createServer(serve);
server.on('error', (err) => {
  emit({ event: 'error', message: `listen 127.0.0.1:${port}: ${err.message}` });
  process.exit(1);
});
server.listen({ host: '127.0.0.1', port }, () => {
  emit({ event: 'listening', port: server.address().port, rssKiB: vmKiB('VmRSS') });
});

// Serve until the parent closes stdin (or dies).
process.stdin.resume();
process.stdin.on('end', () => {
  emit({ event: 'stopped', rssKiB: vmKiB('VmRSS'), rssPeakKiB: vmKiB('VmHWM') });
  server.close();
  process.exit(0);
});
