// The simulated REST API of bench/gateway (bench/lib/rest-sim.mjs) as a
// process of its own, so its work does not share the client's event loop.
// Contract of bench/lib/child.mjs: {"event":"listening","url":U}, and it
// exits when stdin closes. The bearer token is read from REST_SIM_TOKEN.
import { startRestSim } from './rest-sim.mjs';

const sim = await startRestSim({ bearer: process.env.REST_SIM_TOKEN ?? '' });
process.stdout.write(JSON.stringify({ event: 'listening', url: sim.url }) + '\n');
process.stdin.resume();
process.stdin.on('end', async () => {
  await sim.close();
  process.exit(0);
});
