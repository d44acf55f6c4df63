/**
 * Finding or building the pinned headscale binary. headscale is pure Go
 * (SQLite through modernc, no cgo), so a Go toolchain is all it needs; the
 * result is cached per version under `~/.cache/meshguard`.
 */

import { access, constants, mkdir, mkdtemp, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { homedir, hostname } from "node:os";
import { join } from "node:path";

import { ErrorCode, MeshguardError } from "../errors.js";
import { lastLines, runCommand, sleep, type RunResult } from "./proc.js";

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
  /** Receives progress for the slow first build. */
  onProgress?: (msg: string) => void;
  /** Build from source when the binary is missing (default true). */
  allowBuild?: boolean;
}

/**
 * ensureHeadscale returns the path of a headscale binary, building the pinned
 * release from source on first use. `MESHGUARD_HEADSCALE_BIN` overrides the
 * lookup. Concurrent callers (several test workers, two terminals) build it
 * once: a lock directory serialises the build and the binary appears by
 * rename, so nobody ever runs a half-written file.
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
  const dir = headscaleCacheDir();
  const bin = join(dir, "headscale");
  if (await isExecutable(bin)) return bin;
  if (opts.allowBuild === false) {
    throw new MeshguardError(ErrorCode.CONTROL_UNAVAILABLE, `headscale ${HEADSCALE_VERSION} is not built (looked for ${bin})`, {
      hint: BUILD_HINT,
    });
  }
  return buildOnce(dir, bin, opts.onProgress ?? (() => {}));
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

async function buildOnce(dir: string, bin: string, progress: (msg: string) => void): Promise<string> {
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
        progress(`waiting for another process to finish building headscale ${HEADSCALE_VERSION}...`);
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

function describeFailure(r: RunResult): string {
  if (r.spawnError) {
    return (r.spawnError as NodeJS.ErrnoException).code === "ENOENT"
      ? "the Go toolchain (`go`) is not on PATH"
      : r.spawnError.message;
  }
  if (r.timedOut) return "timed out";
  const tail = lastLines(r.stderr || r.stdout, 6).join("\n");
  return `exit ${r.code ?? r.signal}${tail ? `:\n${tail}` : ""}`;
}

/** headline picks the most telling line of a go command's failure ("go: ..."), shortened from the left. */
function headline(text: string): string {
  const lines = lastLines(text, 20);
  const line = lines.findLast((l) => /^(go: |\S+: go: )/.test(l.trim())) ?? lines.at(-1) ?? "unknown error";
  // The root cause ("403 Forbidden", "network is unreachable") ends the line.
  return line.length > 160 ? `...${line.trim().slice(-157)}` : line.trim();
}

/**
 * build tries `go install` first. It fails where the module proxy refuses
 * `@v/list` (go install looks up deprecations there); the fallback downloads
 * the exact module version and builds it in the module cache, which needs
 * only `@v/<version>` files (and no network at all once they are cached).
 */
async function build(dir: string, bin: string, progress: (msg: string) => void): Promise<void> {
  const tmp = await mkdtemp(join(dir, ".build-"));
  const attempts: Error[] = [];
  const out = join(tmp, "headscale");
  try {
    progress(`building headscale ${HEADSCALE_VERSION} with go install (first run only, ~3 min)...`);
    const inst = await runCommand("go", ["install", "-trimpath", `${HEADSCALE_MODULE}/cmd/headscale@${HEADSCALE_VERSION}`], {
      cwd: tmp,
      env: { ...process.env, GOBIN: tmp },
      timeoutMs: BUILD_TIMEOUT_MS,
    });
    let method = "go install";
    let fallbackReason: string | undefined;
    if (inst.code !== 0 || !(await isExecutable(out))) {
      fallbackReason = describeFailure(inst);
      attempts.push(new Error(`go install: ${fallbackReason}`));
      if (inst.spawnError) throw attempts[0];
      progress(`go install failed (${headline(fallbackReason)}); falling back to go mod download + go build...`);
      const goEnv = { ...process.env, GOTOOLCHAIN: "local" };
      const dl = await runCommand("go", ["mod", "download", "-json", `${HEADSCALE_MODULE}@${HEADSCALE_VERSION}`], {
        cwd: tmp,
        env: goEnv,
        timeoutMs: BUILD_TIMEOUT_MS,
      });
      let modDir: string | undefined;
      try {
        const info = JSON.parse(dl.stdout) as { Dir?: string; Error?: string };
        if (info.Error) attempts.push(new Error(`go mod download: ${info.Error}`));
        modDir = info.Dir;
      } catch {
        /* no JSON: reported below */
      }
      if (dl.code !== 0 || !modDir) {
        if (attempts.length === 1) attempts.push(new Error(`go mod download: ${describeFailure(dl)}`));
        throw attempts.at(-1);
      }
      progress(`building headscale ${HEADSCALE_VERSION} from ${modDir}...`);
      const b = await runCommand("go", ["build", "-trimpath", "-o", out, "./cmd/headscale"], {
        cwd: modDir,
        env: goEnv,
        timeoutMs: BUILD_TIMEOUT_MS,
      });
      if (b.code !== 0 || !(await isExecutable(out))) {
        attempts.push(new Error(`go build: ${describeFailure(b)}`));
        throw attempts.at(-1);
      }
      method = "go mod download + go build";
    }
    await rename(out, bin);
    const goVersion = (await runCommand("go", ["env", "GOVERSION"], { timeoutMs: 10_000 })).stdout.trim();
    // Recorded next to the binary: how it was built and, for the fallback, why.
    await writeFile(
      join(dir, "build-info.json"),
      JSON.stringify({ version: HEADSCALE_VERSION, method, fallbackReason, go: goVersion, builtAt: new Date().toISOString() }, null, 2) + "\n",
    );
    progress(`headscale ${HEADSCALE_VERSION} built (${method}): ${bin}`);
  } catch (err) {
    if (!attempts.includes(err as Error)) attempts.push(err as Error);
    throw new MeshguardError(
      ErrorCode.CONTROL_UNAVAILABLE,
      `could not build headscale ${HEADSCALE_VERSION}: ${attempts.map((a) => headline(a.message)).join("; ")}`,
      { hint: BUILD_HINT, cause: new AggregateError(attempts, "every way of building headscale failed") },
    );
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}
