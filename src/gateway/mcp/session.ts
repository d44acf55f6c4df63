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
import { decideCall, type Decided } from "../approve.js";
import { CredentialUnavailableError, type CredentialSource } from "../credentials/types.js";
import type { KeyScrubber } from "../scrub.js";
import type { McpTarget } from "../../policy/types.js";
import type { GatewayContext } from "../context.js";
import { finish, newCallState } from "../record.js";
import type { ApiOperation, Caller } from "../types.js";
import type { McpConfig, McpServerConfig } from "./config.js";
import { listable, namespaced, splitName } from "./names.js";
import { upstreamAuth, type UpstreamAuth } from "./upstream-auth.js";
import { markResourceServers } from "../../guard/gateway-route.js";

/** The JSON-RPC error code of a refusal by policy (the implementation-defined server-error range). */
export const MCP_DENIED = -32003;
/** The JSON-RPC error code of a call refused by a quota bucket (data.retryAfterS says when to retry; 0: waiting cannot help). */
export const MCP_QUOTA = -32004;
/** The JSON-RPC error code of a call to a server whose credential this caller lacks (data.hint says how to get one, e.g. the OAuth consent page). */
export const MCP_CREDENTIAL = -32005;

const GATEWAY_INFO = { name: "meshguard-gateway", version: "0.1.0" };

type ListKind = "tools" | "resources" | "templates" | "prompts";

export interface Upstream {
  name: string;
  client: Client;
  transport: Transport;
  /** The upstream's lists, fetched on first use, dropped when it says they changed. */
  lists: Map<ListKind, unknown[]>;
  /** The credential sent to it, when the server has an `auth`. */
  auth: UpstreamAuth | undefined;
}

