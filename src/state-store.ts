/**
 * Where a node keeps its state (its keys, its login, its preferences): a
 * small key–value store the application can replace — memory for a
 * serverless function, a file, or the application's own (a KV service, S3,
 * a database row) behind the same three methods. MeshNode.start's `state`
 * option (docs/wasm.md, "Serverless").
 *
 * How it reaches the core, the same for the native addon and the wasm core
 * (the Go core keeps its state in one file, DIR/tailscaled.state, whichever
 * backend runs it): the store's value is written there before the node
 * starts, every change the core writes back is handed to the store (a
 * watch on the directory), and a last one when the node closes. The store
 * is the source of truth; the file is the core's working copy.
 */

import { type FSWatcher, existsSync, mkdirSync, readFileSync, renameSync, rmSync, watch, writeFileSync } from "node:fs";
import { dirname, join, resolve, sep } from "node:path";
import { ErrorCode, MeshguardError } from "./errors.js";

/**
 * StateStore is what a node's state goes through. Values are opaque bytes.
 * Each method may return a promise. `delete` is optional: without it, the
 * state of a logged-out ephemeral node is left in the store.
 */
export interface StateStore {
  get(key: string): Promise<Uint8Array | undefined> | Uint8Array | undefined;
  set(key: string, value: Uint8Array): Promise<void> | void;
  delete?(key: string): Promise<void> | void;
}

/** memoryStateStore keeps state in this process only: a fresh identity per process (with an ephemeral node, the serverless default). */
export function memoryStateStore(): StateStore & { readonly size: number } {
  const m = new Map<string, Uint8Array>();
  return {
    get: (k) => m.get(k),
    set: (k, v) => void m.set(k, Uint8Array.from(v)),
    delete: (k) => void m.delete(k),
    get size() {
      return m.size;
    },
  };
}

/**
 * fileStateStore keeps each key in a file under `dir` (created 0700; files
 * 0600, written to a temporary file and renamed, so a crash never leaves a
 * half-written state). A key is a relative path of simple names.
 */
export function fileStateStore(dir: string): StateStore {
  if (typeof dir !== "string" || dir === "") {
    throw new MeshguardError(ErrorCode.INVALID_OPTIONS, "fileStateStore: dir must be a directory path", { hint: 'e.g. fileStateStore("/var/lib/my-agent/meshguard")' });
  }
  const root = resolve(dir);
  const pathOf = (key: string) => {
    const p = resolve(root, key);
    if (!key || key.split("/").some((s) => s === "" || s === "." || s === "..") || !p.startsWith(root + sep)) {
      throw new MeshguardError(ErrorCode.INVALID_OPTIONS, `fileStateStore: key ${JSON.stringify(key)} is not a relative path of simple names`);
    }
    return p;
  };
  return {
    get(key) {
      const p = pathOf(key);
      return existsSync(p) ? new Uint8Array(readFileSync(p)) : undefined;
    },
    set(key, value) {
      const p = pathOf(key);
      mkdirSync(dirname(p), { recursive: true, mode: 0o700 });
      const tmp = `${p}.${process.pid}.tmp`;
      writeFileSync(tmp, value, { mode: 0o600 });
      renameSync(tmp, p);
    },
    delete(key) {
      rmSync(pathOf(key), { force: true });
    },
  };
}

/** The core's state file in its directory (tailscale.com's FileStore, natively and under js). */
export const STATE_FILE = "tailscaled.state";

/** stateKey is the key of a node's state in a store: one store can hold several nodes. */
export function stateKey(hostname: string): string {
  return `${hostname}/${STATE_FILE}`;
}

function isStore(v: unknown): v is StateStore {
  return typeof v === "object" && v !== null && typeof (v as StateStore).get === "function" && typeof (v as StateStore).set === "function";
}

/** checkStore is the validation of the `state` start option. */
export function checkStore(v: unknown): v is StateStore {
  return isStore(v) && ((v as StateStore).delete === undefined || typeof (v as StateStore).delete === "function");
}

