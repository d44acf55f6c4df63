// The engines bench/policy runs beside meshguard's evaluator. Each `start*`
// returns { system, decide(q) → Promise<boolean>|boolean, close() } or
// { system, skipped: reason } — a peer that cannot run here is reported,
// never silently dropped. Networked peers listen on 127.0.0.1 free ports and
// are stopped by close().
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, request } from 'undici';

import { PEERS, peerBinary, reasonFile } from './policy-peers-build.mjs';
import { cedarPolicies, cedarRequest, FGA_MODEL, fgaCheck, fgaTuples, oathkeeperRules, regoInput, regoModule } from './policy-ruleset.mjs';

const require = createRequire(import.meta.url);

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function binaryOrSkip(name) {
  const bin = peerBinary(name);
  if (existsSync(bin)) return { bin };
  const why = existsSync(reasonFile(name)) ? readFileSync(reasonFile(name), 'utf8').trim() : 'not built (run `node test/build.mjs --only policy-peers`)';
  return { skipped: `${name} ${PEERS[name].version}: ${why}` };
}

async function waitHttp(url, ms, child, what) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`${what} exited with ${child.exitCode}: ${child.stderrTail?.() ?? ''}`);
    try {
      const r = await request(url);
      await r.body.dump();
      if (r.statusCode < 500) return;
      last = `HTTP ${r.statusCode}`;
    } catch (err) {
      last = err.message;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what} did not answer at ${url} within ${ms} ms (${last})`);
}

function startProcess(bin, args, cwd) {
  const child = spawn(bin, args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr.on('data', (c) => (err = (err + c).slice(-4000)));
  child.stderrTail = () => err.trim().split('\n').slice(-3).join(' | ');
  return child;
}

async function stopProcess(child) {
  if (!child || child.exitCode !== null) return;
  const done = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), 3000);
  await done;
  clearTimeout(t);
}

/** Cedar (cedar-wasm), in-process, with the policy set pre-parsed once. */
export async function startCedar(rules) {
  let cedar;
  try {
    cedar = require('@cedar-policy/cedar-wasm/nodejs');
  } catch (err) {
    return { system: 'cedar-wasm', skipped: `@cedar-policy/cedar-wasm not installed: ${err.message}` };
  }
  const id = `bench-${rules.length}-${Math.random()}`;
  const pre = cedar.preparsePolicySet(id, { staticPolicies: cedarPolicies(rules) });
  if (pre.type !== 'success') return { system: 'cedar-wasm', skipped: `policies did not parse: ${JSON.stringify(pre.errors).slice(0, 300)}` };
  return {
    system: `cedar-wasm ${cedar.getCedarVersion()} (pre-parsed)`,
    decide(q) {
      const a = cedar.statefulIsAuthorized({ ...cedarRequest(q), preparsedPolicySetId: id });
      if (a.type !== 'success') throw new Error(`cedar: ${JSON.stringify(a.errors).slice(0, 300)}`);
      return a.response.decision === 'allow';
    },
    close() {},
  };
}

/** OPA: the Rego module compiled to wasm by `opa build -t wasm`, evaluated in-process by @open-policy-agent/opa-wasm. */
export async function startOpaWasm(rules) {
  const b = binaryOrSkip('opa');
  if (b.skipped) return { system: 'opa (wasm)', skipped: b.skipped };
  let loadPolicy;
  try {
    ({ loadPolicy } = require('@open-policy-agent/opa-wasm'));
  } catch (err) {
    return { system: 'opa (wasm)', skipped: `@open-policy-agent/opa-wasm not installed: ${err.message}` };
  }
  const dir = mkdtempSync(join(tmpdir(), 'mg-opa-'));
  try {
    writeFileSync(join(dir, 'policy.rego'), regoModule(rules));
    const r = spawnSync(b.bin, ['build', '-t', 'wasm', '-e', 'meshguard/allow', '-o', join(dir, 'bundle.tar.gz'), join(dir, 'policy.rego')], { encoding: 'utf8', timeout: 600_000 });
    if (r.status !== 0) return { system: 'opa (wasm)', skipped: `opa build -t wasm failed: ${(r.stderr + r.stdout || r.error?.message || '').trim().slice(0, 300)}` };
    const x = spawnSync('tar', ['-xzf', join(dir, 'bundle.tar.gz'), '-C', dir, '/policy.wasm'], { encoding: 'utf8' });
    if (x.status !== 0) return { system: 'opa (wasm)', skipped: `could not unpack the wasm bundle: ${x.stderr.trim()}` };
    const policy = await loadPolicy(readFileSync(join(dir, 'policy.wasm')));
    return {
      system: `opa ${PEERS.opa.version} (wasm, in-process)`,
      decide(q) {
        const res = policy.evaluate(regoInput(q));
        return res?.[0]?.result === true;
      },
      close() {},
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function httpPeer(system, child, dispatcher, decide, cleanup) {
  return {
    system,
    decide,
    async close() {
      await dispatcher.close();
      await stopProcess(child);
      cleanup?.();
    },
  };
}

/** OPA as a server on loopback: POST /v1/data/meshguard/allow. */
export async function startOpaServer(rules) {
  const b = binaryOrSkip('opa');
  if (b.skipped) return { system: 'opa (server)', skipped: b.skipped };
  const dir = mkdtempSync(join(tmpdir(), 'mg-opa-srv-'));
  writeFileSync(join(dir, 'policy.rego'), regoModule(rules));
  const port = await freePort();
  const child = startProcess(b.bin, ['run', '--server', '--addr', `127.0.0.1:${port}`, '--log-level', 'error', '--skip-version-check', join(dir, 'policy.rego')], dir);
  const base = `http://127.0.0.1:${port}`;
  const cleanup = () => rmSync(dir, { recursive: true, force: true });
  try {
    await waitHttp(`${base}/health`, 120_000, child, 'opa run --server');
  } catch (err) {
    await stopProcess(child);
    cleanup();
    return { system: 'opa (server)', skipped: err.message };
  }
  const dispatcher = new Agent({ connections: 1, pipelining: 1 });
  return httpPeer(
    `opa ${PEERS.opa.version} (server, HTTP loopback)`,
    child,
    dispatcher,
    async (q) => {
      const r = await request(`${base}/v1/data/meshguard/allow`, { method: 'POST', dispatcher, body: JSON.stringify({ input: regoInput(q) }), headers: { 'content-type': 'application/json' } });
      const j = await r.body.json();
      return j.result === true;
    },
    cleanup,
  );
}

