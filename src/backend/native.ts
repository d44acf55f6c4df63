import { closeSync } from "node:fs";
import { createRequire } from "node:module";
import net from "node:net";
import { availableParallelism } from "node:os";
import { ErrorCode, MeshguardError } from "../errors.js";
import { CoreClient } from "./client.js";
import type { Backend, ConnHandle } from "./protocol.js";

interface Addon {
  init(onMessage: (msg: string) => void): void;
  call(id: number, method: string, params: string): void;
  ref(): void;
  unref(): void;
}

/**
 * NativeBackend talks to the Go core loaded as a Node-API addon. Calls return
 * at once; answers and events arrive on the JS thread through one
 * thread-safe function.
 */
export class NativeBackend extends CoreClient implements Backend {
  readonly kind = "native" as const;
  readonly path: string;
  private readonly addon: Addon;

  private constructor(addon: Addon, path: string) {
    super();
    this.addon = addon;
    this.path = path;
  }

  /** load requires the addon at path and checks the protocol version. */
  static async load(path: string, env: Record<string, string>): Promise<NativeBackend> {
    const require = createRequire(import.meta.url);
    const addon = require(path) as Addon;
    const b = new NativeBackend(addon, path);
    addon.init((msg) => b.onMessage(msg));
    // Leave the JS thread a core of its own unless the user set GOMAXPROCS
    // (which the Go runtime then read at load).
    const maxProcs = process.env.GOMAXPROCS ? 0 : Math.max(1, availableParallelism() - 1);
    await b.handshake(`the addon at ${path}`, env, maxProcs);
    return b;
  }

  protected send(id: number, method: string, params: string): void {
    this.addon.call(id, method, params);
  }

  protected ref(): void {
    this.addon.ref();
  }

  protected unref(): void {
    this.addon.unref();
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
}
