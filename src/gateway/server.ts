/**
 * The gateway's HTTP front: one handler for the tailnet listener and the
 * loopback listener, which differ only in how the caller is identified.
 * Dispatch: /meshguard/v1/... is the gateway's own API; /console/ its web
 * console (./console/); model listings are answered here; every other known
 * endpoint is an LLM call (./call.ts); anything else is a 404 in the format
 * the client most likely speaks. A browser's request from another site, or
 * naming a host that is not the gateway's, is refused first
 * (./console/browser.ts).
 */

import type { IncomingMessage, ServerResponse } from "node:http";
import { ADMIN_PREFIX, AdminRouter } from "./admin.js";
import { handleCall } from "./call.js";
import { browserRefusal } from "./console/browser.js";
import { isConsolePath } from "./console/serve.js";
import type { BaseCaller } from "./caller.js";
import type { GatewayContext } from "./context.js";
import { endpointOf, formatGuess } from "./facts.js";
import { sendError, sendJson } from "./http-util.js";
import { allowedModel, allowedModels, modelList, modelObject } from "./models.js";
import type { Caller } from "./types.js";

const METRICS_PATH = "/metrics";

/** Identify says who sent a request (tailnet whois, or the loopback principal). */
export type Identify = (req: IncomingMessage) => Promise<BaseCaller> | BaseCaller;

export function requestHandler(ctx: GatewayContext, identify: Identify): (req: IncomingMessage, res: ServerResponse) => void {
  const admin = new AdminRouter(ctx.adminRoutes);
  const callerOf = callerMemo(ctx);
  return (req, res) => {
    const t0 = performance.now();
    ctx.inflight.enter();
    let left = false;
    const leave = () => {
      if (left) return;
      left = true;
      ctx.inflight.leave();
    };
    res.once("finish", leave);
    res.once("close", leave);
    handle(ctx, admin, identify, callerOf, req, res, t0).catch((err: unknown) => {
      ctx.warn(err);
      if (!res.headersSent) sendJson(res, 500, JSON.stringify({ error: { message: "the gateway failed to handle the request", type: "api_error" } }));
      else res.destroy();
    });
  };
}

/**
 * callerMemo decides a caller's role and chains once per identity and
 * policy: identification hands out the same BaseCaller for a connection (or
 * the loopback principal) while the policy is unchanged, so the request path
 * allocates nothing for it. Callers are never mutated after this.
 */
function callerMemo(ctx: GatewayContext): (base: BaseCaller) => Caller {
  const memo = new WeakMap<BaseCaller, { policy: unknown; caller: Caller }>();
  return (base) => {
    const policy = ctx.policy();
    let m = memo.get(base);
    if (m === undefined || m.policy !== policy) {
      const access = ctx.access(base, policy);
      m = { policy, caller: { ...base, role: access.role } };
      memo.set(base, m);
      ctx.chains.set(m.caller, access.chains);
    }
    return m.caller;
  };
}

async function handle(ctx: GatewayContext, admin: AdminRouter, identify: Identify, callerOf: (b: BaseCaller) => Caller, req: IncomingMessage, res: ServerResponse, t0: number): Promise<void> {
  const url = req.url ?? "/";
  const q = url.indexOf("?");
  const path = q < 0 ? url : url.slice(0, q);
  const query = q < 0 ? "" : url.slice(q + 1);
  const method = req.method ?? "GET";
  // GET /metrics is where scrapers look: the admin API's /metrics under its usual name, with the same rule (admins only).
  const isMetrics = path === METRICS_PATH;
  const isAdmin = isMetrics || path === ADMIN_PREFIX || path.startsWith(`${ADMIN_PREFIX}/`);
  const ep = isAdmin || isConsolePath(path) ? undefined : endpointOf(method, path, req.headers);
  const format = ep?.format ?? formatGuess(path, req.headers);

  const isConsole = ctx.console !== undefined && isConsolePath(path);
  const refusal = browserRefusal(req, path, ctx.browserNames);
  if (refusal !== undefined) {
    if (isAdmin || isConsole) sendJson(res, 403, JSON.stringify({ error: { code: "browser_refused", message: refusal } }));
    else sendError(res, format, "denied", refusal);
    return;
  }
  if (ctx.inflight.closing) {
    sendError(res, format, "unavailable", "the gateway is shutting down", { headers: { connection: "close" } });
    return;
  }
  if (isConsole) return ctx.console!.handle(req, res, path);
  if (!isAdmin && ep === undefined && ctx.mcp !== undefined && path === ctx.mcp.path) {
    let caller: Caller;
    try {
      const b = identify(req);
      caller = callerOf(b instanceof Promise ? await b : b);
    } catch (err) {
      sendJson(res, 403, JSON.stringify({ jsonrpc: "2.0", error: { code: -32003, message: `the gateway could not identify the caller: ${(err as Error).message}` }, id: null }));
      return;
    }
    return ctx.mcp.handle(req, res, caller);
  }
  const conn = !isAdmin && ep === undefined ? ctx.connectors?.match(path) : undefined;
  if (conn !== undefined) {
    let caller: Caller;
    try {
      const b = identify(req);
      caller = callerOf(b instanceof Promise ? await b : b);
    } catch (err) {
      sendJson(res, 403, JSON.stringify({ error: { code: "policy_denied", message: `the gateway could not identify the caller: ${(err as Error).message}` } }));
      return;
    }
    return ctx.connectors!.handle(req, res, caller, conn, query, t0);
  }
  if (!isAdmin && ep === undefined) {
    sendError(res, format, "not_found", `${method} ${path} is not an endpoint of this gateway (OpenAI /v1/chat/completions, /v1/responses, /v1/embeddings, /v1/models; Anthropic /v1/messages, /v1/messages/count_tokens; Gemini /v1beta/models/MODEL:generateContent, :streamGenerateContent, :countTokens)`);
    return;
  }

  let caller: Caller;
  try {
    const b = identify(req);
    caller = callerOf(b instanceof Promise ? await b : b);
  } catch (err) {
    // No identity, no service: the tailnet could not say who this is.
    sendError(res, format, "denied", `the gateway could not identify the caller: ${(err as Error).message}`);
    return;
  }

  if (isAdmin) return admin.handle(req, res, caller, isMetrics ? METRICS_PATH : path.slice(ADMIN_PREFIX.length) || "/", query);
  if (ep!.operation.endsWith(".models")) {
    if (ep!.pathModel === undefined) sendJson(res, 200, JSON.stringify(modelList(ep!.format, await allowedModels(ctx, caller, ep!.format))));
    else {
      const m = allowedModel(ctx, caller, ep!.format, ep!.pathModel);
      if (m) sendJson(res, 200, JSON.stringify(modelObject(ep!.format, m)));
      else sendError(res, ep!.format, "not_found", `the model ${JSON.stringify(ep!.pathModel)} does not exist or you may not use it`);
    }
    return;
  }
  await handleCall(ctx, req, res, ep!, caller, t0, path, query);
}
