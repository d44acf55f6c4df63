import net from "node:net";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { Worker } from "node:worker_threads";
import { ErrorCode, MeshguardError } from "../errors.js";
import { ownThread } from "../own-thread.js";
import { CoreClient } from "./client.js";
import type { Backend, ConnHandle } from "./protocol.js";

/** The messages wasm/worker.mjs sends (see its header). */
type FromWorker =
  | { t: "ready" }
  | { t: "msg"; msg: string }
  | { t: "data"; s: number; b: Uint8Array }
  | { t: "eof"; s: number }
  | { t: "closed"; s: number; err: string }
  | { t: "wrote"; s: number; n: number }
  | { t: "exit"; code: number; error?: string };

/** Events of a stream that arrived before MeshNode opened it (a server may speak first). */
type Early = Extract<FromWorker, { s: number }>;

/**
 * Bytes written to a stream and not yet written to the tailnet connection
 * by the core: a write callback is held while more than this is in flight
 * (backpressure towards the writer), and the core's queue of writes per
 * stream (1024 entries, go/wasm) is never filled.
 */
const WRITE_WINDOW = 1 << 20;
const WRITE_OPS = 256;

/**
 * Bytes read that are credited back to the core together: every "consumed"
 * message resumes the Go runtime in the worker (a fraction of a millisecond
 * of CPU, measured: docs/wasm.md), so small reads (a request/response
 * protocol) are not credited one by one. Well under the core's 1 MiB read
 * window, so a consumer that keeps reading never stalls the core.
 */
const CREDIT_BATCH = 256 << 10;

/**
 * WasmBackend runs the Go core compiled to WebAssembly (GOOS=js) in a
 * worker thread: the same protocol as the native addon, with calls,
 * answers, events and connection bytes carried as worker messages. Go
 * under js occupies the thread that hosts it, so it never runs on the
 * application's thread.
 */
export class WasmBackend extends CoreClient implements Backend {
  readonly kind = "wasm" as const;
  readonly path: string;
  private readonly worker: Worker;
  private readonly streams = new Map<number, WasmSocket>();
  private readonly early = new Map<number, Early[]>();
  private exited?: MeshguardError;
  private terminating = false;

  private constructor(worker: Worker, path: string) {
    super();
    this.worker = worker;
    this.path = path;
  }

  /**
   * load starts the worker (dir/worker.mjs) with dir/meshguard.wasm and the
   * dir/wasm_exec.js of the Go that built it, waits until the Go
   * runtime is up, and checks the protocol version. The knobs are the Go
   * runtime's environment from its start, so package-init knobs see them.
   */
  static async load(dir: string, env: Record<string, string>): Promise<WasmBackend> {
    const wasmPath = join(dir, "meshguard.wasm");
    const execPath = join(dir, "wasm_exec.js");
    const file = join(dir, "worker.mjs");
    // The thread runs only the library's code, and its traffic (control, DERP,
    // the core's HTTP) is the library's own: started as such (own-thread.ts),
    // the guard does not put its preload in it, and it gets no Node options
    // of the host — no execArgv (--input-type, --eval, an --import preload)
    // and no NODE_OPTIONS (a --require preload, meshguard's own included,
    // which would judge the core's control connection as the agent's call).
    const threadEnv = { ...process.env };
    delete threadEnv.NODE_OPTIONS;
    let worker: Worker;
    try {
      worker = ownThread(
        file,
        () =>
          new Worker(file, {
            workerData: { wasmPath, execPath: pathToFileURL(execPath).href, env: { ...env, HOME: "/nonexistent" } },
            execArgv: [],
            env: threadEnv,
            // The core's own output (Go's println on a crash) is the host's stderr.
            stderr: false,
            stdout: false,
          }),
      );
    } catch (err) {
      const denied = (err as { code?: string })?.code === "ERR_ACCESS_DENIED";
      throw new MeshguardError(ErrorCode.BACKEND_UNAVAILABLE, `the wasm core cannot start its worker thread: ${(err as Error)?.message ?? String(err)}`, {
        cause: err,
        hint: denied
          ? "Node's permission model forbids worker threads here: the wasm core needs one (--allow-worker), or use the native addon"
          : "the wasm core runs in a worker thread (node:worker_threads); use the native addon where workers cannot start",
      });
    }
    const b = new WasmBackend(worker, wasmPath);
    await new Promise<void>((resolve, reject) => {
      const fail = (why: string, cause?: unknown) =>
        reject(new MeshguardError(ErrorCode.BACKEND_UNAVAILABLE, `the wasm core at ${wasmPath} did not start: ${why}`, { cause, hint: "rebuild it with `npm run build` (needs Go), or use the native addon" }));
      worker.once("error", (err) => fail(err.message, err));
      worker.once("exit", (code) => fail(`its worker exited with code ${code}`));
      const onReady = (m: FromWorker) => {
        if (m.t === "ready") {
          worker.off("message", onReady);
          resolve();
        } else if (m.t === "exit") fail(`the Go program exited (${m.code})${m.error ? `: ${m.error}` : ""}`);
      };
      worker.on("message", onReady);
    });
    worker.removeAllListeners("error");
    worker.removeAllListeners("exit");
    worker.on("message", (m: FromWorker) => b.onWorker(m));
    worker.on("error", (err) => b.die(`the wasm core's worker failed: ${err.message}`, err));
    worker.on("exit", (code) => b.die(`the wasm core's worker exited (code ${code})`));
    worker.unref();
    try {
      // GOMAXPROCS means nothing under js (one thread): maxProcs 0 leaves it.
      await b.handshake(`the wasm core at ${wasmPath}`, env, 0);
    } catch (err) {
      await worker.terminate();
      throw err;
    }
    return b;
  }

