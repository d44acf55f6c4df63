#!/usr/bin/env node
// Packaging, in the pattern of esbuild and napi-rs: the main `meshguard`
// package (JavaScript, types and the wasm core of wasm/) plus one package per platform,
// `@meshguard/<os>-<cpu>[-gnu|-musl]`, each holding the prebuilt native
// addon and declaring `os`, `cpu` and `libc`, so npm installs only the one
// that fits. The main package lists every platform package, at its own
// version, as an optional dependency; they are added to the staged
// package.json here (as `napi prepublish` does) rather than in the repo's,
// because until they are published the repo's own `npm install` would look
// them up on the registry.
//
//   node test/pack.mjs [--target ID|host|all]... [--out DIR] [--pack] [--json]
//                      [--check-reproducible] [--any-go]
//
//   --target      platform(s) to build (default: host); `all` tries the six
//                 and reports the ones this machine cannot build, with why
//   --out         where to lay out the packages (default build/npm):
//                 DIR/meshguard, DIR/linux-x64-gnu, ... and with --pack the
//                 tarballs DIR/*.tgz
//   --pack        run `npm pack` on each laid-out package
//   --check-reproducible
//                 build the host addon a second time from a copy of the
//                 sources at another path and compare the bytes
//   --cold-cache  with --check-reproducible: the second build starts from an
//                 empty Go build cache (minutes: it compiles tailscale.com)
//   --any-go      accept a Go other than the one go/go.mod pins (the result
//                 is then not reproducible; a warning says so)
//
// Builds for a target need its C compiler (CC): see TARGET_BUILD. They run
// the same `go build` as test/build.mjs (test/addon-build.mjs). Needs Node
// >= 22.18 (it imports src/backend/platform.ts as TypeScript).
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { addonBuildCommand, hostCC, hostGo, installedGo, pinnedGo } from './addon-build.mjs';
import { isOptimised } from './wasm-opt.mjs';

if (!process.features.typescript) {
  process.stderr.write(`[pack] Node ${process.version} cannot import TypeScript: run this with Node >= 22.18 (npm scripts use the node@24 from devDependencies: npx node test/pack.mjs)\n`);
  process.exit(2);
}
const { PLATFORMS, hostTargetId, platformPackageName } = await import('../src/backend/platform.ts');

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

/**
 * TARGET_BUILD: how each platform's addon is built. `cc` is the C compiler
 * on the build machine named by `host` (a Debian linux-x64 machine for the
 * Linux targets, macOS with the Xcode command line tools for darwin);
 * `$MESHGUARD_CC_<ID>` (e.g. MESHGUARD_CC_LINUX_ARM64_MUSL) overrides it.
 */
export const TARGET_BUILD = Object.freeze({
  'linux-x64-gnu': { goos: 'linux', goarch: 'amd64', host: 'linux', cc: 'x86_64-linux-gnu-gcc', get: 'Debian: apt-get install gcc' },
  'linux-x64-musl': { goos: 'linux', goarch: 'amd64', host: 'linux-x64', cc: 'musl-gcc', get: 'Debian: apt-get install musl-tools (x64 build machines only)' },
  'linux-arm64-gnu': { goos: 'linux', goarch: 'arm64', host: 'linux', cc: 'aarch64-linux-gnu-gcc', get: 'Debian: apt-get install gcc-aarch64-linux-gnu' },
  'linux-arm64-musl': { goos: 'linux', goarch: 'arm64', host: 'linux', cc: 'aarch64-linux-musl-gcc', get: 'a musl cross toolchain (musl-cross-make), or MESHGUARD_CC_LINUX_ARM64_MUSL="zig cc -target aarch64-linux-musl"' },
  'darwin-x64': { goos: 'darwin', goarch: 'amd64', host: 'darwin', cc: 'clang -arch x86_64', get: 'macOS with the Xcode command line tools (xcode-select --install)' },
  'darwin-arm64': { goos: 'darwin', goarch: 'arm64', host: 'darwin', cc: 'clang -arch arm64', get: 'macOS with the Xcode command line tools (xcode-select --install)' },
});

const log = (m) => process.stderr.write(`[pack] ${m}\n`);
const sha256 = (file) => createHash('sha256').update(readFileSync(file)).digest('hex');

function run(cmd, argv, opts = {}) {
  const r = spawnSync(cmd, argv, { encoding: 'utf8', maxBuffer: 64 << 20, ...opts });
  if (r.status !== 0) throw new Error(`${cmd} ${argv.join(' ')} failed (exit ${r.status}${r.error ? `: ${r.error.message}` : ''}):\n${(r.stderr ?? '').trim().split('\n').slice(-20).join('\n')}`);
  return r.stdout;
}

const onPath = (cmd) => spawnSync('sh', ['-c', `command -v "$1"`, 'sh', cmd], { stdio: 'ignore' }).status === 0;

/** ccFor is the C compiler for a target: the override, the host's own for the host target, else TARGET_BUILD's. */
function ccFor(id) {
  const env = process.env[`MESHGUARD_CC_${id.toUpperCase().replaceAll('-', '_')}`];
  if (env) return env;
  return id === hostTargetId() ? hostCC() : TARGET_BUILD[id].cc;
}

