// How the native addon is built, in one place: the test build
// (test/build.mjs) and the packaging script (test/pack.mjs) run the same
// command, so the addon the tests load is byte for byte the one a platform
// package ships (for the host platform).
//
// Reproducible: -trimpath (no file system paths), -buildvcs=false (no git
// state), an empty Go build ID and stripped symbols (-ldflags "-s -w
// -buildid="), GOFLAGS cleared, GOTOOLCHAIN=local (never a downloaded Go),
// and the Go release pinned by go/go.mod's `toolchain` line (checked exactly
// by the packaging script). The C compiler comes from the target (CC).
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

/** addonSources lists what the addon is built from (for up-to-date checks). */
export const ADDON_SOURCE_DIRS = ['core', 'addon'];

/** pinnedGo reads go/go.mod: `toolchain` (the exact release builds use) and `go` (the minimum). */
export function pinnedGo(goDir) {
  const mod = readFileSync(join(goDir, 'go.mod'), 'utf8');
  const min = /^go (\d+\.\d+(?:\.\d+)?)\s*$/m.exec(mod)?.[1];
  const exact = /^toolchain go(\d+\.\d+(?:\.\d+)?)\s*$/m.exec(mod)?.[1];
  return { min, exact: exact ?? min };
}

/** installedGo is the version of the `go` on PATH (without the "go" prefix), or undefined. */
export function installedGo(env = process.env) {
  const r = spawnSync('go', ['env', 'GOVERSION'], { env: { ...env, GOTOOLCHAIN: 'local' }, encoding: 'utf8' });
  if (r.status !== 0) return undefined;
  return r.stdout.trim().replace(/^go/, '');
}

/** omitTags turns go/omit-features.txt (or another such list in go/) into ts_omit_* build tags. */
export function omitTags(goDir, file = 'omit-features.txt') {
  return readFileSync(join(goDir, file), 'utf8')
    .split('\n')
    .map((l) => l.replace(/#.*/, '').trim())
    .filter(Boolean)
    .map((f) => `ts_omit_${f}`);
}

/**
 * addonBuildCommand returns the `go build` argv and environment that build
 * the addon for { goos, goarch, cc } into out. Node-API symbols are resolved
 * by the node process that loads the addon, so the link leaves them
 * undefined (GNU ld and Apple ld say that differently).
 */
export function addonBuildCommand({ root, out, goos, goarch, cc, extraTags = [] }) {
  const goDir = join(root, 'go');
  const headers = join(root, 'node_modules', 'node-api-headers', 'include');
  if (!existsSync(join(headers, 'node_api.h'))) throw new Error(`Node-API headers not found at ${headers}: run npm install first`);
  const tags = omitTags(goDir).concat(extraTags).join(',');
  const ldUndefined = goos === 'darwin' ? '-Wl,-undefined,dynamic_lookup' : '-Wl,--unresolved-symbols=ignore-all';
  const env = {
    ...process.env,
    GOTOOLCHAIN: 'local',
    GOFLAGS: '',
    CGO_ENABLED: '1',
    GOOS: goos,
    GOARCH: goarch,
    CC: cc,
    // No -g: the C side carries no debug info (and so no paths).
    CGO_CFLAGS: `-O2 -I${headers}`,
    CGO_LDFLAGS: ldUndefined,
  };
  const argv = ['build', '-buildmode=c-shared', '-trimpath', '-buildvcs=false', '-ldflags=-s -w -buildid=', '-tags', tags, '-o', out, './addon'];
  return { cmd: 'go', argv, cwd: goDir, env };
}

/** hostCC is the C compiler for a build for this machine: $CC, else the system's. */
export function hostCC() {
  return process.env.CC || (process.platform === 'darwin' ? 'clang' : 'gcc');
}

/** hostGo is GOOS/GOARCH for this machine. */
export function hostGo() {
  const goarch = { x64: 'amd64', arm64: 'arm64' }[process.arch] ?? process.arch;
  return { goos: process.platform, goarch };
}

/** WASM_OMIT_FILES are the feature lists the wasm core is built without: the addon's, and the js-only one. */
export const WASM_OMIT_FILES = ['omit-features.txt', 'omit-features-js.txt'];

/**
 * wasmBuildCommand returns the `go build` that makes the WebAssembly core
 * (GOOS=js GOARCH=wasm, go/wasm) at out, with the addon's feature-omitting
 * tags, the js-only ones (go/omit-features-js.txt), and the same
 * reproducibility flags as the addon. No cgo under js.
 */
export function wasmBuildCommand({ root, out, extraTags = [] }) {
  const goDir = join(root, 'go');
  const env = { ...process.env, GOTOOLCHAIN: 'local', GOFLAGS: '', CGO_ENABLED: '0', GOOS: 'js', GOARCH: 'wasm' };
  const tags = [...WASM_OMIT_FILES.flatMap((f) => omitTags(goDir, f)), ...extraTags];
  const argv = ['build', '-trimpath', '-buildvcs=false', '-ldflags=-s -w -buildid=', '-tags', tags.join(','), '-o', out, './wasm'];
  return { cmd: 'go', argv, cwd: goDir, env };
}

/** WASM_SOURCE_DIRS lists what the wasm core is built from (for up-to-date checks). */
export const WASM_SOURCE_DIRS = ['core', 'wasm'];
