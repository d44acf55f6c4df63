// Where the loader looks, in a repo checkout (the installed-package cases are
// in test/integration/install.test.ts).
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { backendAttempts, packageRoot } from "./load.js";
import { PLATFORMS, detectLibc, hostTargetId, libcOfMaps } from "./platform.js";

const saved = process.env.MESHGUARD_ADDON;
afterEach(() => {
  if (saved === undefined) delete process.env.MESHGUARD_ADDON;
  else process.env.MESHGUARD_ADDON = saved;
});

describe("backend attempts", () => {
  it("in a checkout: the platform package (not installed), then build/meshguard.node, then the wasm core", () => {
    delete process.env.MESHGUARD_ADDON;
    const a = backendAttempts();
    expect(a.map((x) => x.from)).toEqual([`platform package @meshguard/${hostTargetId()}`, "repo checkout build", "wasm"]);
    expect(a[0]!.skip).toBe("not installed");
    expect(a[1]!.path).toBe(join(packageRoot(), "build", "meshguard.node"));
    const wasm = join(packageRoot(), "wasm", "meshguard.wasm");
    expect(a[2]).toEqual(existsSync(wasm) ? { from: "wasm", path: wasm } : { from: "wasm", path: wasm, skip: `${wasm} does not exist (not built: \`npm run build\`)` });
  });

  it("an explicit addonPath or $MESHGUARD_ADDON is the only attempt", () => {
    process.env.MESHGUARD_ADDON = "/nonexistent/env.node";
    expect(backendAttempts()).toEqual([{ from: "$MESHGUARD_ADDON", path: "/nonexistent/env.node", skip: "/nonexistent/env.node does not exist" }]);
    expect(backendAttempts({ addonPath: "/nonexistent/opt.node" }).map((x) => x.from)).toEqual(["option addonPath"]);
  });
});

describe("platform detection", () => {
  it.runIf(process.platform === "linux")("tells glibc from musl the way ldd does, and names the target with it", () => {
    let ldd = "";
    try {
      ldd = readFileSync("/usr/bin/ldd", "latin1");
    } catch {
      // no ldd: nothing to compare with
    }
    const expected = ldd.includes("musl") ? "musl" : ldd ? "glibc" : detectLibc();
    expect(detectLibc()).toBe(expected);
    expect(hostTargetId()).toBe(`linux-${process.arch}-${expected === "musl" ? "musl" : "gnu"}`);
  });

  it("reads the libc from a process's mappings: glibc's loader or libc.so.6, musl's loader, else unknown", () => {
    const line = (path: string) => `7f1c2a000000-7f1c2a028000 r--p 00000000 fe:00 1234                       ${path}`;
    expect(libcOfMaps([line("/usr/bin/node"), line("/usr/lib/x86_64-linux-gnu/libc.so.6"), line("/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")].join("\n"))).toBe("glibc");
    expect(libcOfMaps([line("/usr/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1")].join("\n"))).toBe("glibc");
    expect(libcOfMaps([line("/usr/local/bin/node"), line("/lib/ld-musl-x86_64.so.1"), line("/usr/lib/libstdc++.so.6.0.32")].join("\n"))).toBe("musl");
    // A file merely named like a libc elsewhere in a path, and no libc at all, say nothing.
    expect(libcOfMaps([line("/usr/bin/node"), line("/tmp/libc.so.6.bak"), line("/opt/ld-musl-x86_64.so.1.d/x")].join("\n"))).toBeUndefined();
    expect(libcOfMaps("")).toBeUndefined();
  });

  it.runIf(process.platform === "linux")("this process's libc, from /proc/self/maps, is the one ldd names", () => {
    let ldd = "";
    try {
      ldd = readFileSync("/usr/bin/ldd", "latin1");
    } catch {
      return; // no ldd: nothing to compare with
    }
    expect(libcOfMaps(readFileSync("/proc/self/maps", "latin1"))).toBe(ldd.includes("musl") ? "musl" : "glibc");
  });

  it("names six targets, each once, in the <os>-<cpu>[-gnu|-musl] scheme with libc on Linux only", () => {
    expect(new Set(PLATFORMS.map((t) => t.id)).size).toBe(6);
    for (const t of PLATFORMS) expect(t.id).toBe(`${t.os}-${t.cpu}${t.libc ? (t.libc === "glibc" ? "-gnu" : "-musl") : ""}`);
    expect(PLATFORMS.filter((t) => t.libc).every((t) => t.os === "linux")).toBe(true);
  });
});
