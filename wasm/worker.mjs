// The worker thread that hosts meshguard's Go core built for GOOS=js
// (wasm/meshguard.wasm). Go under js runs on the thread that hosts it and
// blocks it while goroutines run, so the core gets a thread of its own and
// the application's event loop stays free; src/backend/wasm.ts talks to it
// with messages.
//
// The Go runtime reaches the world through this thread's globals: control
// and DERP over WebSocket, other HTTP (the control key, the preflight)
// through fetch — both Node ≥ 22 built-ins — and the node's state files
// through node:fs (Go's os package under js calls globalThis.fs). There is
// no UDP under js: magicsock sends nothing but DERP (docs/wasm.md).
//
// Messages in (from the host): {t:"call", id, method, params},
// {t:"write", s, b}, {t:"closeWrite", s}, {t:"close", s}, {t:"consumed", s, n}.
// Messages out: {t:"ready"}, {t:"msg", msg}, {t:"data", s, b}, {t:"eof", s},
// {t:"closed", s, err}, {t:"wrote", s, n}, {t:"exit", code}.
import { readFile } from "node:fs/promises";
import fs from "node:fs";
import { parentPort, workerData } from "node:worker_threads";
import { restoreFindFuncTab } from "./findfunctab.mjs";

const real = process;

const { wasmPath, execPath, env } = workerData;

// Go's os package reaches files through globalThis.fs (as Go's own
// wasm_exec_node.js sets it up).
globalThis.fs = fs;
// net/http under js turns fetch off when process.argv0 starts with "node"
// (golang/go#57613: Go's own tests fake the network there). Here fetch is
// the network, so Go sees a process object of its own; wasm_exec.js uses
// only these fields of it.
globalThis.process = {
  argv0: "meshguard-wasm",
  pid: real.pid,
  ppid: real.ppid,
  getuid: () => real.getuid?.() ?? -1,
  getgid: () => real.getgid?.() ?? -1,
  geteuid: () => real.geteuid?.() ?? -1,
  getegid: () => real.getegid?.() ?? -1,
  getgroups: () => real.getgroups?.() ?? [],
  umask: (m) => real.umask(m),
  cwd: () => real.cwd(),
  chdir: (d) => real.chdir(d),
};

// DERP over WebSocket, batched per turn of this thread's event loop. The
// Go side (tailscale.com/derp/derphttp through coder/websocket) sends every
// DERP frame as a WebSocket message of its own and is resumed once for
// every message that arrives: a packet each way costs a socket write and a
// resume of the Go runtime (the dearest step of the wasm core, measured:
// docs/wasm.md). DERP over WebSocket is a byte stream on both ends (the
// server and the Go client read it through wsconn, across message
// boundaries), so the frames Go sends during one turn go out as one
// message, and the messages that arrive in one turn reach Go as one. A
// batch stays under coder/websocket's default read limit (32 KiB a
// message); other subprotocols (the control connection) are untouched.
const BATCH_MAX = 32000;
/** DATA_BATCH_MAX bounds one data message to the host (the core reads at most 1 MiB ahead). */
const DATA_BATCH_MAX = 256 << 10;

/** Batch gathers byte arrays until they are taken as one, up to max bytes. */
class Batch {
  #parts = [];
  #bytes = 0;
  #max;

  constructor(max = BATCH_MAX) {
    this.#max = max;
  }

  /** fits tells whether b joins this batch without passing its max. */
  fits(b) {
    return this.#bytes + b.byteLength <= this.#max;
  }

  /** add keeps b (not copied); true when b starts a batch, whose take is then to be scheduled. */
  add(b) {
    this.#parts.push(b);
    this.#bytes += b.byteLength;
    return this.#parts.length === 1;
  }

  /** take returns the batch's bytes as one Uint8Array (undefined when empty) and empties it. */
  take() {
    const parts = this.#parts;
    if (parts.length === 0) return undefined;
    let all = parts[0];
    if (parts.length > 1) {
      all = new Uint8Array(this.#bytes);
      let off = 0;
      for (const p of parts) {
        all.set(p, off);
        off += p.byteLength;
      }
    }
    this.#parts = [];
    this.#bytes = 0;
    return all;
  }
}

class BatchingWebSocket extends WebSocket {
  #out = new Batch();
  #in = new Batch();
  #onMessage = [];

  get #batching() {
    return this.protocol === "derp" && this.readyState === WebSocket.OPEN;
  }

