/**
 * One caller's MCP session at the aggregating endpoint: an MCP server (the
 * official SDK's `Server` on a stateful streamable-HTTP transport) facing
 * the caller, and one MCP client per configured upstream, opened for this
 * session alone. Nothing is shared between sessions: an upstream's
 * sampling or elicitation request reaches only the session whose upstream
 * connection asked, and an upstream's `list_changed` only that session.
 *
 * Every tools/call, resources/read and prompts/get is judged in full as an
 * `mcp` target (server, tool or resource or prompt, arguments) with the
 * gateway's policy; an `approve` rule holds the call until the approver
 * answers, and a call the client cancelled (or gave up on) meanwhile is
 * never sent upstream. A refusal is a JSON-RPC error (MCP's own error
 * format). Listings show only what the caller could be allowed (./names.ts).
 */

import { randomUUID } from "node:crypto";
import { Server } from "@modelcontextprotocol/sdk/server/index.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { getDefaultEnvironment, StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import {
  CallToolRequestSchema,
  CreateMessageRequestSchema,
  ElicitRequestSchema,
  ErrorCode as McpErrorCode,
  GetPromptRequestSchema,
  ListPromptsRequestSchema,
  ListResourcesRequestSchema,
  ListResourceTemplatesRequestSchema,
  ListToolsRequestSchema,
  McpError,
  PromptListChangedNotificationSchema,
  ReadResourceRequestSchema,
  ResourceListChangedNotificationSchema,
  ToolListChangedNotificationSchema,
  type Prompt,
  type Resource,
  type ResourceTemplate,
  type Tool,
} from "@modelcontextprotocol/sdk/types.js";
import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import { approve } from "../approve.js";
import type { McpTarget, Decision } from "../../policy/types.js";
import type { GatewayContext } from "../context.js";
import { finish, newCallState } from "../record.js";
import type { ApiOperation, Caller } from "../types.js";
import type { McpConfig, McpServerConfig } from "./config.js";
import { listable, namespaced, splitName } from "./names.js";
import { markResourceServers } from "../../guard/gateway-route.js";

/** The JSON-RPC error code of a refusal by policy (the implementation-defined server-error range). */
export const MCP_DENIED = -32003;
/** The JSON-RPC error code of a call refused by a quota bucket (data.retryAfterS says when to retry; 0: waiting cannot help). */
export const MCP_QUOTA = -32004;

const GATEWAY_INFO = { name: "meshguard-gateway", version: "0.1.0" };

type ListKind = "tools" | "resources" | "templates" | "prompts";

export interface Upstream {
  name: string;
  client: Client;
  transport: Transport;
  /** The upstream's lists, fetched on first use, dropped when it says they changed. */
  lists: Map<ListKind, unknown[]>;
}

export class McpSession {
  readonly id = randomUUID();
  readonly transport: StreamableHTTPServerTransport;
  readonly server: Server;
  /** Upstreams that connected; filled in once the caller's initialize is done. */
  private upstreams: Promise<Map<string, Upstream>> | undefined;
  private closed = false;
  /** Resource URIs this session has listed, to the server that listed them first (config order). */
  private readonly resourceOwner = new Map<string, string>();
  lastSeen = Date.now();
  private readonly ctx: GatewayContext;
  private readonly cfg: McpConfig;
  readonly owner: string;
  private caller: Caller;
  private readonly onClose: (s: McpSession) => void;

  constructor(
    ctx: GatewayContext,
    cfg: McpConfig,
    /** The identity key of the caller that created the session: only it may use the session. */
    owner: string,
    /** The caller as identified when the session was created (its principal is what the policy judges). */
    caller: Caller,
    onClose: (s: McpSession) => void,
  ) {
    this.ctx = ctx;
    this.cfg = cfg;
    this.owner = owner;
    this.caller = caller;
    this.onClose = onClose;
    this.transport = new StreamableHTTPServerTransport({ sessionIdGenerator: () => this.id, maxRequestBodySize: ctx.cfg.maxBodyBytes });
    this.transport.onclose = () => void this.close();
    this.server = new Server(GATEWAY_INFO, {
      capabilities: { tools: { listChanged: true }, resources: { listChanged: true }, prompts: { listChanged: true } },
      instructions: `Tools, resources and prompts of ${Object.keys(cfg.servers).join(", ")} through the meshguard gateway; names are "server__name".`,
    });
    // Upstreams connect once the caller said what it supports (sampling, elicitation), so theirs match.
    this.server.oninitialized = () => void this.connectUpstreams();
    this.register();
  }

  /** touch records a request of the session's own caller: the caller is refreshed (a policy reload may have changed its role and chains). */
  touch(caller: Caller): void {
    this.caller = caller;
    this.lastSeen = Date.now();
  }

