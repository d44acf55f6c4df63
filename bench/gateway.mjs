#!/usr/bin/env node
// bench/gateway — what an AI gateway adds to an LLM call, side by side in
// one run, every system proxying the same simulated provider
// (bench/lib/llm-sim.mjs, a process of its own) under the same load from the
// same client (bench/lib/llm-load.mjs):
//
//   direct       the client calls the simulator itself: the floor
//   bare proxy   a minimal Node proxy in front of the simulator (bench/lib/
//                plain-proxy-server.mjs: node:http in, an undici keep-alive
//                pool out, every chunk written back as it comes, nothing
//                else): what one more Node process on the path adds on this
//                machine, the floor of any gateway written in Node
//   meshguard    meshguard's gateway, its own process, default configuration
//                (full logs to SQLite), a loopback listener with a configured
//                principal; it is also a tailnet node. Its process gets the
//                Node options `meshguard gateway` runs with (the first line
//                of dist/cli/main.js)
//   portkey      @portkey-ai/gateway (npm), routed per request to the simulator
//   litellm      LiteLLM's proxy (PyPI), one worker, no database, a model_list
//                entry whose api_base is the simulator
//   meshguard postgres     the same gateway with storage { engine: "postgres" }
//                on a real local PostgreSQL (Debian's, started by
//                test/gateway/pg-server.ts), a database of its own
//   meshguard 2× postgres  two such gateway processes sharing one database,
//                the client's requests alternating between them; its
//                accounting counts the log rows in PostgreSQL itself
//
// MCP (docs/connectors.md): an MCP tool call (tools/call of a small tool,
// official SDK client and server, streamable HTTP) through meshguard's
// aggregating endpoint against the same call made to the upstream MCP
// server directly (bench/lib/mcp-upstream.mjs, a process of its own), 1
// client, the two alternating in rounds: rows "mcp tool call 1 client" and
// meshguard's "added latency mcp tool call 1 client".
//
// HTTP connectors (docs/connectors.md): a GET of a small JSON answer from a
// simulated REST API (bench/lib/rest-sim.mjs, a process of its own) through
// meshguard's connector (bearer token injected, answer scrubbed, logged)
// against the same GET sent to the API directly with the token, 1 client,
// undici Pools on both sides, alternating in rounds: rows "http connector
// call 1 client" and meshguard's "added latency http connector call 1 client".
//
// Metrics (OpenAI chat completions, 16 output tokens): latency and the
// latency *added* over direct (system minus direct, at p50, p99 and mean)
// with 1 client in sequence, at a fixed open-loop rate, and with 50
// concurrent closed-loop clients. These three take the systems in turn, in
// blocks (about 100 requests at 1 client, 150 in the open loop, 500 at 50
// clients; the first system rotating), with a pause longer than the log
// flush interval and three unmeasured requests before each block: a burst
// of the machine's other load lands on every system alike, and work a
// gateway does after its answer (its log batch, a GC) is charged to its
// own block, not to direct's. (Each system used to run its open loop and
// its 50 clients once, one after the other: the load at that moment
// decided the added figure.) Also: time to first token of a stream; the
// gateway process's resident memory after warm-up and after 10,000 more
// requests; for meshguard, requests lost or charged twice (its own logs
// against what the client sent and what the provider served, the
// provider's tokens against the logged usage); and over the tailnet,
// client node → gateway node → provider beside client node → a node that
// forwards straight to the provider.
//
//   node bench/gateway.mjs [--json] [--smoke] [--setup] [--n N] [--rate R]
//                          [--open-n N] [--clients C] [--closed-n N] [--mem-n N] [--no-tailnet] [--no-peers]
//                          [--pg | --no-pg] [--only mcp,http,llm] [--mcp-sdk] [--mcp-floor]
//                          [--baseline-dist DIR]
//
// --setup installs the peers below into ~/.cache/meshguard/bench-peers (and
// Debian's postgresql when missing and root) and exits (it needs the package registries: run it outside the network
// namespace). A run outside a namespace installs missing peers itself.
// --only mcp,http,llm runs only the figures named (without llm: no tailnet,
// PostgreSQL, peers nor LLM rows). --mcp-sdk adds the system "meshguard sdk
// path" to the MCP rows: a second gateway with its MCP fast path off
// (MESHGUARD_MCP_FAST=0), every call through the SDK's server and client.
// --mcp-floor adds "plain proxy": the same calls through a plain HTTP proxy
// (bench/lib/plain-proxy-server.mjs), the floor of one more process.
// --baseline-dist DIR adds the system "meshguard baseline": the same gateway
// process (bench/lib/gateway-server.mjs, its own simulator) running another
// build's dist/ directory (DIR: e.g. a copy of dist/ made at an older
// commit), so two builds are compared in one run under the same load. Its
// LLM rows only (no accounting rows).
// --smoke runs meshguard, the bare proxy and direct only, with tiny counts, and checks the
// output's shape. Run it through `npm run bench:gateway`.
// The PostgreSQL systems run in a full run (--no-pg leaves them out) and not
// in --smoke unless --pg is given; with no PostgreSQL to start (not
// installed and not root, say) they are reported as skipped, with the reason.

/** The peers, pinned. Change a version here only. */
export const PEERS = Object.freeze({
  // Needs bench/lib/portkey-preload.mjs to stream at all on Node (Portkey-AI/gateway issues 1389, 1550).
  portkey: '1.15.2',
  // The newest release whose `proxy` extra installs from PyPI: later ones pin
  // litellm-proxy / litellm-enterprise / litellm-proxy-extras releases PyPI does not have.
  litellm: '1.108.5',
});

