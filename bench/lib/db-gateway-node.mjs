// The database gateway of bench/database in a process of its own (as
// `meshguard db-gateway` runs it): startDatabaseGateway from dist/, joining
// the bench's tailnet. Reports on stdout in JSON lines:
//
//   {"event":"online","ips":[...],"port":5432}   once listening on the tailnet
//   {"event":"stopped"}                          after stdin closes
//
// Usage: node db-gateway-node.mjs --config FILE   (the config names the tailnet, auth key file and upstream)
//
// With --loopback TAG the gateway listens on 127.0.0.1 instead (port in the
// online event) and every connection is the tailnet node "bench-client"
// tagged TAG: the same gateway code on the bench's stand-in for a node
// (listen and whois only), to measure its own cost without the tailnet's.

import { parseArgs } from 'node:util';
import { startDatabaseGateway } from '../../dist/database/index.js';

const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
try {
  const { values: a } = parseArgs({ options: { config: { type: 'string' }, loopback: { type: 'string' } } });
  let port;
  const node = a.loopback && {
    hostname: 'db-gateway-loopback',
    ips: ['127.0.0.1'],
    async listen(_port, srv) {
      await new Promise((r) => srv.listen(0, '127.0.0.1', r));
      port = srv.address().port;
      return srv;
    },
    async whois() {
      return { node: { id: '1', name: 'bench-client.bench.ts.net.', hostname: 'bench-client', tags: [a.loopback], ips: [] }, user: { login: 'tagged-devices', displayName: '' }, tagged: true, owners: ['bench@'], caps: {} };
    },
  };
  const gw = await startDatabaseGateway({ config: a.config, ...(node ? { node } : {}), onWarning: (e) => process.stderr.write(`warning: ${e.message}\n`) });
  emit({ event: 'online', ips: node ? ['127.0.0.1'] : gw.node.ips, port: port ?? gw.port });
  process.stdin.resume();
  await new Promise((r) => process.stdin.on('end', r));
  await gw.close({ timeoutMs: 1000 });
  emit({ event: 'stopped' });
} catch (err) {
  emit({ event: 'error', message: err.message });
  process.exitCode = 1;
}
