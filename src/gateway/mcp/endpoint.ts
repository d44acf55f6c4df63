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
import { openCredential } from "../credentials/registry.js";
import { readKey } from "../keys.js";
import type { CredentialSource } from "../credentials/types.js";
import type { ConnectorSummary } from "../connectors/http.js";
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
  /** The credential of each streamable-HTTP server that has an `auth`, made once at start and shared by every session. */
  private readonly sources: ReadonlyMap<string, CredentialSource>;
  /** Each stdio server's extra environment, its secret values read at start. */
  private readonly stdioEnv: ReadonlyMap<string, Record<string, string>>;
  /** tools/call on an open session without the SDK's server and client (./fast.ts). */
  readonly fast: McpFastPath;

  constructor(
    ctx: GatewayContext,
    cfg: McpConfig,
    sources: ReadonlyMap<string, CredentialSource> = new Map(),
    stdioEnv: ReadonlyMap<string, Record<string, string>> = new Map(),
  ) {
    this.ctx = ctx;
    this.cfg = cfg;
    this.sources = sources;
    this.stdioEnv = stdioEnv;
    this.path = cfg.path;
    this.fast = new McpFastPath(ctx.cfg.maxBodyBytes);
    this.sweeper = setInterval(() => {
      const old = Date.now() - IDLE_MS;
      for (const s of this.sessions.values()) if (s.lastSeen < old) void s.close();
    }, 60_000);
    this.sweeper.unref();
  }

  /**
   * open reads the credentials of the servers with an `auth` (a missing
   * secret fails the start, naming it) and makes the endpoint. `secrets`
   * are the credentials' long-lived values, for the gateway's scrubber.
   */
  static async open(ctx: GatewayContext, cfg: McpConfig, env: NodeJS.ProcessEnv): Promise<{ endpoint: McpEndpoint; secrets: string[] }> {
    const sources = new Map<string, CredentialSource>();
    const stdioEnv = new Map<string, Record<string, string>>();
    const read: string[] = [];
    try {
      for (const [name, sc] of Object.entries(cfg.servers)) {
        if ("url" in sc) {
          if (sc.auth !== undefined) sources.set(name, await openCredential(ctx, name, sc.url, sc.auth, env));
          continue;
        }
        const vars: Record<string, string> = {};
        for (const [k, v] of Object.entries(sc.env)) {
          if (typeof v === "string") vars[k] = v;
          else read.push((vars[k] = await readKey(v, `MCP server ${name} (its ${k})`, env)));
        }
        stdioEnv.set(name, vars);
      }
    } catch (err) {
      await Promise.all([...sources.values()].map((s) => s.close?.().catch(() => {})));
      throw err;
    }
    return { endpoint: new McpEndpoint(ctx, cfg, sources, stdioEnv), secrets: [...read, ...[...sources.values()].flatMap((s) => [...s.secrets()])] };
  }

  /** list describes the servers that have a credential, as GET /meshguard/v1/connectors lists connectors: never a secret. */
  list(): ConnectorSummary[] {
    return Object.entries(this.cfg.servers).flatMap(([name, sc]) => {
      if (!("url" in sc) || sc.auth === undefined) return [];
      const a = sc.auth as { type: string; grant?: unknown; scopes?: unknown };
      const grant = typeof a.grant === "string" ? a.grant : undefined;
      return [
        {
          name,
          path: this.path,
          upstream: new URL(sc.url).origin,
          auth: { type: a.type, ...(grant === undefined ? {} : { grant }), ...(Array.isArray(a.scopes) && a.scopes.length > 0 ? { scopes: a.scopes.map(String) } : {}) },
          actsForUsers: a.type === "oauth2" && grant === "authorization_code",
        },
      ];
    });
  }

  /** sourceOf is the credential source of server `name` (the OAuth routes act on it). */
  sourceOf(name: string): CredentialSource | undefined {
    return this.sources.get(name);
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
    const s = new McpSession(this.ctx, this.cfg, owner, caller, (x) => this.sessions.delete(x.id), this.sources, this.stdioEnv);
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
    await Promise.all([...this.sources.values()].map((s) => s.close?.().catch(() => {})));
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
