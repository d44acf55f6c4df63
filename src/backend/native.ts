import { closeSync } from "node:fs";
import { createRequire } from "node:module";
import net from "node:net";
import { availableParallelism } from "node:os";
import { ErrorCode, MeshguardError } from "../errors.js";
import { errorFromCore } from "./errors.js";
import { PROTOCOL_VERSION, type Backend, type ConnHandle, type CoreEvent, type CoreMessage, type HelloResult, type Method, type ParamsArg, type Result } from "./protocol.js";

interface Addon {
  init(onMessage: (msg: string) => void): void;
  call(id: number, method: string, params: string): void;
  ref(): void;
  unref(): void;
}

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
  method: string;
}

/**
 * NativeBackend talks to the Go core loaded as a Node-API addon. Calls return
 * at once; answers and events arrive on the JS thread through one
 * thread-safe function.
 */
export class NativeBackend implements Backend {
  readonly kind = "native" as const;
  readonly path: string;
  private readonly addon: Addon;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly listeners = new Set<(ev: CoreEvent) => void>();
  private holds = 0;
  hello!: HelloResult;

  private constructor(addon: Addon, path: string) {
    this.addon = addon;
    this.path = path;
  }

  /** load requires the addon at path and checks the protocol version. */
  static async load(path: string, env: Record<string, string>): Promise<NativeBackend> {
    const require = createRequire(import.meta.url);
    const addon = require(path) as Addon;
    const b = new NativeBackend(addon, path);
    addon.init((msg) => b.onMessage(msg));
    const hello = await b.call("hello");
    if (hello.protocol !== PROTOCOL_VERSION) {
      throw new MeshguardError(ErrorCode.BACKEND_UNAVAILABLE, `the addon at ${path} speaks protocol ${hello.protocol}, this package speaks ${PROTOCOL_VERSION}`, {
        hint: "rebuild it with `npm run build` or reinstall meshguard",
      });
    }
    // Leave the JS thread a core of its own unless the user set GOMAXPROCS
    // (which the Go runtime then read at load).
    const maxProcs = process.env.GOMAXPROCS ? 0 : Math.max(1, availableParallelism() - 1);
    b.hello = { ...hello, knobs: await b.call("configure", { env, maxProcs }) };
    return b;
  }

  private onMessage(raw: string): void {
    let msg: CoreMessage;
    try {
      msg = JSON.parse(raw) as CoreMessage;
    } catch {
      return;
    }
    if ("event" in msg) {
      if (msg.event === "panic" && msg.node === 0) {
        // A contained panic outside any node's call: nobody else will see it.
        process.emitWarning(`meshguard core recovered from a panic in ${msg.data.where}: ${msg.data.message}`, { code: "MESHGUARD_CORE_PANIC" });
      }
      for (const fn of this.listeners) {
        try {
          fn(msg);
        } catch (err) {
          // A listener bug must not break the dispatch of other events.
          queueMicrotask(() => {
            throw err;
          });
        }
      }
      return;
    }
    const p = this.pending.get(msg.id);
    if (!p) return;
    this.pending.delete(msg.id);
    this.release();
    if (msg.error) p.reject(errorFromCore(msg.error, p.method));
    else p.resolve(msg.result);
  }

  call<M extends Method>(method: M, ...params: ParamsArg<M>): Promise<Result<M>> {
    return new Promise<Result<M>>((resolve, reject) => {
      const id = this.nextId++;
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, method });
      this.acquire();
      try {
        this.addon.call(id, method, JSON.stringify(params[0] ?? {}));
      } catch (err) {
        this.pending.delete(id);
        this.release();
        reject(new MeshguardError(ErrorCode.INTERNAL, `core call ${method} failed`, { cause: err }));
      }
    });
  }

  onEvent(fn: (ev: CoreEvent) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  openConn(conn: ConnHandle, opts: { allowHalfOpen: boolean }): net.Socket {
    if (typeof conn.fd !== "number") throw new MeshguardError(ErrorCode.INTERNAL, "native core returned a connection without fd");
    return new net.Socket({ fd: conn.fd, readable: true, writable: true, allowHalfOpen: opts.allowHalfOpen });
  }

  discardConn(conn: ConnHandle): void {
    if (typeof conn.fd === "number") {
      try {
        closeSync(conn.fd);
      } catch {
        // already closed
      }
    }
  }

  hold(): () => void {
    this.acquire();
    let released = false;
    return () => {
      if (!released) {
        released = true;
        this.release();
      }
    };
  }

  private acquire(): void {
    if (this.holds++ === 0) this.addon.ref();
  }

  private release(): void {
    if (--this.holds === 0) this.addon.unref();
  }
}
