// The MCP upstream of bench/gateway (bench/lib/mcp-upstream.mjs) as a
// process of its own, so its work does not share the client's event loop.
// Contract of bench/lib/child.mjs: {"event":"listening","url":U}, and it
// exits when stdin closes. With MCP_UPSTREAM_BEARER set, every request must
// carry that bearer token (a 401 otherwise).
import { startMcpUpstream } from './mcp-upstream.mjs';

const bearer = process.env.MCP_UPSTREAM_BEARER;
const up = await startMcpUpstream(bearer ? { authorize: (c) => c === bearer } : {});
process.stdout.write(JSON.stringify({ event: 'listening', url: up.url }) + '\n');
process.stdin.resume();
process.stdin.on('end', async () => {
  await up.close();
  process.exit(0);
});
