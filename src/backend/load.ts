import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { ErrorCode, MeshguardError } from "../errors.js";
import { NativeBackend } from "./native.js";
import type { Backend } from "./protocol.js";

export interface LoadOptions {
  /** Explicit path to meshguard.node. */
  addonPath?: string;
  /** Environment knobs for the Go runtime (process-wide, first load only). */
  knobs: Record<string, string>;
}

let loading: Promise<Backend> | undefined;

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
 * loadBackend loads the one backend of this process. It tries, in order: the
 * explicit addonPath, $MESHGUARD_ADDON, the platform package, the local build
 * (build/meshguard.node), and keeps every failed attempt in the error's cause.
 * The Go runtime can be loaded once per process, so the first successful load
 * is shared by every node, whatever later callers pass.
 */
export function loadBackend(opts: LoadOptions): Promise<Backend> {
  loading ??= doLoad(opts).catch((err: unknown) => {
    loading = undefined;
    throw err;
  });
  return loading;
}

async function doLoad(opts: LoadOptions): Promise<Backend> {
  const attempts: { from: string; path: string }[] = [];
  if (opts.addonPath) attempts.push({ from: "option addonPath", path: opts.addonPath });
  if (process.env.MESHGUARD_ADDON) attempts.push({ from: "$MESHGUARD_ADDON", path: process.env.MESHGUARD_ADDON });
  const platformPkg = `@meshguard/${process.platform}-${process.arch}`;
  attempts.push({ from: `platform package ${platformPkg}`, path: `${platformPkg}/meshguard.node` });
  try {
    attempts.push({ from: "local build", path: join(packageRoot(), "build", "meshguard.node") });
  } catch {
    // no package root: only the other attempts
  }
  const failures: Error[] = [];
  for (const a of attempts) {
    if (a.path.startsWith("/") && !existsSync(a.path)) {
      failures.push(new Error(`${a.from}: ${a.path} does not exist`));
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
    `no meshguard backend could be loaded for ${process.platform}-${process.arch}:\n  ` + failures.map((f) => f.message).join("\n  "),
    {
      hint: "build the native addon with `npm run build` (needs Go and gcc), or set MESHGUARD_ADDON to a built meshguard.node",
      cause: new AggregateError(failures, "every backend attempt failed"),
    },
  );
}

/** loadedBackend returns the backend if one was loaded, without loading one. */
export async function loadedBackend(): Promise<Backend | undefined> {
  return loading ? loading.catch(() => undefined) : undefined;
}
