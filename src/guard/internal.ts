/**
 * The guard's own network calls (the approval webhook, a policy server
 * poll) must not be judged by the policy they serve. They are marked here,
 * synchronously, and the interception points let marked sockets through.
 *
 * This is not a security boundary: code in the same process can always
 * undo a monkey patch. The guard protects against an agent (or a library it
 * uses) calling what its policy does not allow, not against hostile code
 * already running inside the process.
 */

import http from "node:http";
import https from "node:https";
import net from "node:net";
import tls from "node:tls";

/** Set on a socket the guard opened for itself. */
export const kInternal = Symbol.for("meshguard.guard.internal");

let internalDepth = 0;

/** isInternalConnect is true while the guard itself is opening a connection (read by the connect patch). */
export function isInternalConnect(): boolean {
  return internalDepth > 0;
}

/** internalConnection opens a TCP or TLS connection that the guard does not check. */
export function internalConnection(opts: net.NetConnectOpts | tls.ConnectionOptions, secure: boolean): net.Socket {
  internalDepth++;
  try {
    const s = secure ? tls.connect(opts as tls.ConnectionOptions) : net.connect(opts as net.NetConnectOpts);
    (s as unknown as Record<symbol, boolean>)[kInternal] = true;
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

/** internalRequest makes one HTTP(S) request outside the guard; the body is read up to maxBytes. */
export function internalRequest(
  url: string,
  opts: { method?: string; headers?: Record<string, string>; body?: string | Buffer; signal?: AbortSignal; maxBytes?: number; socket?: () => net.Socket },
): Promise<InternalResponse> {
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
          const s = opts.socket ? opts.socket() : internalConnection(o as net.NetConnectOpts, secure);
          (s as unknown as Record<symbol, boolean>)[kInternal] = true;
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
