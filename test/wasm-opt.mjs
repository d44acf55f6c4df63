// The wasm core's optimisation step (test/build.mjs, phases wasm and
// testwasm): binaryen's wasm-opt over the module test/wasm-slim.mjs wrote.
// Go's wasm code generator does little of what an optimiser does (redundant
// locals, a block per instruction sequence, near-identical functions that
// differ in a constant), and wasm-opt takes that out; docs/wasm.md ("How it
// is built") has the figures of the pass lists tried.
//
// wasm-opt must leave the data and the custom section `meshguard.findfunctab`
// as they are (the worker writes the findfunctab into the memory the data
// lays out, at the address the section gives): checked after every run, and
// a module that fails the check is not used.
//
// wasm-opt comes from the system (Debian's binaryen package). When it is
// missing, ensureWasmOpt installs it (root only, as the other Debian
// packages the build or tests need), else the build says what to install and
// ships the module unoptimised.
//
//   node test/wasm-opt.mjs IN.wasm OUT.wasm
import { spawnSync } from "node:child_process";
import { readFileSync, renameSync, rmSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { aptInstall } from "../bench/lib/apt.mjs";
import { SECTION } from "../wasm/findfunctab.mjs";
import { memoryImage, sections } from "./wasm-slim.mjs";

/**
 * WASM_OPT_ARGS are the features Go's wasm output uses (GOWASM's defaults,
 * and memory.copy/fill) and the passes: the -O1 pipeline and
 * merge-similar-functions, −1.2 MB for about 50 s of CPU, where -Oz takes
 * −2.1 MB for 230 s, and that twice a build (docs/wasm.md). Names and
 * producers are stripped: Go's linker writes no name section with -s, and a
 * stack trace names Go functions from the pclntab, not from wasm names.
 */
export const WASM_OPT_ARGS = ["--enable-sign-ext", "--enable-nontrapping-float-to-int", "--enable-bulk-memory", "--strip-debug", "--strip-producers", "-O1", "--merge-similar-functions"];

/** MIN_VERSION is the oldest wasm-opt checked with the module (Debian 12's binaryen). */
const MIN_VERSION = 108;

const isRoot = () => typeof process.getuid === "function" && process.getuid() === 0;

/** wasmOptVersion returns the version of the wasm-opt on PATH, or undefined when there is none. */
export function wasmOptVersion() {
  const r = spawnSync("wasm-opt", ["--version"], { encoding: "utf8" });
  if (r.status !== 0) return undefined;
  const v = /version (\d+)/.exec(r.stdout)?.[1];
  return v ? Number(v) : undefined;
}

/**
 * ensureWasmOpt returns undefined when a usable wasm-opt is on PATH,
 * installing Debian's binaryen first when it is missing and this process
 * is root; else the reason there is none and what to install.
 */
export function ensureWasmOpt(log) {
  let v = wasmOptVersion();
  if (v === undefined && isRoot() && spawnSync("apt-get", ["--version"]).status === 0) {
    log("wasm-opt is not installed: apt-get install -y binaryen (the wasm core's optimiser)");
    const failed = aptInstall("binaryen");
    if (failed) log(failed);
    v = wasmOptVersion();
  }
  if (v === undefined) return "wasm-opt (binaryen) is not installed: install it (Debian/Ubuntu: apt-get install binaryen; macOS: brew install binaryen) to build the optimised wasm core";
  if (v < MIN_VERSION) return `wasm-opt version ${v} is older than ${MIN_VERSION}, the oldest checked with the wasm core: install a newer binaryen`;
  return undefined;
}

/**
 * isOptimised says whether a module went through the build's wasm-opt step:
 * Go's linker writes a "producers" custom section, which the step strips.
 */
export function isOptimised(buf) {
  return !sections(buf).some((s) => s.id === 0 && s.body.subarray(1, 1 + s.body[0]).toString() === "producers");
}

/** dataAndSection returns what wasm-opt must not change: the memory image the data lays out, and the findfunctab section. */
function dataAndSection(buf) {
  const secs = sections(buf);
  const data = secs.find((s) => s.id === 11);
  if (!data) throw new Error("no data section");
  const { mem } = memoryImage(data.body);
  let end = mem.length;
  while (end > 0 && mem[end - 1] === 0) end--;
  const custom = secs.find((s) => s.id === 0 && s.body.includes(Buffer.from(SECTION)));
  return { mem: mem.subarray(0, end), custom: custom && Buffer.from(custom.body) };
}

/**
 * optimise runs wasm-opt over inPath into outPath and checks that the data
 * and the findfunctab section came through unchanged; it throws (leaving no
 * outPath) when wasm-opt fails or they did not.
 */
export function optimise(inPath, outPath) {
  const tmp = `${outPath}.opt`;
  const r = spawnSync("wasm-opt", [inPath, ...WASM_OPT_ARGS, "-o", tmp], { encoding: "utf8", maxBuffer: 64 << 20 });
  if (r.status !== 0) {
    rmSync(tmp, { force: true });
    throw new Error(`wasm-opt failed (exit code ${r.status}): ${(r.stderr || r.error?.message || "").trim().split("\n").slice(-3).join(" / ")}`);
  }
  const before = dataAndSection(readFileSync(inPath));
  const after = dataAndSection(readFileSync(tmp));
  const same = Buffer.from(before.mem).equals(Buffer.from(after.mem)) && (before.custom === undefined ? after.custom === undefined : after.custom !== undefined && before.custom.equals(after.custom));
  if (!same) {
    rmSync(tmp, { force: true });
    throw new Error("wasm-opt changed the module's data or its meshguard.findfunctab section");
  }
  renameSync(tmp, outPath);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const [inPath, outPath] = process.argv.slice(2);
  if (!inPath || !outPath) {
    console.error("usage: node test/wasm-opt.mjs IN.wasm OUT.wasm");
    process.exit(2);
  }
  const why = ensureWasmOpt((m) => console.error(m));
  if (why) {
    console.error(why);
    process.exit(1);
  }
  const t = performance.now();
  optimise(inPath, outPath);
  console.log(`${inPath}: ${(readFileSync(inPath).length / 1e6).toFixed(2)} MB -> ${(readFileSync(outPath).length / 1e6).toFixed(2)} MB in ${((performance.now() - t) / 1e3).toFixed(1)} s`);
}