  async start(): Promise<void> {
    await this.server.connect(this.transport);
  }

  /** scrubText takes the gateway's secrets out of text the upstream sent (./fast.ts forwards progress and log messages through it). */
  scrubText(text: string): string {
    return this.ctx.scrub.text(text);
  }

  /** listsChanged tells the caller that what it may see changed (a policy reload). */
  listsChanged(): void {
    if (this.closed) return;
    const warn = (err: unknown) => this.ctx.warn(err);
    this.server.sendToolListChanged().catch(warn);
    this.server.sendResourceListChanged().catch(warn);
    this.server.sendPromptListChanged().catch(warn);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.onClose(this);
    const ups = this.upstreams;
    await this.server.close().catch(() => {});
    if (ups === undefined) return;
    for (const u of (await ups.catch(() => new Map<string, Upstream>())).values()) {
      // An HTTP upstream's session is ended there too (DELETE), not left to its idle timeout; a stdio child is killed by close.
      if (u.transport instanceof StreamableHTTPClientTransport) await u.transport.terminateSession().catch(() => {});
      await u.client.close().catch(() => {});
    }
  }

  private connectUpstreams(): Promise<Map<string, Upstream>> {
    return (this.upstreams ??= (async () => {
      const caps = this.server.getClientCapabilities() ?? {};
      const out = new Map<string, Upstream>();
      if (this.closed) return out;
      await Promise.all(
        Object.entries(this.cfg.servers).map(async ([name, sc]) => {
          const client = new Client(GATEWAY_INFO, {
            capabilities: { ...(caps.sampling ? { sampling: {} } : {}), ...(caps.elicitation ? { elicitation: caps.elicitation } : {}) },
          });
          const up: Upstream = { name, client, transport: transportFor(sc), lists: new Map() };
          this.wireUpstream(up);
          try {
            await client.connect(up.transport, { timeout: sc.timeout });
          } catch (err) {
            this.ctx.warn(new Error(`MCP server ${JSON.stringify(name)} could not be reached for a session of ${this.caller.node}: ${(err as Error).message}`, { cause: err }));
            await client.close().catch(() => {});
            return;
          }
          out.set(name, up);
        }),
      );
      // Config order: a resource URI two servers list belongs to the first.
      return new Map(Object.keys(this.cfg.servers).flatMap((n) => (out.has(n) ? [[n, out.get(n)!] as const] : [])));
    })());
  }

  /** wireUpstream forwards what an upstream asks of the caller (sampling, elicitation) and what it says changed, to this session only. */
  private wireUpstream(up: Upstream): void {
    const caps = this.server.getClientCapabilities() ?? {};
    if (caps.sampling) up.client.setRequestHandler(CreateMessageRequestSchema, (req, extra) => this.server.createMessage(req.params, { signal: extra.signal }));
    if (caps.elicitation) up.client.setRequestHandler(ElicitRequestSchema, (req, extra) => this.server.elicitInput(req.params, { signal: extra.signal }));
    up.client.setNotificationHandler(ToolListChangedNotificationSchema, () => {
      up.lists.delete("tools");
      this.server.sendToolListChanged().catch((err: unknown) => this.ctx.warn(err));
    });
    up.client.setNotificationHandler(ResourceListChangedNotificationSchema, () => {
      up.lists.delete("resources");
      up.lists.delete("templates");
      this.server.sendResourceListChanged().catch((err: unknown) => this.ctx.warn(err));
    });
    up.client.setNotificationHandler(PromptListChangedNotificationSchema, () => {
      up.lists.delete("prompts");
      this.server.sendPromptListChanged().catch((err: unknown) => this.ctx.warn(err));
    });
  }

  /** The upstreams that connected (./fast.ts reaches them too). */
  async ups(): Promise<Map<string, Upstream>> {
    return this.connectUpstreams();
  }

  /**
   * merged lists one kind of item of every upstream that offers it (each
   * upstream's list fetched once, until it says the list changed),
   * namespaced, keeping the items `keep` lets through.
   */
  private async merged<T extends { name: string }>(
    kind: ListKind,
    page: (up: Upstream, cursor: string | undefined) => Promise<{ items: T[]; next?: string | undefined }>,
    keep: (up: Upstream, item: T) => boolean,
  ): Promise<T[]> {
    const out: T[] = [];
    for (const up of (await this.ups()).values()) {
      if (!up.client.getServerCapabilities()?.[kind === "templates" ? "resources" : kind]) continue;
      let items = up.lists.get(kind) as T[] | undefined;
      if (items === undefined) up.lists.set(kind, (items = await collect((cursor) => page(up, cursor))));
      for (const it of items) if (keep(up, it)) out.push({ ...it, name: namespaced(up.name, it.name) });
    }
    return out;
  }

