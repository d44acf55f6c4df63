// The install test: what `npm install meshguard` gives a person who never
// built it. test/pack.mjs packs the main package and the host's platform
// package; each case installs the tarballs into a fresh project with
// `npm install --offline` (every dependency from the npm cache the project's
// own install filled) and a PATH holding node and npm but no `go`, `gcc` or
// `cc`, then runs what a user runs there.
//
// Why the test project gets a lockfile: npm 11 builds a dependency tree from
// full registry documents, which a lockfile-driven install (the project's
// own) never caches, so an offline install needs the resolved versions
// written down — as a user's lockfile does. The one written here takes
// meshguard's dependencies from the repo's package-lock.json (the versions
// the project tests with), and lists the platform packages as npm records
// esbuild's: each with its os/cpu/libc, installed only where they match.
import { spawn, spawnSync, type SpawnSyncReturns } from "node:child_process";
import { createHash } from "node:crypto";
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HEADSCALE_VERSION, ensureHeadscale } from "../../src/control/index.js";
import { PLATFORMS, hostTarget, platformPackageName } from "../../src/backend/platform.js";

const root = fileURLToPath(new URL("../..", import.meta.url));
const node = process.execPath;

interface Tarball {
  name: string;
  version: string;
  file: string;
  size: number;
}
interface PackReport {
  version: string;
  platforms: { id: string; name: string; dir: string; tarball: Tarball }[];
  main: { dir: string; tarball: Tarball };
}

let tmp: string;
let report: PackReport;
let bareBin: string;
let app: string;

const target = hostTarget();

/** bareEnv is the environment of a user's shell: no meshguard overrides, and PATH = bareBin (node, npm, sh; no go, gcc or cc). */
function bareEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k.startsWith("MESHGUARD_") && k !== "MESHGUARD_NETNS") continue;
    if (k.startsWith("npm_") || k === "NODE_OPTIONS" || k.startsWith("VITEST") || k === "GOROOT" || k === "GOPATH") continue;
    env[k] = v;
  }
  return { ...env, PATH: bareBin, ...extra };
}

function sh(cmd: string, args: string[], opts: { cwd: string; env?: NodeJS.ProcessEnv; timeout?: number }): SpawnSyncReturns<string> {
  return spawnSync(cmd, args, { encoding: "utf8", maxBuffer: 64 << 20, timeout: 120_000, ...opts });
}

