// The MCP upstream of bench/gateway (bench/lib/mcp-upstream.mjs) as a
// process of its own, so its work does not share the client's event loop.
// Contract of bench/lib/child.mjs: {"event":"listening","url":U}, and it
// exits when stdin closes.
import { startMcpUpstream } from './mcp-upstream.mjs';

const up = await startMcpUpstream();
process.stdout.write(JSON.stringify({ event: 'listening', url: up.url }) + '\n');
process.stdin.resume();
process.stdin.on('end', async () => {
  await up.close();
  process.exit(0);
});