import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { benchArgs } from './lib/args.mjs';
import { startJsonChild } from './lib/child.mjs';
import { cliNodeOptions } from './lib/cli-options.mjs';
import { setupPeers, startLitellm, startPortkey } from './lib/gateway-peers.mjs';
import { logCounts, setupPostgres, startBenchPostgres } from './lib/gateway-pg.mjs';
import { chatBody, closedLoop, closeTarget, once, openLoop, sequential, stream, target } from './lib/llm-load.mjs';
import { formatTable, row, toJson } from './lib/stats.mjs';
import { Client as McpClient } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { Pool } from 'undici';

const { values: o } = benchArgs(import.meta.url, {
  options: {
    json: { type: 'boolean', default: false },
    smoke: { type: 'boolean', default: false },
    setup: { type: 'boolean', default: false },
    n: { type: 'string' },
    rate: { type: 'string' },
    'open-n': { type: 'string' },
    clients: { type: 'string' },
    'closed-n': { type: 'string' },
    'mem-n': { type: 'string' },
    'no-tailnet': { type: 'boolean', default: false },
    'no-peers': { type: 'boolean', default: false },
    pg: { type: 'boolean', default: false },
    'no-pg': { type: 'boolean', default: false },
    'mcp-sdk': { type: 'boolean', default: false },
    'mcp-floor': { type: 'boolean', default: false },
    only: { type: 'string' },
    'baseline-dist': { type: 'string' },
  },
});
const progress = (m) => process.stderr.write(`[bench/gateway] ${m}\n`);
const count = (v, dflt, smoke) => {
  const n = Number(v ?? (o.smoke ? smoke : dflt));
  if (!Number.isInteger(n) || n < 1) throw new Error(`bench/gateway: a count must be a positive integer, got ${v}`);
  return n;
};
const N = count(o.n, 2000, 40); // sequential requests per system (and half as many streams)
const RATE = count(o.rate, 300, 50);
const OPEN_N = count(o['open-n'], RATE * 10, 50);
const CLIENTS = count(o.clients, 50, 10);
const CLOSED_N = count(o['closed-n'], 5000, 100);
const MEM_N = count(o['mem-n'], 10_000, 200);
if (MEM_N % 2) throw new Error('bench/gateway: --mem-n must be even (it is measured in two halves)');
/** --only mcp,http,llm: the figures to run (default all). Without llm, no tailnet, PostgreSQL, peers nor LLM rows. */
const ONLY = o.only === undefined ? undefined : new Set(o.only.split(','));
for (const x of ONLY ?? []) if (!['llm', 'mcp', 'http'].includes(x)) throw new Error(`bench/gateway: --only takes llm, mcp and http, got ${x}`);
const LLM = ONLY === undefined || ONLY.has('llm');
const MCP = ONLY === undefined || ONLY.has('mcp');
const HTTP = ONLY === undefined || ONLY.has('http');
const PG = LLM && (o.pg || (!o.smoke && !o['no-pg']));
const WARM_N = o.smoke ? 20 : 2000;
const ROUNDS = o.smoke ? 1 : 5;
// The 1-client and open-loop figures alternate the systems in this many rounds (blocks of at least ~100 requests each).
const ROUNDS_1 = o.smoke ? 1 : Math.max(1, Math.min(40, Math.round(N / 100)));
const ROUNDS_OPEN = o.smoke ? 1 : Math.max(1, Math.min(20, Math.round(OPEN_N / 100)));
/** Longer than the store's flush interval (100 ms): a log batch the last block left is written before the next block starts. */
const SETTLE_MS = o.smoke ? 0 : 150;
/**
 * settle waits out the flush interval, then sends `s` a few requests it does not measure: after a
 * pause the processes on the path wake cold (descheduled, caches cold), and that first request of
 * each block, one in a hundred, would otherwise make the p99 — more so the more processes a path crosses.
 */
const settle = async (s) => {
  await new Promise((r) => setTimeout(r, SETTLE_MS));
  if (SETTLE_MS > 0) noteErrors(s.name, await sequential(s.target.once, 3));
};
/** rotate starts round r at a different system, so no system always runs right after the same other one. */
const rotate = (xs, r) => xs.map((_, i) => xs[(i + r) % xs.length]);

const SIM_KEY = 'sk-bench-provider-key';
const MODEL = 'gpt-4o-mini';
const here = (p) => fileURLToPath(new URL(p, import.meta.url));

if (o.setup) {
  setupPeers(PEERS, progress);
  progress('peers set up');
  const noPg = setupPostgres();
  progress(noPg ? `PostgreSQL not set up (its rows will be skipped): ${noPg}` : 'PostgreSQL present');
  process.exit(0);
}

const GATEWAY_NODE_OPTIONS = cliNodeOptions();

const rows = [];
const skipped = [];
const cleanups = [];
const add = (system, metric, unit, samples) => {
  const r = row(system, metric, unit, samples);
  rows.push(r);
  return r;
};
/** added is the row of `via` minus `direct`: the latency a system adds, at each statistic. */
const added = (system, metric, via, direct) => rows.push({ system, metric, unit: via.unit, p50: via.p50 - direct.p50, p99: via.p99 - direct.p99, mean: via.mean - direct.mean, n: via.n });

