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

const post = (m, transfer) => parentPort.postMessage(m, transfer);

globalThis.meshguardHost = {
  ready: () => post({ t: "ready" }),
  post: (msg) => post({ t: "msg", msg }),
  data: (s, b) => post({ t: "data", s, b }, [b.buffer]),
  eof: (s) => post({ t: "eof", s }),
  closed: (s, err) => post({ t: "closed", s, err }),
  wrote: (s, n) => post({ t: "wrote", s, n }),
};

await import(execPath); // wasm_exec.js of the Go that built the module: defines globalThis.Go
const go = new globalThis.Go();
go.argv = ["meshguard-wasm"];
go.env = env;
go.exit = (code) => post({ t: "exit", code });
const { instance } = await WebAssembly.instantiate(await readFile(wasmPath), go.importObject);

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
