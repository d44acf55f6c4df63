import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { ErrorCode, MeshguardError } from "../errors.js";
import { NativeBackend } from "./native.js";
import { PLATFORMS, hostTarget, hostTargetId, installedPlatformPackages, platformPackageName, resolvePlatformPackage } from "./platform.js";
import type { Backend } from "./protocol.js";

/** BackendKind names a backend: the native addon or the WebAssembly core. */
export type BackendKind = "native" | "wasm";

/** BACKEND_KINDS lists the values of the `backend` option and $MESHGUARD_BACKEND ("auto": native, else wasm). */
export const BACKEND_KINDS = ["auto", "native", "wasm"] as const;

export interface LoadOptions {
  /** Which backend: the start option `backend`; undefined means $MESHGUARD_BACKEND, else "auto". */
  backend?: (typeof BACKEND_KINDS)[number];
  /** Explicit path to meshguard.node. */
  addonPath?: string;
  /** Environment knobs for the Go runtime (process-wide, first load only). */
  knobs: Record<string, string>;
}

/** One load per kind: a native Go runtime loads once per process; the wasm core is one worker shared by every node. */
const loading: { native?: Promise<Backend>; wasm?: Promise<Backend> } = {};

/** packageRoot finds the directory of meshguard's package.json, from src/ or dist/. */
export function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    const pj = join(dir, "package.json");
    if (existsSync(pj)) {
      try {
        if ((JSON.parse(readFileSync(pj, "utf8")) as { name?: string }).name === "meshguard") return dir;
      } catch {
        // keep walking
      }
    }
    dir = dirname(dir);
  }
  throw new MeshguardError(ErrorCode.BACKEND_UNAVAILABLE, "cannot find meshguard's package.json above " + fileURLToPath(import.meta.url));
}

/**
 * loadBackend loads the backend a node runs on. Which one: the `backend`
 * option, else `$MESHGUARD_BACKEND`, else "auto" — the native addon, and
 * the wasm core when no addon loads (with a process warning that says why,
 * code MESHGUARD_BACKEND_FALLBACK). "native" never falls back; "wasm"
 * never tries the addon.
 *
 * The native addon is looked for in order (the napi-rs / esbuild order):
 *   1. the explicit `addonPath` option,
 *   2. `$MESHGUARD_ADDON`,
 *   3. the platform package `@meshguard/<os>-<cpu>[-gnu|-musl]` (an
 *      optional dependency of meshguard: npm installs only the one whose
 *      `os`, `cpu` and `libc` match),
 *   4. the addon built in a repo checkout (build/meshguard.node),
 * then, under "auto", 5. the wasm core (wasm/meshguard.wasm).
 * An explicit addon (1 or 2) is used alone: when it fails, meshguard does
 * not quietly load a different binary. Every failed attempt is kept in the
 * error's `cause` (an AggregateError), and the hint says how to fix the
 * likely reason (a wrong-platform install, `--omit=optional`, an
 * unsupported platform). The Go runtime of the addon can be loaded once per
 * process, so the first successful load is shared by every node, whatever
 * later callers pass; the wasm core is one worker thread shared likewise.
 */
export function loadBackend(opts: LoadOptions): Promise<Backend> {
  const kind = backendChoice(opts);
  if (kind === "wasm") return once("wasm", () => loadWasm(opts.knobs));
  if (kind === "native") return once("native", () => doLoad(opts));
  return once("native", () => doLoad(opts)).catch(async (err: unknown) => {
    if (!(err instanceof MeshguardError) || err.code !== ErrorCode.BACKEND_UNAVAILABLE || opts.addonPath || process.env.MESHGUARD_ADDON) throw err;
    // The message without its hint line (MeshguardError appends it): the hint is passed on separately.
    const why = err.hint ? err.message.slice(0, err.message.lastIndexOf("\n  hint: ")) : err.message;
    let wasm: Backend;
    try {
      wasm = await once("wasm", () => loadWasm(opts.knobs));
    } catch (werr) {
      throw new MeshguardError(ErrorCode.BACKEND_UNAVAILABLE, `${why}\n  wasm: ${(werr as Error).message.replace(/\n\s*hint: .*/s, "")}`, {
        hint: err.hint ?? "",
        cause: new AggregateError([err, werr], "neither the native addon nor the wasm core loaded"),
      });
    }
    if (!fallbackWarned) {
      fallbackWarned = true;
      process.emitWarning(
        `meshguard: no native addon loaded, running the WebAssembly core instead (DERP-relayed only, slower; see docs/wasm.md). Why: ${why.replace(/\n\s*/g, "; ")}. ` +
          `To fix: ${err.hint ?? "install the platform package"}; to choose wasm on purpose and silence this, set backend: "wasm" or MESHGUARD_BACKEND=wasm.`,
        { code: "MESHGUARD_BACKEND_FALLBACK" },
      );
    }
    return wasm;
  });
}

