// The benchmark wire protocol, shared by every peer (loopback floor,
// meshguard nodes; go/cmd/tsnetbench speaks the same in Go):
//
//   first byte 'E': echo 64-byte messages until EOF;
//   first byte 'S': read to EOF, reply with the byte count as 8 bytes
//                   big-endian, close.

import { once } from 'node:events';

export const MSG_SIZE = 64;
export const CHUNK_SIZE = 256 << 10;

/** serve answers one connection (server side). */
export function serve(sock) {
  sock.setNoDelay(true);
  let mode = 0;
  let count = 0; // sink: bytes after the mode byte
  sock.on('data', (buf) => {
    if (mode === 0) {
      mode = buf[0];
      buf = buf.subarray(1);
      if (mode !== 0x45 /* E */ && mode !== 0x53 /* S */) {
        sock.destroy();
        return;
      }
    }
    // Echo relays the stream as it arrives: with one 64-byte message in
    // flight at a time this is the same as read-64/write-64.
    if (mode === 0x45) {
      if (buf.length) sock.write(buf);
    } else {
      count += buf.length;
    }
  });
  sock.on('end', () => {
    if (mode === 0x53) {
      const out = Buffer.alloc(8);
      out.writeBigUInt64BE(BigInt(count));
      sock.end(out);
    } else {
      sock.end();
    }
  });
  sock.on('error', () => sock.destroy());
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

export async function echoRounds(connect, rounds) {
  const sock = await connect();
  sock.setNoDelay?.(true);
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

export async function sink(connect, bytes) {
  const sock = await connect();
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
    if (count !== BigInt(bytes)) throw new Error(`sink: server counted ${count} bytes, sent ${bytes}`);
    return bytes / 2 ** 20 / s;
  } finally {
    sock.destroy();
  }
}