  private register(): void {
    const s = this.server;
    const page = (cursor: string | undefined) => (cursor ? { cursor } : {});
    s.setRequestHandler(ListToolsRequestSchema, async () => ({
      tools: await this.merged<Tool>(
        "tools",
        (up, c) => up.client.listTools(page(c)).then((r) => ({ items: r.tools, next: r.nextCursor })),
        (up, t) => listable(this.ctx, this.caller, { kind: "mcp", server: up.name, tool: t.name, args: {} }),
      ),
    }));
    s.setRequestHandler(ListResourcesRequestSchema, async () => ({
      // Each resource names its server in `_meta` (the agent's guard routes a resources/read as this session will).
      resources: markResourceServers(await this.merged<Resource>(
        "resources",
        (up, c) => up.client.listResources(page(c)).then((r) => ({ items: r.resources, next: r.nextCursor })),
        (up, r) => {
          // A URI two servers list belongs to the first (config order).
          if (!this.resourceOwner.has(r.uri)) this.resourceOwner.set(r.uri, up.name);
          return this.resourceOwner.get(r.uri) === up.name && listable(this.ctx, this.caller, { kind: "mcp", server: up.name, tool: "", args: {}, resource: r.uri });
        },
      ), (uri) => this.resourceOwner.get(uri)),
    }));
    // A template names no one URI to judge: it is listed, and each read is judged.
    s.setRequestHandler(ListResourceTemplatesRequestSchema, async () => ({
      resourceTemplates: await this.merged<ResourceTemplate>(
        "templates",
        (up, c) => up.client.listResourceTemplates(page(c)).then((r) => ({ items: r.resourceTemplates, next: r.nextCursor })),
        () => true,
      ),
    }));
    s.setRequestHandler(ListPromptsRequestSchema, async () => ({
      prompts: await this.merged<Prompt>(
        "prompts",
        (up, c) => up.client.listPrompts(page(c)).then((r) => ({ items: r.prompts, next: r.nextCursor })),
        (up, p) => listable(this.ctx, this.caller, { kind: "mcp", server: up.name, tool: "", args: {}, prompt: p.name }),
      ),
    }));

    s.setRequestHandler(CallToolRequestSchema, async (req, extra) => {
      const { up, name } = await this.route(req.params.name, "tool");
      const args = (req.params.arguments ?? {}) as Record<string, unknown>;
      return this.judged("mcp.call", { kind: "mcp", server: up.name, tool: name, args }, extra.signal, (signal) =>
        up.client.callTool({ ...req.params, name, arguments: args }, undefined, {
          signal,
          timeout: this.timeoutOf(up.name),
          ...(req.params._meta?.progressToken !== undefined
            ? { onprogress: (p) => void extra.sendNotification({ method: "notifications/progress", params: { ...p, progressToken: req.params._meta!.progressToken! } }).catch(() => {}) }
            : {}),
        }),
      );
    });
    s.setRequestHandler(GetPromptRequestSchema, async (req, extra) => {
      const { up, name } = await this.route(req.params.name, "prompt");
      const args = req.params.arguments ?? {};
      return this.judged("mcp.prompt", { kind: "mcp", server: up.name, tool: "", args, prompt: name }, extra.signal, (signal) =>
        up.client.getPrompt({ ...req.params, name }, { signal, timeout: this.timeoutOf(up.name) }),
      );
    });
    s.setRequestHandler(ReadResourceRequestSchema, async (req, extra) => {
      const uri = req.params.uri;
      const ups = await this.ups();
      const owner = this.resourceOwner.get(uri);
      const up = owner !== undefined ? ups.get(owner) : ups.size === 1 ? [...ups.values()][0] : undefined;
      if (up === undefined) throw new McpError(McpErrorCode.InvalidParams, `unknown resource ${JSON.stringify(uri)}: list resources first (resources/list), so the gateway knows which server it belongs to`);
      return this.judged("mcp.read", { kind: "mcp", server: up.name, tool: "", args: {}, resource: uri }, extra.signal, (signal) =>
        up.client.readResource(req.params, { signal, timeout: this.timeoutOf(up.name) }),
      );
    });
  }

  timeoutOf(server: string): number {
    return this.cfg.servers[server]!.timeout;
  }

  /** route finds the upstream of a namespaced name; an unknown one is the same refusal as a name the caller may not use. */
  private async route(full: string, what: "tool" | "prompt"): Promise<{ up: Upstream; name: string }> {
    const split = splitName(full);
    const up = split ? (await this.ups()).get(split.server) : undefined;
    if (split === undefined || up === undefined) {
      throw new McpError(McpErrorCode.InvalidParams, `unknown ${what} ${JSON.stringify(full)}: names at this gateway are "server__${what}" with a configured server (${Object.keys(this.cfg.servers).join(", ")})`);
    }
    return { up, name: split.name };
  }

