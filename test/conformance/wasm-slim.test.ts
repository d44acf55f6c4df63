// The wasm core's post-link step (test/wasm-slim.mjs): the Go runtime's
// findfunctab taken out of the module's data and rebuilt at load
// (wasm/findfunctab.mjs). On a freshly linked module: the slimmed module's
// memory, with the table written back as the worker writes it, is the
// linked module's memory byte for byte; and a table that does not match the
// loader's rebuild is refused (the build then ships the module as linked).
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
// @ts-expect-error: build scripts are plain JavaScript
import { wasmBuildCommand } from "../addon-build.mjs";
// @ts-expect-error: build scripts are plain JavaScript
import { slim } from "../wasm-slim.mjs";
// @ts-expect-error: build scripts are plain JavaScript
import { isOptimised, wasmOptVersion } from "../wasm-opt.mjs";
// @ts-expect-error: shipped plain JavaScript
import { SECTION, findFuncTab } from "../../wasm/findfunctab.mjs";

const repo = fileURLToPath(new URL("../..", import.meta.url));

/** image lays out a module's active data segments as its memory starts (the same reading as wasm-slim's). */
async function image(bytes: Uint8Array, size = 0): Promise<{ mem: Uint8Array; module: WebAssembly.Module }> {
  const module = await WebAssembly.compile(new Uint8Array(bytes));
  // Instantiating needs Go's imports; the data section is read directly instead.
  const buf = Buffer.from(bytes);
  let p = 8;
  const uleb = () => {
    let r = 0;
    let s = 0;
    let b = 0;
    do {
      b = buf[p++] ?? 0;
      r += (b & 0x7f) * 2 ** s;
      s += 7;
    } while (b & 0x80);
    return r;
  };
  const segs: { off: number; data: Buffer }[] = [];
  while (p < buf.length) {
    const id = buf[p++];
    const len = uleb();
    const end = p + len;
    if (id === 11) {
      const n = uleb();
      for (let i = 0; i < n; i++) {
        uleb();
        p++;
        const off = uleb();
        p++;
        const size = uleb();
        segs.push({ off, data: buf.subarray(p, p + size) });
        p += size;
      }
    }
    p = end;
  }
  const mem = new Uint8Array(Math.max(size, ...segs.map((s) => s.off + s.data.length)));
  for (const s of segs) mem.set(s.data, s.off);
  return { mem, module };
}

describe("wasm core: findfunctab out of the data, rebuilt at load", () => {
  let dir: string;
  let linked: Buffer;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "mg-slim-"));
    const out = join(dir, "linked.wasm");
    const c = wasmBuildCommand({ root: repo, out });
    const r = spawnSync(c.cmd, c.argv, { cwd: c.cwd, env: c.env, encoding: "utf8" });
    if (r.status !== 0) throw new Error(`go build failed: ${r.stderr}`);
    linked = readFileSync(out);
  }, 600_000);
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("the slimmed module's memory with the table written back is the linked module's", async () => {
    const s = slim(linked);
    expect(s.bytes.length).toBeLessThan(linked.length - 4_000_000);
    const before = await image(linked);
    const after = await image(s.bytes, before.mem.length);
    const sec = WebAssembly.Module.customSections(after.module, SECTION);
    expect(sec).toHaveLength(1);
    const md = new DataView(sec[0]!).getUint32(0, true);
    const { at, table } = findFuncTab(after.mem, md);
    expect(table.length).toBe(s.tableBytes);
    // Taken out: zeros where the table was.
    expect(after.mem.subarray(at, at + table.length).every((b: number) => b === 0)).toBe(true);
    after.mem.set(table, at);
    expect(Buffer.from(after.mem).equals(Buffer.from(before.mem))).toBe(true);
  });

  it("a table that differs from the loader's rebuild is refused", async () => {
    const { mem } = await image(linked);
    const s = slim(linked);
    const sec = WebAssembly.Module.customSections(await WebAssembly.compile(s.bytes), SECTION);
    const md = new DataView(sec[0]!).getUint32(0, true);
    const { at, table } = findFuncTab(mem, md);
    // 400 bytes from the table's middle (their bucket indexes occur nowhere else), changed in the file.
    const mid = at + Math.floor(table.length / 40) * 20;
    const needle = Buffer.from(mem.subarray(mid, mid + 400));
    const i = linked.indexOf(needle);
    expect(i).toBeGreaterThan(0);
    const bad = Buffer.from(linked);
    bad[i] = (bad[i] ?? 0) ^ 1;
    expect(() => slim(bad)).toThrow(/differs from the linker's/);
  });

  // The build's last step (test/wasm-opt.mjs): wasm-opt over the slimmed
  // module. What ships (wasm/meshguard.wasm, built by test/build.mjs from the
  // same sources, reproducibly) has the slimmed module's memory and
  // findfunctab section, byte for byte, and less code.
  it("the built module is the slimmed one through wasm-opt: same memory and section, less code", async (ctx) => {
    const built = readFileSync(join(repo, "wasm", "meshguard.wasm"));
    if (!isOptimised(built)) {
      if (wasmOptVersion() === undefined) ctx.skip("wasm-opt (binaryen) is not installed: the build shipped the module unoptimised, with a notice");
      throw new Error("wasm/meshguard.wasm was not optimised although wasm-opt is installed: node test/build.mjs --only wasm --force");
    }
    const s = slim(linked);
    const want = await image(s.bytes);
    const got = await image(built, want.mem.length);
    expect(Buffer.from(got.mem.subarray(0, want.mem.length)).equals(Buffer.from(want.mem))).toBe(true);
    expect(got.mem.subarray(want.mem.length).every((b: number) => b === 0)).toBe(true);
    const sec = (m: WebAssembly.Module) => Buffer.from(WebAssembly.Module.customSections(m, SECTION)[0]!);
    expect(sec(got.module).equals(sec(want.module))).toBe(true);
    expect(built.length).toBeLessThan(s.bytes.length - 500_000);
  });
});
