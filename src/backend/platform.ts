/**
 * The platforms meshguard ships a prebuilt native addon for, and which one
 * this process runs on. One table for the loader (src/backend/load.ts), the
 * headscale lookup (src/control/build.ts) and the packaging script
 * (test/pack.mjs, which imports this file directly): a platform is named the
 * same everywhere, `<os>-<cpu>[-<libc>]`, and its npm package is
 * `@meshguard/<that name>`.
 *
 * This file imports nothing of meshguard's own, so Node can run it as
 * TypeScript from the packaging script without a build.
 */

import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import { dirname } from "node:path";

/** The npm `libc` values (package.json `libc` field). */
export type Libc = "glibc" | "musl";

/** PlatformTarget is one prebuilt addon: the package.json `os`, `cpu` and `libc` it declares. */
export interface PlatformTarget {
  /** `<os>-<cpu>[-gnu|-musl]`: the package is `@meshguard/<id>`. */
  readonly id: string;
  readonly os: "linux" | "darwin";
  readonly cpu: "x64" | "arm64";
  /** Linux only: the C library the addon links against. */
  readonly libc?: Libc;
}

/** PLATFORM_SCOPE is the npm scope of the platform packages. */
export const PLATFORM_SCOPE = "@meshguard";

/** PLATFORMS lists every platform package, in the order the packaging script builds them. */
export const PLATFORMS: readonly PlatformTarget[] = Object.freeze([
  { id: "linux-x64-gnu", os: "linux", cpu: "x64", libc: "glibc" },
  { id: "linux-x64-musl", os: "linux", cpu: "x64", libc: "musl" },
  { id: "linux-arm64-gnu", os: "linux", cpu: "arm64", libc: "glibc" },
  { id: "linux-arm64-musl", os: "linux", cpu: "arm64", libc: "musl" },
  { id: "darwin-x64", os: "darwin", cpu: "x64" },
  { id: "darwin-arm64", os: "darwin", cpu: "arm64" },
]);

/** platformPackageName is the npm name of a platform package. */
export function platformPackageName(t: PlatformTarget | string): string {
  return `${PLATFORM_SCOPE}/${typeof t === "string" ? t : t.id}`;
}

let libcCache: Libc | undefined | null = null;

/**
 * libcOfMaps tells glibc from musl by the C library this process has mapped
 * (`/proc/self/maps`): glibc's loader or libc.so.6, or musl's loader. The
 * answer is this process's own libc, which is what an addon links against.
 */
export function libcOfMaps(maps: string): Libc | undefined {
  if (/\/(ld-musl-[^/\s]*\.so[^/\s]*|libc\.musl-[^/\s]*)$/m.test(maps)) return "musl";
  if (/\/(ld-linux[^/\s]*\.so\.\d+|libc\.so\.6)$/m.test(maps)) return "glibc";
  return undefined;
}

/**
 * detectLibc tells glibc from musl on Linux (undefined elsewhere, or when it
 * cannot tell): first by the C library mapped into this process
 * (`/proc/self/maps`, a cheap read); then by the diagnostic report, whose
 * header names the glibc a glibc Node runs on and which lists a musl one's
 * loader (building it costs ~1 MB of resident memory, which is why it is not
 * the first choice: docs/core.md, "Memory"); `/usr/bin/ldd` is the last
 * resort (musl's ldd is its loader).
 */
export function detectLibc(): Libc | undefined {
  if (process.platform !== "linux") return undefined;
  if (libcCache !== null) return libcCache;
  libcCache = undefined;
  try {
    libcCache = libcOfMaps(readFileSync("/proc/self/maps", "latin1"));
  } catch {
    // no /proc: fall through to the report
  }
  if (libcCache !== undefined) return libcCache;
  try {
    // The network section can do reverse DNS lookups: leave it out, and put
    // the user's setting back.
    const report = process.report as unknown as { excludeNetwork?: boolean; getReport(): object };
    const before = report.excludeNetwork;
    report.excludeNetwork = true;
    let r: { header?: { glibcVersionRuntime?: string }; sharedObjects?: string[] };
    try {
      r = report.getReport() as typeof r;
    } finally {
      report.excludeNetwork = before;
    }
    if (r.header?.glibcVersionRuntime) libcCache = "glibc";
    else if (r.sharedObjects?.some((s) => /(^|\/)(ld-musl-|libc\.musl-)/.test(s))) libcCache = "musl";
  } catch {
    // no report support: fall through to ldd
  }
  if (libcCache === undefined) {
    try {
      const ldd = readFileSync("/usr/bin/ldd", "latin1");
      if (ldd.includes("musl")) libcCache = "musl";
      else if (ldd.includes("GNU C Library") || ldd.includes("GLIBC")) libcCache = "glibc";
    } catch {
      // no ldd: unknown
    }
  }
  return libcCache;
}

/** hostTargetId names the platform this process runs on, in the platform packages' scheme. */
export function hostTargetId(): string {
  const base = `${process.platform}-${process.arch}`;
  if (process.platform !== "linux") return base;
  const libc = detectLibc();
  return libc === "musl" ? `${base}-musl` : `${base}-gnu`;
}

/** hostTarget is the supported platform this process runs on, or undefined when there is no prebuilt addon for it. */
export function hostTarget(): PlatformTarget | undefined {
  const id = hostTargetId();
  return PLATFORMS.find((t) => t.id === id);
}

/** InstalledPlatformPackage is a platform package that resolves from meshguard's install. */
export interface InstalledPlatformPackage {
  id: string;
  name: string;
  dir: string;
  version: string;
}

/**
 * resolvePlatformPackage finds the directory of `@meshguard/<id>` as seen
 * from `from` (a file URL or path: meshguard's own module), or undefined
 * when it is not installed.
 */
export function resolvePlatformPackage(id: string, from: string): InstalledPlatformPackage | undefined {
  const name = platformPackageName(id);
  try {
    const pj = createRequire(from).resolve(`${name}/package.json`);
    const version = (JSON.parse(readFileSync(pj, "utf8")) as { version?: string }).version ?? "?";
    return { id, name, dir: dirname(pj), version };
  } catch {
    return undefined;
  }
}

/** installedPlatformPackages lists every platform package that resolves from `from`, whatever platform it is for. */
export function installedPlatformPackages(from: string): InstalledPlatformPackage[] {
  return PLATFORMS.map((t) => resolvePlatformPackage(t.id, from)).filter((p): p is InstalledPlatformPackage => p !== undefined);
}