/**
 * directVsMeshguard measures one call made directly and through meshguard
 * (`systems`: [direct, meshguard, ...], each { name, call }), 1 client, warmed up,
 * alternating in rounds; adds the rows `metric` for each and each other
 * system's `added latency <metric>`.
 */
async function directVsMeshguard(metric, systems) {
  const samples = new Map(systems.map((s) => [s.name, []]));
  for (const s of systems) noteErrors(s.name, await sequential(s.call, Math.ceil(WARM_N / 10)));
  // Blocks of about 100 calls (as the 1-client LLM figure), the first system rotating: a burst of the machine's other load lands on every system alike.
  for (let r = 0; r < ROUNDS_1; r++) {
    if (r % 5 === 0) progress(`${metric}, rounds ${r + 1}-${Math.min(ROUNDS_1, r + 5)}/${ROUNDS_1}`);
    for (const s of rotate(systems, r)) {
      const res = await sequential(s.call, Math.ceil(N / ROUNDS_1));
      noteErrors(s.name, res);
      samples.get(s.name).push(...res.samples);
    }
  }
  const base = add('direct', metric, 'ms', samples.get('direct'));
  for (const s of systems.slice(1)) added(s.name, `added latency ${metric}`, add(s.name, metric, 'ms', samples.get(s.name)), base);
}

/** alternating is one target made of two (two gateway instances): requests alternate between them. */
function alternating(name, a, b) {
  let i = 0;
  const next = () => (i++ % 2 ? b : a);
  return {
    name,
    parts: [a, b],
    get sent() {
      return a.sent + b.sent;
    },
    once: () => next().once(),
    stream: () => next().stream(),
  };
}
const closeAll = (t) => Promise.all((t.parts ?? [t]).map((p) => closeTarget(p)));

/** treeRssMB is the resident memory of a process and its descendants (LiteLLM may fork workers). */
function treeRssMB(pid) {
  const kids = new Map();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (!kids.has(ppid)) kids.set(ppid, []);
      kids.get(ppid).push(Number(d));
    } catch {
      // gone meanwhile
    }
  }
  let kib = 0;
  const walk = (p) => {
    try {
      kib += Number(readFileSync(`/proc/${p}/status`, 'utf8').match(/^VmRSS:\s+(\d+) kB/m)?.[1] ?? 0);
    } catch {
      return;
    }
    for (const c of kids.get(p) ?? []) walk(c);
  };
  walk(pid);
  return kib / 1024;
}

/** counted wraps a target's requests so the accounting check knows what the client sent and got. */
function counted(t) {
  t.sent = 0;
  t.ok = 0;
  const plain = chatBody({ model: MODEL });
  const streamed = chatBody({ model: MODEL, stream: true });
  t.once = async () => {
    t.sent++;
    const ms = await once(t, plain);
    t.ok++;
    return ms;
  };
  t.stream = async () => {
    t.sent++;
    const r = await stream(t, streamed);
    t.ok++;
    return r;
  };
  return t;
}

async function startSim(name) {
  const sim = startJsonChild(name, process.execPath, [here('./lib/llm-sim-server.mjs'), '--key', SIM_KEY]);
  cleanups.push(() => sim.stop());
  const l = await sim.next('listening', 15_000);
  return { child: sim, url: l.url, totals: async () => (await fetch(`${l.url}/_sim/totals`)).json() };
}

/** startTailnet brings up a local headscale with tagged keys for the three nodes of the tailnet figure. */
async function startTailnet() {
  const { LocalControl } = await import('../dist/control/index.js');
  const control = await LocalControl.start({
    policy: {
      tagOwners: { 'tag:bench': ['bench@'], 'tag:gateway': ['bench@'], 'tag:provider': ['bench@'] },
      grants: [{ src: ['*'], dst: ['*'], ip: ['*'] }],
    },
  });
  cleanups.push(() => control.close());
  await control.createUser('bench');
  const key = (tag) => control.createAuthKey({ tags: [tag], reusable: true, ephemeral: true, expiration: '1h' });
  return { control, key };
}

const errorsOf = new Map(); // system -> count
function noteErrors(system, res) {
  if (res.errors.length === 0) return;
  errorsOf.set(system, (errorsOf.get(system) ?? 0) + res.errors.length);
  progress(`${system}: ${res.errors.length} failed requests, first: ${res.errors[0].message}`);
}

