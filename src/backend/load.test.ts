// Where the loader looks, in a repo checkout (the installed-package cases are
// in test/integration/install.test.ts).
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { backendAttempts, packageRoot } from "./load.js";
import { PLATFORMS, detectLibc, hostTargetId } from "./platform.js";

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

  it("names six targets, each once, in the <os>-<cpu>[-gnu|-musl] scheme with libc on Linux only", () => {
    expect(new Set(PLATFORMS.map((t) => t.id)).size).toBe(6);
    for (const t of PLATFORMS) expect(t.id).toBe(`${t.os}-${t.cpu}${t.libc ? (t.libc === "glibc" ? "-gnu" : "-musl") : ""}`);
    expect(PLATFORMS.filter((t) => t.libc).every((t) => t.os === "linux")).toBe(true);
  });
});
