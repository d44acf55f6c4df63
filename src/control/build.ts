/**
 * Finding or building the pinned headscale binary. headscale is pure Go
 * (SQLite through modernc, no cgo), so a Go toolchain is all it needs; the
 * result is cached per version under `~/.cache/meshguard`.
 */

import { access, constants, mkdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { homedir, hostname } from "node:os";
import { delimiter, join } from "node:path";

import { hostTarget, hostTargetId, platformPackageName, resolvePlatformPackage } from "../backend/platform.js";
import { ErrorCode, MeshguardError } from "../errors.js";
import { progressReporter, type ProgressListener, type ProgressPhase } from "../progress.js";
import { GoBuildError, buildGoProgram, headline } from "./gobuild.js";
import { runCommand, sleep } from "./proc.js";

/** HEADSCALE_VERSION is the pinned headscale release (the CLI and JSON shapes differ after it). */
export const HEADSCALE_VERSION = "v0.29.2";
const HEADSCALE_MODULE = "github.com/juanfont/headscale";

const BUILD_HINT =
  "run `npm run build` (needs the Go module proxy) before entering the network namespace, " +
  `or set MESHGUARD_HEADSCALE_BIN to a headscale ${HEADSCALE_VERSION} binary`;

/** headscaleCacheDir is where the built binary lives: `$MESHGUARD_CACHE_DIR` or `~/.cache/meshguard`, plus the version. */
export function headscaleCacheDir(): string {
  const base = process.env.MESHGUARD_CACHE_DIR || join(homedir(), ".cache", "meshguard");
  return join(base, `headscale-${HEADSCALE_VERSION}`);
}

export interface EnsureHeadscaleOptions {
  /** Progress of the slow first build (phases "waiting", "building", "built"). */
  onProgress?: ProgressListener;
  /** Build from source when the binary is missing (default true). */
  allowBuild?: boolean;
}

/**
 * ensureHeadscale returns the path of a headscale binary. It looks, in
 * order, at `$MESHGUARD_HEADSCALE_BIN` (used alone when set), a `headscale`
 * shipped in this platform's package (`@meshguard/<platform>`), the user
 * cache (`~/.cache/meshguard/headscale-<version>/headscale`), and a
 * `headscale` on the PATH that reports the pinned version (or "dev", a
 * source build, whose version nothing tells); then, when Go is
 * installed, it builds the pinned release from source into the cache. With
 * neither, the error lists where it looked and says exactly how to get one.
 * Concurrent callers (several test workers, two terminals) build it once: a
 * lock directory serialises the build and the binary appears by rename, so
 * nobody ever runs a half-written file.
 */
export async function ensureHeadscale(opts: EnsureHeadscaleOptions = {}): Promise<string> {
  const override = process.env.MESHGUARD_HEADSCALE_BIN;
  if (override) {
    if (await isExecutable(override)) return override;
    throw new MeshguardError(
      ErrorCode.CONTROL_UNAVAILABLE,
      `MESHGUARD_HEADSCALE_BIN is set to ${override}, which is not an executable file`,
      { hint: "point MESHGUARD_HEADSCALE_BIN at a headscale binary, or unset it to use the built one" },
    );
  }
  const looked: string[] = ["$MESHGUARD_HEADSCALE_BIN: not set"];
  const target = hostTarget();
  const pkg = target && resolvePlatformPackage(target.id, import.meta.url);
  if (pkg) {
    const shipped = join(pkg.dir, "headscale");
    if (await isExecutable(shipped)) return shipped;
    looked.push(`${pkg.name}: ships no headscale`);
  } else {
    looked.push(`${platformPackageName(target ?? hostTargetId())}: not installed`);
  }
  const dir = headscaleCacheDir();
  const bin = join(dir, "headscale");
  if (await isExecutable(bin)) return bin;
  looked.push(`${bin}: not there`);
  const onPath = await headscaleOnPath();
  if (onPath.path) return onPath.path;
  looked.push(`PATH: ${onPath.why}`);
  if (opts.allowBuild === false) {
    throw new MeshguardError(ErrorCode.CONTROL_UNAVAILABLE, `headscale ${HEADSCALE_VERSION} is not built (looked at: ${looked.join("; ")})`, {
      hint: BUILD_HINT,
    });
  }
  const go = await runCommand("go", ["env", "GOVERSION"], { timeoutMs: 10_000, env: { ...process.env, GOTOOLCHAIN: "local" } });
  if (go.code !== 0) {
    throw new MeshguardError(
      ErrorCode.CONTROL_UNAVAILABLE,
      `no headscale ${HEADSCALE_VERSION} found, and no Go toolchain to build one (looked at: ${looked.join("; ")}; go: ${go.spawnError ? "not on PATH" : lastLine(go.stderr)})`,
      { hint: getHeadscaleHint(bin) },
    );
  }
  return buildOnce(dir, bin, progressReporter(opts.onProgress));
}

/** getHeadscaleHint says exactly how to get the pinned headscale onto this machine. */
export function getHeadscaleHint(cacheBin: string = join(headscaleCacheDir(), "headscale")): string {
  const goArch = { x64: "amd64", arm64: "arm64" }[process.arch as string] ?? process.arch;
  const asset = `headscale_${HEADSCALE_VERSION.slice(1)}_${process.platform}_${goArch}`;
  return [
    `get headscale ${HEADSCALE_VERSION} in one of these ways:`,
    `    1. install Go (https://go.dev/dl) and run this again: it builds headscale ${HEADSCALE_VERSION} once (~3 min) into ${cacheBin}`,
    `    2. download ${asset} from https://github.com/juanfont/headscale/releases/tag/${HEADSCALE_VERSION}, make it executable, and set MESHGUARD_HEADSCALE_BIN=/path/to/${asset}`,
    `       (or save it as ${cacheBin}, or put it on the PATH as \`headscale\`)`,
    `    3. on another machine with Go: \`npx meshguard dev\` builds it into ~/.cache/meshguard/headscale-${HEADSCALE_VERSION}/headscale; copy that file here`,
  ].join("\n");
}

const lastLine = (s: string) => s.trim().split("\n").pop() ?? "";

/** headscaleOnPath finds a `headscale` on the PATH that reports the pinned version. */
async function headscaleOnPath(): Promise<{ path?: string; why: string }> {
  for (const d of (process.env.PATH ?? "").split(delimiter)) {
    if (!d) continue;
    const p = join(d, "headscale");
    if (!(await isExecutable(p))) continue;
    // A release prints "headscale version v0.29.2" (older ones just "v0.22.3");
    // a build from the module source without VCS data prints "dev": taken
    // as is, since nothing tells its version.
    const r = await runCommand(p, ["version"], { timeoutMs: 10_000 });
    const version = /^(?:headscale version )?(v?\d+\.\d+\.\d+\S*|dev)\s*$/m.exec(r.stdout)?.[1];
    if (version === "dev" || (version !== undefined && version.replace(/^v?/, "v") === HEADSCALE_VERSION)) return { path: p, why: "" };
    return { why: `${p} is headscale ${version ? version.replace(/^v?/, "v") : "of an unknown version"}; meshguard needs ${HEADSCALE_VERSION}` };
  }
  return { why: "no headscale" };
}

async function isExecutable(path: string): Promise<boolean> {
  try {
    await access(path, constants.X_OK);
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** A build takes ~3 min with a warm network; a lock older than this is abandoned. */
const BUILD_TIMEOUT_MS = 20 * 60_000;

type Report = (phase: ProgressPhase, message: string) => void;

async function buildOnce(dir: string, bin: string, progress: Report): Promise<string> {
  await mkdir(dir, { recursive: true });
  const lock = join(dir, ".build.lock");
  const deadline = Date.now() + BUILD_TIMEOUT_MS + 60_000;
  let announcedWait = false;
  for (;;) {
    if (await isExecutable(bin)) return bin;
    try {
      await mkdir(lock); // atomic: exactly one process wins
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      if (await lockIsStale(lock)) {
        // Two waiters may both judge it stale and one may remove the other's
        // fresh lock; the worst outcome is a duplicate build, never a torn
        // binary, since each build renames its own finished file into place.
        await rm(lock, { recursive: true, force: true });
        continue;
      }
      if (Date.now() > deadline) {
        throw new MeshguardError(ErrorCode.CONTROL_UNAVAILABLE, `timed out waiting for another process to build headscale (lock ${lock})`, {
          hint: `remove ${lock} if no build is running`,
        });
      }
      if (!announcedWait) {
        progress("waiting", `waiting for another process to finish building headscale ${HEADSCALE_VERSION}...`);
        announcedWait = true;
      }
      await sleep(500);
      continue;
    }
    try {
      await writeFile(join(lock, "owner.json"), JSON.stringify({ pid: process.pid, host: hostname(), startedAt: Date.now() }));
      if (!(await isExecutable(bin))) await build(dir, bin, progress);
      return bin;
    } finally {
      await rm(lock, { recursive: true, force: true });
    }
  }
}

async function lockIsStale(lock: string): Promise<boolean> {
  try {
    const owner = JSON.parse(await readFile(join(lock, "owner.json"), "utf8")) as { pid: number; host: string; startedAt: number };
    if (Date.now() - owner.startedAt > BUILD_TIMEOUT_MS) return true;
    return owner.host === hostname() && !processAlive(owner.pid);
  } catch {
    // The owner crashed between mkdir and writing owner.json, or is about to write it.
    try {
      return Date.now() - (await stat(lock)).mtimeMs > 30_000;
    } catch {
      return false; // the lock vanished: retry
    }
  }
}

/** build builds the pinned headscale and records how (and, for the fallback, why) next to it. */
async function build(dir: string, bin: string, progress: Report): Promise<void> {
  progress("building", `building headscale ${HEADSCALE_VERSION} with go install (first run only, ~3 min)...`);
  try {
    const r = await buildGoProgram({ module: HEADSCALE_MODULE, version: HEADSCALE_VERSION, pkg: "./cmd/headscale" }, bin, {
      onProgress: (ev) => progress(ev.phase, ev.message),
      timeoutMs: BUILD_TIMEOUT_MS,
    });
    const goVersion = (await runCommand("go", ["env", "GOVERSION"], { timeoutMs: 10_000 })).stdout.trim();
    await writeFile(
      join(dir, "build-info.json"),
      JSON.stringify({ version: HEADSCALE_VERSION, method: r.method, fallbackReason: r.fallbackReason, go: goVersion, builtAt: new Date().toISOString() }, null, 2) + "\n",
    );
    progress("built", `headscale ${HEADSCALE_VERSION} built (${r.method}): ${bin}`);
  } catch (err) {
    const attempts = err instanceof GoBuildError ? err.attempts : [err as Error];
    throw new MeshguardError(
      ErrorCode.CONTROL_UNAVAILABLE,
      `could not build headscale ${HEADSCALE_VERSION}: ${attempts.map((a) => headline(a.message)).join("; ")}`,
      { hint: BUILD_HINT, cause: new AggregateError(attempts, "every way of building headscale failed") },
    );
  }
}