export class McpSession {
  readonly id = randomUUID();
  readonly transport: StreamableHTTPServerTransport;
  readonly server: Server;
  /** Upstreams that connected; filled in once the caller's initialize is done. */
  private upstreams: Promise<Map<string, Upstream>> | undefined;
  /** Servers left out because this caller has no credential for them (no OAuth token yet): tried again at each listing or call. */
  private readonly missing = new Map<string, CredentialUnavailableError>();
  private readonly retrying = new Map<string, Promise<void>>();
  private readonly sources: ReadonlyMap<string, CredentialSource>;
  private readonly stdioEnv: ReadonlyMap<string, Record<string, string>>;
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
    /** The credentials of the servers with an `auth` (shared by every session; resolved for this session's caller). */
    sources: ReadonlyMap<string, CredentialSource> = new Map(),
    /** Each stdio server's extra environment, secrets already read. */
    stdioEnv: ReadonlyMap<string, Record<string, string>> = new Map(),
  ) {
    this.sources = sources;
    this.stdioEnv = stdioEnv;
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

  /** scrubText takes the gateway's secrets (and the credentials lately sent to `up`) out of text the upstream sent (./fast.ts forwards progress and log messages through it). */
  scrubText(text: string, up?: Upstream): string {
    return this.scrubOf(up).text(text);
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
      const out = new Map<string, Upstream>();
      if (this.closed) return out;
      await Promise.all(Object.entries(this.cfg.servers).map(([name, sc]) => this.connectOne(out, name, sc)));
      return out;
    })());
  }

  /**
   * connectOne opens this session's connection to one upstream and adds it
   * to `into`. A server this caller has no credential for (a per-user OAuth
   * server it has not connected to) is noted in `missing`, without a
   * warning: the caller is told how to connect when it calls the server.
   */
  private async connectOne(into: Map<string, Upstream>, name: string, sc: McpServerConfig): Promise<void> {
    const caps = this.server.getClientCapabilities() ?? {};
    const client = new Client(GATEWAY_INFO, {
      capabilities: { ...(caps.sampling ? { sampling: {} } : {}), ...(caps.elicitation ? { elicitation: caps.elicitation } : {}) },
    });
    const source = this.sources.get(name);
    const auth = source !== undefined ? upstreamAuth(name, source, () => this.caller) : undefined;
    const up: Upstream = { name, client, transport: transportFor(sc, auth, this.stdioEnv.get(name) ?? {}), lists: new Map(), auth };
    this.wireUpstream(up);
    try {
      await client.connect(up.transport, { timeout: sc.timeout });
    } catch (err) {
      await client.close().catch(() => {});
      const cred = credentialError(err);
      if (cred !== undefined && cred.status === 401) {
        this.missing.set(name, cred);
        return;
      }
      this.ctx.warn(new Error(this.scrubOf(up).text(`MCP server ${JSON.stringify(name)} could not be reached for a session of ${this.caller.node}: ${(err as Error).message}`)));
      return;
    }
    this.missing.delete(name);
    if (this.closed) {
      await client.close().catch(() => {});
      return;
    }
    into.set(name, up);
  }

  /** scrubOf is the gateway's scrubber plus the credentials lately sent to `up`. */
  private scrubOf(up: Upstream | undefined): KeyScrubber {
    const recent = up?.auth?.secrets();
    return recent !== undefined && recent.length > 0 ? this.ctx.scrub.with(recent) : this.ctx.scrub;
  }

  /** wireUpstream forwards what an upstream asks of the caller (sampling, elicitation) and what it says changed, to this session only. */
  private wireUpstream(up: Upstream): void {
    const caps = this.server.getClientCapabilities() ?? {};
    if (caps.sampling) up.client.setRequestHandler(CreateMessageRequestSchema, (req, extra) => this.server.createMessage(scrubValue(req.params, this.scrubOf(up)), { signal: extra.signal }));
    if (caps.elicitation) up.client.setRequestHandler(ElicitRequestSchema, (req, extra) => this.server.elicitInput(scrubValue(req.params, this.scrubOf(up)), { signal: extra.signal }));
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

  /**
   * ups is the connected upstreams in config order (a resource URI two
   * servers list belongs to the first). Servers left out for want of this
   * caller's credential are tried again first: the caller may have connected
   * its account since. (./fast.ts reaches them too.)
   */
  async ups(): Promise<Map<string, Upstream>> {
    const live = await this.connectUpstreams();
    if (this.missing.size > 0) {
      await Promise.all(
        [...this.missing.keys()].map((name) => {
          let p = this.retrying.get(name);
          if (p === undefined) {
            p = this.connectOne(live, name, this.cfg.servers[name]!).finally(() => this.retrying.delete(name));
            this.retrying.set(name, p);
          }
          return p;
        }),
      );
    }
    return new Map(Object.keys(this.cfg.servers).flatMap((n) => (live.has(n) ? [[n, live.get(n)!] as const] : [])));
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
      const scrub = this.scrubOf(up);
      for (const it of items) if (keep(up, it)) out.push({ ...scrubValue(it, scrub), name: namespaced(up.name, it.name) });
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
      const { server, name } = await this.route(req.params.name, "tool");
      const args = (req.params.arguments ?? {}) as Record<string, unknown>;
      return this.judged("mcp.call", { kind: "mcp", server, tool: name, args }, extra.signal, (up, signal, sent) =>
        up.client.callTool({ ...req.params, name, arguments: sent }, undefined, {
          signal,
          timeout: this.timeoutOf(up.name),
          ...(req.params._meta?.progressToken !== undefined
            ? { onprogress: (p) => void extra.sendNotification({ method: "notifications/progress", params: { ...scrubValue(p, this.scrubOf(up)), progressToken: req.params._meta!.progressToken! } }).catch(() => {}) }
            : {}),
        }),
      );
    });
    s.setRequestHandler(GetPromptRequestSchema, async (req, extra) => {
      const { server, name } = await this.route(req.params.name, "prompt");
      const args = req.params.arguments ?? {};
      return this.judged("mcp.prompt", { kind: "mcp", server, tool: "", args, prompt: name }, extra.signal, (up, signal, sent) =>
        up.client.getPrompt({ ...req.params, name, ...(req.params.arguments !== undefined || sent !== args ? { arguments: sent as Record<string, string> } : {}) }, { signal, timeout: this.timeoutOf(up.name) }),
      );
    });
    s.setRequestHandler(ReadResourceRequestSchema, async (req, extra) => {
      const uri = req.params.uri;
      const ups = await this.ups();
      const owner = this.resourceOwner.get(uri);
      const up = owner !== undefined ? ups.get(owner) : ups.size === 1 ? [...ups.values()][0] : undefined;
      if (up === undefined) throw new McpError(McpErrorCode.InvalidParams, `unknown resource ${JSON.stringify(uri)}: list resources first (resources/list), so the gateway knows which server it belongs to`);
      return this.judged("mcp.read", { kind: "mcp", server: up.name, tool: "", args: {}, resource: uri }, extra.signal, (u, signal) =>
        u.client.readResource(req.params, { signal, timeout: this.timeoutOf(u.name) }),
      );
    });
  }

  timeoutOf(server: string): number {
    return this.cfg.servers[server]!.timeout;
  }

  /** route finds the upstream of a namespaced name; an unknown one is the same refusal as a name the caller may not use. */
  private async route(full: string, what: "tool" | "prompt"): Promise<{ server: string; name: string }> {
    const split = splitName(full);
    // A server this caller lacks a credential for is routed too: the call is judged, then refused with how to connect.
    const known = split !== undefined && ((await this.ups()).has(split.server) || this.missing.has(split.server));
    if (split === undefined || !known) {
      throw new McpError(McpErrorCode.InvalidParams, `unknown ${what} ${JSON.stringify(full)}: names at this gateway are "server__${what}" with a configured server (${Object.keys(this.cfg.servers).join(", ")})`);
    }
    return { server: split.server, name: split.name };
  }

  /**
   * judged decides a call and runs it only if allowed: an approve rule
   * waits for the approver, and a call whose client cancelled or gave up
   * meanwhile (its request's signal aborted) is refused, never sent. The
   * call is logged like an LLM call (operation, server as provider, name
   * as model).
   */
  async judged<T>(operation: ApiOperation, target: McpTarget, signal: AbortSignal, run: (up: Upstream, signal: AbortSignal, args: Record<string, unknown>) => Promise<T>): Promise<T> {
    const t0 = performance.now();
    const caller = this.caller;
    let up: Upstream | undefined;
    const st = newCallState(this.ctx, caller, { operation, format: "openai" }, t0);
    st.facts = { operation, format: "openai", provider: target.server, model: target.tool || target.prompt || target.resource || "", stream: false, clientSessionId: this.id };
    st.model = st.facts.model;
    st.requestBody = this.ctx.retention.mode === "full" ? Buffer.from(JSON.stringify(target.resource !== undefined ? { uri: target.resource } : { name: st.model, arguments: target.args })) : undefined;
    try {
      const { d, decided } = await decideCall(this.ctx.policy(), this.ctx.approvals, caller.principal, target, undefined, signal);
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
      up = (await this.ups()).get(target.server);
      if (up === undefined) {
        const cred = this.missing.get(target.server);
        if (cred !== undefined) throw this.credentialRefusal(st, target.server, cred);
        st.status = 502;
        st.outcome = "upstream_unreachable";
        st.reason = `MCP server ${target.server} is not connected in this session`;
        throw new McpError(McpErrorCode.InternalError, st.reason);
      }
      if (this.ctx.quotas !== undefined) {
        // The caller's bucket chains, as for an LLM call: a "calls" bucket counts one, dollar and token buckets nothing.
        // And the server's own chains (`quotas`), beside the caller's.
        const own = this.cfg.servers[target.server]?.quotas;
        const v = await this.ctx.quotas.reserve(caller, st.facts, { inputTokens: 0, maxOutputTokens: 0 }, undefined, own !== undefined ? { chains: own.map((h) => [h]) } : undefined);
        if (!v.ok) {
          st.status = v.permanent ? 403 : 429;
          st.outcome = "quota";
          st.reason = `quota exhausted (${v.bucket}): ${v.reason}`;
          throw new McpError(MCP_QUOTA, `meshguard: ${st.reason}`, { code: "MESHGUARD_QUOTA_EXHAUSTED", bucket: v.bucket, retryAfterS: v.retryAfterS });
        }
        st.reservation = v.reservation;
      }
      const args = await this.preHooks(st, caller, target, decided, signal);
      st.tUpstream = performance.now();
      const u = up;
      let out: T;
      try {
        // What the upstream answers may echo the credential the gateway sent it: removed before the caller or the log sees it.
        out = scrubValue(await run(u, signal, args), this.scrubOf(u));
        st.status = 200;
      } catch (err) {
        const scrub = this.scrubOf(u);
        const cred = credentialError(err);
        if (cred !== undefined) {
          st.notSent = true; // the credential is resolved before anything is sent
          throw this.credentialRefusal(st, target.server, cred);
        }
        st.status = signal.aborted ? 499 : 502;
        st.outcome = signal.aborted ? "client_aborted" : "upstream_error";
        st.reason = scrub.text(`MCP server ${target.server}: ${(err as Error).message}`);
        if (err instanceof McpError) throw new McpError(err.code, scrub.text(err.message), scrubValue(err.data, scrub));
        throw new McpError(McpErrorCode.InternalError, st.reason);
      }
      out = await this.postHooks(st, caller, target, args, out);
      if (st.responseParts !== undefined) st.responseParts.push(JSON.stringify(out));
      return out;
    } finally {
      finish(this.ctx, st);
    }
  }

  /**
   * preHooks runs the gateway's pre-request hooks on a call the policy
   * allowed (`body`: `{ name, arguments }`, or `{ uri }` for a read) and
   * returns the arguments to send. A hook may block the call, or modify its
   * `arguments` (a tool call or a prompt): the modified call is judged
   * again, and refused unless the policy allows it as it now is.
   */
  private async preHooks(st: ReturnType<typeof newCallState>, caller: Caller, target: McpTarget, first: Decided | undefined, signal: AbortSignal): Promise<Record<string, unknown>> {
    const hooks = this.ctx.hooks;
    if (hooks === undefined || !hooks.hasPre) return target.args;
    const body = target.resource !== undefined ? { uri: target.resource } : { name: st.model, arguments: target.args };
    const r = await hooks.pre({ id: st.id, caller: hookCaller(caller), facts: st.facts!, headers: {}, body });
    if (r.action === "block") throw this.hookRefusal(st, r);
    if (r.action !== "modify" || target.resource !== undefined) return target.args;
    const args = (r.body as { arguments?: unknown } | null)?.arguments;
    if (args === null || typeof args !== "object" || Array.isArray(args)) {
      throw this.hookRefusal(st, { status: 500, hook: "pre-request", message: 'a pre-request hook modified an MCP call without an "arguments" object: answer { "name": ..., "arguments": { ... } }' });
    }
    st.hookModified = true;
    // Decided again as one call: its rate token given back first, an approval under the same rule kept.
    const { d: again } = await decideCall(this.ctx.policy(), this.ctx.approvals, caller.principal, { ...target, args: args as Record<string, unknown> }, first, signal);
    if (again.effect !== "allow") {
      st.status = 403;
      st.outcome = "denied";
      st.reason = `a pre-request hook changed the call's arguments, and the policy does not allow it as changed: ${again.reason}`;
      throw new McpError(MCP_DENIED, `meshguard: ${st.reason}`, { code: "MESHGUARD_POLICY_DENIED", ...(again.ruleId !== undefined ? { ruleId: again.ruleId } : {}) });
    }
    if (st.requestBody !== undefined) st.requestBody = Buffer.from(JSON.stringify({ name: st.model, arguments: args }));
    return args as Record<string, unknown>;
  }

  /** postHooks runs the post-request hooks on a result (already scrubbed): they may block it or redact it (the redacted result is scrubbed again). */
  private async postHooks<T>(st: ReturnType<typeof newCallState>, caller: Caller, target: McpTarget, args: Record<string, unknown>, out: T): Promise<T> {
    const hooks = this.ctx.hooks;
    if (hooks === undefined || !hooks.hasPost) return out;
    const body = target.resource !== undefined ? { uri: target.resource } : { name: st.model, arguments: args };
    const r = await hooks.post({ id: st.id, caller: hookCaller(caller), facts: st.facts!, headers: {}, body }, { status: 200, body: out });
    if (r.action === "block") throw this.hookRefusal(st, r);
    if (r.action === "redact") return scrubValue(r.body as T, this.ctx.scrub);
    return out;
  }

  private hookRefusal(st: ReturnType<typeof newCallState>, r: { status: number; message: string; hook: string }): McpError {
    st.status = r.status;
    st.outcome = "blocked";
    st.reason = `blocked by hook ${r.hook}: ${r.message}`;
    return new McpError(MCP_DENIED, `meshguard: ${st.reason}`, { code: "MESHGUARD_HOOK_BLOCKED", hook: r.hook });
  }

  /** credentialRefusal records and returns the refusal of a call whose credential this caller lacks (401: it can get one; 502: the token endpoint failed). */
  private credentialRefusal(st: ReturnType<typeof newCallState>, server: string, err: CredentialUnavailableError): McpError {
    st.status = err.status;
    st.outcome = err.status === 401 ? "denied" : "upstream_error";
    st.reason = this.ctx.scrub.text(err.message.split("\n")[0]!);
    const hint = err.hint !== undefined ? this.ctx.scrub.text(err.hint) : undefined;
    return new McpError(MCP_CREDENTIAL, `meshguard: ${st.reason}${hint !== undefined ? `: ${hint}` : ""}`, { code: "MESHGUARD_CREDENTIAL_UNAVAILABLE", server, ...(hint !== undefined ? { hint } : {}) });
  }
}

