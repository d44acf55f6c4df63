#!/usr/bin/env node
// bench/tokens — what a session-scoped token costs, in one run, beside its peers:
//
// verify (CPU, one realistic token of the issuer's shape, ~700 bytes):
//   node:crypto Ed25519 verify    crypto.verify on prepared bytes and a KeyObject: the floor. It checks
//                                 the very tokens the first verify checks next (split and decoded
//                                 ahead, untimed): Ed25519 verification is variable-time (the
//                                 double scalar multiplication depends on the signature and the
//                                 message's hash), so one fixed signature is one sample of its cost,
//                                 not its median — measured 3-4 % below it here
//   node:crypto verify, one fixed signature   the same signature every time (what this row was
//                                 before; reported for comparison)
//   meshguard first verify        verifySync of a token not seen before: parse, alg/typ, signature,
//                                 claims, then the per-request checks (exp/nbf, aud, revocation,
//                                 cnf, actions for the request's method and path)
//   meshguard cached verify       the same token again: cache hit + the per-request checks
//   jose jwtVerify                jose 6 with a KeyObject, issuer/audience/typ checked
//   @noble/curves verify          ed25519.verify on prepared bytes (the edge-runtime fallback)
//   meshguard first verify (noble) the verifier running on @noble/curves
//   first verify / node:crypto    ratio of block medians (target ≤ 1.1)
//   throughput rows               verifications per second on one core, n = runs
//
// issue (a real issuer and an agent, separate nodes on one local headscale, in this process):
//   issue (in-process)            TokenIssuer.issue: policy decision + mint + sign, no HTTP
//   issue over the tailnet        POST /token from the agent (keep-alive), form → JWT
//   tailnet round trip            GET of an empty answer from the same node, same connection reuse
//   whois of the caller           what the verifier asks once per connection (reported apart)
//   issue throughput              tokens per second over the tailnet, 16 requests in flight
//   issue (in-process, audited)   the same with the issuer's audit trail going to a JSON-lines file
//   HTTP GET over node.httpAgent  node:http over a tailnet dial (keep-alive), without and with a
//                                 tokens client attaching its (cached) token: what the publish costs
//
// Blocks of each pair alternate so drift (JIT, GC, CPU frequency) lands on both.
// Targets (issue 10), reported, not asserted: first verify ≤ 1.1 × node:crypto,
// cached verify ≤ 5 µs p50, issue over the tailnet ≤ 2 ms p50.
//
//   node bench/tokens.mjs [--json] [--smoke] [--n N]
import crypto from 'node:crypto';
import http from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchArgs } from './lib/args.mjs';
import { ed25519 } from '@noble/curves/ed25519.js';
import { importJWK, jwtVerify } from 'jose';
import { LocalControl } from '../dist/control/index.js';
import { MeshNode } from '../dist/index.js';
import { jsonLinesSink, loadPolicy } from '../dist/policy/index.js';
import { createTokenClient, createVerifier, startTokenIssuer } from '../dist/tokens/index.js';
import { formatTable, row, toJson } from './lib/stats.mjs';

const { values: o } = benchArgs(import.meta.url, { options: { json: { type: 'boolean', default: false }, smoke: { type: 'boolean', default: false }, n: { type: 'string' } } });
const n = Number(o.n ?? (o.smoke ? 200 : 5000));
const block = o.smoke ? 50 : 250;
const progress = (m) => process.stderr.write(`[bench/tokens] ${m}\n`);
const us = (t0) => (performance.now() - t0) * 1000;
const median = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];

// ---- verify ---------------------------------------------------------------