/** which finds cmd on the test process's own PATH. */
function which(cmd: string): string | undefined {
  const r = spawnSync("sh", ["-c", 'command -v "$1"', "sh", cmd], { encoding: "utf8" });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

const sri = (file: string) => "sha512-" + createHash("sha512").update(readFileSync(file)).digest("base64");

/**
 * makeApp writes a fresh project that depends on the packed meshguard, with a
 * lockfile (see the top of this file). The platform package for this machine
 * resolves to its tarball; the others to where the registry would serve them
 * (never fetched: their os/cpu/libc do not match).
 */
function makeApp(dir: string): void {
  mkdirSync(dir, { recursive: true });
  const main = report.main.tarball;
  const rel = (f: string) => "file:" + join("..", "pkgs", f.split("/").pop()!);
  const manifest = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as Record<string, Record<string, string>>;
  const lock = JSON.parse(readFileSync(join(root, "package-lock.json"), "utf8")) as { packages: Record<string, Record<string, unknown>> };
  const packages: Record<string, unknown> = {
    "": { name: "install-test-app", version: "1.0.0", dependencies: { meshguard: rel(main.file) } },
    "node_modules/meshguard": {
      version: main.version,
      resolved: rel(main.file),
      integrity: sri(main.file),
      license: manifest.license,
      dependencies: manifest.dependencies,
      optionalDependencies: Object.fromEntries(PLATFORMS.map((t) => [platformPackageName(t), main.version])),
      bin: manifest.bin,
      engines: manifest.engines,
    },
  };
  for (const t of PLATFORMS) {
    const built = report.platforms.find((p) => p.id === t.id);
    packages[`node_modules/${platformPackageName(t)}`] = {
      version: main.version,
      resolved: built ? rel(built.tarball.file) : `https://registry.npmjs.org/${platformPackageName(t)}/-/${t.id}-${main.version}.tgz`,
      ...(built ? { integrity: sri(built.tarball.file) } : {}),
      optional: true,
      os: [t.os],
      cpu: [t.cpu],
      ...(t.libc ? { libc: [t.libc] } : {}),
    };
  }
  for (const [k, v] of Object.entries(lock.packages)) {
    if (k === "" || v.dev || v.devOptional) continue;
    packages[k] = v;
  }
  writeFileSync(join(dir, "package.json"), JSON.stringify({ name: "install-test-app", version: "1.0.0", private: true, type: "module", dependencies: { meshguard: rel(main.file) } }, null, 2));
  writeFileSync(join(dir, "package-lock.json"), JSON.stringify({ name: "install-test-app", version: "1.0.0", lockfileVersion: 3, requires: true, packages }, null, 2));
}

function npmInstall(dir: string, extra: string[] = []): SpawnSyncReturns<string> {
  return sh("npm", ["install", "--offline", "--no-audit", "--no-fund", ...extra], { cwd: dir, env: bareEnv(), timeout: 300_000 });
}

beforeAll(async () => {
  if (!target) return;
  tmp = mkdtempSync(join(tmpdir(), "mg-install-"));
  // The maintainer's side: build and pack (Go and gcc on the PATH).
  const pack = sh(node, [join(root, "test", "pack.mjs"), "--target", "host", "--pack", "--json", "--any-go", "--out", join(tmp, "pkgs")], { cwd: root, timeout: 900_000 });
  expect(pack.status, pack.stderr).toBe(0);
  report = JSON.parse(pack.stdout) as PackReport;

  // The user's side: a PATH with node, npm and a shell, and nothing else.
  bareBin = join(tmp, "bin");
  mkdirSync(bareBin);
  symlinkSync(node, join(bareBin, "node"));
  const npm = which("npm");
  if (!npm) throw new Error("npm is not on the PATH: the install test needs it");
  symlinkSync(realpathSync(npm), join(bareBin, "npm"));
  symlinkSync(realpathSync(which("sh")!), join(bareBin, "sh"));
  await ensureHeadscale({ allowBuild: false }); // built by test/build.mjs into the user cache, where the installed package finds it

  app = join(tmp, "app");
  makeApp(app);
  const r = npmInstall(app);
  expect(r.status, r.stderr + r.stdout).toBe(0);
}, 900_000);

afterAll(() => {
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

describe.skipIf(!target)(`installed from the packed tarballs (${target?.id ?? "unsupported platform"})`, () => {
  it("the install's PATH has node and npm but no go, gcc or cc", () => {
    for (const tool of ["go", "gcc", "cc", "clang"]) expect(sh("sh", ["-c", `command -v ${tool}`], { cwd: app, env: bareEnv() }).status, tool).not.toBe(0);
    expect(sh("node", ["--version"], { cwd: app, env: bareEnv() }).stdout.trim()).toBe(process.version);
  });

  it("the tarballs ship the runtime only: no Go sources, no build outputs in the main package; the addon in the platform package with os, cpu and libc", () => {
    const list = (f: string) => sh("tar", ["-tzf", f], { cwd: tmp }).stdout.split("\n").filter(Boolean);
    const main = list(report.main.tarball.file);
    expect(main).toContain("package/dist/index.js");
    expect(main).toContain("package/dist/cli/main.js");
    expect(main.filter((f) => /^package\/(go|build|src|test|bench)\//.test(f) || f.endsWith(".go") || f.endsWith(".node"))).toEqual([]);
    // The wasm core ships in the main package (every platform's fallback): the module, its worker, the findfunctab the worker restores, and the glue of the Go that built it.
    expect(main.filter((f) => f.startsWith("package/wasm/")).sort()).toEqual(["package/wasm/README.md", "package/wasm/findfunctab.mjs", "package/wasm/meshguard.wasm", "package/wasm/wasm_exec.js", "package/wasm/worker.mjs"]);
    const [plat] = report.platforms;
    expect(plat!.name).toBe(platformPackageName(target!));
    expect(list(plat!.tarball.file).sort()).toEqual(["package/README.md", "package/meshguard.node", "package/package.json"]);

    const installed = (p: string) => JSON.parse(readFileSync(join(app, "node_modules", p, "package.json"), "utf8")) as Record<string, unknown>;
    const mg = installed("meshguard");
    expect(mg.optionalDependencies).toEqual(Object.fromEntries(PLATFORMS.map((t) => [platformPackageName(t), report.version])));
    const pp = installed(platformPackageName(target!));
    expect(pp).toMatchObject({ version: report.version, os: [target!.os], cpu: [target!.cpu], ...(target!.libc ? { libc: [target!.libc] } : {}) });
    // npm installed this platform's package and none of the others.
    for (const t of PLATFORMS) expect(existsSync(join(app, "node_modules", platformPackageName(t))), t.id).toBe(t.id === target!.id);
  });

  it("publint (strict) passes on the main and the platform package's tarballs", () => {
    for (const file of [report.main.tarball.file, ...report.platforms.map((p) => p.tarball.file)]) {
      const r = sh(node, [join(root, "node_modules", "publint", "src", "cli.js"), "run", file, "--strict"], { cwd: tmp });
      expect(r.status, r.stdout + r.stderr).toBe(0);
      expect(r.stdout).toContain("All good!");
    }
  });

  it("@arethetypeswrong/cli passes on the main package's tarball (profile esm-only: the package is ESM only)", () => {
    const r = sh(node, [join(root, "node_modules", "@arethetypeswrong", "cli", "dist", "index.js"), report.main.tarball.file, "--profile", "esm-only", "--format", "json"], { cwd: tmp });
    expect(r.status, r.stdout.slice(0, 4000) + r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { analysis: { entrypoints: Record<string, unknown> }; problems: Record<string, { entrypoint: string; resolutionKind?: string }[]> };
    expect(Object.keys(out.analysis.entrypoints)).toContain("./guard");
    // The JSON lists every problem, the ones the profile ignores too (require() and node10 resolution): none of the others.
    const counted = Object.values(out.problems).flat().filter((p) => p.resolutionKind !== "node10" && p.resolutionKind !== "node16-cjs");
    expect(counted).toEqual([]);
  });

  it("an example joins a local tailnet (real headscale) and makes a guarded call: one allowed, one refused", () => {
    cpSync(join(root, "examples", "tailnet-guard.mjs"), join(app, "agent.mjs"));
    const r = sh("node", ["agent.mjs"], { cwd: app, env: bareEnv(), timeout: 120_000 });
    expect(r.status, r.stderr + r.stdout).toBe(0);
    expect(r.stdout).toMatch(/agent 100\.\d+\.\d+\.\d+ joined the tailnet at http:\/\/127\.0\.0\.1:\d+/);
    expect(r.stdout).toMatch(/GET http:\/\/tools\/search: 200 tools saw GET \/search/);
    expect(r.stdout).toMatch(/DELETE http:\/\/tools\/admin\/users: refused — MESHGUARD_POLICY_DENIED/);
    expect(r.stdout).toMatch(/the tools service saw 1 request\(s\)/);
  });

  it("`npm install --omit=optional`: starting a node says the platform package is missing and how to install it, with every attempt in cause", () => {
    const omit = join(tmp, "app-omit");
    makeApp(omit);
    const r = npmInstall(omit, ["--omit=optional"]);
    expect(r.status, r.stderr).toBe(0);
    expect(existsSync(join(omit, "node_modules", platformPackageName(target!)))).toBe(false);
    // backend "native": no fallback, so the error itself says what is missing and how to install it.
    const err = startError(omit, { MESHGUARD_BACKEND: "native" });
    expect(err.code).toBe("MESHGUARD_BACKEND_UNAVAILABLE");
    expect(err.message).toContain(`the platform package ${platformPackageName(target!)} is not installed`);
    expect(err.message).toContain("--omit=optional");
    expect(err.message).toContain(`npm install ${platformPackageName(target!)}@${report.version}`);
    const cause = err.cause as string[];
    expect(cause[0]).toContain(`platform package ${platformPackageName(target!)}: not installed`);
    expect(cause).toContain("repo checkout build: not a repo checkout (no go/go.mod)");
    // "auto" (the default): the shipped wasm core runs instead (and fails only on the closed control port), and the fallback warning says the same.
    const fb = startError(omit);
    expect(fb.code).not.toBe("MESHGUARD_BACKEND_UNAVAILABLE");
    expect(fb.warning).toMatch(/no native addon loaded, running the WebAssembly core instead/);
    expect(fb.warning).toContain(`npm install ${platformPackageName(target!)}@${report.version}`);
    // And the shipped wasm core is a working node: the guarded example runs there unchanged (the guard judges the agent's calls, not the core's).
    cpSync(join(root, "examples", "tailnet-guard.mjs"), join(omit, "agent.mjs"));
    const onWasm = sh("node", ["agent.mjs"], { cwd: omit, env: bareEnv(), timeout: 120_000 });
    expect(onWasm.status, onWasm.stderr + onWasm.stdout).toBe(0);
    expect(onWasm.stderr).toMatch(/MESHGUARD_BACKEND_FALLBACK/);
    expect(onWasm.stdout).toMatch(/GET http:\/\/tools\/search: 200 tools saw GET \/search/);
    expect(onWasm.stdout).toMatch(/DELETE http:\/\/tools\/admin\/users: refused — MESHGUARD_POLICY_DENIED/);

    // node_modules copied in from another platform: only a foreign platform package is there.
    const other = PLATFORMS.find((t) => t.id !== target!.id)!;
    const foreign = join(omit, "node_modules", platformPackageName(other));
    mkdirSync(dirname(foreign), { recursive: true });
    cpSync(join(app, "node_modules", platformPackageName(target!)), foreign, { recursive: true });
    const pj = JSON.parse(readFileSync(join(foreign, "package.json"), "utf8")) as Record<string, unknown>;
    writeFileSync(join(foreign, "package.json"), JSON.stringify({ ...pj, name: platformPackageName(other), os: [other.os], cpu: [other.cpu], libc: other.libc ? [other.libc] : undefined }));
    const wrong = startError(omit, { MESHGUARD_BACKEND: "native" });
    expect(wrong.message).toContain(`only ${platformPackageName(other)} is installed, but this machine is ${target!.id}`);
    expect(wrong.message).toContain("installed on another platform");
    expect(startError(omit).warning).toContain("installed on another platform");
  });

  it("an explicit MESHGUARD_ADDON that does not exist is used alone, and named", () => {
    const err = startError(app, { MESHGUARD_ADDON: join(tmp, "nope.node") });
    expect(err.cause).toEqual([`$MESHGUARD_ADDON: ${join(tmp, "nope.node")} does not exist`]);
    expect(err.message).toContain("point MESHGUARD_ADDON at a meshguard.node built for");
  });

  it("`meshguard dev` with no headscale anywhere and no Go says exactly how to get one", () => {
    const cache = mkdtempSync(join(tmp, "cache-"));
    const r = sh(join(app, "node_modules", ".bin", "meshguard"), ["dev"], { cwd: app, env: bareEnv({ MESHGUARD_CACHE_DIR: cache }), timeout: 60_000 });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(`no headscale ${HEADSCALE_VERSION} found, and no Go toolchain to build one`);
    expect(r.stderr).toContain(`${platformPackageName(target!)}: ships no headscale`);
    expect(r.stderr).toContain("PATH: no headscale");
    expect(r.stderr).toContain("install Go (https://go.dev/dl)");
    expect(r.stderr).toContain(`https://github.com/juanfont/headscale/releases/tag/${HEADSCALE_VERSION}`);
    expect(r.stderr).toContain("MESHGUARD_HEADSCALE_BIN=/path/to/headscale_");
  });

  it("`meshguard dev` finds a headscale of the pinned version on the PATH, and refuses another version there", async () => {
    const cache = mkdtempSync(join(tmp, "cache-"));
    const bin = mkdtempSync(join(tmp, "hsbin-"));
    symlinkSync(await ensureHeadscale({ allowBuild: false }), join(bin, "headscale"));
    const out = await runDev(app, bareEnv({ MESHGUARD_CACHE_DIR: cache, PATH: `${bareBin}:${bin}`, MESHGUARD_DEV_STATE: join(cache, "dev.json") }));
    expect(out.headscale.binary).toBe(join(bin, "headscale"));
    expect(out.controlUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);

    // A headscale that reports another version is not used (its CLI and JSON differ).
    const other = mkdtempSync(join(tmp, "hsother-"));
    writeFileSync(join(other, "headscale"), "#!/bin/sh\necho v0.22.3\n");
    chmodSync(join(other, "headscale"), 0o755);
    const r = sh(join(app, "node_modules", ".bin", "meshguard"), ["dev"], { cwd: app, env: bareEnv({ MESHGUARD_CACHE_DIR: cache, PATH: `${bareBin}:${other}` }), timeout: 60_000 });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(`PATH: ${join(other, "headscale")} is headscale v0.22.3; meshguard needs ${HEADSCALE_VERSION}`);
  });
});

/** startError starts a MeshNode in the installed project and returns the error, with its cause flattened to messages. */
/**
 * startError starts a node against a closed port and reports how it failed:
 * the error, and the fallback warning when the wasm core ran instead of the
 * addon (the failure then comes from the node, not the loader).
 */
function startError(dir: string, env: Record<string, string> = {}): { code: string; message: string; cause: string[]; warning?: string } {
  const script = `
    import { MeshNode } from "meshguard";
    let warning;
    process.on("warning", (w) => { if (w.code === "MESHGUARD_BACKEND_FALLBACK") warning = w.message; });
    try {
      await MeshNode.start({ controlUrl: "http://127.0.0.1:9", hostname: "x", timeoutMs: 2000, controlSocket: false });
      console.log(JSON.stringify({ started: true }));
    } catch (e) {
      await new Promise((r) => setImmediate(r));
      console.log(JSON.stringify({ code: e.code, message: e.message, warning, cause: e.cause instanceof AggregateError ? e.cause.errors.map((x) => x.message) : String(e.cause) }));
    }
    process.exit(0);`;
  const r = sh("node", ["--input-type=module", "-e", script], { cwd: dir, env: bareEnv(env), timeout: 60_000 });
  expect(r.status, r.stderr).toBe(0);
  return JSON.parse(r.stdout.trim().split("\n").pop()!) as ReturnType<typeof startError>;
}

/** runDev starts `meshguard dev --json`, waits for its JSON, stops it with SIGTERM, and returns the JSON. */
async function runDev(dir: string, env: NodeJS.ProcessEnv): Promise<{ controlUrl: string; headscale: { binary: string } }> {
  const child = spawn(join(dir, "node_modules", ".bin", "meshguard"), ["dev", "--json"], { cwd: dir, env, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  child.stdout.setEncoding("utf8").on("data", (s: string) => (out += s));
  child.stderr.setEncoding("utf8").on("data", (s: string) => (err += s));
  const exited = new Promise<number | null>((r) => child.on("close", (c) => r(c)));
  const deadline = Date.now() + 60_000;
  while (!out.includes("}\n") && child.exitCode === null && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  child.kill("SIGTERM");
  const code = await exited;
  expect(out, err).toContain("controlUrl");
  expect(code, err).toBe(0);
  return JSON.parse(out) as { controlUrl: string; headscale: { binary: string } };
}
