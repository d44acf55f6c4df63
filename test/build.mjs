#!/usr/bin/env node
// Builds everything the tests, demo and benchmarks need, before any of them
// enters a network namespace (inside one, nothing can be downloaded):
//   1. checks the pinned toolchain (Go version from go/go.mod),
//   2. the native addon build/meshguard.node (Go c-shared + Node-API),
//   2b. the WebAssembly core wasm/meshguard.wasm (GOOS=js) and the
//      wasm_exec.js of the same Go,
//   3. the test addon build/meshguard-testhooks.node: the same with the
//      core's test-only methods (build tag meshguard_testhooks), for the
//      tests alone; it reuses the addon's Go build cache, so only the core
//      and the link are redone; and the test wasm core
//      build/wasm-testhooks/ (the same methods, for the wasm panic tests),
//   4. the Go benchmark peer build/tsnetbench,
//   5. the TypeScript library (tsup -> dist/),
//   6. headscale at the pinned release, into the user cache,
//   7. the official `openai` Python package in a virtualenv (py-openai),
//   8. the policy engines bench/policy compares against (policy-peers).
// Steps whose outputs are newer than their inputs are skipped. With --tests
// (how the test command calls it) only what the tests need is built: the
// benchmarks' peer systems (gobench, policy-peers) are built by the bench
// commands, and the bench smoke runs skip a peer that is not built.
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { ADDON_SOURCE_DIRS, WASM_OMIT_FILES, WASM_SOURCE_DIRS, addonBuildCommand, hostCC, hostGo, wasmBuildCommand } from "./addon-build.mjs";
import { copyFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { slim } from "./wasm-slim.mjs";
import { ensureWasmOpt, isOptimised, optimise, wasmOptVersion } from "./wasm-opt.mjs";
import { gzipSync } from "node:zlib";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const { values: args } = parseArgs({ options: { only: { type: "string" }, skip: { type: "string", multiple: true, default: [] }, quiet: { type: "boolean", default: false }, tests: { type: "boolean", default: false }, force: { type: "boolean", default: false } } });
const log = (m) => args.quiet || process.stderr.write(`[build] ${m}\n`);
const timings = [];
/** warnings are repeated at the end of the build (a wasm core built without wasm-opt). */
const warnings = [];
/** BENCH_ONLY phases build the benchmarks' peer systems; no test needs them. */
const BENCH_ONLY = new Set(["gobench", "policy-peers"]);

async function phase(name, fn) {
  if ((args.only && args.only !== name) || args.skip.includes(name)) return;
  if (args.tests && BENCH_ONLY.has(name)) {
    log(`${name}: not built for the tests (a benchmark peer: the bench commands build it)`);
    return;
  }
  const t0 = performance.now();
  const did = await fn();
  const s = ((performance.now() - t0) / 1000).toFixed(1);
  timings.push({ name, seconds: Number(s), skipped: did === false });
  log(`${name}: ${did === false ? "up to date" : "built"} (${s} s)`);
}

function newest(dir, exts) {
  let t = 0;
  if (!existsSync(dir)) return 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) t = Math.max(t, newest(p, exts));
    else if (exts.some((x) => e.name.endsWith(x))) t = Math.max(t, statSync(p).mtimeMs);
  }
  return t;
}
const mtime = (p) => (existsSync(p) ? statSync(p).mtimeMs : 0);

function run(cmd, argv, opts = {}) {
  const r = spawnSync(cmd, argv, { stdio: ["ignore", args.quiet ? "pipe" : "inherit", "inherit"], ...opts });
  if (r.status !== 0) {
    if (r.stdout) process.stderr.write(r.stdout);
    throw new Error(`${cmd} ${argv.join(" ")} failed with exit code ${r.status}${r.error ? `: ${r.error.message}` : ""}`);
  }
}

const goEnv = { ...process.env, GOTOOLCHAIN: "local", CGO_ENABLED: "1" };
const goDir = join(root, "go");

await phase("toolchain", () => {
  const want = /^go (\d+\.\d+(?:\.\d+)?)/m.exec(readFileSync(join(goDir, "go.mod"), "utf8"))?.[1];
  let have;
  try {
    have = /go(\d+\.\d+(?:\.\d+)?)/.exec(execFileSync("go", ["version"], { env: goEnv, encoding: "utf8" }))?.[1];
  } catch {
    throw new Error("Go is not installed or not on PATH: meshguard's core needs Go >= " + want + " (https://go.dev/dl)");
  }
  const cmp = (a, b) => {
    const x = a.split(".").map(Number), y = b.split(".").map(Number);
    for (let i = 0; i < 3; i++) if ((x[i] ?? 0) !== (y[i] ?? 0)) return (x[i] ?? 0) - (y[i] ?? 0);
    return 0;
  };
  if (cmp(have, want) < 0) throw new Error(`go/go.mod needs Go ${want}, found go${have}: install a newer Go (GOTOOLCHAIN=local is set so nothing is downloaded)`);
  const major = Number(process.versions.node.split(".")[0]);
  if (major < 22) log(`warning: running on Node ${process.versions.node}; meshguard supports Node >= 22 (npm scripts use the node@24 from devDependencies)`);
  log(`go${have} (go.mod wants ${want}), node ${process.versions.node}`);
  return false;
});

