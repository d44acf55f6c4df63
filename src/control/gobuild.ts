/**
 * Building a pinned Go program from source: `go install MODULE/PKG@VERSION`,
 * and where that fails because the module proxy refuses `@v/list` (go
 * install looks up deprecations there), `go mod download -json` of the exact
 * version and `go build` inside the downloaded module — which needs only the
 * `@v/<version>` files, and no network once they are cached. headscale and
 * the policy engines bench/policy compares against are built this way.
 */

import { mkdtemp, rename, rm, stat } from "node:fs/promises";
import { basename, dirname, join } from "node:path";

import { ErrorCode, MeshguardError } from "../errors.js";
import { progressReporter, type ProgressListener } from "../progress.js";
import { lastLines, runCommand, type RunResult } from "./proc.js";

export interface GoProgram {
  /** Module path, e.g. "github.com/juanfont/headscale". */
  module: string;
  /** Pinned version, e.g. "v0.29.2". */
  version: string;
  /** Package inside the module: "." or "./cmd/headscale". */
  pkg: string;
}

export interface GoBuildOptions {
  /** Progress of the build steps (phase "building"). */
  onProgress?: ProgressListener;
  /** Limit for each go command (default 20 minutes). */
  timeoutMs?: number;
}

export interface GoBuildResult {
  method: "go install" | "go mod download + go build";
  /** Why go install was not used, when it was not. */
  fallbackReason?: string;
}

/** GoBuildError carries every failed attempt, oldest first. */
export class GoBuildError extends MeshguardError {
  readonly attempts: Error[];
  constructor(attempts: Error[]) {
    super(ErrorCode.GO_BUILD_FAILED, attempts.map((a) => headline(a.message)).join("; "), {
      hint: "check that Go (see go/go.mod for the version) and network access to the Go module proxy are available",
      cause: new AggregateError(attempts, "every way of building failed"),
    });
    this.name = "GoBuildError";
    this.attempts = attempts;
  }
}

/**
 * buildGoProgram builds `prog` into `out` (written whole by rename, so a
 * reader never sees a partial binary). It throws GoBuildError.
 */
export async function buildGoProgram(prog: GoProgram, out: string, opts: GoBuildOptions = {}): Promise<GoBuildResult> {
  const progress = progressReporter(opts.onProgress);
  const timeoutMs = opts.timeoutMs ?? 20 * 60_000;
  const tmp = await mkdtemp(join(dirname(out), ".build-"));
  const attempts: Error[] = [];
  const pkgPath = prog.pkg === "." ? prog.module : `${prog.module}/${prog.pkg.replace(/^\.\//, "")}`;
  const built = join(tmp, basename(pkgPath));
  const goEnv = { ...process.env, GOTOOLCHAIN: "local" };
  try {
    const inst = await runCommand("go", ["install", "-trimpath", `${pkgPath}@${prog.version}`], { cwd: tmp, env: { ...goEnv, GOBIN: tmp }, timeoutMs });
    if (inst.code === 0 && (await isFile(built))) {
      await rename(built, out);
      return { method: "go install" };
    }
    const fallbackReason = describeFailure(inst);
    attempts.push(new Error(`go install: ${fallbackReason}`));
    if (inst.spawnError) throw new GoBuildError(attempts);
    progress("building", `go install failed (${headline(fallbackReason)}); falling back to go mod download + go build...`);
    const dl = await runCommand("go", ["mod", "download", "-json", `${prog.module}@${prog.version}`], { cwd: tmp, env: goEnv, timeoutMs });
    let modDir: string | undefined;
    try {
      const info = JSON.parse(dl.stdout) as { Dir?: string; Error?: string };
      if (info.Error) attempts.push(new Error(`go mod download: ${info.Error}`));
      modDir = info.Dir;
    } catch {
      // no JSON: reported below
    }
    if (dl.code !== 0 || !modDir) {
      if (attempts.length === 1) attempts.push(new Error(`go mod download: ${describeFailure(dl)}`));
      throw new GoBuildError(attempts);
    }
    progress("building", `building ${basename(pkgPath)} ${prog.version} from ${modDir} (first build takes minutes)...`);
    const b = await runCommand("go", ["build", "-trimpath", "-o", built, prog.pkg], { cwd: modDir, env: { ...goEnv, GOFLAGS: "-mod=mod" }, timeoutMs });
    if (b.code !== 0 || !(await isFile(built))) {
      attempts.push(new Error(`go build: ${describeFailure(b)}`));
      throw new GoBuildError(attempts);
    }
    await rename(built, out);
    return { method: "go mod download + go build", fallbackReason };
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}

function describeFailure(r: RunResult): string {
  if (r.spawnError) {
    return (r.spawnError as NodeJS.ErrnoException).code === "ENOENT" ? "the Go toolchain (`go`) is not on PATH" : r.spawnError.message;
  }
  if (r.timedOut) return "timed out";
  const tail = lastLines(r.stderr || r.stdout, 6).join("\n");
  return `exit ${r.code ?? r.signal}${tail ? `:\n${tail}` : ""}`;
}

/** headline picks the most telling line of a go command's failure ("go: ..."), shortened from the left. */
export function headline(text: string): string {
  const lines = lastLines(text, 20);
  const line = lines.findLast((l) => /^(go: |\S+: go: )/.test(l.trim())) ?? lines.at(-1) ?? "unknown error";
  // The root cause ("403 Forbidden", "network is unreachable") ends the line.
  return line.length > 160 ? `...${line.trim().slice(-157)}` : line.trim();
}
