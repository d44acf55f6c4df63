/**
 * Small HTTP helpers of the request path: reading a bounded body, the
 * headers that never go upstream or back, and answering an error in the
 * API's format.
 */

import type { IncomingMessage, ServerResponse } from "node:http";
import { CREDENTIAL_HEADERS, HOP_HEADERS, NEVER_FORWARDED } from "../guard/gateway-route.js";
import type { ApiFormat } from "./types.js";
import { errorBody, statusOf, type GatewayErrorKind } from "./wire-errors.js";

// The headers that never go upstream are the guard's to know too (it judges a connector call as the gateway sends it).
export { CREDENTIAL_HEADERS, HOP_HEADERS, NEVER_FORWARDED };

/** Response headers not copied back to the client (the gateway frames the body itself). */
export const RESPONSE_DROP = new Set(["connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "content-length", "set-cookie"]);

/** The response header naming the request's log record (GET /meshguard/v1/logs/ID). */
export const REQUEST_ID = "x-meshguard-request-id";

/** TooLarge marks a body over the limit. */
export const TOO_LARGE = Symbol("too large");

/**
 * readBody collects a request body up to `max` bytes. A declared
 * content-length over the limit is refused before reading; a body that
 * grows past it stops being read.
 */
export function readBody(req: IncomingMessage, max: number): Promise<Buffer | typeof TOO_LARGE> {
  const declared = req.headers["content-length"];
  if (declared !== undefined && Number(declared) > max) return Promise.resolve(TOO_LARGE);
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let size = 0;
    const onData = (c: Buffer) => {
      size += c.length;
      if (size > max) {
        req.off("data", onData);
        req.pause();
        resolve(TOO_LARGE);
        return;
      }
      parts.push(c);
    };
    req.on("data", onData);
    req.once("end", () => resolve(parts.length === 1 ? parts[0]! : Buffer.concat(parts, size)));
    req.once("error", reject);
    req.once("close", () => {
      if (!req.complete) reject(new Error("the client closed the connection before sending the whole request"));
    });
  });
}

/**
 * readCallBody reads a call's body up to `max` bytes; a client that goes
 * away meanwhile is recorded on the call (`st`) and gives undefined.
 */
export async function readCallBody(req: IncomingMessage, st: { outcome: string; reason: string | undefined }, max: number): Promise<Buffer | typeof TOO_LARGE | undefined> {
  try {
    return await readBody(req, max);
  } catch (err) {
    st.outcome = "client_aborted";
    st.reason = (err as Error).message;
    return undefined;
  }
}

/** sendJson answers a JSON body. */
export function sendJson(res: ServerResponse, status: number, body: string, headers?: Record<string, string>): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(body), ...headers });
  res.end(body);
}

/** sendError answers an error in `format`; returns the status sent. */
export function sendError(res: ServerResponse, format: ApiFormat, kind: GatewayErrorKind, message: string, opts: { status?: number; headers?: Record<string, string> } = {}): number {
  const status = opts.status ?? statusOf(kind);
  sendJson(res, status, errorBody(format, kind, message, status), { "x-meshguard-error": kind, ...opts.headers });
  return status;
}

/** clientHeaders is the request's headers without hop, credential and cookie headers (what hooks and logs see). */
export function clientHeaders(req: IncomingMessage): Record<string, string> {
  const out: Record<string, string> = {};
  const h = req.headers;
  for (const k in h) {
    if (HOP_HEADERS.has(k) || CREDENTIAL_HEADERS.has(k) || NEVER_FORWARDED.has(k)) continue;
    const v = h[k];
    if (v !== undefined) out[k] = Array.isArray(v) ? v.join(", ") : v;
  }
  return out;
}