/** cannotBuild says why this machine cannot build target id, or undefined when it can. */
function cannotBuild(id) {
  const b = TARGET_BUILD[id];
  const here = `${process.platform}-${process.arch}`;
  if (b.host === 'darwin' && process.platform !== 'darwin') return `needs a macOS build machine (this one is ${here}); ${b.get}`;
  if (b.host.startsWith('linux') && process.platform !== 'linux') return `needs a Linux build machine (this one is ${here})`;
  if (b.host === 'linux-x64' && process.arch !== 'x64') return `needs a linux-x64 build machine (this one is ${here})`;
  const cc = ccFor(id);
  if (!onPath(cc.split(' ')[0])) return `its C compiler ${cc.split(' ')[0]} is not installed (${b.get})`;
  return undefined;
}

/** checkGo insists on the Go release go/go.mod pins, for reproducible builds. */
function checkGo(anyGo) {
  const { exact } = pinnedGo(join(root, 'go'));
  const have = installedGo();
  if (!have) throw new Error(`Go is not on PATH: the addon build needs go${exact} (the release go/go.mod pins)`);
  if (have !== exact) {
    const msg = `go/go.mod pins go${exact} (its toolchain line), this machine has go${have}`;
    if (!anyGo) throw new Error(`${msg}: install go${exact} for a reproducible build, or pass --any-go to build with go${have} anyway`);
    log(`warning: ${msg}; the addon will not be byte-identical to a go${exact} build`);
  }
  return have;
}

/** buildAddon builds target id's addon into out with the shared command. */
function buildAddon(id, out, buildRoot = root, extraEnv = {}) {
  const b = TARGET_BUILD[id];
  const c = addonBuildCommand({ root: buildRoot, out, goos: b.goos, goarch: b.goarch, cc: ccFor(id) });
  const t0 = performance.now();
  run(c.cmd, c.argv, { cwd: c.cwd, env: { ...c.env, ...extraEnv } });
  rmSync(out.replace(/\.node$/, '.h'), { force: true }); // cgo's header: not needed at run time
  return (performance.now() - t0) / 1000;
}

function mainManifest() {
  return JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
}

/** writePlatformPackage lays out @meshguard/<id> in dir around an already built dir/meshguard.node. */
function writePlatformPackage(target, dir, main, goVersion) {
  const pkg = {
    name: platformPackageName(target),
    version: main.version,
    description: `The ${target.id} native addon of meshguard (Go ${goVersion}, tailscale.com/tsnet core). Installed by meshguard as an optional dependency; not for direct use.`,
    license: main.license,
    type: 'commonjs',
    ...(main.repository ? { repository: main.repository } : {}),
    os: [target.os],
    cpu: [target.cpu],
    ...(target.libc ? { libc: [target.libc] } : {}),
    main: 'meshguard.node',
    files: ['meshguard.node'],
    engines: main.engines,
    preferUnplugged: true,
  };
  writeFileSync(join(dir, 'package.json'), JSON.stringify(pkg, null, 2) + '\n');
  writeFileSync(
    join(dir, 'README.md'),
    `# ${pkg.name}\n\nThe prebuilt native addon of [meshguard](https://www.npmjs.com/package/meshguard) for ${target.id}` +
      `${target.libc ? ` (${target.libc})` : ''}. Do not install it yourself: \`npm install meshguard\` installs the package for your platform.\n`,
  );
  return pkg;
}

