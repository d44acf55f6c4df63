// The provider node of bench/gateway's tailnet figure: a tailnet node that
// carries each connection on port 80 straight to the simulated provider on
// loopback (bytes piped both ways, nothing parsed). Client node → this node
// → provider is the path a gateway node is compared against.
//
//   {"event":"online","ips":[...]}   once listening on the tailnet
//   {"event":"stopped"}              after stdin closes
//
// Usage: node forward-node.mjs --control URL --authkey KEY --dir DIR --hostname NAME --to HOST:PORT
//        node forward-node.mjs --loopback --to HOST:PORT   the same pipe on 127.0.0.1 (port in the online event), no tailnet

import net from 'node:net';
import { parseArgs } from 'node:util';
import { MeshNode } from '../../dist/index.js';

const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
try {
  const { values: a } = parseArgs({ options: { ...Object.fromEntries(['control', 'authkey', 'dir', 'hostname', 'to'].map((k) => [k, { type: 'string' }])), loopback: { type: 'boolean' } } });
  const i = a.to.lastIndexOf(':');
  const host = a.to.slice(0, i);
  const port = Number(a.to.slice(i + 1));
  const node = a.loopback ? undefined : await MeshNode.start({ controlUrl: a.control, authKey: a.authkey, dir: a.dir, hostname: a.hostname, ephemeral: true, timeoutMs: 45_000 });
  const server = node ? await node.listen(80) : net.createServer();
  if (!node) await new Promise((r) => server.listen(0, '127.0.0.1', r));
  server.on('connection', (sock) => {
    const up = net.connect({ host, port, noDelay: true });
    sock.setNoDelay?.(true);
    sock.pipe(up).pipe(sock);
    const end = () => {
      sock.destroy();
      up.destroy();
    };
    sock.on('error', end);
    up.on('error', end);
  });
  emit({ event: 'online', ips: node ? node.ips : ['127.0.0.1'], ...(node ? {} : { port: server.address().port }) });
  process.stdin.resume();
  await new Promise((r) => process.stdin.on('end', r));
  server.close();
  await node?.close();
  emit({ event: 'stopped' });
} catch (err) {
  emit({ event: 'error', message: String(err?.message ?? err) });
  process.exitCode = 1;
}
