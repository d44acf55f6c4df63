// The database gateway of bench/database in a process of its own (as
// `meshguard db-gateway` runs it): startDatabaseGateway from dist/, joining
// the bench's tailnet. Reports on stdout in JSON lines:
//
//   {"event":"online","ips":[...],"port":5432}   once listening on the tailnet
//   {"event":"stopped"}                          after stdin closes
//
// Usage: node db-gateway-node.mjs --config FILE   (the config names the tailnet, auth key file and upstream)

import { parseArgs } from 'node:util';
import { startDatabaseGateway } from '../../dist/database/index.js';

const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
try {
  const { values: a } = parseArgs({ options: { config: { type: 'string' } } });
  const gw = await startDatabaseGateway({ config: a.config, onWarning: (e) => process.stderr.write(`warning: ${e.message}\n`) });
  emit({ event: 'online', ips: gw.node.ips, port: gw.port });
  process.stdin.resume();
  await new Promise((r) => process.stdin.on('end', r));
  await gw.close();
  emit({ event: 'stopped' });
} catch (err) {
  emit({ event: 'error', message: err.message });
  process.exitCode = 1;
}