/** stageMain copies what the main package publishes (its "files") into dir, with the optional dependencies added. */
function stageMain(dir) {
  const main = mainManifest();
  const listed = JSON.parse(run('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: root }))[0].files.map((f) => f.path);
  if (!listed.some((f) => f.startsWith('dist/'))) throw new Error('dist/ is not built: run `node test/build.mjs --only typescript` first');
  // The wasm core is every platform's fallback (docs/wasm.md): a package without it would fail where no addon loads.
  const wasmMissing = ['wasm/meshguard.wasm', 'wasm/wasm_exec.js', 'wasm/worker.mjs', 'wasm/findfunctab.mjs'].filter((f) => !listed.includes(f));
  if (wasmMissing.length) throw new Error(`the wasm core is not built (${wasmMissing.join(', ')} missing): run \`node test/build.mjs --only wasm\` first`);
  // The package ships the module the tests ran (test/build.mjs's), and only an optimised one.
  if (!isOptimised(readFileSync(join(root, 'wasm', 'meshguard.wasm')))) {
    throw new Error('wasm/meshguard.wasm was built without wasm-opt (binaryen was missing): install binaryen (apt-get install binaryen) and run `node test/build.mjs --only wasm` first');
  }
  rmSync(dir, { recursive: true, force: true });
  for (const f of listed) {
    mkdirSync(dirname(join(dir, f)), { recursive: true });
    cpSync(join(root, f), join(dir, f));
  }
  // The published manifest: no repo-only scripts, build config or dev tools.
  const { scripts: _s, devDependencies: _d, tsup: _t, ...published } = main;
  published.optionalDependencies = Object.fromEntries(PLATFORMS.map((t) => [platformPackageName(t), main.version]));
  writeFileSync(join(dir, 'package.json'), JSON.stringify(published, null, 2) + '\n');
  return listed;
}

function npmPack(dir, dest) {
  const [r] = JSON.parse(run('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', dest], { cwd: dir }));
  const file = join(dest, r.filename);
  return { name: r.name, version: r.version, file, size: statSync(file).size, unpackedSize: r.unpackedSize, files: r.entryCount, sha256: sha256(file) };
}

/** checkReproducible builds the host addon again from a copy of the sources at another path and compares. */
function checkReproducible(id, first, coldCache) {
  const tmp = mkdtempSync(join(tmpdir(), 'meshguard-repro-'));
  try {
    cpSync(join(root, 'go'), join(tmp, 'go'), { recursive: true });
    mkdirSync(join(tmp, 'node_modules'));
    cpSync(join(root, 'node_modules', 'node-api-headers'), join(tmp, 'node_modules', 'node-api-headers'), { recursive: true });
    const second = join(tmp, 'meshguard.node');
    const s = buildAddon(id, second, tmp, coldCache ? { GOCACHE: join(tmp, 'gocache') } : {});
    const [a, b] = [sha256(first), sha256(second)];
    return { identical: a === b, first: a, second: b, secondBuildSeconds: Number(s.toFixed(1)), secondPath: 'a copy of go/ and node-api-headers under ' + tmpdir(), coldCache };
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

async function main() {
  const { values: o } = parseArgs({
    options: {
      target: { type: 'string', multiple: true, default: ['host'] },
      out: { type: 'string', default: join(root, 'build', 'npm') },
      pack: { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
      'check-reproducible': { type: 'boolean', default: false },
      'any-go': { type: 'boolean', default: false },
      'cold-cache': { type: 'boolean', default: false },
    },
  });
  const out = resolve(o.out);
  const all = o.target.includes('all');
  const ids = all ? PLATFORMS.map((t) => t.id) : [...new Set(o.target.map((t) => (t === 'host' ? hostTargetId() : t)))];
  for (const id of ids) {
    if (!TARGET_BUILD[id]) throw new Error(`unknown target ${id}: one of ${PLATFORMS.map((t) => t.id).join(', ')}, host or all`);
  }
  mkdirSync(out, { recursive: true });
  const goVersion = checkGo(o['any-go']);
  const main = mainManifest();
  const report = { version: main.version, go: goVersion, out, platforms: [], skipped: [] };

  for (const id of ids) {
    const why = cannotBuild(id);
    if (why) {
      if (!all) throw new Error(`cannot build ${id} here: ${why}`);
      report.skipped.push({ id, reason: why });
      log(`${id}: skipped: ${why}`);
      continue;
    }
    const target = PLATFORMS.find((t) => t.id === id);
    const dir = join(out, id);
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    log(`${id}: building the addon (GOOS=${TARGET_BUILD[id].goos} GOARCH=${TARGET_BUILD[id].goarch} CC="${ccFor(id)}")...`);
    const seconds = buildAddon(id, join(dir, 'meshguard.node'));
    const pkg = writePlatformPackage(target, dir, main, goVersion);
    const entry = { id, name: pkg.name, dir, addonSha256: sha256(join(dir, 'meshguard.node')), addonBytes: statSync(join(dir, 'meshguard.node')).size, buildSeconds: Number(seconds.toFixed(1)) };
    log(`${id}: ${entry.addonBytes} bytes, sha256 ${entry.addonSha256} (${entry.buildSeconds} s)`);
    if (o['check-reproducible']) {
      if (id !== hostTargetId()) log(`${id}: reproducibility is checked for the host target only`);
      else {
        entry.reproducible = checkReproducible(id, join(dir, 'meshguard.node'), o['cold-cache']);
        log(`${id}: second build from another path${o['cold-cache'] ? ' with an empty Go build cache' : ''}: ${entry.reproducible.identical ? 'identical bytes' : `DIFFERENT (${entry.reproducible.second})`}`);
        if (!entry.reproducible.identical) process.exitCode = 1;
      }
    }
    if (o.pack) entry.tarball = npmPack(dir, out);
    report.platforms.push(entry);
  }

  const mainDir = join(out, 'meshguard');
  const files = stageMain(mainDir);
  report.main = { dir: mainDir, files: files.length };
  log(`meshguard: staged ${files.length} files in ${mainDir} (optionalDependencies: ${PLATFORMS.map((t) => t.id).join(', ')} @ ${main.version})`);
  if (o.pack) report.main.tarball = npmPack(mainDir, out);
  for (const t of [report.main.tarball, ...report.platforms.map((p) => p.tarball)].filter(Boolean)) log(`packed ${t.file} (${t.size} bytes, ${t.files} files)`);
  if (o.json) process.stdout.write(JSON.stringify(report, null, 2) + '\n');
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    await main();
  } catch (err) {
    log(`error: ${err.message}`);
    process.exit(1);
  }
}
