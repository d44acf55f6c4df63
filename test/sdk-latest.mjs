#!/usr/bin/env node
// `npm run check:sdk-latest`: the SDK tests against the newest release of
// each agent SDK, not the ones pinned in the lockfile — so that a release
// that changes the internals the guard hooks (an SDK's retry loop, its
// fetch, an MCP transport) is found here before a user finds it. Not part
// of the test command: it needs the npm registry, and its answer changes
// when the SDKs release.
//
//   node test/sdk-latest.mjs                       every SDK at its newest release
//   node test/sdk-latest.mjs openai@4 ai@5         these at the given ranges, the others newest
//   node test/sdk-latest.mjs --keep                keep the temporary copy (its path is printed)
//   node test/sdk-latest.mjs --json                one JSON line: versions and outcome
//
// How: installs the SDKs into a temporary prefix (ordinary `npm install`),
// makes a temporary copy of the repository's sources, tests, examples and
// dist/ whose node_modules links every package of this checkout except the
// SDKs, which link the fresh installs, and runs test/guard/sdk.test.ts and
// test/integration/sdk-examples.test.ts there, in a network namespace.
import { spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const { values: args, positionals } = parseArgs({ allowPositionals: true, options: { keep: { type: "boolean", default: false }, json: { type: "boolean", default: false } } });
const log = (m) => process.stderr.write(`[sdk-latest] ${m}\n`);

/** The SDKs docs/sdks.md lists, and what the tests import of each. */
const SDKS = ["openai", "@anthropic-ai/sdk", "ai", "@ai-sdk/openai", "langchain", "@langchain/openai", "@langchain/core", "@modelcontextprotocol/sdk"];
const TESTS = ["test/guard/sdk.test.ts", "test/integration/sdk-examples.test.ts"];

const wanted = new Map(SDKS.map((p) => [p, "latest"]));
for (const spec of positionals) {
  const at = spec.lastIndexOf("@");
  const name = at > 0 ? spec.slice(0, at) : spec;
  if (!wanted.has(name)) {
    log(`unknown SDK "${name}": one of ${SDKS.join(", ")}`);
    process.exit(2);
  }
  wanted.set(name, at > 0 ? spec.slice(at + 1) : "latest");
}

const pinned = (dir, name) => {
  try {
    return JSON.parse(readFileSync(join(dir, "node_modules", name, "package.json"), "utf8")).version;
  } catch {
    return undefined;
  }
};

function run(cmd, argv, opts = {}) {
  const r = spawnSync(cmd, argv, { stdio: ["ignore", "inherit", "inherit"], ...opts });
  return r.status === 0;
}

// 1. What the tests need besides the SDKs: the addon, dist/, headscale (built before entering the namespace).
log("building what the tests need (addon, dist/, headscale)");
if (!run(process.execPath, [join(root, "test", "build.mjs"), "--quiet", "--skip", "gobench", "--skip", "py-openai", "--skip", "policy-peers"], { cwd: root })) {
  log("the build failed");
  process.exit(1);
}

const tmp = mkdtempSync(join(tmpdir(), "meshguard-sdk-latest-"));
let ok = false;
const versions = {};
try {
  // 2. The SDKs, fresh from the registry.
  const prefix = join(tmp, "sdks");
  mkdirSync(prefix);
  const specs = [...wanted].map(([n, v]) => `${n}@${v}`);
  log(`npm install ${specs.join(" ")}`);
  if (!run("npm", ["install", "--prefix", prefix, "--no-save", "--no-audit", "--no-fund", "--loglevel=error", ...specs], { stdio: ["ignore", process.stderr, "inherit"] })) {
    log("npm install failed");
    process.exit(1);
  }
  for (const n of SDKS) versions[n] = { pinned: pinned(root, n), tested: pinned(prefix, n) };

  // 3. A copy of the repository whose node_modules links this checkout's packages, the SDKs replaced.
  const copy = join(tmp, "repo");
  mkdirSync(copy);
  for (const e of ["src", "test", "examples", "bench", "dist", "docs", "package.json", "tsconfig.json"]) {
    if (existsSync(join(root, e))) cpSync(join(root, e), join(copy, e), { recursive: true });
  }
  symlinkSync(join(root, "build"), join(copy, "build"));
  const nm = join(copy, "node_modules");
  mkdirSync(nm);
  const ours = join(root, "node_modules");
  const replaced = new Set(SDKS);
  for (const e of readdirSync(ours)) {
    if (e.startsWith("@")) {
      mkdirSync(join(nm, e));
      for (const s of readdirSync(join(ours, e))) if (!replaced.has(`${e}/${s}`)) symlinkSync(join(ours, e, s), join(nm, e, s));
    } else if (!replaced.has(e)) symlinkSync(join(ours, e), join(nm, e));
  }
  for (const n of SDKS) {
    if (n.includes("/")) mkdirSync(join(nm, n.split("/")[0]), { recursive: true });
    symlinkSync(join(prefix, "node_modules", n), join(nm, n));
  }
  for (const [n, v] of Object.entries(versions)) log(`${n.padEnd(28)} lockfile ${String(v.pinned).padEnd(10)} tested ${v.tested}`);

  // 4. The SDK tests, in a network namespace, against the copy.
  ok = run(process.execPath, [join(copy, "test", "netns.mjs"), process.execPath, join(copy, "node_modules", "vitest", "vitest.mjs"), "run", "--config", join(copy, "test", "vitest.config.ts"), ...TESTS], {
    cwd: copy,
    // With --json, stdout carries only the JSON line.
    stdio: ["ignore", args.json ? process.stderr : "inherit", "inherit"],
  });
} finally {
  if (args.keep) log(`kept ${tmp}`);
  else rmSync(tmp, { recursive: true, force: true });
}
if (args.json) process.stdout.write(JSON.stringify({ ok, versions }) + "\n");
log(ok ? "the SDK tests pass against these releases" : "the SDK tests FAIL against these releases: see docs/sdks.md (what the guard hooks in each SDK)");
process.exit(ok ? 0 : 1);
