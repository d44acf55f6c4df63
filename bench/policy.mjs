#!/usr/bin/env node
// bench/policy — what a policy decision costs, side by side in one run:
//
//   meshguard    the compiled evaluator, in-process (dist/policy)
//   cedar-wasm   @cedar-policy/cedar-wasm, in-process, policy set pre-parsed
//   opa          the same rules in Rego: compiled to wasm (in-process) and as a server (HTTP, loopback)
//   openfga      check against tuples equivalent to the allow rules (HTTP, loopback)
//   oathkeeper   the decisions endpoint with equivalent access rules (HTTP, loopback)
//   HTTP floor   a Node server that always says yes, through the same HTTP client
//
// Metrics: decision latency (us) at 10, 100, 1,000 and 10,000 rules for
// meshguard (requests hit rules in the last tenth of the set); policy load
// and compile time at each size; the peers at 100 and 1,000 rules; the
// speed-up over each peer (p50 ratio); guarded vs unguarded fetch (the rows
// of bench/guard.mjs, run as a child: bench/lib/guarded-fetch.mjs). Peers that
// cannot run here are listed as skipped with the reason.
//
//   node bench/policy.mjs [--json] [--smoke] [--n N] [--peer-n N] [--only PART ...]
//
// --only picks parts to run (repeatable): meshguard, peers, floor, fetch.
// `--only meshguard` measures the engine alone in seconds, without starting
// the peers.
//
// Build first (`node test/build.mjs`): it builds dist/ and the peers.
import { benchArgs } from './lib/args.mjs';

import { compileRules, loadPolicy } from '../dist/policy/index.js';
import { measureGuardedFetch } from './lib/guarded-fetch.mjs';
import { startCedar, startHttpFloor, startOathkeeper, startOpaServer, startOpaWasm, startOpenFga } from './lib/policy-peers.mjs';
import { deepRequests, meshguardPolicy, meshguardRequest, ruleSet } from './lib/policy-ruleset.mjs';
import { formatTable, row, toJson } from './lib/stats.mjs';

const { values: o } = benchArgs(import.meta.url, {
  options: {
    json: { type: 'boolean', default: false },
    smoke: { type: 'boolean', default: false },
    n: { type: 'string' },
    'peer-n': { type: 'string' },
    only: { type: 'string', multiple: true },
  },
});
const PARTS = ['meshguard', 'peers', 'floor', 'fetch'];
for (const p of o.only ?? []) if (!PARTS.includes(p)) throw new Error(`--only ${p}: not a part of this bench (${PARTS.join(', ')})`);
const runs = (part) => !o.only || o.only.includes(part);
const SIZES = o.smoke ? [10, 100] : [10, 100, 1000, 10000];
const PEER_SIZES = o.smoke ? [10] : [100, 1000];
const N = Number(o.n ?? (o.smoke ? 2000 : 200_000));
const PEER_N = Number(o['peer-n'] ?? (o.smoke ? 20 : 2000));
const progress = (m) => process.stderr.write(`[bench/policy] ${m}\n`);

const rows = [];
const skipped = [];
const now = () => process.hrtime.bigint();
const us = (a, b) => Number(b - a) / 1000;

/**
 * measureSync times each call of a synchronous decide; every call must allow
 * (the requests are allow hits). The harness must not add to the tail it
 * reports:
 * - the loop allocates nothing. hrtime.bigint() makes a BigInt after reading
 *   the clock, inside the timed window, and a plain Array of 200,000 numbers
 *   is a hash table in V8 (a heap number per sample); garbage made there
 *   brings collector work (scavenges, incremental-marking steps) into the
 *   samples. With performance.now() and a Float64Array, the collector work
 *   the samples see is the engine's own.
 * - the warm-up runs the same timed loop (its samples dropped), so the kept
 *   samples start in optimized timing code, not in a loop still being
 *   compiled.
 */
function measureSync(decide, reqs, n) {
  const warm = new Float64Array(Math.min(n, 10_000));
  for (let done = 0; done < Math.min(n, 50_000); done += warm.length) timeSync(decide, reqs, warm); // JIT, caches
  const samples = new Float64Array(n);
  timeSync(decide, reqs, samples);
  return Array.from(samples);
}

/** timeSync fills out[i] with the time in µs of decide(reqs[i % reqs.length]). */
function timeSync(decide, reqs, out) {
  for (let i = 0; i < out.length; i++) {
    const q = reqs[i % reqs.length];
    const t0 = performance.now();
    const ok = decide(q);
    out[i] = Math.round((performance.now() - t0) * 1e6) / 1e3; // whole ns, as hrtime gave
    if (!ok) throw new Error(`request ${i} was not allowed: the equivalent policy is wrong`);
  }
}

async function measureAsync(decide, reqs, n) {
  for (let i = 0; i < Math.min(n, 50); i++) await decide(reqs[i % reqs.length]);
  const samples = new Array(n);
  for (let i = 0; i < n; i++) {
    const q = reqs[i % reqs.length];
    const t0 = now();
    const ok = await decide(q);
    samples[i] = us(t0, now());
    if (!ok) throw new Error(`request ${i} was not allowed: the equivalent policy is wrong`);
  }
  return samples;
}

const p50 = new Map(); // "system|size" -> p50, for ratios

function add(system, metric, unit, samples) {
  const r = row(system, metric, unit, samples);
  rows.push(r);
  return r;
}

