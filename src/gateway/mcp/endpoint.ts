/**
 * The aggregating MCP endpoint (`/v1/mcp` by default): streamable HTTP, the
 * official SDK's server transport, one McpSession (./session.ts) per
 * initialize (a tools/call on an open session takes ./fast.ts). An `Mcp-Session-Id` is bound to the identity that created the
 * session (what the tailnet's whois, or the loopback principal, said): a
 * request naming it from any other identity is refused (403) and never
 * reaches the session; an unknown id is a 404, which tells a client to
 * initialize again (the transport specification's rule).
 */

import type { IncomingMessage, ServerResponse } from "node:http";
import type { GatewayContext } from "../context.js";
import type { Caller } from "../types.js";
import type { McpConfig } from "./config.js";
import { McpFastPath } from "./fast.js";
import { McpSession } from "./session.js";

/** A session nobody used for this long is closed (its upstream connections and child processes with it). */
const IDLE_MS = 60 * 60_000;

export class McpEndpoint {
  readonly path: string;
  private readonly sessions = new Map<string, McpSession>();
  private readonly sweeper: NodeJS.Timeout;
  private readonly ctx: GatewayContext;
  private readonly cfg: McpConfig;
  /** tools/call on an open session without the SDK's server and client (./fast.ts). */
  readonly fast: McpFastPath;

  constructor(
    ctx: GatewayContext,
    cfg: McpConfig,
  ) {
    this.ctx = ctx;
    this.cfg = cfg;
    this.path = cfg.path;
    this.fast = new McpFastPath(ctx.cfg.maxBodyBytes);
    this.sweeper = setInterval(() => {
      const old = Date.now() - IDLE_MS;
      for (const s of this.sessions.values()) if (s.lastSeen < old) void s.close();
    }, 60_000);
    this.sweeper.unref();
  }

  /** The sessions open now. */
  get size(): number {
    return this.sessions.size;
  }

  async handle(req: IncomingMessage, res: ServerResponse, caller: Caller): Promise<void> {
    const sid = req.headers["mcp-session-id"];
    const owner = identityKey(caller);
    if (typeof sid === "string") {
      const s = this.sessions.get(sid);
      if (s === undefined) return rpcError(res, 404, -32001, "session not found: it ended or never existed here; initialize a new one");
      if (s.owner !== owner) return rpcError(res, 403, -32003, "meshguard: this MCP session belongs to another identity; a session is usable only by the node that created it");
      s.touch(caller);
      if (this.fast.wants(req)) return this.fast.handle(s, req, res);
      return s.transport.handleRequest(req, res);
    }
    if (req.method !== "POST") return rpcError(res, 400, -32000, "no Mcp-Session-Id: send an initialize request (POST) first");
    let held = 0;
    for (const s of this.sessions.values()) if (s.owner === owner) held++;
    if (held >= this.cfg.sessionsPerCaller) {
      return rpcError(res, 429, -32004, `meshguard: this identity already holds ${held} open MCP sessions (the gateway's mcp.sessionsPerCaller): end one (DELETE with its Mcp-Session-Id) or let one idle out`);
    }
    const s = new McpSession(this.ctx, this.cfg, owner, caller, (x) => this.sessions.delete(x.id));
    this.sessions.set(s.id, s);
    await s.start();
    await s.transport.handleRequest(req, res);
    // Not an initialize request (the transport answered an error): no session came of it.
    if (s.transport.sessionId === undefined) await s.close();
  }

  /** listsChanged tells every session that what it may see changed (the policy was reloaded). */
  listsChanged(): void {
    for (const s of this.sessions.values()) s.listsChanged();
  }

  async close(): Promise<void> {
    clearInterval(this.sweeper);
    await Promise.all([...this.sessions.values()].map((s) => s.close()));
    await this.fast.close();
  }
}

/** identityKey names a caller as the tailnet (or the loopback principal) identifies it. */
function identityKey(c: Caller): string {
  return JSON.stringify([c.via, c.node, c.user, [...c.tags].sort()]);
}

function rpcError(res: ServerResponse, status: number, code: number, message: string): void {
  const body = JSON.stringify({ jsonrpc: "2.0", error: { code, message }, id: null });
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
  res.end(body);
}