/** OpenFGA on loopback (memory datastore): POST /stores/{id}/check. */
export async function startOpenFga(rules) {
  const b = binaryOrSkip('openfga');
  if (b.skipped) return { system: 'openfga', skipped: b.skipped };
  const [http, grpc] = [await freePort(), await freePort()];
  const child = startProcess(
    b.bin,
    ['run', '--http-addr', `127.0.0.1:${http}`, '--grpc-addr', `127.0.0.1:${grpc}`, '--playground-enabled=false', '--metrics-enabled=false', '--datastore-metrics-enabled=false', '--log-level', 'error', '--datastore-engine', 'memory'],
    tmpdir(),
  );
  const base = `http://127.0.0.1:${http}`;
  const dispatcher = new Agent({ connections: 1, pipelining: 1 });
  const call = async (method, path, body) => {
    const r = await request(`${base}${path}`, { method, dispatcher, body: body && JSON.stringify(body), headers: { 'content-type': 'application/json' } });
    const j = await r.body.json();
    if (r.statusCode >= 300) throw new Error(`openfga ${path}: HTTP ${r.statusCode} ${JSON.stringify(j).slice(0, 200)}`);
    return j;
  };
  try {
    await waitHttp(`${base}/healthz`, 120_000, child, 'openfga run');
    const store = await call('POST', '/stores', { name: 'bench' });
    const model = await call('POST', `/stores/${store.id}/authorization-models`, FGA_MODEL);
    const tuples = fgaTuples(rules);
    for (let i = 0; i < tuples.length; i += 100) await call('POST', `/stores/${store.id}/write`, { writes: { tuple_keys: tuples.slice(i, i + 100) }, authorization_model_id: model.authorization_model_id });
    return httpPeer(`openfga ${PEERS.openfga.version} (check, HTTP loopback)`, child, dispatcher, async (q) => {
      const j = await call('POST', `/stores/${store.id}/check`, { ...fgaCheck(q), authorization_model_id: model.authorization_model_id });
      return j.allowed === true;
    });
  } catch (err) {
    await dispatcher.close();
    await stopProcess(child);
    return { system: 'openfga', skipped: err.message };
  }
}