/**
 * StateMirror keeps the core's working copy (DIR/tailscaled.state) and a
 * StateStore in step for one node. Errors of the store are reported through
 * `warn` (a node keeps running on its working copy) except the first read,
 * which fails the start: a node must not silently start with a new identity
 * because its store was unreachable.
 */
export class StateMirror {
  private readonly file: string;
  private last: Buffer | undefined;
  private watcher: FSWatcher | undefined;
  private chain: Promise<void> = Promise.resolve();

  private readonly store: StateStore;
  private readonly key: string;
  private readonly dir: string;
  private readonly warn: (err: Error) => void;

  // Plain fields, not parameter properties: fixture processes import these
  // sources with Node's type stripping, which supports erasable syntax only.
  constructor(store: StateStore, key: string, dir: string, warn: (err: Error) => void) {
    this.store = store;
    this.key = key;
    this.dir = dir;
    this.warn = warn;
    this.file = join(dir, STATE_FILE);
  }

  /** load writes the store's value as the core's working copy (none: no file, a new node). */
  async load(): Promise<void> {
    let v: Uint8Array | undefined;
    try {
      v = (await this.store.get(this.key)) ?? undefined;
    } catch (err) {
      throw new MeshguardError(ErrorCode.INVALID_OPTIONS, `state: the store's get(${JSON.stringify(this.key)}) failed: ${(err as Error)?.message ?? String(err)}`, {
        cause: err,
        hint: "the node's state store must be reachable at start; use memoryStateStore() for a fresh identity per process",
      });
    }
    if (v !== undefined && !(v instanceof Uint8Array)) {
      throw new MeshguardError(ErrorCode.INVALID_OPTIONS, `state: the store's get(${JSON.stringify(this.key)}) returned ${typeof v}, not a Uint8Array (or undefined)`);
    }
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    if (v === undefined) rmSync(this.file, { force: true });
    else writeFileSync(this.file, v, { mode: 0o600 });
    this.last = v === undefined ? undefined : Buffer.from(v);
  }

  /** watch hands every change of the working copy to the store from now on. */
  watch(): void {
    try {
      this.watcher = watch(this.dir, { persistent: false }, (_ev, name) => {
        if (name === null || name === STATE_FILE) void this.sync();
      });
      this.watcher.on("error", (err) => this.warn(err));
    } catch (err) {
      this.warn(err as Error);
    }
    void this.sync();
  }

  /** sync hands the working copy to the store when it changed; syncs run one at a time. */
  sync(): Promise<void> {
    this.chain = this.chain.then(async () => {
      let cur: Buffer;
      try {
        cur = readFileSync(this.file);
      } catch {
        return; // not written yet (or between the core's write and rename)
      }
      if (this.last !== undefined && this.last.equals(cur)) return;
      try {
        await this.store.set(this.key, new Uint8Array(cur));
        this.last = cur;
      } catch (err) {
        this.warn(new MeshguardError(ErrorCode.INTERNAL, `state: the store's set(${JSON.stringify(this.key)}) failed (kept in ${this.file}, retried at the next change or close): ${(err as Error)?.message ?? String(err)}`, { cause: err }));
      }
    });
    return this.chain;
  }

  /**
   * close stops watching. A logged-out node's state is of no use (its key
   * is gone from the control server): it is deleted from the store;
   * otherwise the last change is handed over.
   */
  async close(loggedOut: boolean): Promise<void> {
    this.watcher?.close();
    this.watcher = undefined;
    if (!loggedOut) return this.sync();
    await this.chain;
    try {
      await this.store.delete?.(this.key);
    } catch (err) {
      this.warn(new MeshguardError(ErrorCode.INTERNAL, `state: the store's delete(${JSON.stringify(this.key)}) failed: ${(err as Error)?.message ?? String(err)}`, { cause: err }));
    }
  }
}