function transportFor(sc: McpServerConfig, auth: UpstreamAuth | undefined, env: Record<string, string>): Transport {
  if ("url" in sc) return new StreamableHTTPClientTransport(new URL(sc.url), auth !== undefined ? { fetch: auth.fetch } : undefined);
  return new StdioClientTransport({ command: sc.command, args: sc.args, env: { ...getDefaultEnvironment(), ...env }, ...(sc.cwd !== undefined ? { cwd: sc.cwd } : {}), stderr: "ignore" });
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

/** credentialError finds a CredentialUnavailableError in an error or its causes (the SDK passes a failing fetch's error through). */
function credentialError(err: unknown): CredentialUnavailableError | undefined {
  for (let e = err, i = 0; e !== undefined && e !== null && i < 5; e = (e as { cause?: unknown }).cause, i++) {
    if (e instanceof CredentialUnavailableError) return e;
  }
  return undefined;
}

/** scrubValue returns `v` with every string in it scrubbed (the same object when nothing changed). */
export function scrubValue<T>(v: T, scrub: KeyScrubber): T {
  if (scrub.empty) return v;
  const walk = (x: unknown): unknown => {
    if (typeof x === "string") return scrub.text(x);
    if (Array.isArray(x)) {
      let changed = false;
      const out = x.map((y) => {
        const z = walk(y);
        if (z !== y) changed = true;
        return z;
      });
      return changed ? out : x;
    }
    if (x !== null && typeof x === "object") {
      let changed = false;
      const out: Record<string, unknown> = {};
      for (const [k, y] of Object.entries(x)) {
        const z = walk(y);
        if (z !== y) changed = true;
        out[k] = z;
      }
      return changed ? out : x;
    }
    return x;
  };
  return walk(v) as T;
}

function hookCaller(c: Caller) {
  return { node: c.node, user: c.user, tags: c.tags, role: c.role };
}
