// The Go runtime's findfunctab, rebuilt in the module's memory at load.
//
// Go's linker writes a lookup table from code address to function
// (runtime.findfunctab: 20 bytes per 4096 bytes of code address space) into
// the module's data. Under GOOS=js GOARCH=wasm a function's "address" is its
// index shifted left by 16, so the table has 16 entries per function: for
// meshguard's core 5.5 MB of the module's 31 MB, all of it derived from the
// function table (ftab) that is in the module's data anyway. The build
// (test/wasm-slim.mjs) checks that this file rebuilds the linker's table
// byte for byte, takes it out of the data (leaving zeros there, as the
// memory starts), and records where it goes in a custom section; the worker
// (wasm/worker.mjs) calls restoreFindFuncTab on the instance's memory before
// the Go runtime starts. A module built without the step has no such
// section and is run as it is.

/** SECTION is the custom section of a module whose findfunctab was taken out: the moduledata's address, 4 bytes little-endian. */
export const SECTION = "meshguard.findfunctab";

const SUBBUCKETS = 16;
const SUBBUCKETSIZE = 4096 / SUBBUCKETS;

/**
 * findFuncTab reads the runtime's moduledata at md in mem (a memory image
 * of the module, a Uint8Array) and returns where the findfunctab goes and
 * its bytes, computed as the linker computes them (cmd/link/internal/ld
 * pcln.go, findfunctab) from ftab: on wasm, ftab's entries are function
 * indexes, and function k spans addresses [k<<16, (k+1)<<16).
 * moduledata (runtime/symtab.go, Go 1.2x, 64-bit fields): pcHeader at 0,
 * six slices of 24 bytes (funcnametab, cutab, filetab, pctab, pclntable,
 * ftab at 128), findfunctab at 152, minpc 160, maxpc 168, text 176.
 */
export function findFuncTab(mem, md) {
  const dv = new DataView(mem.buffer, mem.byteOffset, mem.byteLength);
  const u64 = (o) => Number(dv.getBigUint64(md + o, true));
  const ftab = u64(128);
  const nftab = u64(136); // nfunc + 1 (the last entry is the end)
  const at = u64(152);
  const minpc = u64(160);
  const maxpc = u64(168);
  const text = u64(176);
  const span = maxpc - minpc;
  if (!(nftab >= 2 && span > 0 && at > 0 && ftab > 0)) throw new Error("findfunctab: moduledata not recognised");
  const n = Math.ceil(span / SUBBUCKETSIZE);
  const nbuckets = Math.ceil(span / 4096);
  const NOIDX = 0x7fffffff;
  const indexes = new Int32Array(n).fill(NOIDX);
  const nfunc = nftab - 1;
  const addr = (k) => dv.getUint32(ftab + k * 8, true) * 65536 + text - minpc;
  for (let idx = 0; idx < nfunc; idx++) {
    let p = addr(idx);
    const q = idx + 1 < nfunc ? addr(idx + 1) : span;
    for (; p < q; p += SUBBUCKETSIZE) {
      const i = Math.floor(p / SUBBUCKETSIZE);
      if (indexes[i] > idx) indexes[i] = idx;
    }
    const i = Math.floor((q - 1) / SUBBUCKETSIZE);
    if (indexes[i] > idx) indexes[i] = idx;
  }
  const size = 4 * nbuckets + n;
  const table = new Uint8Array(size);
  const tv = new DataView(table.buffer);
  for (let b = 0; b < nbuckets; b++) {
    const base = indexes[b * SUBBUCKETS];
    if (base === NOIDX) throw new Error("findfunctab: hole");
    tv.setUint32(b * (4 + SUBBUCKETS), base, true);
    for (let j = 0; j < SUBBUCKETS && b * SUBBUCKETS + j < n; j++) {
      const d = indexes[b * SUBBUCKETS + j] - base;
      if (d < 0 || d >= 256) throw new Error("findfunctab: bucket overflow");
      table[b * (4 + SUBBUCKETS) + 4 + j] = d;
    }
  }
  return { at, table };
}

/**
 * restoreFindFuncTab writes the findfunctab into an instantiated module's
 * memory when the module's data lacks it (the SECTION custom section says
 * so), before the Go runtime runs. A module without the section is left alone.
 */
export function restoreFindFuncTab(module, instance) {
  const sec = WebAssembly.Module.customSections(module, SECTION);
  if (sec.length === 0) return;
  const md = new DataView(sec[0]).getUint32(0, true);
  const mem = new Uint8Array(instance.exports.mem.buffer);
  const { at, table } = findFuncTab(mem, md);
  mem.set(table, at);
}
