/**
 * The fast path of the aggregating MCP endpoint: the hot request — a POST of
 * one JSON-RPC `tools/call` on an open session to a streamable-HTTP
 * upstream — without the SDK's server and client in between.
 *
 * The endpoint reads and parses the body itself, checks the message's shape
 * cheaply, and judges the call with the session's own `judged` (the same
 * decision, approval, quota, log record and session id as every other
 * call). An allowed call goes upstream as raw JSON-RPC over a kept-alive
 * connection, on the upstream MCP session the session's SDK Client opened:
 * the headers are the ones that Client's transport sends (its session id,
 * the negotiated protocol version, and any header or credential its
 * `requestInit` carries), and a transport built with a `fetch` of its own is
 * called through that `fetch` — unless that fetch is a server's credential
 * (./upstream-auth.ts), whose injector gives the credential for the call
 * on the kept-alive connection (a 401 renews it and resends once). The call's JSON-RPC id upstream is one the
 * SDK Client never uses (a string; its ids are numbers), and the caller's id
 * is put back on the answer. What the upstream sends on the call's stream
 * before the answer is dealt with as the SDK path would: progress of this
 * call and log messages go to the caller as they come; a request
 * (ping, sampling, elicitation, roots) or any other message is handed to
 * the session's SDK Client, which answers it exactly as if it had arrived
 * on its own transport. The answer is checked with the SDK's
 * CallToolResult schema, as the SDK Client checks it.
 *
 * A cancellation (`notifications/cancelled` naming the call, or the caller's
 * connection closing before its answer) aborts the call: a held approval
 * gives up, and a call already upstream is cancelled there
 * (`notifications/cancelled` through the SDK transport) and its request
 * closed. The timeout is the server's, as on the SDK path.
 *
 * Anything else takes the SDK path (McpSession's transport), with the
 * parsed body: batches, other methods, task-augmented calls, stdio
 * upstreams, an upstream transport with an OAuth provider, tools the SDK
 * Client would check further (an output schema, task-only tools), a body
 * without Content-Length or over the gateway's limit, headers the SDK
 * transport would refuse. `MESHGUARD_MCP_FAST=0` in the gateway's
 * environment turns the fast path off.
 */