try {
  const work = mkdtempSync(join(tmpdir(), 'mg-bench-gw-'));
  cleanups.push(() => rmSync(work, { recursive: true, force: true }));

  progress('starting the simulated providers (one for direct and the peers, one for meshguard alone, so its accounting is exact)');
  const simShared = await startSim('llm-sim');
  const simMg = await startSim('llm-sim (meshguard)');

  // ---- the systems ----
  const systems = []; // { name, target, pid? }
  systems.push({ name: 'direct', target: counted(target({ name: 'direct', origin: simShared.url, headers: { authorization: `Bearer ${SIM_KEY}` } })) });
  if (LLM) {
    // The floor of any Node proxy: one more process, node:http in front, undici behind, nothing else (the gateway's Node options).
    progress('starting the bare proxy (bench/lib/plain-proxy-server.mjs) in front of the simulated provider');
    const bare = startJsonChild('bare proxy', process.execPath, [...GATEWAY_NODE_OPTIONS, here('./lib/plain-proxy-server.mjs'), `${simShared.url}/`]);
    cleanups.push(() => bare.stop());
    const bareUrl = (await bare.next('listening', 15_000)).url;
    systems.push({ name: 'bare proxy', pid: bare.pid, target: counted(target({ name: 'bare proxy', origin: new URL(bareUrl).origin, headers: { authorization: `Bearer ${SIM_KEY}` } })) });
  }

  let tailnet;
  if (LLM && !o['no-tailnet']) {
    try {
      progress('starting a local headscale for the tailnet figure');
      tailnet = await startTailnet();
    } catch (err) {
      skipped.push({ system: 'tailnet', reason: `no local tailnet: ${err.message}` });
      progress(`tailnet figure skipped: ${err.message}`);
    }
  }

  progress('starting the MCP upstream (bench/lib/mcp-upstream.mjs)');
  const mcpUp = startJsonChild('mcp upstream', process.execPath, [here('./lib/mcp-upstream-server.mjs')]);
  cleanups.push(() => mcpUp.stop());
  const mcpUrl = (await mcpUp.next('listening', 15_000)).url;

  progress('starting the simulated REST API (bench/lib/rest-sim.mjs)');
  const REST_TOKEN = 'rest-sim-bench-token-0123456789';
  const restUp = startJsonChild('rest api', process.execPath, [here('./lib/rest-sim-server.mjs')], { env: { ...process.env, REST_SIM_TOKEN: REST_TOKEN } });
  cleanups.push(() => restUp.stop());
  const restUrl = (await restUp.next('listening', 15_000)).url;

  let gateway;
  try {
    progress('starting meshguard gateway');
    progress(`node options of the gateway process (as meshguard gateway runs): ${GATEWAY_NODE_OPTIONS.join(' ') || 'none'}`);
    const args = [...GATEWAY_NODE_OPTIONS, here('./lib/gateway-server.mjs'), '--sim', simMg.url, '--sim-key', SIM_KEY, '--dir', mkdtempSync(join(work, 'gw-')), '--mcp-url', mcpUrl, '--rest-url', restUrl];
    if (tailnet) args.push('--control', tailnet.control.url, '--authkey', await tailnet.key('tag:gateway'), '--hostname', 'bench-gateway');
    const child = startJsonChild('meshguard gateway', process.execPath, args, { env: { ...process.env, REST_SIM_TOKEN: REST_TOKEN } });
    cleanups.push(() => child.kill());
    const l = await child.next('listening', 60_000);
    gateway = { child, ...l };
    systems.push({ name: 'meshguard', pid: child.pid, target: counted(target({ name: 'meshguard', origin: l.loopbackUrl, headers: { authorization: 'Bearer sk-client-key-the-gateway-drops' } })) });
  } catch (err) {
    skipped.push({ system: 'meshguard', reason: err.message });
    progress(`meshguard gateway did not start: ${err.message}`);
  }

  if (LLM && o['baseline-dist']) {
    progress(`starting meshguard baseline (the build in ${o['baseline-dist']})`);
    const simBase = await startSim('llm-sim (meshguard baseline)');
    const args = [...GATEWAY_NODE_OPTIONS, here('./lib/gateway-server.mjs'), '--sim', simBase.url, '--sim-key', SIM_KEY, '--dir', mkdtempSync(join(work, 'gw-base-')), '--dist', o['baseline-dist']];
    const child = startJsonChild('meshguard baseline', process.execPath, args);
    cleanups.push(() => child.kill());
    const l = await child.next('listening', 60_000);
    systems.push({ name: 'meshguard baseline', pid: child.pid, target: counted(target({ name: 'meshguard baseline', origin: l.loopbackUrl, headers: { authorization: 'Bearer sk-client-key-the-gateway-drops' } })) });
  }

  // ---- meshguard on PostgreSQL: one instance, and two sharing one database ----
  const pgSystems = []; // { name, children, sim, url }
  let pgQuota; // { pg, startPgGateways } when PostgreSQL runs
  if (PG) {
    progress('starting PostgreSQL (test/gateway/pg-server.ts)');
    const started = await startBenchPostgres();
    if (started.skip) {
      skipped.push({ system: 'meshguard postgres', reason: started.skip });
      progress(`PostgreSQL rows skipped: ${started.skip}`);
    } else {
      const { pg } = started;
      cleanups.push(() => pg.stop());
      const startPgGateways = async (name, instances, url, sim, extra = []) => {
        const children = [];
        const targets = [];
        for (let i = 0; i < instances; i++) {
          const args = [...GATEWAY_NODE_OPTIONS, here('./lib/gateway-server.mjs'), '--sim', sim.url, '--sim-key', SIM_KEY, '--dir', mkdtempSync(join(work, 'gwpg-')), '--pg-url-env', 'BENCH_PG_URL', ...extra];
          const child = startJsonChild(`${name} #${i + 1}`, process.execPath, args, { env: { ...process.env, BENCH_PG_URL: url } });
          cleanups.push(() => child.kill());
          const l = await child.next('listening', 60_000);
          children.push(child);
          targets.push(counted(target({ name: `${name} #${i + 1}`, origin: l.loopbackUrl, headers: { authorization: 'Bearer sk-client-key-the-gateway-drops' } })));
        }
        return { children, targets };
      };
      pgQuota = { pg, startPgGateways };
      for (const [name, instances] of [
        ['meshguard postgres', 1],
        ['meshguard 2× postgres', 2],
      ]) {
        try {
          progress(`starting ${name} (${instances} gateway process${instances > 1 ? 'es' : ''})`);
          const url = await pg.createDatabase();
          const sim = await startSim(`llm-sim (${name})`);
          const { children, targets } = await startPgGateways(name, instances, url, sim);
          const t = instances === 1 ? targets[0] : alternating(name, targets[0], targets[1]);
          // Memory is the single instance's (the two-instance row would be the same process twice).
          systems.push({ name, pid: instances === 1 ? children[0].pid : undefined, target: t });
          pgSystems.push({ name, children, sim, url, pg });
        } catch (err) {
          skipped.push({ system: name, reason: err.message });
          progress(`${name} did not start: ${err.message}`);
        }
      }
    }
  }

  if (LLM && !o.smoke && !o['no-peers']) {
    for (const [start, version] of [
      [startPortkey, PEERS.portkey],
      [startLitellm, PEERS.litellm],
    ]) {
      if (process.env.MESHGUARD_NETNS !== '1') {
        try {
          setupPeers(PEERS, progress);
        } catch (err) {
          progress(`peer setup failed: ${err.message}`);
        }
      }
      let peer;
      try {
        progress(`starting ${start.name.replace(/^start/, '').toLowerCase()} ${version}`);
        peer = await start({ version, simUrl: simShared.url, simKey: SIM_KEY, model: MODEL });
      } catch (err) {
        peer = { system: `${start.name.replace(/^start/, '').toLowerCase()} ${version}`, skipped: err.message };
      }
      if (peer.skipped) {
        skipped.push({ system: peer.system, reason: peer.skipped });
        progress(`${peer.system}: skipped: ${peer.skipped}`);
        continue;
      }
      cleanups.push(() => peer.close());
      systems.push({ name: peer.system, pid: peer.pid, target: counted(target({ name: peer.system, origin: peer.origin, headers: peer.headers })) });
    }
  }

  if (LLM) {
    // ---- warm-up, then memory across MEM_N requests ----
    for (const s of systems) {
      // At the memory phase's concurrency: what grows after this is not just a bigger pool of connections.
      progress(`${s.name}: warm-up (${WARM_N} requests at ${CLIENTS} clients, ${Math.ceil(WARM_N / 10)} streams)`);
      noteErrors(s.name, await closedLoop(s.target.once, CLIENTS, WARM_N));
      noteErrors(s.name, await closedLoop(s.target.stream, 10, Math.ceil(WARM_N / 10)));
      if (s.pid === undefined) continue;
      const before = treeRssMB(s.pid);
      progress(`${s.name}: ${MEM_N} requests at ${CLIENTS} clients for memory (rss ${before.toFixed(1)} MB after warm-up)`);
      noteErrors(s.name, await closedLoop(s.target.once, CLIENTS, MEM_N / 2));
      const half = treeRssMB(s.pid);
      noteErrors(s.name, await closedLoop(s.target.once, CLIENTS, MEM_N - MEM_N / 2));
      const after = treeRssMB(s.pid);
      add(s.name, 'rss after warm-up', 'MB', before);
      add(s.name, `rss after ${MEM_N} more requests`, 'MB', after);
      add(s.name, `rss growth over ${MEM_N} requests`, '%', ((after - before) / before) * 100);
      // A heap still settling grows in the first half and stops; a leak keeps the slope.
      add(s.name, `rss growth over the last ${MEM_N - MEM_N / 2} of them`, '%', ((after - half) / half) * 100);
    }

    // ---- 1 client: requests and streams, systems alternating in blocks so drift lands on all ----
    // Blocks, not single requests: what a gateway does after its answer has
    // gone out (the log record, the usage read, a log batch, a GC of the
    // garbage its request left) must land on its own samples, not on the
    // direct request sent next. Between blocks the client waits out the
    // store's flush interval (SETTLE_MS) so a batch written late lands in the
    // gap, not on the next system's block.
    const seq = new Map(systems.map((s) => [s.name, { lat: [], ttft: [] }]));
    for (let r = 0; r < ROUNDS_1; r++) {
      if (r % 5 === 0) progress(`1 client, rounds ${r + 1}-${Math.min(ROUNDS_1, r + 5)}/${ROUNDS_1}`);
      for (const s of rotate(systems, r)) {
        await settle(s);
        const a = await sequential(s.target.once, Math.ceil(N / ROUNDS_1));
        noteErrors(s.name, a);
        seq.get(s.name).lat.push(...a.samples);
        await settle(s);
        const b = await sequential(s.target.stream, Math.ceil(N / ROUNDS_1 / 2));
        noteErrors(s.name, b);
        seq.get(s.name).ttft.push(...b.samples.map((x) => x.ttft));
      }
    }
    const base1 = { lat: add('direct', 'latency 1 client', 'ms', seq.get('direct').lat), ttft: add('direct', 'ttft 1 client (stream)', 'ms', seq.get('direct').ttft) };
    for (const s of systems.slice(1)) {
      added(s.name, 'added latency 1 client', add(s.name, 'latency 1 client', 'ms', seq.get(s.name).lat), base1.lat);
      added(s.name, 'added ttft 1 client (stream)', add(s.name, 'ttft 1 client (stream)', 'ms', seq.get(s.name).ttft), base1.ttft);
    }

  }

  // ---- an MCP tool call, 1 client: the upstream directly, and through meshguard's MCP endpoint ----
  if (gateway && MCP) {
    const mcpTarget = async (name, url) => {
      const client = new McpClient({ name: 'bench', version: '1.0.0' });
      await client.connect(new StreamableHTTPClientTransport(new URL(url)));
      cleanups.push(() => client.close());
      let i = 0;
      return {
        name,
        call: async () => {
          const t0 = performance.now();
          const r = await client.callTool({ name: name === 'direct' || name === 'plain proxy' ? 'get_issue' : 'sim__get_issue', arguments: { repo: `acme/r${i++}` } });
          const ms = performance.now() - t0;
          if (r.isError) throw new Error(`tool error: ${JSON.stringify(r.content)}`);
          return ms;
        },
      };
    };
    const mcpSystems = [await mcpTarget('direct', mcpUrl), await mcpTarget('meshguard', `${gateway.loopbackUrl}/v1/mcp`)];
    if (o['mcp-sdk']) {
      // The same gateway with its MCP fast path off (src/gateway/mcp/fast.ts): every call through the SDK's server and client.
      progress('starting a second meshguard gateway with MESHGUARD_MCP_FAST=0 (the SDK path)');
      const args = [...GATEWAY_NODE_OPTIONS, here('./lib/gateway-server.mjs'), '--sim', simMg.url, '--sim-key', SIM_KEY, '--dir', mkdtempSync(join(work, 'gw-sdk-')), '--mcp-url', mcpUrl];
      const sdk = startJsonChild('meshguard gateway (MCP SDK path)', process.execPath, args, { env: { ...process.env, MESHGUARD_MCP_FAST: '0' } });
      cleanups.push(() => sdk.kill());
      mcpSystems.push(await mcpTarget('meshguard sdk path', `${(await sdk.next('listening', 60_000)).loopbackUrl}/v1/mcp`));
    }
    if (o['mcp-floor']) {
      // A plain proxy (bench/lib/plain-proxy-server.mjs): the floor of one more process on the path.
      const proxy = startJsonChild('plain proxy', process.execPath, [here('./lib/plain-proxy-server.mjs'), mcpUrl]);
      cleanups.push(() => proxy.stop());
      mcpSystems.push(await mcpTarget('plain proxy', (await proxy.next('listening', 15_000)).url));
    }
    await directVsMeshguard('mcp tool call 1 client', mcpSystems);
  }

  // ---- an HTTP connector call, 1 client: the REST API directly (with its token), and through meshguard's connector ----
  if (gateway && HTTP) {
    const restTarget = (name, origin, path, headers) => {
      const pool = new Pool(origin, { connections: 1 });
      cleanups.push(() => pool.close());
      return {
        name,
        call: async () => {
          const t0 = performance.now();
          const r = await pool.request({ path, method: 'GET', headers });
          const body = await r.body.text();
          const ms = performance.now() - t0;
          if (r.statusCode !== 200 || body !== '{"ok":true}') throw new Error(`HTTP ${r.statusCode}: ${body.slice(0, 200)}`);
          return ms;
        },
      };
    };
    const restSystems = [restTarget('direct', restUrl, '/api/ok', { authorization: `Bearer ${REST_TOKEN}` }), restTarget('meshguard', gateway.loopbackUrl, '/v1/connectors/rest/ok', {})];
    await directVsMeshguard('http connector call 1 client', restSystems);
  }

  // --only without llm: the LLM figures, the tailnet, accounting and PostgreSQL are left out.
  if (LLM) {
    // ---- open loop at a fixed rate: each system in turn, in rounds (as the 1-client figure), so drift lands on all ----
    const open = new Map(systems.map((s) => [s.name, { samples: [], late: [], rates: [] }]));
    for (let r = 0; r < ROUNDS_OPEN; r++) {
      for (const s of rotate(systems, r)) {
        await settle(s);
        const res = await openLoop(s.target.once, RATE, Math.ceil(OPEN_N / ROUNDS_OPEN));
        noteErrors(s.name, res);
        const o_ = open.get(s.name);
        o_.samples.push(...res.samples);
        o_.late.push(...res.late);
        o_.rates.push(res.achievedRate);
      }
    }
    let baseOpen;
    for (const s of systems) {
      const { samples, late, rates } = open.get(s.name);
      const lateP99 = [...late].sort((x, y) => x - y)[Math.ceil(0.99 * late.length) - 1] ?? 0;
      progress(`open loop ${RATE}/s, ${samples.length} requests in ${ROUNDS_OPEN} rounds: ${s.name}: ${Math.min(...rates).toFixed(0)}-${Math.max(...rates).toFixed(0)} req/s started; the generator's start delay p99 ${lateP99.toFixed(1)} ms`);
      // Shown beside the latencies: a generator that falls behind (a busy machine) sends bursts, not a rate.
      add(s.name, `open loop ${RATE}/s: start delay of the generator`, 'ms', late);
      const r = add(s.name, `latency open loop ${RATE}/s`, 'ms', samples);
      if (s.name === 'direct') baseOpen = r;
      else added(s.name, `added latency open loop ${RATE}/s`, r, baseOpen);
    }

    // ---- closed loop with CLIENTS concurrent clients: in rounds too (at least 500 requests each) ----
    const ROUNDS_CLOSED = o.smoke ? 1 : Math.max(1, Math.min(10, Math.floor(CLOSED_N / 500)));
    const closed = new Map(systems.map((s) => [s.name, { samples: [], seconds: 0, n: 0 }]));
    for (let r = 0; r < ROUNDS_CLOSED; r++) {
      for (const s of rotate(systems, r)) {
        progress(`${CLIENTS} clients, round ${r + 1}/${ROUNDS_CLOSED}: ${s.name}`);
        await settle(s);
        const n = Math.ceil(CLOSED_N / ROUNDS_CLOSED);
        const res = await closedLoop(s.target.once, CLIENTS, n);
        noteErrors(s.name, res);
        const c = closed.get(s.name);
        c.samples.push(...res.samples);
        c.seconds += n / res.throughput;
        c.n += n;
      }
    }
    let baseClosed;
    const addedClosed = new Map();
    for (const s of systems) {
      const c = closed.get(s.name);
      const r = add(s.name, `latency ${CLIENTS} clients`, 'ms', c.samples);
      add(s.name, `throughput ${CLIENTS} clients`, 'req/s', c.n / c.seconds);
      if (s.name === 'direct') baseClosed = r;
      else {
        added(s.name, `added latency ${CLIENTS} clients`, r, baseClosed);
        addedClosed.set(s.name, rows.at(-1));
      }
    }
    const mine = addedClosed.get('meshguard');
    for (const [name, r] of addedClosed) {
      if (name.startsWith('meshguard') || !mine) continue;
      // The target: meshguard's added latency ≤ 0.5 × Portkey's and ≤ 0.2 × LiteLLM's.
      rows.push({ system: name, metric: `meshguard's added latency ${CLIENTS} clients as a fraction of this`, unit: 'x', p50: mine.p50 / r.p50, p99: mine.p99 / r.p99, mean: mine.mean / r.mean, n: r.n });
    }

    // ---- the tailnet figure ----
    if (tailnet && gateway?.ipUrl) {
      const { MeshNode } = await import('../dist/index.js');
      progress('tailnet: starting the provider node and the client node');
      const fwd = startJsonChild('provider node', process.execPath, [here('./lib/forward-node.mjs'), '--control', tailnet.control.url, '--authkey', await tailnet.key('tag:provider'), '--dir', mkdtempSync(join(work, 'fwd-')), '--hostname', 'bench-provider', '--to', new URL(simShared.url).host]);
      cleanups.push(() => fwd.stop());
      const fwdIp = (await fwd.next('online', 60_000)).ips.find((ip) => !ip.includes(':'));
      const client = await MeshNode.start({ controlUrl: tailnet.control.url, authKey: await tailnet.key('tag:bench'), dir: mkdtempSync(join(work, 'client-')), hostname: 'bench-client', ephemeral: true, timeoutMs: 45_000 });
      cleanups.push(() => client.close());
      const connect = (opts, cb) => {
        client.dial(opts.hostname, Number(opts.port) || 80).then((s) => cb(null, s), (e) => cb(e, null));
      };
      const viaGw = counted(target({ name: 'tailnet gateway', origin: gateway.ipUrl, connections: 4, connect, headers: { authorization: 'Bearer sk-client-key-the-gateway-drops' } }));
      const viaFwd = counted(target({ name: 'tailnet provider node', origin: `http://${fwdIp}`, connections: 4, connect, headers: { authorization: `Bearer ${SIM_KEY}` } }));
      cleanups.push(() => closeTarget(viaGw), () => closeTarget(viaFwd));
      const tn = { gw: [], fwd: [] };
      for (const t of [viaGw, viaFwd]) noteErrors(t.name, await sequential(t.once, WARM_N / 10));
      for (let r = 0; r < ROUNDS; r++) {
        progress(`tailnet, round ${r + 1}/${ROUNDS}`);
        const a = await sequential(viaGw.once, Math.ceil(N / ROUNDS));
        noteErrors('tailnet gateway', a);
        tn.gw.push(...a.samples);
        const b = await sequential(viaFwd.once, Math.ceil(N / ROUNDS));
        noteErrors('tailnet provider node', b);
        tn.fwd.push(...b.samples);
      }
      const base = add('client node → provider node', 'latency over the tailnet 1 client', 'ms', tn.fwd);
      added('meshguard', 'added latency over the tailnet 1 client', add('client node → meshguard gateway node', 'latency over the tailnet 1 client', 'ms', tn.gw), base);
      gateway.tailnetSent = viaGw.sent;
    } else if (!o['no-tailnet']) {
      skipped.push({ system: 'tailnet figure', reason: tailnet ? 'the gateway has no tailnet address' : 'no local tailnet' });
    }

    // ---- accounting: what the client sent, the gateway logged and the provider served ----
    const mg = systems.find((s) => s.name === 'meshguard');
    if (mg && gateway) {
      progress('meshguard: stopping the gateway and reading its logs back');
      await closeTarget(mg.target);
      const stopped = (await gateway.child.stop(30_000)).lines.find((l) => l.event === 'stopped');
      const log = stopped?.log;
      const served = await simMg.totals();
      const sent = mg.target.sent + (gateway.tailnetSent ?? 0);
      if (!log) {
        skipped.push({ system: 'meshguard accounting', reason: 'the gateway reported no log totals (no store?)' });
      } else {
        progress(`meshguard: client sent ${sent}, gateway logged ${log.records} (${JSON.stringify(log.byOutcome)}), provider served ${served.requests}`);
        add('meshguard', 'requests lost (sent − logged)', 'count', Math.max(0, sent - log.records));
        add('meshguard', 'requests charged twice (logged − sent, served − sent)', 'count', Math.max(0, log.records - sent) + Math.max(0, served.requests - sent));
        add('meshguard', 'tokens logged − tokens served', 'count', log.inputTokens + log.outputTokens - (served.inputTokens + served.outputTokens));
      }
    }
    // ---- accounting on PostgreSQL: the rows in the log table, counted with SQL after every instance flushed and stopped ----
    for (const p of pgSystems) {
      const s = systems.find((x) => x.name === p.name);
      progress(`${p.name}: stopping ${p.children.length} gateway process(es) and counting the log rows in PostgreSQL`);
      await closeAll(s.target);
      await Promise.all(p.children.map((c) => c.stop(30_000)));
      const c = await logCounts(p.pg, p.url);
      const served = await p.sim.totals();
      const sent = s.target.sent;
      progress(`${p.name}: client sent ${sent}, ${c.rows} log rows (${c.ids} distinct ids), provider served ${served.requests}`);
      add(p.name, 'requests lost (sent − logged)', 'count', Math.max(0, sent - c.rows));
      add(p.name, 'requests charged twice (logged − sent, served − sent, rows − ids)', 'count', Math.max(0, c.rows - sent) + Math.max(0, served.requests - sent) + (c.rows - c.ids));
      add(p.name, 'tokens logged − tokens served', 'count', c.tokens - (served.inputTokens + served.outputTokens));
    }
    // ---- one global token bucket, two instances on one database, more demand than it holds: never overspent ----
    if (pgQuota) {
      const name = 'meshguard 2× postgres, quota';
      const CAPACITY = 2000;
      const demand = o.smoke ? 100 : 400;
      try {
        const sim = await startSim(`llm-sim (${name})`);
        const url = await pgQuota.pg.createDatabase();
        const { children, targets } = await pgQuota.startPgGateways(name, 2, url, sim, ['--quota-tokens', String(CAPACITY)]);
        const t = alternating(name, targets[0], targets[1]);
        progress(`${name}: ${demand} requests at ${CLIENTS} clients against a ${CAPACITY}-token bucket`);
        const res = await closedLoop(t.once, CLIENTS, demand);
        await closeAll(t);
        await Promise.all(children.map((c) => c.stop(30_000)));
        const served = await sim.totals();
        const c = await logCounts(pgQuota.pg, url);
        progress(`${name}: ${res.samples.length} answered, ${res.errors.length} refused, provider served ${served.inputTokens + served.outputTokens} tokens, ${c.rows} log rows`);
        add(name, `tokens served − bucket capacity (${CAPACITY}), 0 when not overspent`, 'count', Math.max(0, served.inputTokens + served.outputTokens - CAPACITY));
        add(name, 'requests answered (the rest refused by the bucket)', 'count', res.samples.length);
        add(name, 'requests lost or logged twice (|sent − logged| + rows − ids)', 'count', Math.abs(t.sent - c.rows) + (c.rows - c.ids));
      } catch (err) {
        skipped.push({ system: name, reason: err.message });
        progress(`${name}: ${err.message}`);
      }
    }
  }
  for (const s of systems) add(s.name, 'failed requests', 'count', errorsOf.get(s.name) ?? 0);
  // Systems of the MCP and connector rows only (meshguard sdk path): their failures too.
  for (const [name, n] of errorsOf) if (!systems.some((s) => s.name === name)) add(name, 'failed requests', 'count', n);
  for (const s of systems) await closeAll(s.target).catch(() => {});
} finally {
  for (const f of cleanups.reverse()) await Promise.resolve().then(f).catch((err) => progress(`cleanup: ${err.message}`));
}

