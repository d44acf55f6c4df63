#!/usr/bin/env node
// The test command (`npm test`): builds what is needed, runs the vitest
// suite and the benchmark smoke runs inside a fresh network namespace
// holding only loopback (when root), prints how long each phase took and
// ends with one line: `N passed, N failed`.
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const node = process.execPath;
const phases = [];
let passed = 0;
let failed = 0;

function phase(name, fn) {
  const t0 = performance.now();
  process.stderr.write(`\n=== ${name}\n`);
  let ok = false;
  try {
    ok = fn() !== false;
  } catch (err) {
    process.stderr.write(`${name} failed: ${err.message}\n`);
  }
  const s = (performance.now() - t0) / 1000;
  phases.push({ name, s, ok });
  process.stderr.write(`=== ${name}: ${ok ? "ok" : "FAILED"} in ${s.toFixed(1)} s\n`);
  return ok;
}

const run = (argv, opts = {}) => spawnSync(argv[0], argv.slice(1), { stdio: "inherit", cwd: root, ...opts }).status === 0;
const inNetns = (argv) => [node, join(root, "test", "netns.mjs"), ...argv];

// Only what the tests need: the benchmarks' peer systems are built by the
// bench commands, and the smoke runs below skip (and name) a peer not built.
const built = phase("build (addon, test addon, TypeScript, headscale)", () => run([node, join(root, "test", "build.mjs"), "--tests"]));
if (!built) failed++;

phase("typecheck", () => {
  const ok = run([node, join(root, "node_modules", "typescript", "bin", "tsc"), "--noEmit", "-p", root]);
  ok ? passed++ : failed++;
  return ok;
});

phase("go vet + go test (core unit tests; no network)", () => {
  const headers = join(root, "node_modules", "node-api-headers", "include");
  const env = { ...process.env, GOTOOLCHAIN: "local", GOFLAGS: "-mod=readonly", CGO_CFLAGS: `-I${headers}`, CGO_LDFLAGS: "-Wl,--unresolved-symbols=ignore-all" };
  const vet = run(["go", "vet", "./..."], { cwd: join(root, "go"), env });
  if (!vet) failed++;
  const r = spawnSync("go", ["test", "-json", "-count=1", "./core/..."], { cwd: join(root, "go"), env, encoding: "utf8", maxBuffer: 64 << 20 });
  let p = 0, f = 0;
  for (const line of r.stdout.split("\n")) {
    if (!line.startsWith("{")) continue;
    const ev = JSON.parse(line);
    if (ev.Test && ev.Action === "pass") p++;
    if (ev.Test && ev.Action === "fail") {
      f++;
      process.stderr.write(`go test: FAIL ${ev.Package} ${ev.Test}\n`);
    }
  }
  if (r.status !== 0 && f === 0) f = 1;
  process.stderr.write(`go test: ${p} passed, ${f} failed\n`);
  passed += p;
  failed += f;
  return vet && f === 0;
});

if (built) {
  // Debian's postgresql, for the PostgreSQL store tests: installed here when
  // missing (root only), because the namespace the tests run in has no
  // network; without it those tests are skipped with the reason.
  phase("PostgreSQL (Debian's postgresql, for the gateway store tests)", () => run([node, join(root, "test", "gateway", "pg-server.ts"), "install"]));
  // Debian's chromium, for the console's browser tests (playwright-core
  // brings no browser): installed here when missing (root only), for the
  // same reason; without it those tests are skipped with the reason.
  phase("Chromium (Debian's chromium, for the gateway console tests)", () => run([node, join(root, "test", "gateway", "chromium.ts"), "install"]));
  // Debian's pgbouncer, the database gateway benchmark's peer: installed here when missing
  // (root only; the smoke run is in a namespace without a network). Without it the smoke
  // reports the gateway rows as skipped, with the reason: this phase never fails the run.
  phase("pgbouncer (Debian's, for the database benchmark's smoke run)", () => {
    run([node, join(root, "bench", "database.mjs"), "--setup"]);
    return true;
  });

  phase("tests (vitest, in a network namespace)", () => {
    const report = join(root, ".cache", "vitest-report.json");
    rmSync(report, { force: true });
    const ok = run(inNetns([node, join(root, "node_modules", "vitest", "vitest.mjs"), "run", "--config", join(root, "test", "vitest.config.ts")]));
    if (existsSync(report)) {
      const r = JSON.parse(readFileSync(report, "utf8"));
      passed += r.numPassedTests;
      // A file that failed to load has no failed test of its own: count it once.
      const brokenFiles = (r.testResults ?? []).filter((t) => t.status === "failed" && !(t.assertionResults ?? []).some((a) => a.status === "failed")).length;
      failed += r.numFailedTests + brokenFiles;
    } else if (!ok) failed++;
    return ok;
  });

  phase("benchmark smoke runs (shape only, no thresholds)", () => {
    let ok = true;
    // all.mjs --smoke builds the bench:all report from two quick runs and checks its shape.
    for (const [bench, ...extra] of [["tailnet.mjs"], ["tailnet.mjs", "--nodes", "3"], ["policy.mjs"], ["guard.mjs"], ["gateway.mjs"], ["mcp-auth.mjs"], ["tokens.mjs"], ["database.mjs"], ["all.mjs"]]) {
      const good = run(inNetns([node, join(root, "bench", bench), ...extra, "--smoke", "--json"]), { stdio: ["ignore", "ignore", "inherit"] });
      process.stderr.write(`bench/${[bench, ...extra].join(" ")} --smoke: ${good ? "ok" : "FAILED"}\n`);
      good ? passed++ : failed++;
      ok &&= good;
    }
    return ok;
  });
}

process.stderr.write("\nphase timings:\n");
for (const p of phases) process.stderr.write(`  ${p.ok ? "ok    " : "FAILED"} ${p.s.toFixed(1).padStart(7)} s  ${p.name}\n`);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