  protected send(id: number, method: string, params: string): void {
    if (this.exited) throw this.exited;
    this.worker.postMessage({ t: "call", id, method, params });
  }

  protected ref(): void {
    this.worker.ref();
  }

  protected unref(): void {
    this.worker.unref();
  }

  private die(why: string, cause?: unknown): void {
    if (this.exited) return;
    const hint = "every node on this core is closed; start them again (a Go panic's message is on stderr: please report it)";
    this.exited = new MeshguardError(ErrorCode.INTERNAL, why, cause === undefined ? { hint } : { cause, hint });
    this.failAll(this.exited);
    // Said once even when no call is in flight, so a process that only
    // listens learns it too.
    if (!this.terminating) process.emitWarning(`${why}: ${hint}`, { code: "MESHGUARD_CORE_EXITED" });
    for (const s of this.streams.values()) s.destroy(this.exited);
  }

  private onWorker(m: FromWorker): void {
    switch (m.t) {
      case "msg":
        this.onMessage(m.msg);
        return;
      case "exit":
        this.die(`the wasm core stopped: its Go runtime exited with code ${m.code}${m.code === 2 ? " (an unrecovered panic)" : ""}${m.error ? `: ${m.error}` : ""}`);
        return;
      case "ready":
        return;
    }
    const sock = this.streams.get(m.s);
    if (sock) sock.onWorker(m);
    else if (m.t === "closed") this.early.delete(m.s);
    else {
      const q = this.early.get(m.s) ?? [];
      q.push(m);
      this.early.set(m.s, q);
    }
  }

  /** post sends a stream message to the core. */
  postStream(m: { t: "write"; s: number; b: Uint8Array } | { t: "closeWrite" | "close"; s: number } | { t: "consumed"; s: number; n: number }): void {
    if (this.exited) return;
    if (m.t === "write") this.worker.postMessage(m, [m.b.buffer as ArrayBuffer]);
    else this.worker.postMessage(m);
  }

  openConn(conn: ConnHandle, opts: { allowHalfOpen: boolean }): net.Socket {
    if (typeof conn.stream !== "number") throw new MeshguardError(ErrorCode.INTERNAL, "wasm core returned a connection without a stream id");
    const sock = new WasmSocket(this, conn.stream, opts.allowHalfOpen);
    this.streams.set(conn.stream, sock);
    const early = this.early.get(conn.stream);
    this.early.delete(conn.stream);
    for (const m of early ?? []) sock.onWorker(m);
    return sock;
  }

  /** forget drops a stream that is closed on both sides. */
  forget(id: number): void {
    this.streams.delete(id);
  }

  discardConn(conn: ConnHandle): void {
    if (typeof conn.stream !== "number") return;
    this.early.delete(conn.stream);
    this.postStream({ t: "close", s: conn.stream });
  }

  /** terminate stops the worker (tests: a fresh core per process is the normal life). */
  async terminate(): Promise<void> {
    this.terminating = true;
    await this.worker.terminate();
  }
}