const ISS = 'http://tokens';
const { publicKey, privateKey } = crypto.generateKeyPairSync('ed25519');
const jwk = { ...publicKey.export({ format: 'jwk' }), kid: 'k1', use: 'sig', alg: 'EdDSA' };
const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
const sign = (typ, payload) => {
  const input = `${b64({ alg: 'EdDSA', typ, kid: 'k1' })}.${b64(payload)}`;
  return `${input}.${crypto.sign(null, Buffer.from(input), privateKey).toString('base64url')}`;
};
const SUB = 'nodeid:7f3a9c';
const nowS = Math.floor(Date.now() / 1000);
/** A token shaped like the issuer's (same claims and sizes). */
const token = () =>
  sign('at+jwt', {
    iss: ISS, sub: SUB, aud: 'http://billing', iat: nowS, nbf: nowS, exp: nowS + 900,
    jti: crypto.randomBytes(16).toString('base64url'), cnf: { 'meshguard.dev/node': SUB },
    node: 'research-agent', tags: ['tag:research'], owners: ['alice@example.com'],
    authorization_details: [{ type: 'meshguard.dev/http', actions: ['GET'], locations: ['http://billing/v2/transactions/*'] }],
    task: 'invoice-42',
  });
const feed = sign('meshguard-revocations+jwt', { iss: ISS, iat: nowS, seq: 3, entries: [{ seq: 1, jti: 'x' }, { seq: 2, sub: 'other', before: nowS }, { seq: 3, jti: 'y' }] });
// The issuer's JWKS and revocation feed, answered from memory: this part measures the CPU, not a network.
const fetchLocal = async (url) => ({ ok: true, status: 200, text: async () => (url.includes('jwks') ? JSON.stringify({ keys: [jwk] }) : feed) });
const ctx = { method: 'GET', path: '/v2/transactions/42', node: SUB };
// Default cache size (10 000 tokens), as a service would run it.
const vopts = { issuer: ISS, audience: 'http://billing', fetch: fetchLocal, revocations: { pollMs: 60_000, maxStalenessMs: 3_600_000 } };
const verifier = createVerifier(vopts);
const nobleVerifier = createVerifier({ ...vopts, crypto: '@noble/curves' });
// Throughput of first verifies cycles through a pool of tokens: no cache, so every one is a first verify.
const uncached = createVerifier({ ...vopts, cacheSize: 0 });
await Promise.all([verifier.ready, nobleVerifier.ready, uncached.ready]);
if (verifier.crypto !== 'node:crypto') throw new Error(`the verifier selected ${verifier.crypto}; node:crypto was expected on Node`);

const sample = token();
const [h, p, s] = sample.split('.');
const input = Buffer.from(`${h}.${p}`);
const sig = Buffer.from(s, 'base64url');
const rawPub = Buffer.from(jwk.x, 'base64url');
const joseKey = await importJWK(jwk, 'EdDSA');
progress(`token ${sample.length} bytes; n=${n} per system, blocks of ${block}${o.smoke ? ' (smoke)' : ''}`);

