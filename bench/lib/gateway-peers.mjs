// The gateways bench/gateway runs beside meshguard's, each proxying the
// same simulated provider: Portkey's (npm) and LiteLLM's proxy (PyPI).
//
// They live in ~/.cache/meshguard/bench-peers, installed by
// `node bench/gateway.mjs --setup` (which needs the package registries, so
// it runs outside the benchmark's network namespace). Each start* returns
// { system, origin, headers, pid, close() } or { system, skipped: reason }:
// a peer that cannot run here is reported, never silently dropped.

import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const PEERS_DIR = join(homedir(), '.cache', 'meshguard', 'bench-peers');
const PORTKEY_DIR = join(PEERS_DIR, 'portkey');
const PORTKEY_ENTRY = join(PORTKEY_DIR, 'node_modules', '@portkey-ai', 'gateway', 'build', 'start-server.js');
const LITELLM_DIR = join(PEERS_DIR, 'litellm');
const LITELLM_BIN = join(LITELLM_DIR, 'bin');
const PRELOAD = fileURLToPath(new URL('./portkey-preload.mjs', import.meta.url));

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function portkeyVersion() {
  try {
    return JSON.parse(readFileSync(join(PORTKEY_DIR, 'node_modules', '@portkey-ai', 'gateway', 'package.json'), 'utf8')).version;
  } catch {
    return undefined;
  }
}

function litellmVersion() {
  if (!existsSync(join(LITELLM_BIN, 'python'))) return undefined;
  const r = spawnSync(join(LITELLM_BIN, 'python'), ['-c', 'import importlib.metadata as m; print(m.version("litellm"))'], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

function run(cmd, args, what) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 15 * 60_000 });
  if (r.status !== 0) throw new Error(`${what} failed (${r.error?.message ?? `status ${r.status}`}): ${(r.stderr || r.stdout).trim().split('\n').slice(-5).join(' | ')}`);
}

/**
 * setupPeers installs the pinned peers where they are missing or of another
 * version. Needs the npm registry and PyPI.
 */
export function setupPeers(pins, progress) {
  mkdirSync(PEERS_DIR, { recursive: true });
  if (portkeyVersion() !== pins.portkey) {
    progress(`installing @portkey-ai/gateway@${pins.portkey} into ${PORTKEY_DIR}`);
    run('npm', ['install', '--prefix', PORTKEY_DIR, '--no-audit', '--no-fund', `@portkey-ai/gateway@${pins.portkey}`], 'npm install @portkey-ai/gateway');
  }
  if (litellmVersion() !== pins.litellm) {
    progress(`installing litellm[proxy]==${pins.litellm} into ${LITELLM_DIR} (a few minutes)`);
    if (!existsSync(join(LITELLM_BIN, 'pip'))) run('python3', ['-m', 'venv', LITELLM_DIR], 'python3 -m venv');
    run(join(LITELLM_BIN, 'pip'), ['install', '-q', `litellm[proxy]==${pins.litellm}`], 'pip install litellm[proxy]');
  }
}

function missing(name, have, want) {
  return `${name} ${want} is not set up (found ${have ?? 'nothing'} in ${PEERS_DIR}): run \`node bench/gateway.mjs --setup\` first`;
}

function startProcess(cmd, args, env, cwd) {
  const child = spawn(cmd, args, { cwd, env, stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr.on('data', (c) => (err = (err + c).slice(-4000)));
  child.stderrTail = () => err.trim().split('\n').slice(-5).join(' | ');
  return child;
}

async function waitHttp(url, ms, child, what) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`${what} exited with ${child.exitCode}: ${child.stderrTail()}`);
    try {
      const r = await fetch(url);
      await r.arrayBuffer();
      if (r.status < 500) return;
      last = `HTTP ${r.status}`;
    } catch (err) {
      last = err.cause?.code ?? err.message;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what} did not answer at ${url} within ${ms} ms (${last}): ${child.stderrTail()}`);
}

async function stopProcess(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const done = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), 5000);
  await done;
  clearTimeout(t);
}

/**
 * startPortkey runs Portkey's Node server (the same Node as the bench) with
 * its documented per-request routing: provider openai, the simulator as the
 * custom host, the provider key passed through in Authorization.
 */
export async function startPortkey({ version, simUrl, simKey }) {
  const system = `portkey ${version}`;
  const have = portkeyVersion();
  if (have !== version) return { system, skipped: missing('@portkey-ai/gateway', have, version) };
  const port = await freePort();
  const child = startProcess(process.execPath, ['--import', PRELOAD, PORTKEY_ENTRY, `--port=${port}`, '--headless'], { ...process.env, NODE_ENV: 'production' }, PORTKEY_DIR);
  const origin = `http://127.0.0.1:${port}`;
  try {
    await waitHttp(`${origin}/`, 30_000, child, system);
  } catch (err) {
    await stopProcess(child);
    throw err;
  }
  return {
    system,
    origin,
    pid: child.pid,
    headers: { 'x-portkey-provider': 'openai', 'x-portkey-custom-host': `${simUrl}/v1`, authorization: `Bearer ${simKey}` },
    close: () => stopProcess(child),
  };
}

/**
 * startLitellm runs LiteLLM's proxy (one worker, no database, telemetry and
 * remote price look-ups off) with one model routed to the simulator.
 */
export async function startLitellm({ version, simUrl, simKey, model }) {
  const system = `litellm ${version}`;
  const have = litellmVersion();
  if (have !== version) return { system, skipped: missing('litellm', have, version) };
  const dir = mkdtempSync(join(tmpdir(), 'mg-bench-litellm-'));
  const config = join(dir, 'config.yaml');
  // LiteLLM refuses to start without a master key; clients present it (no database: checked in memory).
  const masterKey = `sk-bench-${randomBytes(16).toString('hex')}`;
  // JSON is YAML: no YAML writer needed.
  writeFileSync(
    config,
    JSON.stringify({
      model_list: [{ model_name: model, litellm_params: { model: `openai/${model}`, api_base: `${simUrl}/v1`, api_key: simKey } }],
      litellm_settings: { telemetry: false, drop_params: false, set_verbose: false },
      general_settings: { master_key: masterKey },
    }),
  );
  const port = await freePort();
  const env = {
    ...process.env,
    LITELLM_LOCAL_MODEL_COST_MAP: 'True',
    LITELLM_TELEMETRY: 'False',
    LITELLM_LOG: 'ERROR',
    DISABLE_ADMIN_UI: 'True',
    HOME: dir,
  };
  delete env.DATABASE_URL;
  const child = startProcess(join(LITELLM_BIN, 'litellm'), ['--config', config, '--host', '127.0.0.1', '--port', String(port), '--num_workers', '1'], env, dir);
  const origin = `http://127.0.0.1:${port}`;
  try {
    await waitHttp(`${origin}/health/liveliness`, 120_000, child, system);
  } catch (err) {
    await stopProcess(child);
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    system,
    origin,
    pid: child.pid,
    headers: { authorization: `Bearer ${masterKey}` },
    close: async () => {
      await stopProcess(child);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