/**
 * WasmSocket is a tailnet connection of the wasm core as a net.Socket
 * (instanceof works, and so do http.Server, pipes, half-close and
 * backpressure): a socket without a handle whose stream methods are
 * messages to the worker. Reads are flow-controlled by credit (the core
 * reads at most 1 MiB ahead of what this socket's consumer took), writes by
 * holding the write callback while more than WRITE_WINDOW is unwritten.
 */
class WasmSocket extends net.Socket {
  private readonly b: WasmBackend;
  private readonly sid: number;
  private unacked = 0; // bytes pushed to the consumer and not credited back
  private inFlight = 0; // bytes written and not yet reported written by the core
  private opsInFlight = 0;
  private waiting: (() => void)[] = [];
  private coreClosed = false;

  constructor(b: WasmBackend, sid: number, allowHalfOpen: boolean) {
    super({ allowHalfOpen });
    this.b = b;
    this.sid = sid;
  }

  onWorker(m: Early): void {
    switch (m.t) {
      case "data": {
        const buf = Buffer.from(m.b.buffer, m.b.byteOffset, m.b.byteLength);
        this.unacked += buf.length;
        (this as unknown as { _unrefTimer?: () => void })._unrefTimer?.();
        if (this.push(buf)) this.credit();
        return;
      }
      case "eof":
        this.push(null);
        // As net.Socket does at EOF: an unread, empty socket ends now.
        this.read(0);
        return;
      case "wrote":
        this.inFlight -= m.n;
        this.opsInFlight--;
        this.release();
        return;
      case "closed":
        this.coreClosed = true;
        this.b.forget(this.sid);
        if (m.err) {
          const err = Object.assign(new Error(`tailnet connection reset: ${m.err}`), { code: "ECONNRESET" });
          this.destroy(err);
        } else {
          // Both directions ended cleanly, or the host asked: nothing more will come.
          this.push(null);
          this.inFlight = 0;
          this.opsInFlight = 0;
          this.release();
          if (this.writableFinished || !this.writable) this.destroy();
          else this.once("finish", () => this.destroy());
        }
        return;
    }
  }

  private credit(): void {
    if (this.unacked >= CREDIT_BATCH && !this.coreClosed) {
      this.b.postStream({ t: "consumed", s: this.sid, n: this.unacked });
      this.unacked = 0;
    }
  }

  private release(): void {
    while (this.waiting.length > 0 && this.inFlight < WRITE_WINDOW && this.opsInFlight < WRITE_OPS) this.waiting.shift()!();
  }

  override _read(): void {
    this.credit();
  }

  // net.Socket does not decode strings (decodeStrings: false): a chunk may be a string with its encoding.
  override _write(chunk: Buffer | string, enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.send([typeof chunk === "string" ? Buffer.from(chunk, enc) : chunk], cb);
  }

  override _writev(chunks: { chunk: Buffer | string; encoding: BufferEncoding }[], cb: (err?: Error | null) => void): void {
    this.send(
      chunks.map((c) => (typeof c.chunk === "string" ? Buffer.from(c.chunk, c.encoding) : c.chunk)),
      cb,
    );
  }

  private send(bufs: Buffer[], cb: (err?: Error | null) => void): void {
    if (this.coreClosed) return cb(Object.assign(new Error("tailnet connection is closed"), { code: "EPIPE" }));
    // One copy the worker owns (transferred): the caller may reuse its buffers.
    const b = new Uint8Array(bufs.reduce((n, x) => n + x.length, 0));
    let off = 0;
    for (const x of bufs) {
      b.set(x, off);
      off += x.length;
    }
    this.inFlight += b.length;
    this.opsInFlight++;
    this.b.postStream({ t: "write", s: this.sid, b });
    (this as unknown as { _unrefTimer?: () => void })._unrefTimer?.();
    if (this.inFlight < WRITE_WINDOW && this.opsInFlight < WRITE_OPS) cb();
    else this.waiting.push(() => cb());
  }

  override _final(cb: (err?: Error | null) => void): void {
    if (!this.coreClosed) this.b.postStream({ t: "closeWrite", s: this.sid });
    cb();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    if (!this.coreClosed) {
      this.coreClosed = true;
      this.b.postStream({ t: "close", s: this.sid });
    }
    this.b.forget(this.sid);
    for (const w of this.waiting.splice(0)) w();
    cb(err);
    // net.Socket emits "close" itself (it turns the stream's emitClose off).
    process.nextTick(() => this.emit("close", err != null));
  }
}