// Each first verify needs a token never seen: sign them ahead (not timed).
const fresh = Array.from({ length: n + 500 }, token);
let next = 0;
const samples = { bare: [], fixed: [], first: [], cached: [], jose: [], nobleBare: [], nobleFirst: [] };
/** The signed bytes and signature of a token, for the bare verify of the same token. */
const parts = (t) => {
  const dot = t.lastIndexOf('.');
  return [Buffer.from(t.slice(0, dot)), Buffer.from(t.slice(dot + 1), 'base64url')];
};
const freshParts = fresh.map(parts);
const ratios = [];
// warm-up
for (let i = 0; i < 500; i++) {
  crypto.verify(null, input, publicKey, sig);
  crypto.verify(null, freshParts[next][0], publicKey, freshParts[next][1]);
  verifier.verifySync(fresh[next++], ctx);
  verifier.verifySync(sample, ctx);
  await jwtVerify(sample, joseKey, { issuer: ISS, audience: 'http://billing', typ: 'at+jwt' });
}
for (let done = 0; done < n; done += block) {
  const bare = [];
  const first = [];
  for (let i = 0; i < block; i++) {
    const [data, signature] = freshParts[next + i];
    const t0 = performance.now();
    if (!crypto.verify(null, data, publicKey, signature)) throw new Error('bare verify failed');
    bare.push(us(t0));
  }
  for (let i = 0; i < block; i++) {
    const t0 = performance.now();
    if (!crypto.verify(null, input, publicKey, sig)) throw new Error('bare verify failed');
    samples.fixed.push(us(t0));
  }
  for (let i = 0; i < block; i++) {
    const t = fresh[next++];
    const t0 = performance.now();
    verifier.verifySync(t, ctx);
    first.push(us(t0));
  }
  samples.bare.push(...bare);
  samples.first.push(...first);
  ratios.push(median(first) / median(bare));
  for (let i = 0; i < block; i++) {
    const t0 = performance.now();
    verifier.verifySync(sample, ctx);
    samples.cached.push(us(t0));
  }
  for (let i = 0; i < block; i++) {
    const t0 = performance.now();
    await jwtVerify(sample, joseKey, { issuer: ISS, audience: 'http://billing', typ: 'at+jwt' });
    samples.jose.push(us(t0));
  }
}
// noble is ~20-50× slower: a tenth of the samples.
const nobleN = Math.max(20, Math.floor(n / 10));
const nobleTokens = Array.from({ length: nobleN + 5 }, token);
for (let i = 0; i < 5; i++) ed25519.verify(sig, input, rawPub, { zip215: false }), nobleVerifier.verifySync(nobleTokens[i], ctx);
for (let i = 0; i < nobleN; i++) {
  let t0 = performance.now();
  if (!ed25519.verify(sig, input, rawPub, { zip215: false })) throw new Error('noble verify failed');
  samples.nobleBare.push(us(t0));
  t0 = performance.now();
  nobleVerifier.verifySync(nobleTokens[5 + i], ctx);
  samples.nobleFirst.push(us(t0));
}

/** throughput: verifications per second for `ms`, on fresh tokens (first verify) or one token (cached). */
function throughput(fn, ms) {
  let count = 0;
  const t0 = performance.now();
  while (performance.now() - t0 < ms) {
    for (let i = 0; i < 50; i++) fn();
    count += 50;
  }
  return count / ((performance.now() - t0) / 1000);
}
const runs = o.smoke ? 1 : 5;
const tput = { bare: [], first: [], cached: [] };
const pool = Array.from({ length: o.smoke ? 2000 : 20_000 }, token);
for (let r = 0; r < runs; r++) {
  let k = 0;
  tput.bare.push(throughput(() => crypto.verify(null, input, publicKey, sig), o.smoke ? 100 : 400));
  tput.first.push(throughput(() => uncached.verifySync(pool[k++ % pool.length], ctx), o.smoke ? 100 : 400));
  tput.cached.push(throughput(() => verifier.verifySync(sample, ctx), o.smoke ? 100 : 400));
}
await Promise.all([verifier.close(), nobleVerifier.close(), uncached.close()]);

// ---- issue over the tailnet ----------------------------------------------

progress('issue: headscale, an issuer node and an agent node');
const control = await LocalControl.start({
  policy: { tagOwners: { 'tag:agent': ['bench@'], 'tag:tokens': ['bench@'] }, grants: [{ src: ['tag:agent'], dst: ['tag:tokens'], ip: ['*'] }] },
});
await control.createUser('bench');
const dir = mkdtempSync(join(tmpdir(), 'mg-bench-tokens-'));
const start = async (hostname, tag) =>
  MeshNode.start({ controlUrl: control.url, authKey: await control.createAuthKey({ tags: [tag], ephemeral: true, reusable: false, expiration: '1h' }), hostname, dir: join(dir, hostname), ephemeral: true, timeoutMs: 45_000 });
