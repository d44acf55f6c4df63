// Post-link step of the wasm core's build (test/build.mjs, phase wasm):
// takes the Go runtime's findfunctab out of the module's data, where it is
// 5.5 of 31 MB, and packs the data segments again without it. The worker
// rebuilds the table in memory at load (wasm/findfunctab.mjs, which says
// why the table is so large under wasm and how it is derived).
//
// Nothing is trusted: the table is rebuilt here with the loader's own code
// and compared byte for byte with the linker's; a module whose table does
// not match (another Go's layout) is refused, and the build keeps it as
// the linker wrote it. The code section and everything else are copied as
// they are.
//
//   node test/wasm-slim.mjs IN.wasm OUT.wasm
import { readFileSync, writeFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { SECTION, findFuncTab } from "../wasm/findfunctab.mjs";

/** MAX_SEGMENTS is V8's limit on a module's data segments (and the Go linker's). */
const MAX_SEGMENTS = 100000;
/** SEGMENT_OVERHEAD is what a segment costs in bytes (the Go linker's and wasm-opt's estimate): zero runs shorter than this stay in. */
const SEGMENT_OVERHEAD = 8;

class Reader {
  constructor(buf, pos = 0) {
    this.buf = buf;
    this.pos = pos;
  }
  byte() {
    return this.buf[this.pos++];
  }
  uleb() {
    let r = 0;
    let s = 0;
    let b;
    do {
      b = this.buf[this.pos++];
      r += (b & 0x7f) * 2 ** s;
      s += 7;
    } while (b & 0x80);
    return r;
  }
  sleb32() {
    let r = 0;
    let s = 0;
    let b;
    do {
      b = this.buf[this.pos++];
      r |= (b & 0x7f) << s;
      s += 7;
    } while (b & 0x80);
    if (s < 32 && b & 0x40) r |= -1 << s;
    return r;
  }
}

function uleb(n) {
  const out = [];
  do {
    let b = n & 0x7f;
    n = Math.floor(n / 128);
    if (n) b |= 0x80;
    out.push(b);
  } while (n);
  return Buffer.from(out);
}

function sleb32(n) {
  const out = [];
  for (;;) {
    const b = n & 0x7f;
    n >>= 7;
    if ((n === 0 && !(b & 0x40)) || (n === -1 && b & 0x40)) {
      out.push(b);
      return Buffer.from(out);
    }
    out.push(b | 0x80);
  }
}

/** sections splits a module into [{id, body}] (body: the section's bytes after its size). */
export function sections(buf) {
  if (buf.readUInt32LE(0) !== 0x6d736100) throw new Error("not a WebAssembly module");
  const r = new Reader(buf, 8);
  const out = [];
  while (r.pos < buf.length) {
    const id = r.byte();
    const len = r.uleb();
    out.push({ id, body: buf.subarray(r.pos, r.pos + len) });
    r.pos += len;
  }
  return out;
}

function section(id, body) {
  return Buffer.concat([Buffer.from([id]), uleb(body.length), body]);
}

/** memoryImage lays the active data segments of memory 0 out as the memory starts. */
export function memoryImage(body) {
  const r = new Reader(body);
  const n = r.uleb();
  const segs = [];
  for (let i = 0; i < n; i++) {
    const flag = r.uleb();
    if (flag !== 0) throw new Error(`data segment ${i}: kind ${flag}, only active segments of memory 0 are handled`);
    if (r.byte() !== 0x41) throw new Error(`data segment ${i}: offset is not an i32.const`);
    const off = r.sleb32();
    if (r.byte() !== 0x0b) throw new Error(`data segment ${i}: offset expression too long`);
    const size = r.uleb();
    segs.push({ off, data: body.subarray(r.pos, r.pos + size) });
    r.pos += size;
  }
  const end = Math.max(...segs.map((s) => s.off + s.data.length));
  const mem = new Uint8Array(end);
  for (const s of segs) mem.set(s.data, s.off);
  return { mem, count: n, start: Math.min(...segs.map((s) => s.off)) };
}

/** moduledata finds the Go runtime's pcHeader (magic 0xfffffff1, Go >= 1.20) and the moduledata pointing at it. */
function moduledata(mem) {
  const dv = new DataView(mem.buffer, mem.byteOffset, mem.byteLength);
  for (let h = 0; h + 16 <= mem.length; h += 8) {
    if (dv.getUint32(h, true) !== 0xfffffff1 || mem[h + 4] || mem[h + 5] || mem[h + 7] !== 8) continue;
    const funcnameOff = Number(dv.getBigUint64(h + 8 + 3 * 8, true));
    for (let m = 0; m + 160 <= mem.length; m += 8) {
      if (Number(dv.getBigUint64(m, true)) === h && Number(dv.getBigUint64(m + 8, true)) === h + funcnameOff) return m;
    }
  }
  throw new Error("the Go runtime's moduledata was not found (not a Go module, or another Go's layout)");
}

/**
 * pack writes mem's bytes from start as at most MAX_SEGMENTS active
 * segments, leaving out the longest runs of zeros (the memory starts
 * zeroed): the Go linker cuts at every run of 8 zeros until it reaches the
 * limit and then writes everything after as one segment, zeros included.
 */
function pack(mem, start) {
  const runs = [];
  let i = start;
  while (i < mem.length && mem[i] === 0) i++;
  const first = i;
  let end = mem.length;
  while (end > first && mem[end - 1] === 0) end--;
  while (i < end) {
    if (mem[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < end && mem[j] === 0) j++;
    if (j - i >= SEGMENT_OVERHEAD) runs.push([i, j]);
    i = j;
  }
  const cuts = runs
    .sort((a, b) => b[1] - b[0] - (a[1] - a[0]) || a[0] - b[0])
    .slice(0, MAX_SEGMENTS - 1)
    .sort((a, b) => a[0] - b[0]);
  const parts = [uleb(cuts.length + 1)];
  let from = first;
  for (const [zs, ze] of [...cuts, [end, end]]) {
    parts.push(Buffer.from([0, 0x41]), sleb32(from), Buffer.from([0x0b]), uleb(zs - from), mem.subarray(from, zs));
    from = ze;
  }
  return { body: Buffer.concat(parts), segments: cuts.length + 1 };
}

/** slim returns the module without its findfunctab in the data (see above), or throws why not. */
export function slim(buf) {
  const secs = sections(buf);
  const data = secs.find((s) => s.id === 11);
  if (!data) throw new Error("no data section");
  if (secs.some((s) => s.id === 0 && s.body.includes(Buffer.from(SECTION)))) throw new Error("already slimmed");
  const { mem, start } = memoryImage(data.body);
  const md = moduledata(mem);
  const { at, table } = findFuncTab(mem, md);
  const linkers = mem.subarray(at, at + table.length);
  if (at + table.length > mem.length || !Buffer.from(linkers).equals(Buffer.from(table))) {
    throw new Error("the findfunctab rebuilt here differs from the linker's (another Go's layout?): module left as it is");
  }
  linkers.fill(0);
  const packed = pack(mem, start);
  const dataCount = secs.find((s) => s.id === 12);
  if (dataCount) dataCount.body = uleb(packed.segments);
  const mdBytes = Buffer.alloc(4);
  mdBytes.writeUInt32LE(md);
  const custom = Buffer.concat([uleb(SECTION.length), Buffer.from(SECTION), mdBytes]);
  const out = [buf.subarray(0, 8)];
  for (const s of secs) out.push(section(s.id, s.id === 11 ? packed.body : s.body));
  out.push(section(0, custom));
  return { bytes: Buffer.concat(out), tableBytes: table.length, segments: packed.segments };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const [inPath, outPath] = process.argv.slice(2);
  if (!inPath || !outPath) {
    console.error("usage: node test/wasm-slim.mjs IN.wasm OUT.wasm");
    process.exit(2);
  }
  const buf = readFileSync(inPath);
  const t = performance.now();
  const { bytes, tableBytes, segments } = slim(buf);
  writeFileSync(outPath, bytes);
  console.log(`${inPath}: ${(buf.length / 1e6).toFixed(2)} MB -> ${(bytes.length / 1e6).toFixed(2)} MB (findfunctab ${(tableBytes / 1e6).toFixed(2)} MB out, ${segments} data segments) in ${Math.round(performance.now() - t)} ms`);
}
