// meshguard's gateway as bench/gateway runs it: a process of its own with
// its default configuration (full logs to SQLite, the default retention),
// one OpenAI-format provider (the simulator) and a loopback listener whose
// requests are all one configured principal; optionally also a tailnet node.
// Contract of bench/lib/child.mjs:
//
//   {"event":"listening","loopbackUrl":U,"url":T|null,"ipUrl":I|null}
//   {"event":"stopped","log":{ records, ok, inputTokens, outputTokens, byOutcome }}
//        after stdin closes: what the gateway's own store recorded, read
//        back through the store after a flush, for the lost / charged-twice check
//
// Usage: node gateway-server.mjs --sim URL --sim-key K --dir DIR [--dist DIR]
//        [--control URL --authkey KEY --hostname NAME] [--pg-url-env NAME] [--quota-tokens N] [--mcp-url URL] [--rest-url URL]
//
// --mcp-url configures one upstream MCP server, "sim", at the aggregating
// MCP endpoint (/v1/mcp), its tools allowed to the loopback principal. Its
// calls' log records are counted apart (log.mcpRecords), not in the LLM
// accounting.
//
// --mcp-auth-url configures a second upstream MCP server, "auth", whose
// requests carry a bearer token read from MCP_BENCH_TOKEN (mcp.servers.X.auth),
// its tools allowed like sim's.
//
// --rest-url configures one HTTP connector, "rest", whose base URL is
// URL/api (bench/lib/rest-sim.mjs), with a bearer token read from
// REST_SIM_TOKEN, its GETs allowed to the loopback principal. Its calls' log
// records are counted apart too (log.connectorRecords).
//
// --dist DIR runs the gateway of another build (DIR: its dist/ directory,
// e.g. a copy of an older commit's) instead of this checkout's: bench/gateway
// --baseline-dist measures two builds side by side in one run.
//
// --pg-url-env stores logs and buckets in PostgreSQL (storage { engine:
// "postgres", urlEnv: NAME }) instead of SQLite; the URL itself stays in the
// environment, as a deployment keeps its password out of the config.
// --quota-tokens gives every request one global token bucket of N tokens
// (refill 1/month: nothing comes back during a run), for the overspend check.

import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';

const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');

/** logTotals pages through every stored record (newest first) and adds them up. */
async function logTotals(store) {
  const t = { records: 0, ok: 0, inputTokens: 0, outputTokens: 0, byOutcome: {} };
  let before;
  for (;;) {
    const page = await store.queryLogs({ limit: 1000, ...(before ? { before } : {}) });
    for (const r of page.records) {
      if (r.operation.startsWith('mcp.')) {
        t.mcpRecords = (t.mcpRecords ?? 0) + 1;
        continue;
      }
      if (r.operation === 'connector.call') {
        t.connectorRecords = (t.connectorRecords ?? 0) + 1;
        continue;
      }
      t.records++;
      t.byOutcome[r.outcome] = (t.byOutcome[r.outcome] ?? 0) + 1;
      if (r.outcome === 'ok') t.ok++;
      t.inputTokens += r.usage?.inputTokens ?? 0;
      t.outputTokens += r.usage?.outputTokens ?? 0;
    }
    if (!page.next) return t;
    before = page.next;
  }
}

try {
  const { values: a } = parseArgs({ options: Object.fromEntries(['sim', 'sim-key', 'dir', 'control', 'authkey', 'hostname', 'pg-url-env', 'quota-tokens', 'mcp-url', 'mcp-auth-url', 'rest-url', 'dist'].map((k) => [k, { type: 'string' }])) });
  const { startGateway } = await import(a.dist ? pathToFileURL(join(a.dist, 'gateway', 'index.js')).href : '../../dist/gateway/index.js');
  const policy = join(a.dir, 'policy.hujson');
  const quota = a['quota-tokens'] ? Number(a['quota-tokens']) : undefined;
  const roles = quota ? { gateway: { roles: [{ src: ['tag:bench'], role: 'user', quotas: ['bench'] }] } } : {};
  const mcpRules = a['mcp-url'] || a['mcp-auth-url'] ? [{ id: 'bench-mcp', src: ['tag:bench'], mcp: { server: ['sim', 'auth'], tool: ['get_*'] } }] : [];
  const restRules = a['rest-url'] ? [{ id: 'bench-rest', src: ['tag:bench'], http: { host: ['127.0.0.1'], method: ['GET'], path: ['/api/**'] } }] : [];
  writeFileSync(policy, JSON.stringify({ version: 3, rules: [{ id: 'bench', src: ['tag:bench'], llm: { model: ['sim/*'] } }, ...mcpRules, ...restRules], ...roles }));
  const gw = await startGateway({
    config: {
      providers: { sim: { baseUrl: `${a.sim}/v1`, format: 'openai', key: { env: 'BENCH_SIM_KEY' }, models: ['gpt-4o-mini'], prices: { 'gpt-4o-mini': { input: 0.15, output: 0.6 } } } },
      policy,
      dataDir: join(a.dir, 'data'),
      ...(a['pg-url-env'] ? { storage: { engine: 'postgres', urlEnv: a['pg-url-env'] } } : {}),
      ...(a['mcp-url'] || a['mcp-auth-url']
        ? {
            mcp: {
              servers: {
                ...(a['mcp-url'] ? { sim: { url: a['mcp-url'] } } : {}),
                ...(a['mcp-auth-url'] ? { auth: { url: a['mcp-auth-url'], auth: { type: 'bearer', token: { env: 'MCP_BENCH_TOKEN' } } } } : {}),
              },
            },
          }
        : {}),
      ...(a['rest-url'] ? { connectors: { http: { rest: { baseUrl: `${a['rest-url']}/api`, auth: { type: 'bearer', token: { env: 'REST_SIM_TOKEN' } } } } } } : {}),
      ...(quota ? { quotas: { bench: { unit: 'tokens', capacity: quota, refill: '1/month', per: 'global' } } } : {}),
      loopback: { listen: '127.0.0.1:0', principal: { node: 'bench-client', tags: ['tag:bench'], user: 'bench@example.com' } },
      ...(a.control ? { tailnet: { controlUrl: a.control, hostname: a.hostname ?? 'bench-gateway', dir: join(a.dir, 'node'), ephemeral: true } } : {}),
    },
    ...(a.control ? { tailnet: { controlUrl: a.control, authKey: a.authkey, hostname: a.hostname ?? 'bench-gateway', dir: join(a.dir, 'node'), ephemeral: true } } : {}),
    env: { ...process.env, BENCH_SIM_KEY: a['sim-key'] },
  });
  emit({ event: 'listening', loopbackUrl: gw.loopbackUrl, url: gw.url ?? null, ipUrl: gw.ipUrl ?? null });
  process.stdin.resume();
  await new Promise((r) => process.stdin.on('end', r));
  await gw.store?.flush();
  const log = gw.store ? await logTotals(gw.store) : null;
  await gw.close();
  emit({ event: 'stopped', log });
} catch (err) {
  emit({ event: 'error', message: String(err?.stack ?? err?.message ?? err) });
  process.exitCode = 1;
}
