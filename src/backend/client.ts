import { ErrorCode, MeshguardError } from "../errors.js";
import { errorFromCore } from "./errors.js";
import { PROTOCOL_VERSION, type CoreEvent, type CoreMessage, type HelloResult, type Method, type ParamsArg, type Result } from "./protocol.js";

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
  method: string;
}

/**
 * CoreClient is the host side of the core's message protocol, whatever
 * carries it: numbered calls and their answers, events to subscribers, and
 * the reference count that keeps the process alive while calls are in
 * flight or something holds the core. A transport (native addon, wasm
 * worker) supplies send, ref and unref, and hands every message it
 * receives to onMessage.
 */
export abstract class CoreClient {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly listeners = new Set<(ev: CoreEvent) => void>();
  private holds = 0;
  hello!: HelloResult;

  /** send delivers one call to the core; it may throw (the call then fails). */
  protected abstract send(id: number, method: string, params: string): void;
  /** ref keeps the process alive (first hold). */
  protected abstract ref(): void;
  /** unref lets the process exit (last hold released). */
  protected abstract unref(): void;

  /**
   * handshake is a transport's first exchange: hello (the core must speak
   * this package's protocol version, else BACKEND_UNAVAILABLE naming what
   * was loaded from where) and configure (the process-wide knobs).
   */
  protected async handshake(what: string, env: Record<string, string>, maxProcs: number): Promise<void> {
    const hello = await this.call("hello");
    if (hello.protocol !== PROTOCOL_VERSION) {
      throw new MeshguardError(ErrorCode.BACKEND_UNAVAILABLE, `${what} speaks protocol ${hello.protocol}, this package speaks ${PROTOCOL_VERSION}`, {
        hint: "rebuild it with `npm run build` or reinstall meshguard",
      });
    }
    this.hello = { ...hello, knobs: await this.call("configure", { env, maxProcs }) };
  }

  protected onMessage(raw: string): void {
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

  /** failAll rejects every call in flight (the transport is gone). */
  protected failAll(err: Error): void {
    for (const [id, p] of this.pending) {
      this.pending.delete(id);
      this.release();
      p.reject(err);
    }
  }

  call<M extends Method>(method: M, ...params: ParamsArg<M>): Promise<Result<M>> {
    return new Promise<Result<M>>((resolve, reject) => {
      const id = this.nextId++;
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, method });
      this.acquire();
      try {
        this.send(id, method, JSON.stringify(params[0] ?? {}));
      } catch (err) {
        this.pending.delete(id);
        this.release();
        reject(err instanceof MeshguardError ? err : new MeshguardError(ErrorCode.INTERNAL, `core call ${method} failed`, { cause: err }));
      }
    });
  }

  onEvent(fn: (ev: CoreEvent) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
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
    if (this.holds++ === 0) this.ref();
  }

  private release(): void {
    if (--this.holds === 0) this.unref();
  }
}
