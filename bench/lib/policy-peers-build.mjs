// The policy engines bench/policy compares against, pinned here (one visible
// place), and built from source into ~/.cache/meshguard/peers/ with the same
// builder as headscale (src/control/gobuild.ts: go install, falling back to
// go mod download + go build where the module proxy refuses @v/list).
import { existsSync, mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
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

/**
 * buildPeer builds one pinned peer unless it is already there. Resolves to
 * { name, bin, built } or { name, error } (the error is also written next to
 * where the binary would be, for the bench to report). Needs dist/ (the
 * builder is the library's).
 */
export async function buildPeer(name, log = () => {}) {
  const bin = peerBinary(name);
  if (existsSync(bin) && statSync(bin).size > 0) return { name, bin, built: false };
  mkdirSync(peersDir(), { recursive: true });
  const { buildGoProgram } = await import('../../dist/control/index.js');
  try {
    await buildGoProgram(PEERS[name], bin, { onProgress: (ev) => log(`${name}: ${ev.message}`), timeoutMs: 30 * 60_000 });
  } catch (err) {
    const error = String(err?.message ?? err);
    writeFileSync(reasonFile(name), error + '\n');
    return { name, error };
  }
  rmSync(reasonFile(name), { force: true });
  return { name, bin, built: true };
}
