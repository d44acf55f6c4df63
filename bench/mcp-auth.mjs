#!/usr/bin/env node
// bench/mcp-auth — what a credential for an MCP upstream (mcp.servers.X.auth,
// docs/connectors.md#credentials-for-mcp-servers) adds to an MCP tool call
// through meshguard's aggregating endpoint, side by side in one run:
//
//   direct              the official SDK client calls the upstream itself,
//                       sending the bearer token the upstream requires
//   meshguard           through the gateway to an upstream that needs no
//                       credential (server "sim")
//   meshguard + bearer  through the gateway to the upstream that requires the
//                       token, which the gateway injects into every request
//                       and scrubs from the answer (server "auth")
//
// Each upstream (bench/lib/mcp-upstream-server.mjs) and the gateway
// (bench/lib/gateway-server.mjs, default configuration: full logs to SQLite)
// is a process of its own; one client, tools/call of a small tool, the three
// systems alternating in rounds so the machine's other load lands on each
// alike. Rows: latency per system, and the latency each gateway system adds
// over direct (p50 minus p50, p99 minus p99, mean minus mean).
//
//   node bench/mcp-auth.mjs [--json] [--smoke] [--n N]
//
// Needs dist/ built (node test/build.mjs). Everything listens on 127.0.0.1.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { benchArgs } from './lib/args.mjs';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { startJsonChild } from './lib/child.mjs';
import { formatTable, row, toJson } from './lib/stats.mjs';

const here = (p) => join(dirname(fileURLToPath(import.meta.url)), p);
const { values: opts } = benchArgs(import.meta.url, { options: { json: { type: 'boolean' }, smoke: { type: 'boolean' }, n: { type: 'string' } } });
const N = Number(opts.n ?? (opts.smoke ? 60 : 2000));
const ROUNDS = opts.smoke ? 2 : 10;
const TOKEN = `mcp-bench-${Math.random().toString(36).slice(2)}-token`;
const progress = (m) => process.stderr.write(`[mcp-auth] ${m}\n`);

const work = mkdtempSync(join(tmpdir(), 'mg-bench-mcp-auth-'));
const children = [];
try {
  progress('starting two MCP upstreams (one requires a bearer token) and the gateway');
  const open = startJsonChild('mcp upstream', process.execPath, [here('./lib/mcp-upstream-server.mjs')]);
  const authed = startJsonChild('mcp upstream (bearer)', process.execPath, [here('./lib/mcp-upstream-server.mjs')], { env: { ...process.env, MCP_UPSTREAM_BEARER: TOKEN } });
  children.push(open, authed);
  const openUrl = (await open.next('listening', 15_000)).url;
  const authUrl = (await authed.next('listening', 15_000)).url;
  const gw = startJsonChild('gateway', process.execPath, [here('./lib/gateway-server.mjs'), '--sim', 'http://127.0.0.1:9', '--sim-key', 'unused', '--dir', work, '--mcp-url', openUrl, '--mcp-auth-url', authUrl], { env: { ...process.env, MCP_BENCH_TOKEN: TOKEN } });
  children.push(gw);
  const { loopbackUrl } = await gw.next('listening', 60_000);

  const target = async (name, url, tool, headers) => {
    const client = new Client({ name: 'bench', version: '1.0.0' });
    await client.connect(new StreamableHTTPClientTransport(new URL(url), headers ? { requestInit: { headers } } : undefined));
    let i = 0;
    return {
      name,
      client,
      async call() {
        const t0 = performance.now();
        const r = await client.callTool({ name: tool, arguments: { repo: `acme/r${i++}` } });
        const ms = performance.now() - t0;
        if (r.isError) throw new Error(`${name}: tool error ${JSON.stringify(r.content)}`);
        return ms;
      },
    };
  };
  const systems = [
    await target('direct', authUrl, 'get_issue', { authorization: `Bearer ${TOKEN}` }),
    await target('meshguard', `${loopbackUrl}/v1/mcp`, 'sim__get_issue'),
    await target('meshguard + bearer', `${loopbackUrl}/v1/mcp`, 'auth__get_issue'),
  ];
  const samples = new Map(systems.map((s) => [s.name, []]));
  for (const s of systems) for (let i = 0; i < Math.max(5, N / 20); i++) await s.call(); // warm-up
  for (let r = 0; r < ROUNDS; r++) {
    for (const s of systems) {
      progress(`round ${r + 1}/${ROUNDS}: ${s.name}`);
      for (let i = 0; i < Math.ceil(N / ROUNDS); i++) samples.get(s.name).push(await s.call());
    }
  }
  for (const s of systems) await s.client.close();
  const rows = systems.map((s) => row(s.name, 'mcp tool call 1 client', 'ms', samples.get(s.name)));
  const base = rows[0];
  for (const r of rows.slice(1)) rows.push({ system: r.system, metric: 'added latency mcp tool call 1 client', unit: 'ms', p50: r.p50 - base.p50, p99: r.p99 - base.p99, mean: r.mean - base.mean, n: r.n });
  process.stdout.write(opts.json ? `${JSON.stringify(toJson('mcp-auth', rows))}\n` : `${formatTable(rows)}\n`);
} finally {
  for (const c of children.reverse()) await c.stop(10_000).catch(() => c.kill());
  rmSync(work, { recursive: true, force: true });
}
