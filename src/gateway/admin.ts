/**
 * The gateway's own API under /meshguard/v1: the routes the parts supply
 * (logs, buckets) plus GET /whoami. Callers are identified by the tailnet
 * like every other request; each route enforces what a role may see (a user
 * reads only their own logs), so nothing here trusts the client.
 *
 * Answers are JSON; an error is {"error": {"code", "message"}}.
 */

import type { IncomingMessage, ServerResponse } from "node:http";
import { readBody, sendJson, TOO_LARGE } from "./http-util.js";
import type { AdminRequest, AdminResponse, AdminRoute, Caller } from "./types.js";

export const ADMIN_PREFIX = "/meshguard/v1";
const MAX_ADMIN_BODY = 1 << 20;

interface Compiled {
  route: AdminRoute;
  parts: string[];
}

/** AdminRouter matches a method and path against its routes; `:name` segments become params. */
export class AdminRouter {
  private readonly routes: Compiled[];

  constructor(routes: readonly AdminRoute[]) {
    this.routes = [whoami, ...routes].map((route) => ({ route, parts: route.pattern.split("/").slice(1) }));
  }

  /** handle answers one admin request; `path` is after the prefix, without the query. */
  async handle(req: IncomingMessage, res: ServerResponse, caller: Caller, path: string, query: string): Promise<void> {
    const segs = path.split("/").slice(1);
    let methodMismatch = false;
    for (const c of this.routes) {
      const params = match(c.parts, segs);
      if (params === undefined) continue;
      if (c.route.method !== req.method) {
        methodMismatch = true;
        continue;
      }
      let body: unknown;
      if (req.method === "POST" || req.method === "PUT") {
        const raw = await readBody(req, MAX_ADMIN_BODY);
        if (raw === TOO_LARGE) return fail(res, 413, "too_large", `the body is larger than ${MAX_ADMIN_BODY} bytes`);
        if (raw.length > 0) {
          try {
            body = JSON.parse(raw.toString("utf8"));
          } catch (err) {
            return fail(res, 400, "bad_request", `the body is not valid JSON: ${(err as Error).message}`);
          }
        }
      }
      const areq: AdminRequest = { method: req.method, path, query: new URLSearchParams(query), body, caller };
      let out: AdminResponse;
      try {
        out = await c.route.handle(areq, params);
      } catch (err) {
        const e = err as { status?: unknown; code?: unknown; message?: unknown };
        const status = typeof e.status === "number" ? e.status : 500;
        return fail(res, status, typeof e.code === "string" ? e.code : "internal", String(e.message ?? err));
      }
      return send(res, out);
    }
    if (methodMismatch) return fail(res, 405, "method_not_allowed", `${req.method} is not allowed on ${ADMIN_PREFIX}${path}`);
    return fail(res, 404, "not_found", `no such endpoint: ${ADMIN_PREFIX}${path}`);
  }
}

function match(pattern: string[], segs: string[]): Record<string, string> | undefined {
  if (pattern.length !== segs.length) return undefined;
  const params: Record<string, string> = {};
  for (let i = 0; i < pattern.length; i++) {
    const p = pattern[i]!;
    if (p.startsWith(":")) {
      try {
        params[p.slice(1)] = decodeURIComponent(segs[i]!);
      } catch {
        return undefined;
      }
    } else if (p !== segs[i]) return undefined;
  }
  return params;
}

async function send(res: ServerResponse, out: AdminResponse): Promise<void> {
  if ("stream" in out) {
    res.writeHead(out.status, { "content-type": out.contentType });
    for await (const piece of out.stream) {
      if (res.destroyed) return;
      if (!res.write(piece)) await new Promise<void>((r) => (res.once("drain", r), res.once("close", r)));
    }
    res.end();
    return;
  }
  if ("html" in out) {
    res.writeHead(out.status, { ...out.headers, "content-type": "text/html; charset=utf-8", "cache-control": "no-store", "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'" });
    res.end(out.html);
    return;
  }
  sendJson(res, out.status, JSON.stringify(out.body));
}

function fail(res: ServerResponse, status: number, code: string, message: string): void {
  sendJson(res, status, JSON.stringify({ error: { code, message } }));
}

/** GET /whoami: who the gateway takes the caller to be, and its role. */
const whoami: AdminRoute = {
  method: "GET",
  pattern: "/whoami",
  async handle(req) {
    const c = req.caller;
    return { status: 200, body: { node: c.node, user: c.user, tags: c.tags, owners: c.owners, groups: c.groups, role: c.role, via: c.via, addr: c.addr } };
  },
};