  send(data) {
    if (!this.#batching || typeof data === "string") return super.send(data);
    if (!this.#out.fits(data)) this.#flush();
    // data is a fresh Uint8Array that Go made for this call: kept, not copied.
    if (this.#out.add(data)) queueMicrotask(() => this.#flush());
  }

  #flush() {
    const all = this.#out.take();
    if (all && this.readyState === WebSocket.OPEN) super.send(all);
  }

  close(...args) {
    this.#flush();
    return super.close(...args);
  }

  #wrapped = new Map();

  addEventListener(type, fn, ...rest) {
    if (type === "close" || type === "error") {
      // What arrived before the end reaches Go before the end does.
      const w = (e) => {
        this.#deliverBatch();
        fn(e);
      };
      this.#wrapped.set(fn, w);
      return super.addEventListener(type, w, ...rest);
    }
    if (type !== "message") return super.addEventListener(type, fn, ...rest);
    if (this.#onMessage.length === 0) super.addEventListener("message", (e) => this.#received(e));
    this.#onMessage.push(fn);
  }

  removeEventListener(type, fn, ...rest) {
    if (type === "close" || type === "error") {
      const w = this.#wrapped.get(fn);
      this.#wrapped.delete(fn);
      return super.removeEventListener(type, w ?? fn, ...rest);
    }
    if (type !== "message") return super.removeEventListener(type, fn, ...rest);
    this.#onMessage = this.#onMessage.filter((f) => f !== fn);
  }

  #received(e) {
    if (this.protocol !== "derp" || typeof e.data === "string") return this.#deliver(e);
    const b = new Uint8Array(e.data);
    if (!this.#in.fits(b)) this.#deliverBatch();
    if (this.#in.add(b)) queueMicrotask(() => this.#deliverBatch());
  }

  #deliverBatch() {
    const all = this.#in.take();
    if (!all) return;
    // What coder/websocket reads of an event: its data, an ArrayBuffer.
    const data = all.byteOffset === 0 && all.byteLength === all.buffer.byteLength ? all.buffer : all.slice().buffer;
    this.#deliver({ type: "message", data });
  }

  #deliver(e) {
    for (const fn of this.#onMessage) fn(e);
  }
}
globalThis.WebSocket = BatchingWebSocket;

// Messages to the host leave at the end of the turn in which Go made them,
// in order, with a stream's consecutive chunks of data joined into one
// message: a postMessage per chunk read was a tenth of the worker's busy
// time in a transfer, and each one wakes the host's thread.
let outbox = [];
const flushOutbox = () => {
  const q = outbox;
  outbox = [];
  for (const m of q) {
    if (m.t === "data") {
      const b = m.b.take();
      parentPort.postMessage({ t: "data", s: m.s, b }, [b.buffer]);
    } else parentPort.postMessage(m);
  }
};
const post = (m) => {
  if (outbox.push(m) === 1) queueMicrotask(flushOutbox);
};

globalThis.meshguardHost = {
  ready: () => post({ t: "ready" }),
  post: (msg) => post({ t: "msg", msg }),
  // b is a fresh Uint8Array Go made for this call: kept, then transferred.
  data: (s, b) => {
    const last = outbox.at(-1);
    if (last?.t === "data" && last.s === s && last.b.fits(b)) last.b.add(b);
    else {
      const batch = new Batch(DATA_BATCH_MAX);
      batch.add(b);
      post({ t: "data", s, b: batch });
    }
  },
  eof: (s) => post({ t: "eof", s }),
  closed: (s, err) => post({ t: "closed", s, err }),
  wrote: (s, n) => post({ t: "wrote", s, n }),
};

await import(execPath); // wasm_exec.js of the Go that built the module: defines globalThis.Go
const go = new globalThis.Go();
go.argv = ["meshguard-wasm"];
go.env = env;
go.exit = (code) => post({ t: "exit", code });
const module = await WebAssembly.compile(await readFile(wasmPath));
const instance = await WebAssembly.instantiate(module, go.importObject);
restoreFindFuncTab(module, instance);

parentPort.on("message", (m) => {
  const core = globalThis.meshguardCore;
  switch (m.t) {
    case "call":
      core.call(m.id, m.method, m.params);
      break;
    case "write":
      core.write(m.s, m.b);
      break;
    case "closeWrite":
      core.closeWrite(m.s);
      break;
    case "close":
      core.close(m.s);
      break;
    case "consumed":
      core.consumed(m.s, m.n);
      break;
  }
});

go.run(instance).then(
  () => post({ t: "exit", code: go.exited ? 0 : 1 }),
  (err) => post({ t: "exit", code: 1, error: String(err?.stack ?? err) }),
);