let fallbackWarned = false;

function once(kind: BackendKind, load: () => Promise<Backend>): Promise<Backend> {
  loading[kind] ??= load().catch((err: unknown) => {
    loading[kind] = undefined;
    throw err;
  });
  return loading[kind];
}

/** backendChoice reads the backend option, then $MESHGUARD_BACKEND; a wrong value is an error naming where it came from. */
export function backendChoice(opts: { backend?: string }): (typeof BACKEND_KINDS)[number] {
  const env = process.env.MESHGUARD_BACKEND;
  const [v, from] = opts.backend !== undefined ? [opts.backend, "the backend option"] : env ? [env, "$MESHGUARD_BACKEND"] : ["auto", ""];
  if (!(BACKEND_KINDS as readonly string[]).includes(v)) {
    throw new MeshguardError(ErrorCode.INVALID_OPTIONS, `${from} is ${JSON.stringify(v)}: use one of ${BACKEND_KINDS.join(", ")}`, {
      hint: `"auto" (the default) loads the native addon and falls back to wasm`,
    });
  }
  return v as (typeof BACKEND_KINDS)[number];
}

/** wasmDir is where the wasm core lives: wasm/ of the package (meshguard.wasm, wasm_exec.js, worker.mjs). */
export function wasmDir(): string {
  return join(packageRoot(), "wasm");
}

async function loadWasm(knobs: Record<string, string>): Promise<Backend> {
  const dir = wasmDir();
  for (const f of ["meshguard.wasm", "wasm_exec.js", "worker.mjs", "findfunctab.mjs"]) {
    if (!existsSync(join(dir, f))) {
      // A checkout builds it; the published package ships it (package.json "files"), so there it was removed.
      const checkout = existsSync(join(packageRoot(), "go", "go.mod"));
      throw new MeshguardError(ErrorCode.BACKEND_UNAVAILABLE, `the wasm core is not built: ${join(dir, f)} does not exist`, {
        hint: checkout
          ? "in this checkout, `npm run build` builds it (needs Go); or use the native addon (backend: \"native\")"
          : "the meshguard package ships the wasm core in its wasm/ folder, and this copy lacks it (a bundler or a file-tracing step of a serverless deploy left it out): " +
            "include node_modules/meshguard/wasm/ in the deployment, or use the native addon (backend: \"native\"), from the platform package for this machine",
      });
    }
  }
  // Loaded only when asked for: a node on the native addon never reads the wasm module.
  const { WasmBackend } = await import("./wasm.js");
  return WasmBackend.load(dir, knobs);
}

/** BackendAttempt is one place loadBackend looks for a backend, in order. */
export interface BackendAttempt {
  /** Where it comes from: "option addonPath", "$MESHGUARD_ADDON", "platform package @meshguard/linux-x64-gnu", "repo checkout build", "wasm". */
  from: string;
  /** The addon file to load, when there is one to try. */
  path?: string;
  /** Why there is nothing to try here (not installed, version mismatch, not built). */
  skip?: string;
}

/**
 * backendAttempts lists where loadBackend will look, in order, with the
 * places that cannot work marked by why. Exported for `meshguard doctor`
 * style diagnostics and the packaging tests.
 */
export function backendAttempts(opts: { addonPath?: string } = {}): BackendAttempt[] {
  if (opts.addonPath) return [fileAttempt("option addonPath", opts.addonPath)];
  const env = process.env.MESHGUARD_ADDON;
  if (env) return [fileAttempt("$MESHGUARD_ADDON", env)];

  const attempts: BackendAttempt[] = [];
  const target = hostTarget();
  const id = target?.id ?? hostTargetId();
  const from = `platform package ${platformPackageName(id)}`;
  if (!target) {
    attempts.push({ from, skip: `there is no prebuilt addon for ${id} (prebuilt: ${PLATFORMS.map((t) => t.id).join(", ")})` });
  } else {
    const pkg = resolvePlatformPackage(target.id, import.meta.url);
    const own = ownVersion();
    if (!pkg) attempts.push({ from, skip: "not installed" });
    else if (own !== undefined && pkg.version !== own) attempts.push({ from, skip: `${pkg.name}@${pkg.version} is installed, but meshguard is ${own}: the two must be the same version` });
    else attempts.push(fileAttempt(from, join(pkg.dir, "meshguard.node")));
  }
  let root: string | undefined;
  try {
    root = packageRoot();
  } catch {
    // no package root: only the other attempts
  }
  if (root) {
    // Only a repo checkout has go/ next to package.json: a published package
    // ships no build/ (its addon comes from the platform package).
    const local = join(root, "build", "meshguard.node");
    attempts.push(existsSync(join(root, "go", "go.mod")) ? fileAttempt("repo checkout build", local) : { from: "repo checkout build", skip: "not a repo checkout (no go/go.mod)" });
    const wasm = join(root, "wasm", "meshguard.wasm");
    attempts.push(existsSync(wasm) ? { from: "wasm", path: wasm } : { from: "wasm", path: wasm, skip: `${wasm} does not exist (not built: \`npm run build\`)` });
  }
  return attempts;
}

