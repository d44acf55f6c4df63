/**
 * The guard's own network calls (the approval webhook, a policy server
 * poll, over the host network or a tailnet node) must not be judged by the
 * policy they serve. This module is the one way to make such a call: host
 * connections are recorded here, synchronously, and the interception points
 * let recorded sockets through; tailnet dials run in a context the guard's
 * dial subscriber recognises.
 *
 * What marks a call as the guard's own is private to this module: a
 * WeakSet of sockets, a counter and an AsyncLocalStorage, none of them
 * reachable from outside the guard (no global symbol, no property on the
 * socket). A second copy of meshguard in the process has its own: its
 * internal calls are judged by the installed guard like any other call.
 *
 * This is not a boundary against hostile code already running in the
 * process (it can always undo a monkey patch); it keeps an agent, or a
 * library it uses, from calling what its policy does not allow.
 */

import { AsyncLocalStorage } from "node:async_hooks";
import http from "node:http";
import https from "node:https";
import net from "node:net";
import tls from "node:tls";
import { isOwnThreadStart } from "../own-thread.js";

/** Sockets the guard opened for itself. */
const internalSockets = new WeakSet<net.Socket>();

const internalDial = new AsyncLocalStorage<true>();

/** isInternalDial is true while the guard itself dials over a tailnet node (read by the guard's dial subscriber). */
export function isInternalDial(): boolean {
  return internalDial.getStore() === true;
}

/**
 * isInternalWorker tells whether the Worker being constructed for `file` is
 * the library's own thread (the wasm core's worker, started by the backend):
 * the guard's Worker constructor starts it without the guard's preload. That
 * thread runs only meshguard's code and is given no Node options (no
 * NODE_OPTIONS, no execArgv: no preload reaches it), so its traffic —
 * control, DERP, the core's HTTP — is the library's and never judged, while
 * every call of the agent's own code, in any thread, still is.
 */
export function isInternalWorker(file: unknown): boolean {
  return isOwnThreadStart(file);
}

/** A tailnet node to dial through (a MeshNode). */
export interface Dialer {
  dial(host: string, port: number): Promise<net.Socket>;
}

let internalDepth = 0;

/** isInternalConnect is true while the guard itself is opening a connection (read by the connect patch). */
export function isInternalConnect(): boolean {
  return internalDepth > 0;
}

/** isInternalSocket tells whether the guard opened this socket for itself. */
export function isInternalSocket(s: unknown): boolean {
  return typeof s === "object" && s !== null && internalSockets.has(s as net.Socket);
}

/** internalConnection opens a TCP or TLS connection that the guard does not check. */
export function internalConnection(opts: net.NetConnectOpts | tls.ConnectionOptions, secure: boolean): net.Socket {
  internalDepth++;
  try {
    const s = secure ? tls.connect(opts as tls.ConnectionOptions) : net.connect(opts as net.NetConnectOpts);
    internalSockets.add(s);
    return s;
  } finally {
    internalDepth--;
  }
}

export interface InternalResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/**
 * internalRequest makes one HTTP(S) request outside the guard; the body is
 * read up to maxBytes. With `node` the connection is a tailnet dial through
 * that node (not judged either); without, the host network.
 */
export async function internalRequest(
  url: string,
  opts: { method?: string; headers?: Record<string, string>; body?: string | Buffer; signal?: AbortSignal; maxBytes?: number; node?: Dialer },
): Promise<InternalResponse> {
  let sock: net.Socket | undefined;
  if (opts.node !== undefined) {
    const u = new URL(url);
    const port = Number(u.port) || (u.protocol === "https:" ? 443 : 80);
    const node = opts.node;
    const raw = await internalDial.run(true, () => node.dial(u.hostname, port));
    if (opts.signal?.aborted) {
      raw.destroy();
      throw opts.signal.reason;
    }
    sock = u.protocol === "https:" ? tls.connect({ socket: raw, ...(net.isIP(u.hostname) ? {} : { servername: u.hostname }) }) : raw;
  }
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const secure = u.protocol === "https:";
    const mod = secure ? https : http;
    const req = mod.request(
      u,
      {
        method: opts.method ?? "GET",
        headers: opts.headers ?? {},
        // No agent: with one, Node would ignore createConnection.
        ...(opts.signal ? { signal: opts.signal } : {}),
        createConnection: (o: object) => {
          const s = sock ?? internalConnection(o as net.NetConnectOpts, secure);
          internalSockets.add(s);
          return s;
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        let n = 0;
        const max = opts.maxBytes ?? 1 << 20;
        res.on("data", (c: Buffer) => {
          n += c.length;
          if (n > max) {
            req.destroy(new Error(`response larger than ${max} bytes`));
            return;
          }
          chunks.push(c);
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end(opts.body);
  });
}
