/**
 * The control socket server: a Unix socket, mode 0600, in a directory only
 * its owner can write, answering the methods of ./handlers.ts in the
 * protocol of ./protocol.ts.
 *
 * Safety rules, each checked before listening:
 * - the directory is this user's and not group- or world-writable (else
 *   another user could replace the socket and answer in the node's name);
 * - a file already at the path is removed only when it is a socket nobody
 *   answers on (a stale one from a process that died); a live socket means
 *   another process runs a node on this state directory, anything else is
 *   not ours to delete;
 * - the socket is created under umask 0177 (0600 from birth, where the
 *   process may set its umask) and chmod 0600 after.
 *
 * Nothing a client sends can take the host down: every request is parsed
 * and validated, oversized lines close the connection, handlers run under
 * try/catch with a timeout, and socket errors are swallowed.
 */

import { chmodSync, lstatSync, statSync, unlinkSync, type Stats } from "node:fs";
import net from "node:net";
import { dirname } from "node:path";

import { ErrorCode, MeshguardError } from "../errors.js";
import type { callMethod } from "./handlers.js";
import { LIMITS, SOCKET_PROTOCOL_VERSION, type Inspectable, type RequestId, type SocketError, type SocketResponse } from "./protocol.js";

/** MAX_SOCKET_PATH is the longest path bind(2) accepts: sun_path is 108 bytes on Linux, 104 on macOS, NUL included. */
const MAX_SOCKET_PATH = process.platform === "linux" ? 107 : 103;

/** ControlSocket is an open control socket; close() stops it and removes the file. */
export interface ControlSocket {
  readonly path: string;
  close(): Promise<void>;
}

function fail(message: string, hint?: string, cause?: unknown): MeshguardError {
  return new MeshguardError(ErrorCode.CONTROL_SOCKET_FAILED, message, { ...(hint ? { hint } : {}), ...(cause !== undefined ? { cause } : {}) });
}

/**
 * permissionModelDenies tells whether Node's permission model (`--permission`,
 * as `meshguard run` uses it) keeps this process from writing `dir`: then the
 * socket cannot be made or kept safe there.
 */
export function permissionModelDenies(dir: string): boolean {
  const perm = (process as { permission?: { has(scope: string, reference?: string): boolean } }).permission;
  try {
    return perm !== undefined && !perm.has("fs.write", dir);
  } catch {
    return true;
  }
}