  /**
   * judged decides a call and runs it only if allowed: an approve rule
   * waits for the approver, and a call whose client cancelled or gave up
   * meanwhile (its request's signal aborted) is refused, never sent. The
   * call is logged like an LLM call (operation, server as provider, name
   * as model).
   */
  async judged<T>(operation: ApiOperation, target: McpTarget, signal: AbortSignal, run: (signal: AbortSignal) => Promise<T>): Promise<T> {
    const t0 = performance.now();
    const caller = this.caller;
    const st = newCallState(this.ctx, caller, { operation, format: "openai" }, t0);
    st.facts = { operation, format: "openai", provider: target.server, model: target.tool || target.prompt || target.resource || "", stream: false, clientSessionId: this.id };
    st.model = st.facts.model;
    st.requestBody = this.ctx.retention.mode === "full" ? Buffer.from(JSON.stringify(target.resource !== undefined ? { uri: target.resource } : { name: st.model, arguments: target.args })) : undefined;
    try {
      const d = await this.decide(caller, target, signal);
      if (d.ruleId !== undefined) st.ruleId = d.ruleId;
      if (signal.aborted) {
        st.status = 499;
        st.outcome = "client_aborted";
        st.reason = "the client cancelled the call before it was decided: it was not sent";
        throw new McpError(McpErrorCode.RequestTimeout, st.reason);
      }
      if (d.effect !== "allow") {
        st.status = 403;
        st.outcome = "denied";
        st.reason = d.reason;
        throw new McpError(MCP_DENIED, `meshguard: ${d.reason}`, { code: "MESHGUARD_POLICY_DENIED", ...(d.ruleId !== undefined ? { ruleId: d.ruleId } : {}) });
      }
      if (this.ctx.quotas !== undefined) {
        // The caller's bucket chains, as for an LLM call: a "calls" bucket counts one, dollar and token buckets nothing.
        const v = await this.ctx.quotas.reserve(caller, st.facts, { inputTokens: 0, maxOutputTokens: 0 }, undefined);
        if (!v.ok) {
          st.status = v.permanent ? 403 : 429;
          st.outcome = "quota";
          st.reason = `quota exhausted (${v.bucket}): ${v.reason}`;
          throw new McpError(MCP_QUOTA, `meshguard: ${st.reason}`, { code: "MESHGUARD_QUOTA_EXHAUSTED", bucket: v.bucket, retryAfterS: v.retryAfterS });
        }
        st.reservation = v.reservation;
      }
      st.tUpstream = performance.now();
      try {
        const out = await run(signal);
        st.status = 200;
        if (st.responseParts !== undefined) st.responseParts.push(JSON.stringify(out));
        return out;
      } catch (err) {
        st.status = signal.aborted ? 499 : 502;
        st.outcome = signal.aborted ? "client_aborted" : "upstream_error";
        st.reason = `MCP server ${target.server}: ${(err as Error).message}`;
        if (err instanceof McpError) throw new McpError(err.code, this.ctx.scrub.text(err.message), err.data);
        throw new McpError(McpErrorCode.InternalError, this.ctx.scrub.text(st.reason));
      }
    } finally {
      finish(this.ctx, st);
    }
  }

  /** decide asks the policy; approve holds the call for the approver, and gives up as soon as the client does (the approver's signal is aborted). */
  private async decide(caller: Caller, target: McpTarget, signal: AbortSignal): Promise<Decision> {
    const policy = this.ctx.policy();
    if (policy === undefined) return { effect: "deny", reason: "no policy is loaded (the gateway fails closed)" };
    const d = policy.evaluate({ principal: caller.principal, target });
    if (d.effect !== "approve") return d;
    return approve(this.ctx.approvals, caller.principal, target, d, signal);
  }
}

function transportFor(sc: McpServerConfig): Transport {
  if ("url" in sc) return new StreamableHTTPClientTransport(new URL(sc.url));
  return new StdioClientTransport({ command: sc.command, args: sc.args, env: { ...getDefaultEnvironment(), ...sc.env }, ...(sc.cwd !== undefined ? { cwd: sc.cwd } : {}), stderr: "ignore" });
}

/** collect follows a paginated listing to its end (at most 100 pages: an upstream that never ends its cursor stops there). */
async function collect<T>(page: (cursor: string | undefined) => Promise<{ items: T[]; next?: string | undefined }>): Promise<T[]> {
  const out: T[] = [];
  let cursor: string | undefined;
  for (let i = 0; i < 100; i++) {
    const r = await page(cursor);
    out.push(...r.items);
    if (!r.next) break;
    cursor = r.next;
  }
  return out;
}