const [tokensNode, agent] = await Promise.all([start('tokens', 'tag:tokens'), start('agent', 'tag:agent')]);
const issuerPolicy = loadPolicy(
  JSON.stringify({
    version: 4,
    rules: [
      { id: 'agent-billing', src: ['tag:agent'], token: { audience: ['http://billing'], actions: ['http:GET:billing/v2/**'] } },
      { id: 'agent-empty', src: ['tag:agent'], token: { audience: ['http://tokens:81'], actions: [{ methods: ['GET'], locations: ['http://tokens:81/*'] }] } },
    ],
  }),
);
const issuer = await startTokenIssuer({ node: tokensNode, policy: issuerPolicy });
// The same issuer with its audit trail on (a second issuer of the node, on another port, for issue() only).
const auditSink = jsonLinesSink(join(dir, 'audit.jsonl'));
const audited = await startTokenIssuer({ node: tokensNode, policy: issuerPolicy, port: 82, stateDir: join(dir, 'audited'), audit: auditSink });
const empty = http.createServer((_req, res) => res.end());
empty.keepAliveTimeout = 60_000;
await tokensNode.listen(81, empty);
const form = new URLSearchParams({ grant_type: 'client_credentials', audience: 'http://billing', scope: 'http:GET:billing/v2/transactions/*' }).toString();
const issueOnce = async () => {
  const res = await agent.fetch('http://tokens/token', { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: form });
  const body = await res.json();
  if (!body.access_token) throw new Error(`issue failed: ${JSON.stringify(body)}`);
};
const roundTrip = async () => {
  const res = await agent.fetch('http://tokens:81/');
  await res.arrayBuffer();
};
const caller = await tokensNode.whois(agent.ips[0]);
const issueSamples = { inproc: [], audited: [], tailnet: [], rtt: [], whois: [] };
const issueN = Math.max(50, Math.floor(n / 5));
for (let i = 0; i < 50; i++) await issueOnce(), await roundTrip(), issuer.issue(caller, form), audited.issue(caller, form);
for (let done = 0; done < issueN; done += block) {
  for (let i = 0; i < block; i++) {
    const t0 = performance.now();
    await issueOnce();
    issueSamples.tailnet.push(us(t0));
  }
  for (let i = 0; i < block; i++) {
    const t0 = performance.now();
    await roundTrip();
    issueSamples.rtt.push(us(t0));
  }
  for (let i = 0; i < block; i++) {
    const t0 = performance.now();
    if (issuer.issue(caller, form).status !== 200) throw new Error('in-process issue failed');
    issueSamples.inproc.push(us(t0));
  }
  for (let i = 0; i < block; i++) {
    const t0 = performance.now();
    if (audited.issue(caller, form).status !== 200) throw new Error('audited in-process issue failed');
    issueSamples.audited.push(us(t0));
  }
  for (let i = 0; i < Math.min(block, 50); i++) {
    const t0 = performance.now();
    await tokensNode.whois(agent.ips[0]);
    issueSamples.whois.push(us(t0));
  }
}
const issueTput = [];
for (let r = 0; r < runs; r++) {
  const total = o.smoke ? 100 : 1000;
  let started = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (started < total) {
        started++;
        await issueOnce();
      }
    }),
  );
  issueTput.push(total / ((performance.now() - t0) / 1000));
}
// node:http over the tailnet dial: without a tokens client, then with one whose token for the
// service is cached (fetched ahead), in alternating blocks (the client is made and closed per block:
// its subscription is process-wide).
const httpGet = () =>
  new Promise((resolve, reject) => {
    const req = http.get({ host: 'tokens', port: 81, path: '/x', agent: agent.httpAgent }, (res) => {
      res.resume();
      res.on('end', resolve);
    });
    req.on('error', reject);
  });