/** checkDirectory refuses a directory another user could write to. */
export function checkDirectory(dir: string): void {
  let st: Stats;
  try {
    st = statSync(dir);
  } catch (err) {
    throw fail(`control socket: cannot use directory ${dir}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, undefined, err);
  }
  if (!st.isDirectory()) throw fail(`control socket: ${dir} is not a directory`);
  const uid = process.getuid?.();
  if (uid !== undefined && st.uid !== uid) {
    throw fail(`control socket: ${dir} belongs to uid ${st.uid}, not to this process (uid ${uid})`, "run the node as the directory's owner, or give it a state directory of its own");
  }
  if ((st.mode & 0o022) !== 0) {
    throw fail(`control socket: ${dir} is group- or world-writable (mode ${(st.mode & 0o777).toString(8).padStart(3, "0")}): another user could replace the socket`, `chmod 700 ${dir}`);
  }
}

/** probe connects to a socket: "live" when something accepts, "stale" when nobody listens. */
export function probe(path: string, timeoutMs = 1000): Promise<"live" | "stale" | "denied"> {
  return new Promise((resolve) => {
    const s = net.connect(path);
    const done = (r: "live" | "stale" | "denied") => {
      clearTimeout(t);
      s.destroy();
      resolve(r);
    };
    // A socket that accepts but never answers is still someone's.
    const t = setTimeout(() => done("live"), timeoutMs);
    s.once("connect", () => done("live"));
    s.once("error", (err: NodeJS.ErrnoException) => done(err.code === "EACCES" || err.code === "EPERM" ? "denied" : "stale"));
  });
}

/** clearStale removes a stale socket at path; anything else there is an error. */
async function clearStale(path: string): Promise<void> {
  let st: Stats;
  try {
    st = lstatSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
    throw fail(`control socket: cannot inspect ${path}: ${(err as NodeJS.ErrnoException).code}`, undefined, err);
  }
  if (!st.isSocket()) throw fail(`control socket: ${path} exists and is not a socket`, `remove it if it is not needed, or give the node another state directory`);
  const state = await probe(path);
  if (state === "denied") throw fail(`control socket: ${path} is a socket this user may not connect to (another user's): not ours to remove`, "give the node a state directory of its own");
  if (state !== "stale") {
    throw fail(`control socket: another process is serving ${path} (a node already runs with this state directory)`, "stop the other node, or give this one another `dir`");
  }
  try {
    unlinkSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw fail(`control socket: cannot remove the stale socket ${path}: ${(err as NodeJS.ErrnoException).code}`, undefined, err);
  }
}

/** listenPrivately binds the socket with umask 0177 where the process may set it (not in a worker thread). */
function listenPrivately(server: net.Server, path: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => reject(fail(`control socket: cannot listen on ${path}: ${err.code ?? err.message}`, undefined, err));
    server.once("error", onError);
    let old: number | undefined;
    try {
      old = process.umask(0o177);
    } catch {
      // worker threads cannot set the umask: the directory check and the chmod below still hold
    }
    try {
      server.once("listening", () => {
        server.off("error", onError);
        resolve();
      });
      // For a path, bind happens synchronously in either call: the umask is back before anything else runs.
      const bindPipe = (server as unknown as { _listen2?: unknown })._listen2;
      if (typeof bindPipe === "function" && bindPipe.length >= 4) {
        // listen() would load Node's cluster module, and with it child_process
        // and dgram (~1 MB resident, docs/core.md "Memory"), only to learn this
        // process is no cluster worker. _listen2 (net.Server's own binder, the
        // one listen() calls in a primary; Node 20–24) binds the same Pipe.
        (bindPipe as (address: string, port: number, addressType: number, backlog: number) => void).call(server, path, -1, -1, 511);
      } else {
        server.listen(path);
      }
    } finally {
      if (old !== undefined) process.umask(old);
    }
  });
}

/**
 * openControlSocket serves `node` on a Unix socket at `path`. It fails with
 * MESHGUARD_CONTROL_SOCKET_FAILED, before creating anything, when the
 * directory is unsafe, the path too long, or another live node serves it.
 */
export async function openControlSocket(node: Inspectable, path: string): Promise<ControlSocket> {
  if (process.platform === "win32") throw fail("control socket: Unix sockets in the state directory are not supported on Windows");
  if (Buffer.byteLength(path) > MAX_SOCKET_PATH) {
    throw fail(`control socket: the path ${path} is ${Buffer.byteLength(path)} bytes; a Unix socket path may have at most ${MAX_SOCKET_PATH}`, "give the node a shorter state directory (`dir`), or a shorter socket path (`controlSocket: \"/path\"`)");
  }
  if (permissionModelDenies(dirname(path))) {
    throw fail(`control socket: Node's permission model does not let this process write ${dirname(path)}`, `allow it (meshguard run --allow-fs-write ${dirname(path)}), or set controlSocket: false`);
  }
  checkDirectory(dirname(path));
  await clearStale(path);

  const conns = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: false }, (conn) => serveConnection(node, path, conn, conns));
  server.on("error", () => {}); // after listening: nothing to report to; connections fail on their own
  server.maxConnections = LIMITS.maxConnections + 1; // the one over the limit is told so (serveConnection)
  await listenPrivately(server, path);
  server.unref(); // the node decides how long the process lives, not its socket
  let ino: number | undefined;
  try {
    chmodSync(path, 0o600);
    ino = lstatSync(path).ino;
  } catch (err) {
    server.close();
    throw fail(`control socket: cannot restrict ${path} to its owner: ${(err as NodeJS.ErrnoException).code}`, undefined, err);
  }

  let closing: Promise<void> | undefined;
  return {
    path,
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const c of conns) c.destroy();
        // Remove the file only if it is still ours (not one a later node made).
        try {
          if (lstatSync(path).ino === ino) unlinkSync(path);
        } catch {
          // already gone
        }
      });
      return closing;
    },
  };
}

