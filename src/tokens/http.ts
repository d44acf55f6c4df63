/**
 * The small HTTP plumbing of the issuer's endpoints: bounded body reading,
 * JSON and JWT answers with the caching headers OAuth asks for.
 */

import type http from "node:http";
import type { OAuthRefusal } from "./oauth.js";

/** The largest request body read (bytes): a token request is a few hundred. */
export const MAX_BODY_BYTES = 16 * 1024;

/** readBody reads a request body up to MAX_BODY_BYTES; undefined when it is larger. */
export function readBody(req: http.IncomingMessage): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let over = false;
    req.on("data", (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY_BYTES) over = true;
      else chunks.push(c);
    });
    req.on("end", () => resolve(over ? undefined : Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}

/** sendJson answers JSON; `cache` is a Cache-Control value (default no-store: tokens and refusals are never cached). */
export function sendJson(res: http.ServerResponse, status: number, body: unknown, cache = "no-store"): void {
  const text = JSON.stringify(body);
  const headers: Record<string, string | number> = { "content-type": "application/json", "cache-control": cache, "content-length": Buffer.byteLength(text) };
  if (cache === "no-store") headers.pragma = "no-cache";
  res.writeHead(status, headers);
  res.end(text);
}

export function sendRefusal(res: http.ServerResponse, r: OAuthRefusal): void {
  sendJson(res, r.status, r.body());
}

/** sendJwt answers a compact JWS (the revocation feed). */
export function sendJwt(res: http.ServerResponse, jwt: string): void {
  res.writeHead(200, { "content-type": "application/jwt", "cache-control": "no-store", "content-length": Buffer.byteLength(jwt) });
  res.end(jwt);
}

/** isForm: does the request carry a form body? (Parameters such as `charset` are allowed.) */
export function isForm(req: http.IncomingMessage): boolean {
  return (req.headers["content-type"] ?? "").split(";")[0]!.trim().toLowerCase() === "application/x-www-form-urlencoded";
}
