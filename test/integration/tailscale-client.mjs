// The real Tailscale client (`tailscaled` and `tailscale`) for
// test/integration/tailscale-client.test.ts, built from the `tailscale.com`
// version go/go.mod pins, into the user cache (next to headscale), reused
// while the pin holds. The Go module proxy is out of reach inside the tests'
// network namespace, so test/build.mjs builds it (phase "tailscale-client")
// before the tests run; the test builds it itself when it runs outside one.
//
// Both commands come from one `go install` (they share most packages, so
// they are compiled once), with -trimpath and GOTOOLCHAIN=local, under nice.
// The result is written to a temporary directory and renamed into place
// whole, so a reader never sees half a build and two builders racing cost
// only a duplicate build.

import { spawnSync } from 'node:child_process';
import { accessSync, constants, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const MODULE = 'tailscale.com';
const COMMANDS = ['tailscaled', 'tailscale'];

/** TAILSCALE_VERSION is the tailscale.com version go/go.mod requires (the one meshguard's core is built with). */
export const TAILSCALE_VERSION = (() => {
  const mod = readFileSync(join(root, 'go', 'go.mod'), 'utf8');
  const v = /^\s*(?:require\s+)?tailscale\.com\s+(v\S+)/m.exec(mod)?.[1];
  if (!v) throw new Error('go/go.mod does not require tailscale.com: cannot tell which tailscaled to build');
  return v;
})();

/** TAILSCALE_DIR holds the built commands: `$MESHGUARD_CACHE_DIR` or `~/.cache/meshguard`, plus the version. */
export const TAILSCALE_DIR = join(process.env.MESHGUARD_CACHE_DIR || join(homedir(), '.cache', 'meshguard'), `tailscale-${TAILSCALE_VERSION}`);
export const TAILSCALED_BIN = join(TAILSCALE_DIR, 'tailscaled');
export const TAILSCALE_BIN = join(TAILSCALE_DIR, 'tailscale');

const executable = (p) => {
  try {
    accessSync(p, constants.X_OK);
    return true;
  } catch {
    return false;
  }
};

// The version stamps Tailscale's own release builds set (build_dist.sh):
// without them the commands call themselves "1.102.5-ERR-BuildInfo" (no VCS
// data in a module build), which is what headscale would see; with them they
// report the release version, as a user's installed client does.
const bare = TAILSCALE_VERSION.replace(/^v/, '');
const LDFLAGS = `-X tailscale.com/version.longStamp=${bare} -X tailscale.com/version.shortStamp=${bare}`;

/** builtWith is the recorded ldflags of the cached build (a build made another way is redone). */
function builtWith() {
  try {
    return JSON.parse(readFileSync(join(TAILSCALE_DIR, 'build-info.json'), 'utf8')).ldflags;
  } catch {
    return undefined;
  }
}

/** ready tells whether both commands are built for the pinned version. */
export const ready = () => executable(TAILSCALED_BIN) && executable(TAILSCALE_BIN) && builtWith() === LDFLAGS;

const tail = (r) => `${r.error?.message ?? (r.signal ? `killed by ${r.signal}` : `exit ${r.status}`)}: ${(r.stderr || r.stdout || '').trim().split('\n').slice(-6).join(' | ')}`;

/**
 * ensure builds both commands unless they are built; returns false when they
 * were. Throws with go's last lines when the build fails (for example when
 * the Go module proxy cannot be reached).
 */
export function ensure(log = () => {}) {
  if (ready()) return false;
  const base = dirname(TAILSCALE_DIR);
  mkdirSync(base, { recursive: true });
  const tmp = mkdtempSync(join(base, `.tailscale-${TAILSCALE_VERSION}.build-`));
  const env = { ...process.env, GOTOOLCHAIN: 'local' };
  // nice keeps the two-core machine usable for whatever else runs; it is in coreutils (and BSD/macOS).
  const nice = spawnSync('nice', ['true']).status === 0;
  const go = (args, opts) => spawnSync(nice ? 'nice' : 'go', nice ? ['-n', '10', 'go', ...args] : args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 30 * 60_000, maxBuffer: 64 << 20, ...opts });
  try {
    log(`building tailscaled and tailscale ${TAILSCALE_VERSION} with go install (first run only, minutes)...`);
    const t0 = performance.now();
    let method = 'go install';
    let fallbackReason;
    const inst = go(['install', '-trimpath', `-ldflags=${LDFLAGS}`, ...COMMANDS.map((c) => `${MODULE}/cmd/${c}@${TAILSCALE_VERSION}`)], { cwd: tmp, env: { ...env, GOBIN: tmp } });
    if (inst.status !== 0 || !COMMANDS.every((c) => existsSync(join(tmp, c)))) {
      if (inst.error?.code === 'ENOENT') throw new Error('the Go toolchain (`go`) is not on PATH: it builds tailscaled for the test with the real Tailscale client');
      // As for headscale (src/control/gobuild.ts): where the proxy refuses the
      // version list go install consults, the exact version still downloads.
      fallbackReason = tail(inst);
      method = 'go mod download + go build';
      log(`go install failed (${fallbackReason}); falling back to go mod download + go build...`);
      const dl = go(['mod', 'download', '-json', `${MODULE}@${TAILSCALE_VERSION}`], { cwd: tmp, env });
      let modDir;
      try {
        modDir = JSON.parse(dl.stdout).Dir;
      } catch {
        // reported below
      }
      if (dl.status !== 0 || !modDir) throw new Error(`could not build tailscaled ${TAILSCALE_VERSION}: go install: ${fallbackReason}; go mod download: ${tail(dl)}`);
      const b = go(['build', '-trimpath', `-ldflags=${LDFLAGS}`, '-o', tmp + '/', ...COMMANDS.map((c) => `./cmd/${c}`)], { cwd: modDir, env: { ...env, GOFLAGS: '-mod=mod' } });
      if (b.status !== 0) throw new Error(`could not build tailscaled ${TAILSCALE_VERSION}: go install: ${fallbackReason}; go build: ${tail(b)}`);
    }
    const seconds = Number(((performance.now() - t0) / 1000).toFixed(1));
    const goVersion = spawnSync('go', ['env', 'GOVERSION'], { encoding: 'utf8', env }).stdout?.trim();
    writeFileSync(join(tmp, 'build-info.json'), JSON.stringify({ version: TAILSCALE_VERSION, commands: COMMANDS, ldflags: LDFLAGS, method, fallbackReason, go: goVersion, seconds, builtAt: new Date().toISOString() }, null, 2) + '\n');
    if (!ready()) {
      // Not finished by another builder meanwhile (else theirs is kept). A
      // directory without both commands is leftover, never a reader's.
      rmSync(TAILSCALE_DIR, { recursive: true, force: true });
      try {
        renameSync(tmp, TAILSCALE_DIR);
      } catch (err) {
        if (!ready()) throw err;
      }
    }
    log(`tailscaled and tailscale ${TAILSCALE_VERSION} built (${method}, ${seconds} s): ${TAILSCALE_DIR}`);
    return true;
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}
