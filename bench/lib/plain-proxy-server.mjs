// A plain HTTP proxy as a process of its own: node:http in front, an undici
// Agent behind, each request's method, path, headers and body passed to one
// upstream origin and the answer streamed back unchanged — no parsing,
// judging or logging. bench/gateway (--mcp-floor) puts it between an MCP
// client and the upstream MCP server: what it adds over a direct call is
// the floor of one more process on the path on this machine at that moment,
// the part of the gateway's added latency that is not its own work. For
// the LLM figures bench/gateway runs it as the system "bare proxy" in front
// of the simulated provider (its URL with path /).
// Contract of bench/lib/child.mjs: {"event":"listening","url":U} (U: the
// upstream URL with this proxy's origin), and it exits when stdin closes.
//
//   node bench/lib/plain-proxy-server.mjs http://127.0.0.1:PORT/mcp
import http from 'node:http';
import { Agent } from 'undici';

const target = new URL(process.argv[2]);
const agent = new Agent({ keepAliveTimeout: 30_000 });
/** Hop-by-hop headers, and the ones node:http and undici set themselves. */
const DROP = new Set(['host', 'connection', 'keep-alive', 'transfer-encoding', 'content-length']);
const pick = (h) => Object.fromEntries(Object.entries(h).filter(([k]) => !DROP.has(k.toLowerCase())));

const srv = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', async () => {
    try {
      const r = await agent.request({ origin: target.origin, path: req.url, method: req.method, headers: pick(req.headers), body: chunks.length ? Buffer.concat(chunks) : undefined });
      res.writeHead(r.statusCode, pick(r.headers));
      r.body.on('data', (c) => res.write(c));
      r.body.on('end', () => res.end());
      r.body.on('error', () => res.destroy());
      res.on('close', () => r.body.destroy());
    } catch (err) {
      if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' });
      res.end(String(err?.message ?? err));
    }
  });
});
srv.listen(0, '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ event: 'listening', url: `http://127.0.0.1:${srv.address().port}${target.pathname}` }) + '\n');
});
process.stdin.resume();
process.stdin.on('end', () => {
  srv.closeAllConnections();
  srv.close(() => process.exit(0));
});