function serveConnection(node: Inspectable, path: string, conn: net.Socket, conns: Set<net.Socket>): void {
  conn.on("error", () => {}); // a client that vanishes mid-answer is not an error of the node
  conn.unref();
  const send = (res: SocketResponse) => {
    if (conn.writable) conn.write(JSON.stringify(res) + "\n");
  };
  const sendError = (id: RequestId | null, err: SocketError) => send({ v: SOCKET_PROTOCOL_VERSION, id, error: err });
  if (conns.size >= LIMITS.maxConnections) {
    sendError(null, { code: ErrorCode.CONTROL_SOCKET_BAD_REQUEST, message: `too many connections (at most ${LIMITS.maxConnections} at once)`, hint: "close other clients and retry" });
    conn.end();
    return;
  }
  conns.add(conn);
  conn.on("close", () => conns.delete(conn));
  conn.setTimeout(LIMITS.idleTimeoutMs, () => {
    if (pending === 0) conn.destroy();
  });

  let buf: Buffer = Buffer.alloc(0);
  let pending = 0;
  let queue = Promise.resolve();
  const refuse = (message: string) => {
    sendError(null, { code: ErrorCode.CONTROL_SOCKET_BAD_REQUEST, message });
    conn.end();
    conn.pause();
    buf = Buffer.alloc(0);
  };
  conn.on("data", (chunk: Buffer) => {
    if (conn.isPaused()) return;
    buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
    for (let nl = buf.indexOf(10); nl >= 0; nl = buf.indexOf(10)) {
      const line = buf.subarray(0, nl);
      buf = buf.subarray(nl + 1);
      if (line.length > LIMITS.maxRequestBytes) return refuse(`request is ${line.length} bytes; at most ${LIMITS.maxRequestBytes}`);
      if (line.toString("utf8").trim() === "") continue;
      if (pending >= LIMITS.maxPending) return refuse(`more than ${LIMITS.maxPending} requests waiting for an answer`);
      pending++;
      const text = line.toString("utf8");
      // One request at a time per connection, answered in order.
      queue = queue.then(async () => {
        try {
          send(await answer(node, path, text));
        } finally {
          pending--;
        }
      });
    }
    if (buf.length > LIMITS.maxRequestBytes) refuse(`request is over ${LIMITS.maxRequestBytes} bytes without a newline`);
  });
}

/** answer turns one request line into its response; it never throws. */
async function answer(node: Inspectable, path: string, line: string): Promise<SocketResponse> {
  let id: RequestId | null = null;
  try {
    let req: unknown;
    try {
      req = JSON.parse(line);
    } catch {
      throw new MeshguardError(ErrorCode.CONTROL_SOCKET_BAD_REQUEST, "request is not JSON", { hint: `send one JSON object per line: {"v":1,"id":1,"method":"status"}` });
    }
    if (typeof req !== "object" || req === null || Array.isArray(req)) throw new MeshguardError(ErrorCode.CONTROL_SOCKET_BAD_REQUEST, "request is not a JSON object");
    const r = req as Record<string, unknown>;
    if (typeof r.id === "string" || (typeof r.id === "number" && Number.isFinite(r.id))) id = r.id;
    else throw new MeshguardError(ErrorCode.CONTROL_SOCKET_BAD_REQUEST, "request has no id (a string or a number)");
    if (r.v !== SOCKET_PROTOCOL_VERSION) throw new MeshguardError(ErrorCode.CONTROL_SOCKET_BAD_REQUEST, `protocol version ${JSON.stringify(r.v)} is not spoken here; this node speaks v ${SOCKET_PROTOCOL_VERSION}`, { hint: "use a meshguard CLI of the same release as the node" });
    if (typeof r.method !== "string") throw new MeshguardError(ErrorCode.CONTROL_SOCKET_BAD_REQUEST, "request has no method");
    if (r.params !== undefined && (typeof r.params !== "object" || r.params === null || Array.isArray(r.params))) throw new MeshguardError(ErrorCode.CONTROL_SOCKET_BAD_REQUEST, "params must be a JSON object");
    const method = r.method as Parameters<typeof callMethod>[1];
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new MeshguardError(ErrorCode.TIMEOUT, `${r.method} did not answer within ${LIMITS.requestTimeoutMs} ms`)), LIMITS.requestTimeoutMs);
      timer.unref();
    });
    try {
      // The handlers (and zod, which validates their params) load on the first request, not with the node.
      const { callMethod } = await import("./handlers.js");
      const result = await Promise.race([callMethod(node, method, r.params ?? {}, { socket: path }), timeout]);
      return { v: SOCKET_PROTOCOL_VERSION, id, result };
    } finally {
      clearTimeout(timer);
    }
  } catch (err) {
    return { v: SOCKET_PROTOCOL_VERSION, id, error: toSocketError(err) };
  }
}

/** toSocketError keeps a MeshguardError's code and hint; anything else is an internal error. */
export function toSocketError(err: unknown): SocketError {
  if (err instanceof MeshguardError) {
    const suffix = err.hint !== undefined ? `\n  hint: ${err.hint}` : "";
    const message = suffix && err.message.endsWith(suffix) ? err.message.slice(0, -suffix.length) : err.message;
    return { code: err.code, message, ...(err.hint !== undefined ? { hint: err.hint } : {}) };
  }
  return { code: ErrorCode.INTERNAL, message: `internal error: ${(err as Error)?.message ?? String(err)}` };
}