/** buildAddon builds the Node addon at out unless it is newer than its sources (the same command as test/pack.mjs). */
function buildAddon(out, extraTags, what) {
  const src = Math.max(...ADDON_SOURCE_DIRS.map((d) => newest(join(goDir, d), [".go", ".c", ".h"])), mtime(join(goDir, "go.mod")), mtime(join(goDir, "go.sum")), mtime(join(goDir, "omit-features.txt")));
  if (!args.force && mtime(out) > src) return false;
  mkdirSync(join(root, "build"), { recursive: true });
  log(`building ${what}...`);
  const c = addonBuildCommand({ root, out, ...hostGo(), cc: hostCC(), extraTags });
  run(c.cmd, c.argv, { cwd: c.cwd, env: c.env });
}

await phase("addon", () => buildAddon(join(root, "build", "meshguard.node"), [], "the native addon (first build compiles tailscale.com: ~2 min on 2 cores)"));

// The published addon must not answer test-only methods (panicTest, ...), so
// the tests that need them load this second build instead.
await phase("testaddon", () => buildAddon(join(root, "build", "meshguard-testhooks.node"), ["meshguard_testhooks"], "the test addon (the addon plus test-only core methods)"));

// The WebAssembly core (GOOS=js, go/wasm) into wasm/, with the wasm_exec.js
// of the same Go (the two must match), for the wasm backend and its tests.
/**
 * buildWasm builds the wasm core into dir (meshguard.wasm, with the
 * wasm_exec.js of the same Go beside it, which the two must match) unless it
 * is newer than its sources; extraTags adds build tags (the test build).
 */
function buildWasm(dir, extraTags, what) {
  const out = join(dir, "meshguard.wasm");
  const exec = join(dir, "wasm_exec.js");
  const src = Math.max(...WASM_SOURCE_DIRS.map((d) => newest(join(goDir, d), [".go"])), mtime(join(goDir, "go.mod")), mtime(join(goDir, "go.sum")), ...WASM_OMIT_FILES.map((f) => mtime(join(goDir, f))), ...["test/wasm-slim.mjs", "test/wasm-opt.mjs", "wasm/findfunctab.mjs", "test/addon-build.mjs"].map((f) => mtime(join(root, f))));
  // A module built without wasm-opt is built again once wasm-opt is there.
  if (!args.force && mtime(out) > src && existsSync(exec) && (isOptimised(readFileSync(out)) || wasmOptVersion() === undefined)) return false;
  mkdirSync(dir, { recursive: true });
  log(`building ${what}...`);
  const linked = `${out}.linked`;
  const c = wasmBuildCommand({ root, out: linked, extraTags });
  const t0 = performance.now();
  run(c.cmd, c.argv, { cwd: c.cwd, env: c.env });
  const t1 = performance.now();
  // The Go runtime's findfunctab out of the data (rebuilt at load, checked
  // here byte for byte: test/wasm-slim.mjs); a module it refuses stays as linked.
  const linkedBytes = readFileSync(linked);
  try {
    const s = slim(linkedBytes);
    writeFileSync(out, s.bytes);
    rmSync(linked);
    log(`wasm core: go build ${((t1 - t0) / 1e3).toFixed(1)} s; ${(linkedBytes.length / 1e6).toFixed(1)} MB as linked, findfunctab (${(s.tableBytes / 1e6).toFixed(1)} MB) taken out in ${((performance.now() - t1) / 1e3).toFixed(1)} s`);
  } catch (e) {
    log(`wasm core: the findfunctab stays in (${e.message}); the module is used as linked`);
    renameSync(linked, out);
  }
  // binaryen's wasm-opt over it (test/wasm-opt.mjs), checked to leave the
  // data and the findfunctab section as they were; without wasm-opt the
  // module is used as it is, with a notice saying what to install.
  const unopt = (why) => {
    log(`wasm core: NOT OPTIMISED (${why}); the module is used without wasm-opt, ${(readFileSync(out).length / 1e6).toFixed(1)} MB`);
    warnings.push(`the wasm core in ${dir} is not optimised: ${why}`);
  };
  const noOpt = ensureWasmOpt(log);
  if (noOpt) unopt(noOpt);
  else {
    const t2 = performance.now();
    const before = readFileSync(out).length;
    try {
      optimise(out, out);
      log(`wasm core: wasm-opt ${(before / 1e6).toFixed(1)} MB -> ${(readFileSync(out).length / 1e6).toFixed(1)} MB in ${((performance.now() - t2) / 1e3).toFixed(1)} s`);
    } catch (e) {
      unopt(e.message);
    }
  }
  const goroot = execFileSync("go", ["env", "GOROOT"], { env: goEnv, encoding: "utf8" }).trim();
  // Go >= 1.24 keeps it in lib/wasm; older releases in misc/wasm.
  const from = [join(goroot, "lib", "wasm", "wasm_exec.js"), join(goroot, "misc", "wasm", "wasm_exec.js")].find(existsSync);
  if (!from) throw new Error(`wasm_exec.js not found under ${goroot} (lib/wasm or misc/wasm)`);
  copyFileSync(from, exec);
  const bytes = readFileSync(out);
  log(`wasm core: ${(bytes.length / 1e6).toFixed(1)} MB, ${(gzipSync(bytes, { level: 9 }).length / 1e6).toFixed(1)} MB gzipped (target <= 20 MB)`);
}

