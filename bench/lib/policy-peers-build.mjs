// The policy engines bench/policy compares against, pinned here (one visible
// place), and how to build them from source into ~/.cache/meshguard/peers/.
//
// `go install MODULE@VERSION` fails where the module proxy refuses `@v/list`
// (go install looks up deprecations there), so the recipe is the one
// src/control/build.ts falls back to for headscale: `go mod download -json
// MODULE@VERSION` for the module's directory, then `go build` inside it.
// (src/control/build.ts is headscale-specific and owned elsewhere; this is
// the same recipe for several modules, kept small.)
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

/** PEERS: name → Go module, pinned version and the package to build. */
export const PEERS = Object.freeze({
  opa: { module: 'github.com/open-policy-agent/opa', version: 'v1.22.2', pkg: '.' },
  openfga: { module: 'github.com/openfga/openfga', version: 'v1.22.1', pkg: './cmd/openfga' },
  oathkeeper: { module: 'github.com/ory/oathkeeper', version: 'v0.40.9', pkg: '.' },
});

/** peersDir is `$MESHGUARD_CACHE_DIR/peers` or `~/.cache/meshguard/peers`. */
export function peersDir() {
  return join(process.env.MESHGUARD_CACHE_DIR || join(homedir(), '.cache', 'meshguard'), 'peers');
}

/** peerBinary is where the pinned build of `name` lives (it may not exist). */
export function peerBinary(name) {
  const p = PEERS[name];
  return join(peersDir(), `${name}-${p.version}`);
}

/** reasonFile records why a peer could not be built, so the bench can say so instead of skipping silently. */
export function reasonFile(name) {
  return `${peerBinary(name)}.failed`;
}

function tail(s, n = 4) {
  return String(s || '').trim().split('\n').slice(-n).join(' | ');
}

/**
 * buildPeer builds one pinned peer unless it is already there. Returns
 * { name, bin } or { name, error } (the error is also written next to where
 * the binary would be, for the bench to report).
 */
export function buildPeer(name, log = () => {}) {
  const { module, version, pkg } = PEERS[name];
  const bin = peerBinary(name);
  if (existsSync(bin) && statSync(bin).size > 0) return { name, bin, built: false };
  mkdirSync(peersDir(), { recursive: true });
  const env = { ...process.env, GOTOOLCHAIN: 'local', GOFLAGS: '-mod=mod' };
  const fail = (error) => {
    writeFileSync(reasonFile(name), error + '\n');
    return { name, error };
  };
  log(`${name} ${version}: go mod download...`);
  const dl = spawnSync('go', ['mod', 'download', '-json', `${module}@${version}`], { env, encoding: 'utf8', timeout: 20 * 60_000, cwd: peersDir() });
  if (dl.error) return fail(`go mod download: ${dl.error.message}`);
  let dir;
  try {
    const info = JSON.parse(dl.stdout);
    if (info.Error) return fail(`go mod download: ${info.Error}`);
    dir = info.Dir;
  } catch {
    return fail(`go mod download: exit ${dl.status}: ${tail(dl.stderr)}`);
  }
  log(`${name} ${version}: go build ${pkg} (first build takes minutes)...`);
  const tmp = `${bin}.tmp-${process.pid}`;
  const b = spawnSync('go', ['build', '-trimpath', '-o', tmp, pkg], { cwd: dir, env, encoding: 'utf8', timeout: 30 * 60_000 });
  if (b.status !== 0 || !existsSync(tmp)) {
    rmSync(tmp, { force: true });
    return fail(`go build: exit ${b.status ?? b.signal}: ${tail(b.stderr)}`);
  }
  renameSync(tmp, bin);
  rmSync(reasonFile(name), { force: true });
  return { name, bin, built: true };
}