for (const s of skipped) progress(`skipped: ${s.system}: ${s.reason}`);
const out = toJson('gateway', rows);
if (o.smoke) {
  // Shape check only: complete rows, and meshguard's main figures present. No thresholds.
  const keys = ['system', 'metric', 'unit', 'p50', 'p99', 'mean', 'n'];
  const bad = out.rows.filter((r) => keys.some((k) => r[k] === undefined || (typeof r[k] === 'number' && !Number.isFinite(r[k]))));
  const expected = [...(LLM ? ['added latency 1 client', 'added ttft 1 client (stream)', `added latency open loop ${RATE}/s`, `added latency ${CLIENTS} clients`, 'requests lost (sent − logged)'] : []), ...(MCP ? ['added latency mcp tool call 1 client'] : []), ...(HTTP ? ['added latency http connector call 1 client'] : [])];
  for (const m of expected) {
    if (!out.rows.some((r) => r.system === 'meshguard' && r.metric === m)) bad.push({ missing: `meshguard ${m}` });
  }
  // Not a threshold but correctness: a request lost or charged twice fails even a smoke run.
  for (const r of out.rows) if (r.system.startsWith('meshguard') && /^requests (lost|charged twice)|^tokens logged|^tokens served − bucket/.test(r.metric) && r.p50 !== 0) bad.push({ accounting: r.metric, value: r.p50 });
  if (bad.length) {
    progress(`smoke: malformed rows: ${JSON.stringify(bad)}`);
    process.exitCode = 1;
  }
}
if (o.json) process.stdout.write(JSON.stringify(out, null, 2) + '\n');
else process.stdout.write(formatTable(rows) + '\n');