// The WebAssembly core (GOOS=js, go/wasm) into wasm/, for the wasm backend and its tests.
await phase("wasm", () => buildWasm(join(root, "wasm"), [], "the wasm core (GOOS=js GOARCH=wasm; first build compiles tailscale.com for js: ~2 min on 2 cores)"));

// The same with the core's test-only methods, for the tests of a panic
// inside the wasm core (test/conformance/wasm-panic.test.ts), into
// build/wasm-testhooks/ beside a copy of the worker that loads it.
await phase("testwasm", () => {
  const dir = join(root, "build", "wasm-testhooks");
  const built = buildWasm(dir, ["meshguard_testhooks"], "the test wasm core (the wasm core plus test-only core methods)");
  for (const f of ["worker.mjs", "findfunctab.mjs"]) copyFileSync(join(root, "wasm", f), join(dir, f));
  return built;
});

await phase("gobench", () => {
  const out = join(root, "build", "tsnetbench");
  const src = Math.max(newest(join(goDir, "cmd"), [".go"]), mtime(join(goDir, "go.mod")));
  if (!args.force && mtime(out) > src) return false;
  run("go", ["build", "-trimpath", "-o", out, "./cmd/tsnetbench"], { cwd: goDir, env: goEnv });
});

await phase("typescript", () => {
  const out = join(root, "dist", "index.js");
  // package.json holds tsup's entry list: a new entry point is a rebuild too.
  // The console's page files (src/gateway/console/ui) are copied into dist/console by tsup's onSuccess.
  if (!args.force && mtime(out) > Math.max(newest(join(root, "src"), [".ts", ".js", ".html", ".css"]), mtime(join(root, "package.json")))) return false;
  run(join(root, "node_modules", ".bin", "tsup"), [], { cwd: root });
});

await phase("headscale", async () => {
  const { ensureHeadscale, headscaleCacheDir } = await import(join(root, "dist", "control", "index.js"));
  if (existsSync(join(headscaleCacheDir(), "headscale")) && !process.env.MESHGUARD_HEADSCALE_BIN) return false;
  await ensureHeadscale({ onProgress: (ev) => log(ev.message) });
});

// The real Tailscale client (tailscaled + tailscale) at the tailscale.com
// version go/go.mod pins, into the user cache, for
// test/integration/tailscale-client.test.ts (test/integration/tailscale-client.mjs).
await phase("tailscale-client", async () => {
  const ts = await import(join(root, "test", "integration", "tailscale-client.mjs"));
  return ts.ensure(log) ? undefined : false;
});

// The official `openai` Python package in a virtual environment, for
// test/connect/python-openai.test.ts: PyPI is out of reach inside the tests'
// network namespace. Not prepared (no python3 venv, PyPI unreachable) does
// not fail the build: the test then says why.
await phase("py-openai", async () => {
  const py = await import(join(root, "test", "connect", "py-openai.mjs"));
  const why = py.venvUnavailable(log);
  if (why) {
    log(`py-openai not prepared (the Python test will skip): ${why}`);
    return false;
  }
  try {
    return py.ensure(log) ? undefined : false;
  } catch (err) {
    log(`py-openai not prepared (the Python test will fail): ${err.message}`);
    return false;
  }
});

// The policy engines bench/policy compares against (OPA, OpenFGA, Ory
// Oathkeeper), built from source at pinned versions. A peer that cannot be
// built does not fail the build: the bench reports it as skipped, with why.
await phase("policy-peers", async () => {
  const { PEERS, buildPeer } = await import(join(root, "bench", "lib", "policy-peers-build.mjs"));
  let built = false;
  for (const name of Object.keys(PEERS)) {
    const r = await buildPeer(name, log);
    if (r.error) log(`policy peer ${name} not built (bench/policy will skip it): ${r.error}`);
    built ||= r.built === true;
  }
  return built ? undefined : false;
});

if (!args.quiet) log(`done: ${timings.map((t) => `${t.name} ${t.seconds}s`).join(", ")}`);
for (const w of warnings) process.stderr.write(`[build] NOTICE: ${w} (the next build optimises it once wasm-opt is installed)\n`);