// ---- meshguard: decision latency and compile time at every size ----
for (const size of runs('meshguard') ? SIZES : []) {
  const rules = ruleSet(size);
  const text = meshguardPolicy(rules);
  const loads = [];
  const compiles = [];
  let policy;
  for (let k = 0; k < (o.smoke ? 1 : 5); k++) {
    let t0 = now();
    policy = loadPolicy(text, { runTests: false });
    loads.push(us(t0, now()) / 1000);
    t0 = now();
    compileRules(policy.document.part.rules, { groups: policy.document.groups });
    compiles.push(us(t0, now()) / 1000);
  }
  add('meshguard', `load (parse+validate+compile) @${size} rules`, 'ms', loads);
  add('meshguard', `compile @${size} rules`, 'ms', compiles);
  const reqs = deepRequests(rules).map((q) => ({ ...meshguardRequest(q), q }));
  const r = add('meshguard', `decision @${size} rules`, 'us', measureSync((m) => policy.evaluate(m).effect === 'allow', reqs, N));
  p50.set(`meshguard|${size}`, r.p50);
  progress(`meshguard @${size}: p50 ${r.p50.toFixed(3)} us, p99 ${r.p99.toFixed(3)} us`);
}

// ---- peers, at their sizes ----
const peerStarters = [startCedar, startOpaWasm, startOpaServer, startOpenFga, startOathkeeper];
for (const size of runs('peers') ? PEER_SIZES : []) {
  const rules = ruleSet(size);
  const reqs = deepRequests(rules);
  for (const start of peerStarters) {
    progress(`${start.name.replace(/^start/, '')} @${size} rules: starting`);
    let peer;
    try {
      peer = await start(rules);
    } catch (err) {
      peer = { system: start.name.replace(/^start/, '').toLowerCase(), skipped: err.message };
    }
    if (peer.skipped) {
      skipped.push({ system: peer.system, size, reason: peer.skipped });
      progress(`${peer.system} @${size}: skipped: ${peer.skipped}`);
      continue;
    }
    try {
      const inProcess = !/HTTP/.test(peer.system);
      const n = inProcess ? PEER_N * (size <= 100 ? 5 : 1) : PEER_N;
      const samples = inProcess ? measureSync((q) => peer.decide(q), reqs, n) : await measureAsync((q) => peer.decide(q), reqs, n);
      const r = add(peer.system, `decision @${size} rules`, 'us', samples);
      p50.set(`${peer.system}|${size}`, r.p50);
      progress(`${peer.system} @${size}: p50 ${r.p50.toFixed(1)} us, p99 ${r.p99.toFixed(1)} us`);
    } catch (err) {
      skipped.push({ system: peer.system, size, reason: `failed while measuring: ${err.message}` });
      progress(`${peer.system} @${size}: failed: ${err.message}`);
    } finally {
      await peer.close();
    }
  }
}

// ---- the HTTP floor: what any out-of-process decision pays before the engine runs ----
if (runs('floor')) {
  const floor = await startHttpFloor();
  try {
    const reqs = deepRequests(ruleSet(10));
    add(floor.system, 'round trip', 'us', await measureAsync((q) => floor.decide(q), reqs, PEER_N));
  } finally {
    await floor.close();
  }
}

// ---- ratios: how many times faster meshguard decides than each peer (p50/p50) ----
for (const [key, v] of p50) {
  const [system, size] = key.split('|');
  if (system === 'meshguard') continue;
  const mine = p50.get(`meshguard|${size}`);
  if (mine > 0) add(system, `speed-up of meshguard (p50 ratio) @${size} rules`, 'x', [v / mine]);
}

// ---- guarded vs unguarded fetch (the guard's hook) ----
if (runs('fetch')) {
  progress('guarded vs unguarded fetch (bench/guard.mjs)');
  const g = await measureGuardedFetch({ smoke: o.smoke });
  if (g.skipped) skipped.push({ system: 'fetch (guarded vs unguarded)', size: '-', reason: g.skipped });
  for (const r of g.rows ?? []) rows.push(r); // already summarized, same shape
}

const out = toJson('policy', rows);
if (o.smoke) {
  // Shape check only: every row complete, meshguard at every size. No thresholds.
  const keys = ['system', 'metric', 'unit', 'p50', 'p99', 'mean', 'n'];
  const bad = out.rows.filter((r) => keys.some((k) => r[k] === undefined || (typeof r[k] === 'number' && !Number.isFinite(r[k]))));
  if (runs('meshguard')) for (const size of SIZES) if (!out.rows.some((r) => r.system === 'meshguard' && r.metric === `decision @${size} rules`)) bad.push({ missing: `meshguard decision @${size}` });
  if (runs('peers') && !out.rows.some((r) => r.system.startsWith('cedar-wasm'))) bad.push({ missing: 'cedar-wasm' });
  if (bad.length) {
    process.stderr.write(`[bench/policy] smoke: malformed rows: ${JSON.stringify(bad)}\n`);
    process.exitCode = 1;
  }
}
for (const s of skipped) process.stderr.write(`[bench/policy] skipped: ${s.system} @${s.size}: ${s.reason}\n`);
if (o.json) process.stdout.write(JSON.stringify(out, null, 2) + '\n');
else {
  process.stdout.write(formatTable(rows) + '\n');
  if (skipped.length) process.stdout.write('\nskipped:\n' + skipped.map((s) => `  ${s.system} @${s.size}: ${s.reason}`).join('\n') + '\n');
}