/** Ory Oathkeeper on loopback: GET /decisions/<path> with the original host in X-Forwarded-*. */
export async function startOathkeeper(rules) {
  const b = binaryOrSkip('oathkeeper');
  if (b.skipped) return { system: 'oathkeeper', skipped: b.skipped };
  const dir = mkdtempSync(join(tmpdir(), 'mg-oathkeeper-'));
  const [api, proxy] = [await freePort(), await freePort()];
  writeFileSync(join(dir, 'rules.json'), JSON.stringify(oathkeeperRules(rules)));
  writeFileSync(
    join(dir, 'config.yaml'),
    [
      'serve:',
      `  api: { host: 127.0.0.1, port: ${api} }`,
      `  proxy: { host: 127.0.0.1, port: ${proxy} }`,
      'access_rules:',
      '  matching_strategy: glob',
      `  repositories: ["file://${join(dir, 'rules.json')}"]`,
      'authenticators: { anonymous: { enabled: true, config: { subject: guest } } }',
      'authorizers: { allow: { enabled: true }, deny: { enabled: true } }',
      'mutators: { noop: { enabled: true } }',
      'log: { level: error }',
      '',
    ].join('\n'),
  );
  const child = startProcess(b.bin, ['serve', '--config', join(dir, 'config.yaml')], dir);
  const base = `http://127.0.0.1:${api}`;
  const cleanup = () => rmSync(dir, { recursive: true, force: true });
  const dispatcher = new Agent({ connections: 1, pipelining: 1 });
  const decide = async (q) => {
    const r = await request(`${base}/decisions${q.path}`, { method: q.method, dispatcher, headers: { 'x-forwarded-host': q.host, 'x-forwarded-proto': 'https' } });
    await r.body.dump();
    return r.statusCode === 200;
  };
  try {
    await waitHttp(`${base}/health/alive`, 120_000, child, 'oathkeeper serve');
    // Rules load asynchronously: wait until a known-allowed request is allowed.
    const probe = rules.find((r) => r.effect === 'allow');
    const q = { method: 'GET', host: probe.wildcard ? `api.${probe.host}` : probe.host, path: `${probe.prefix}/x` };
    const until = Date.now() + 60_000;
    while (!(await decide(q))) {
      if (Date.now() > until) throw new Error('oathkeeper never allowed a request its rules allow (rules not loaded?)');
      await new Promise((r) => setTimeout(r, 200));
    }
    return httpPeer(`oathkeeper ${PEERS.oathkeeper.version} (decisions, HTTP loopback)`, child, dispatcher, decide, cleanup);
  } catch (err) {
    await dispatcher.close();
    await stopProcess(child);
    cleanup();
    return { system: 'oathkeeper', skipped: err.message };
  }
}

/** The HTTP floor: a Node HTTP server that always says yes, through the same client as the networked peers. */
export async function startHttpFloor() {
  const { createServer: createHttp } = await import('node:http');
  const server = createHttp((req, res) => {
    req.resume();
    req.on('end', () => res.end('{"result":true}'));
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const base = `http://127.0.0.1:${server.address().port}`;
  const dispatcher = new Agent({ connections: 1, pipelining: 1 });
  return {
    system: 'HTTP round trip floor (Node server, loopback)',
    async decide(q) {
      const r = await request(`${base}/`, { method: 'POST', dispatcher, body: JSON.stringify(regoInput(q)) });
      return (await r.body.json()).result === true;
    },
    async close() {
      await dispatcher.close();
      await new Promise((r) => server.close(r));
    },
  };
}