import type { IncomingMessage, ServerResponse } from "node:http";
import { randomUUID } from "node:crypto";
import { StringDecoder } from "node:string_decoder";
import { Agent } from "undici";
import { createParser } from "eventsource-parser";
import { StreamableHTTPClientTransport, StreamableHTTPError } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { CallToolResultSchema, ErrorCode, JSONRPCMessageSchema, McpError, SUPPORTED_PROTOCOL_VERSIONS, type CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { splitName } from "./names.js";
import type { McpSession, Upstream } from "./session.js";
import { injectorOf, withQuery } from "./upstream-auth.js";

/** Counts of requests that took the fast path and that fell back to the SDK path (tests and benchmarks read them). */
export const fastStats = { calls: 0, fallbacks: 0 };

type RpcId = string | number;

/** A tools/call the fast path may serve. */
interface Plan {
  id: RpcId;
  up: Upstream;
  /** The upstream's tool name (without the server prefix). */
  name: string;
  args: Record<string, unknown>;
  /** The caller's params, sent upstream with the name and arguments replaced. */
  params: Record<string, unknown>;
  progressToken: RpcId | undefined;
}

/** What the fast path reaches of the SDK client transport (fields it keeps; their absence sends a call the SDK way). */
interface TransportInternals {
  _commonHeaders?: () => Promise<Headers>;
  _fetch?: typeof fetch;
  _requestInit?: RequestInit;
  _authProvider?: unknown;
  _url?: URL;
}

/** What the fast path reaches of the SDK Client: the checks its callTool makes before and after the request. */
interface ClientInternals {
  isToolTaskRequired?: (name: string) => boolean;
  getToolOutputValidator?: (name: string) => unknown;
}

/** Upstream ids: never a number (the SDK Client's own ids are), unique in this process. */
const ID_PREFIX = `meshguard-${randomUUID().slice(0, 8)}-`;
let seq = 0;

const SSE_HEAD = "event: message\ndata: ";

export class McpFastPath {
  readonly enabled: boolean;
  private readonly maxBody: number;
  private readonly agent: Agent;
  /** Fast calls in flight, per session, by the caller's JSON-RPC id: a cancellation aborts them. */
  private readonly inflight = new WeakMap<McpSession, Map<RpcId, AbortController>>();

  constructor(maxBodyBytes: number, env: NodeJS.ProcessEnv = process.env) {
    this.enabled = env.MESHGUARD_MCP_FAST !== "0";
    this.maxBody = maxBodyBytes;
    this.agent = new Agent({ keepAliveTimeout: 30_000, connections: 64 });
  }

  /** wants says whether a request on an open session may be read here: a POST whose headers the SDK transport would accept, with a bounded body. */
  wants(req: IncomingMessage): boolean {
    if (!this.enabled || req.method !== "POST") return false;
    const h = req.headers;
    const accept = h.accept;
    if (accept === undefined || !accept.includes("application/json") || !accept.includes("text/event-stream")) return false;
    const ct = h["content-type"];
    if (ct === undefined || ct.split(";", 1)[0]!.trim().toLowerCase() !== "application/json") return false;
    const v = h["mcp-protocol-version"];
    if (v !== undefined && (typeof v !== "string" || !SUPPORTED_PROTOCOL_VERSIONS.includes(v))) return false;
    const len = Number(h["content-length"]);
    return Number.isSafeInteger(len) && len > 0 && len <= this.maxBody && h["transfer-encoding"] === undefined;
  }

  /** handle serves a request `wants` took: a fast call, or the SDK path with the parsed body. */
  async handle(s: McpSession, req: IncomingMessage, res: ServerResponse): Promise<void> {
    let msg: unknown;
    try {
      msg = JSON.parse((await readBody(req)).toString("utf8"));
    } catch {
      // What the SDK transport answers a body that is not JSON.
      const body = JSON.stringify({ jsonrpc: "2.0", error: { code: -32700, message: "Parse error: Invalid JSON" }, id: null });
      res.writeHead(400, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
      res.end(body);
      return;
    }
    // A cancellation of a fast call aborts it here; the SDK path gets the notification too (and answers it).
    for (const m of Array.isArray(msg) ? msg : [msg]) {
      if (!isObject(m) || m.method !== "notifications/cancelled" || !isObject(m.params)) continue;
      const id = m.params.requestId;
      if (typeof id === "string" || typeof id === "number") this.inflight.get(s)?.get(id)?.abort(new Error(typeof m.params.reason === "string" ? m.params.reason : "cancelled by the client"));
    }
    let plan: Plan | undefined;
    try {
      plan = await this.plan(s, msg);
    } catch {
      plan = undefined;
    }
    if (plan === undefined) {
      fastStats.fallbacks++;
      return s.transport.handleRequest(req, res, msg);
    }
    fastStats.calls++;
    return this.call(s, plan, res);
  }

  /** close ends the upstream connections (after the sessions closed: a call still running then fails, and is logged so). */
  async close(): Promise<void> {
    await this.agent.destroy().catch(() => {});
  }

  /** plan checks a message is a tools/call the fast path serves faithfully; undefined sends it the SDK way. */
  private async plan(s: McpSession, msg: unknown): Promise<Plan | undefined> {
    if (!isObject(msg) || msg.jsonrpc !== "2.0" || msg.method !== "tools/call") return undefined;
    const id = msg.id;
    if (!(typeof id === "string" || (typeof id === "number" && Number.isSafeInteger(id)))) return undefined;
    const params = msg.params;
    if (!isObject(params) || typeof params.name !== "string" || params.task !== undefined) return undefined;
    const args = params.arguments ?? {};
    if (!isObject(args)) return undefined;
    const meta = params._meta;
    let progressToken: RpcId | undefined;
    if (meta !== undefined) {
      if (!isObject(meta)) return undefined;
      const t = meta.progressToken;
      if (!(t === undefined || typeof t === "string" || (typeof t === "number" && Number.isSafeInteger(t)))) return undefined;
      progressToken = t;
    }
    // An uninitialized session is refused by the SDK transport.
    if (s.transport.sessionId !== s.id) return undefined;
    const split = splitName(params.name);
    if (split === undefined) return undefined;
    const up = (await s.ups()).get(split.server);
    if (up === undefined || !(up.transport instanceof StreamableHTTPClientTransport)) return undefined;
    const t = up.transport as unknown as TransportInternals;
    if (typeof t._commonHeaders !== "function" || t._authProvider !== undefined || !(t._url instanceof URL) || up.transport.sessionId === undefined) return undefined;
    const c = up.client as unknown as ClientInternals;
    if (typeof c.isToolTaskRequired !== "function" || typeof c.getToolOutputValidator !== "function") return undefined;
    if (c.isToolTaskRequired.call(up.client, split.name) || c.getToolOutputValidator.call(up.client, split.name) !== undefined) return undefined;
    return { id, up, name: split.name, args, params, progressToken };
  }

  /** call judges and runs one fast call, answering the caller on an SSE stream as the SDK transport does. */
  private async call(s: McpSession, p: Plan, res: ServerResponse): Promise<void> {
    const ac = new AbortController();
    let calls = this.inflight.get(s);
    if (calls === undefined) this.inflight.set(s, (calls = new Map()));
    calls.set(p.id, ac);
    let ended = false;
    const onClose = () => {
      if (!ended) ac.abort(new Error("the client closed the connection"));
    };
    res.on("close", onClose);
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache, no-transform", connection: "keep-alive", "x-accel-buffering": "no", "mcp-session-id": s.id });
    // The head goes with the first event; a call held longer (an approval) sends it now, so the caller's HTTP client does not time out waiting for it.
    const flush = setTimeout(() => res.flushHeaders(), 1000);
    // What the upstream says on the way (progress, log messages) is scrubbed of the gateway's secrets as its error messages are.
    const notify = (m: unknown) => {
      if (!ac.signal.aborted && !res.destroyed) res.write(SSE_HEAD + s.scrubText(JSON.stringify(m), p.up) + "\n\n");
    };
    let last: unknown;
    try {
      const out = await s.judged("mcp.call", { kind: "mcp", server: p.up.name, tool: p.name, args: p.args }, ac.signal, (up, signal, args) => this.forward(s, { ...p, up, args }, signal, notify));
      last = { result: out, jsonrpc: "2.0", id: p.id };
    } catch (err) {
      // The SDK server's error response.
      const e = err as { code?: unknown; message?: string; data?: unknown };
      last = { jsonrpc: "2.0", id: p.id, error: { code: Number.isSafeInteger(e.code) ? e.code : ErrorCode.InternalError, message: e.message ?? "Internal error", ...(e.data !== undefined ? { data: e.data } : {}) } };
    } finally {
      ended = true;
      clearTimeout(flush);
      res.off("close", onClose);
      if (calls.get(p.id) === ac) calls.delete(p.id);
      // The head (unless sent already), the answer and the end of the stream in one write; a cancelled call gets no answer, as on the SDK path.
      if (!ac.signal.aborted && !res.destroyed && last !== undefined) res.end(SSE_HEAD + JSON.stringify(last) + "\n\n");
      else res.end();
    }
  }

  /**
   * forward sends the call upstream and resolves with its result (or
   * rejects as the SDK Client's callTool would); `notify` gets what goes to
   * the caller on the way.
   */
  private async forward(s: McpSession, p: Plan, signal: AbortSignal, notify: (m: unknown) => void): Promise<CallToolResult> {
    const upId = ID_PREFIX + ++seq;
    const t = p.up.transport as unknown as Required<Pick<TransportInternals, "_commonHeaders" | "_url">> & TransportInternals;
    const headers = await t._commonHeaders();
    // As the SDK Client: a progress token of the caller's becomes the upstream call's id, and is put back on the way out.
    const params = { ...p.params, name: p.name, arguments: p.args, ...(p.progressToken !== undefined ? { _meta: { ...(p.params._meta as object), progressToken: upId } } : {}) };
    const body = JSON.stringify({ jsonrpc: "2.0", id: upId, method: "tools/call", params });
    const upAc = new AbortController();
    const timeout = s.timeoutOf(p.up.name);

    return new Promise<CallToolResult>((resolve, reject) => {
      let settled = false;
      const settle = (err: unknown, out?: CallToolResult) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        signal.removeEventListener("abort", onAbort);
        if (err !== undefined) reject(err);
        else resolve(out!);
      };
      // As the SDK Client: a call given up on is cancelled upstream, and its stream closed.
      const cancel = (reason: unknown) => {
        if (settled) return;
        settle(reason);
        upAc.abort();
        p.up.transport.send({ jsonrpc: "2.0", method: "notifications/cancelled", params: { requestId: upId, reason: String(reason) } }).catch(() => {});
      };
      const onAbort = () => cancel(signal.reason);
      const timer = setTimeout(() => cancel(McpError.fromError(ErrorCode.RequestTimeout, "Request timed out", { timeout })), timeout);
      if (signal.aborted) return onAbort();
      signal.addEventListener("abort", onAbort, { once: true });

      const onMessage = (m: unknown) => {
        if (!isObject(m)) return;
        if (!settled && m.id === upId && ("result" in m || "error" in m)) {
          if (isObject(m.error)) {
            const e = m.error;
            return settle(McpError.fromError(e.code as number, e.message as string, e.data));
          }
          if (plainTextResult(m.result)) return settle(undefined, m.result);
          const r = CallToolResultSchema.safeParse(m.result);
          return r.success ? settle(undefined, r.data as CallToolResult) : settle(r.error);
        }
        if (typeof m.method === "string" && m.id === undefined && isObject(m.params)) {
          if (m.method === "notifications/progress") {
            if (!settled && p.progressToken !== undefined && m.params.progressToken === upId) notify({ jsonrpc: "2.0", method: m.method, params: { ...m.params, progressToken: p.progressToken } });
            return;
          }
          if (m.method === "notifications/message") return settled ? undefined : notify({ jsonrpc: "2.0", method: m.method, params: m.params });
        }
        // A request of the upstream's (ping, sampling, elicitation, roots), or any other message: the session's SDK Client deals with it.
        const parsed = JSONRPCMessageSchema.safeParse(m);
        if (parsed.success) p.up.transport.onmessage?.(parsed.data);
      };

      send(t, this.agent, body, headers, upAc.signal)
        .then(async (r) => {
          if (r.status < 200 || r.status > 299 || r.status === 202) {
            const text = await r.text().catch(() => null);
            throw new StreamableHTTPError(r.status, `Error POSTing to endpoint: ${text}`);
          }
          const type = (r.contentType ?? "").split(";", 1)[0]!.trim().toLowerCase();
          if (type === "application/json") {
            const data = JSON.parse(await r.text()) as unknown;
            for (const m of Array.isArray(data) ? data : [data]) onMessage(m);
          } else if (type === "text/event-stream") {
            const parser = createParser({
              onEvent: (ev) => {
                if (ev.event !== undefined && ev.event !== "message") return;
                let m: unknown;
                try {
                  m = JSON.parse(ev.data);
                } catch {
                  return;
                }
                onMessage(m);
              },
            });
            // Read to the end, also after the answer: the connection goes back to the pool.
            await r.each((text) => parser.feed(text));
          } else {
            await r.drop();
            throw new StreamableHTTPError(-1, `Unexpected content type: ${r.contentType}`);
          }
          if (!settled) throw new Error("the MCP server ended its answer without a response to the call");
        })
        .catch((err: unknown) => {
          if (settled) return;
          settle(err);
          upAc.abort();
        });
    });
  }
}

/** An upstream answer, from undici or from the transport's own fetch. */
interface UpAnswer {
  status: number;
  contentType: string | null;
  /** each calls `f` with the body's text as it comes, and resolves at its end. */
  each(f: (text: string) => void): Promise<void>;
  text(): Promise<string>;
  drop(): Promise<void>;
}

/**
 * send POSTs the call the way the SDK transport would: through its own
 * `fetch` (with its requestInit) when it has one or a requestInit beyond
 * headers, else over the fast path's kept-alive undici Agent.
 */
async function send(t: TransportInternals & { _url: URL }, agent: Agent, body: string, headers: Headers, signal: AbortSignal): Promise<UpAnswer> {
  const init = t._requestInit;
  const plainInit = init === undefined || Object.keys(init).every((k) => k === "headers");
  // A server with a credential (mcp.servers.X.auth): its fetch's injector gives the credential, so the call still takes the kept-alive connection.
  const inj = injectorOf(t._fetch);
  if ((t._fetch === undefined || inj !== undefined) && plainInit) {
    const h: Record<string, string> = {};
    headers.forEach((v, k) => (h[k] = v));
    h["content-type"] = "application/json";
    h.accept = "application/json, text/event-stream";
    const post = (url: URL, hh: Record<string, string>) => agent.request({ origin: url.origin, path: url.pathname + url.search, method: "POST", headers: hh, body, signal });
    // As the transport's fetch does (the same injector): the credential for this caller, and a 401 renews an OAuth one and sends the call once more.
    const r =
      inj === undefined
        ? await post(t._url, h)
        : await inj.sendWith(
            signal,
            (cred) => {
              const hh = { ...h };
              for (const k in cred.headers) hh[k.toLowerCase()] = cred.headers[k]!;
              return post(withQuery(t._url, cred), hh);
            },
            (x) => x.statusCode,
            (x) => x.body.dump(),
          );
    const ct = r.headers["content-type"];
    return {
      status: r.statusCode,
      contentType: typeof ct === "string" ? ct : null,
      each: (f) =>
        new Promise<void>((resolve, reject) => {
          const dec = new StringDecoder("utf8");
          r.body.on("data", (c: Buffer) => f(dec.write(c)));
          r.body.on("end", resolve);
          r.body.on("error", reject);
        }),
      text: () => r.body.text(),
      drop: () => r.body.dump(),
    };
  }
  headers.set("content-type", "application/json");
  headers.set("accept", "application/json, text/event-stream");
  // No redirect is followed: the SDK's transport follows none to another origin, and a POST of a call has no reason to be redirected.
  const r = await (t._fetch ?? fetch)(t._url, { ...init, method: "POST", headers, body, signal, redirect: "manual" });
  return {
    status: r.status,
    contentType: r.headers.get("content-type"),
    each: async (f) => {
      if (r.body === null) return;
      const dec = new TextDecoder();
      for await (const chunk of r.body as unknown as AsyncIterable<Uint8Array>) f(dec.decode(chunk, { stream: true }));
    },
    text: () => r.text(),
    drop: async () => void (await r.body?.cancel()),
  };
}

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks)));
    req.on("error", reject);
  });
}

/**
 * plainTextResult says whether a result is one the SDK's CallToolResult
 * schema would give back unchanged: only text content (its items with no
 * other field, which the schema would strip) and isError. Any other result
 * goes through the schema.
 */
function plainTextResult(v: unknown): v is CallToolResult {
  if (!isObject(v) || !Array.isArray(v.content)) return false;
  for (const k in v) if (k !== "content" && !(k === "isError" && typeof v.isError === "boolean")) return false;
  for (const c of v.content as unknown[]) {
    if (!isObject(c) || c.type !== "text" || typeof c.text !== "string") return false;
    for (const k in c) if (k !== "type" && k !== "text") return false;
  }
  return true;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