function fileAttempt(from: string, path: string): BackendAttempt {
  return existsSync(path) ? { from, path } : { from, path, skip: `${path} does not exist` };
}

let ownVersionCache: string | undefined | null = null;
function ownVersion(): string | undefined {
  if (ownVersionCache !== null) return ownVersionCache;
  try {
    ownVersionCache = (JSON.parse(readFileSync(join(packageRoot(), "package.json"), "utf8")) as { version?: string }).version;
  } catch {
    ownVersionCache = undefined;
  }
  return ownVersionCache;
}

async function doLoad(opts: LoadOptions): Promise<Backend> {
  const attempts = backendAttempts(opts.addonPath ? { addonPath: opts.addonPath } : {});
  const failures: Error[] = [];
  for (const a of attempts) {
    if (a.from === "wasm") continue; // loadBackend falls back to it
    if (a.skip !== undefined || a.path === undefined) {
      failures.push(new Error(`${a.from}: ${a.skip ?? "nothing to load"}`));
      continue;
    }
    try {
      return await NativeBackend.load(a.path, opts.knobs);
    } catch (err) {
      if (err instanceof MeshguardError && err.code !== ErrorCode.BACKEND_UNAVAILABLE) throw err;
      failures.push(new Error(`${a.from}: ${a.path}: ${(err as Error).message}`, { cause: err }));
    }
  }
  throw new MeshguardError(
    ErrorCode.BACKEND_UNAVAILABLE,
    `no meshguard backend could be loaded on ${hostTargetId()} (Node ${process.version}):\n  ` + failures.map((f) => f.message).join("\n  "),
    { hint: loadHint(attempts), cause: new AggregateError(failures, "every backend attempt failed") },
  );
}

/** loadHint says how to fix the most likely reason no backend loaded. */
function loadHint(attempts: BackendAttempt[]): string {
  if (attempts.length === 1) return `point ${attempts[0]!.from === "$MESHGUARD_ADDON" ? "MESHGUARD_ADDON" : "addonPath"} at a meshguard.node built for ${hostTargetId()}, or unset it to use the platform package`;
  const own = ownVersion() ?? "<version>";
  const target = hostTarget();
  if (!target) {
    return (
      `meshguard has no prebuilt addon for ${hostTargetId()}: build one from a checkout of the repository ` +
      "(`npm run build:addon`, needs Go and a C compiler) and set MESHGUARD_ADDON to its build/meshguard.node"
    );
  }
  const want = platformPackageName(target);
  const others = installedPlatformPackages(import.meta.url).filter((p) => p.id !== target.id);
  if (others.length > 0) {
    return (
      `only ${others.map((p) => p.name).join(", ")} is installed, but this machine is ${target.id}: ` +
      "node_modules was installed on another platform (copied between macOS and Linux, or glibc and musl/Alpine, say). " +
      `Run \`npm install\` again on this machine (or \`npm install ${want}@${own}\`); in a Docker image, install inside the image instead of copying node_modules in`
    );
  }
  const pkg = resolvePlatformPackage(target.id, import.meta.url);
  if (pkg && pkg.version !== own) return `reinstall so that the versions match: \`npm install meshguard@${own} ${want}@${own}\``;
  if (pkg) return `${want} is installed but its addon did not load (see the causes above): reinstall it with \`npm install ${want}@${own}\``;
  return (
    `the platform package ${want} is not installed. npm skips it when optional dependencies are left out ` +
    "(`npm install --omit=optional`, `--no-optional`, or `omit=optional` in .npmrc / NPM_CONFIG_OMIT): " +
    `install without that (\`npm install --include=optional\`), or add it yourself: \`npm install ${want}@${own}\``
  );
}

/** loadedBackends returns the backends loaded so far (native first), without loading one. */
export async function loadedBackends(): Promise<Backend[]> {
  const all = await Promise.all([loading.native, loading.wasm].map((p) => (p ? p.catch(() => undefined) : undefined)));
  return all.filter((b): b is Backend => b !== undefined);
}