const dialSamples = { plain: [], token: [] };
for (let i = 0; i < 50; i++) await httpGet();
for (let done = 0; done < issueN; done += block) {
  for (let i = 0; i < block; i++) {
    const t0 = performance.now();
    await httpGet();
    dialSamples.plain.push(us(t0));
  }
  const client = createTokenClient({ node: agent, issuer: 'http://tokens', targets: [{ audience: 'http://tokens:81', actions: [{ methods: ['GET'], locations: ['http://tokens:81/*'] }] }] });
  await client.ready;
  await client.token({ audience: 'http://tokens:81', actions: [{ methods: ['GET'], locations: ['http://tokens:81/*'] }] });
  for (let i = 0; i < block; i++) {
    const t0 = performance.now();
    await httpGet();
    dialSamples.token.push(us(t0));
  }
  await client.close();
}
await issuer.close();
await audited.close();
await auditSink.close();
await new Promise((r) => empty.close(r));
await Promise.all([agent.close(), tokensNode.close()]);
await control.close();
rmSync(dir, { recursive: true, force: true });

const rows = [
  row('node:crypto Ed25519 verify', 'verify', 'us', samples.bare),
  row('node:crypto verify, one fixed signature', 'verify', 'us', samples.fixed),
  row('meshguard first verify', 'verify', 'us', samples.first),
  row('meshguard cached verify', 'verify', 'us', samples.cached),
  row('jose jwtVerify', 'verify', 'us', samples.jose),
  row('@noble/curves verify', 'verify', 'us', samples.nobleBare),
  row('meshguard first verify (noble)', 'verify', 'us', samples.nobleFirst),
  row('meshguard first verify / node:crypto', 'ratio (block medians)', 'x', ratios),
  row('node:crypto Ed25519 verify', 'throughput', 'ops/s', tput.bare),
  row('meshguard first verify', 'throughput', 'ops/s', tput.first),
  row('meshguard cached verify', 'throughput', 'ops/s', tput.cached),
  row('issue (in-process)', 'issue', 'us', issueSamples.inproc),
  row('issue (in-process, audited to a file)', 'issue', 'us', issueSamples.audited),
  row('issue over the tailnet', 'issue', 'us', issueSamples.tailnet),
  row('tailnet round trip (HTTP GET)', 'rtt', 'us', issueSamples.rtt),
  row('whois of the caller', 'whois', 'us', issueSamples.whois),
  row('issue over the tailnet (16 in flight)', 'throughput', 'tokens/s', issueTput),
  row('HTTP GET over node.httpAgent', 'rtt', 'us', dialSamples.plain),
  row('HTTP GET over node.httpAgent, token attached', 'rtt', 'us', dialSamples.token),
];
const out = toJson('tokens', rows);
if (o.smoke) {
  const keys = ['system', 'metric', 'unit', 'p50', 'p99', 'mean', 'n'];
  const bad = out.rows.filter((r) => keys.some((k) => r[k] === undefined || (typeof r[k] === 'number' && !Number.isFinite(r[k]))));
  for (const s of ['meshguard first verify', 'meshguard cached verify', 'jose jwtVerify', 'issue over the tailnet']) if (!out.rows.some((r) => r.system === s)) bad.push({ missing: s });
  if (bad.length) {
    process.stderr.write(`[bench/tokens] smoke: malformed rows: ${JSON.stringify(bad)}\n`);
    process.exitCode = 1;
  }
}
const get = (system, metric) => out.rows.find((r) => r.system === system && r.metric === metric);
progress(`first verify ${get('meshguard first verify', 'verify').p50.toFixed(1)} µs p50 = ${get('meshguard first verify / node:crypto', 'ratio (block medians)').p50.toFixed(3)} × node:crypto (target ≤ 1.1)`);
progress(`cached verify ${get('meshguard cached verify', 'verify').p50.toFixed(2)} µs p50 (target ≤ 5)`);
progress(`issue over the tailnet ${(get('issue over the tailnet', 'issue').p50 / 1000).toFixed(2)} ms p50 (target ≤ 2), tailnet round trip ${(get('tailnet round trip (HTTP GET)', 'rtt').p50 / 1000).toFixed(2)} ms`);
if (o.json) process.stdout.write(JSON.stringify(out, null, 2) + '\n');
else process.stdout.write(formatTable(rows) + '\n');
