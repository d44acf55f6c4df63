/**
 * startGateway: the gateway as a library call. It reads the config, the
 * provider keys and the policy (any of them wrong: the start fails with the
 * reason), joins the tailnet (or uses the node it is given), listens on the
 * tailnet port and optionally on loopback, and returns a handle whose
 * close() drains in-flight requests (bounded), flushes the store, closes
 * hooks and pools, and closes the node if it started it.
 */

import { EventEmitter } from "node:events";
import http from "node:http";
import { ErrorCode, MeshguardError } from "../errors.js";
import { PolicyHolder, readPolicyFile } from "../distribution/holder.js";
import { identityOf, watchPolicyFile, type FileReloader } from "../distribution/reload.js";
import type { ApprovalOptions } from "../guard/types.js";
import { MeshNode } from "../node.js";
import type { Policy } from "../policy/load.js";
import { callerFromPrincipal, WhoisCache, type AccessResolver, type BaseCaller } from "./caller.js";
import { GatewayConfigError, loadGatewayConfig, resolveConfigPaths, validateGatewayConfig, type GatewayConfig, type GatewayConfigInput } from "./config.js";
import { Inflight, type GatewayContext, type Prices, type Sessions } from "./context.js";
import { readKey } from "./keys.js";
import { buildProviders, Router } from "./providers.js";
import { KeyScrubber, SHORT_KEY } from "./scrub.js";
import { requestHandler } from "./server.js";
import { ConsoleServer } from "./console/serve.js";
import { infoRoute, layoutInfo, type GatewayInfo } from "./info-api.js";
import { openParts } from "./parts-open.js";
import { installSelfGuard, type SelfGuard } from "./self-guard.js";
import { createObservability, type AlertEngine, type Observability, type TelemetryOptions } from "./obs/index.js";
import type { Registry } from "prom-client";
import type { AdminRoute, Caller, GatewayStore, HookRunner, QuotaManager, Retention } from "./types.js";

export interface GatewayOptions {
  /** A config file path (HuJSON), or the config as an object (relative paths then against `baseDir`). */
  config: string | GatewayConfigInput;
  /** Where relative paths of an object config point from (default: the working directory). */
  baseDir?: string;
  /** Use this node (the gateway does not close it). Else a node is started from `tailnet` or the config's `tailnet`. */
  node?: MeshNode;
  /** Start a node with these settings (overrides the config's `tailnet`). */
  tailnet?: { controlUrl: string; authKey?: string; hostname?: string; dir?: string; ephemeral?: boolean };
  /** A loopback listener with a fixed principal (overrides the config's `loopback`). */
  loopback?: { listen: string; principal: string | { node?: string; tags: string[]; user?: string } };
  /** Approvals as the guard takes them (a callback is possible here, not in a file); overrides the config's. */
  approvals?: ApprovalOptions;
  /** The environment keys are read from (default process.env). */
  env?: NodeJS.ProcessEnv;
  /** Reports what goes wrong off the request path (a store write, a policy reload). */
  onWarning?: (err: Error) => void;
  /**
   * Guard the gateway's own process (what `meshguard gateway` does): install
   * meshguard's guard allowing only the configured providers, hooks and
   * approval webhook, or use the guard the process already has. Default
   * false: an embedding application decides about its process.
   */
  selfGuard?: boolean;
  /** Reports start-up steps. */
  onProgress?: (message: string) => void;
  /** Where spans and JSON log lines go, and the alert engine's clock (the config's `telemetry`, `log` and `alerts` say what is on). */
  telemetry?: TelemetryOptions;
  /** @internal parts wired by the start-up of the gateway's other parts. */
  parts?: Partial<GatewayParts>;
}

/** The parts behind the contract interfaces (./parts-open.ts opens them from the config; a test may inject one). */
export interface GatewayParts {
  store: GatewayStore | undefined;
  quotas: QuotaManager | undefined;
  hooks: HookRunner | undefined;
  sessions: Sessions;
  prices: Prices;
  access: AccessResolver;
  retention: Retention;
  adminRoutes: AdminRoute[];
}

export interface GatewayHandle extends AsyncDisposable {
  /** The gateway's tailnet URL, by MagicDNS name ("http://ai-gateway"), when it listens on the tailnet. */
  readonly url: string | undefined;
  /** The tailnet URL by IP ("http://100.64.0.3"). */
  readonly ipUrl: string | undefined;
  /** The loopback listener's URL, when configured. */
  readonly loopbackUrl: string | undefined;
  readonly node: MeshNode | undefined;
  readonly config: GatewayConfig;
  /** The store (undefined with retention "none" and no quotas). */
  readonly store: GatewayStore | undefined;
  /** The policy in force. */
  readonly policy: Policy | undefined;
  /** Warnings and policy reloads. */
  readonly events: EventEmitter;
  /** How the process is guarded: the gateway's own guard (with the origins it allows, and the PostgreSQL server of its store), an existing one, or none. */
  readonly guard: { kind: "own"; origins: string[]; database?: string } | { kind: "existing" } | { kind: "none" };
  /** Requests being handled now. */
  readonly inflight: number;
  /**
   * The alert engine of the config's `alerts` (undefined without). An
   * application pipes its guard's decisions into it with
   * `alertAuditSink(gw.alerts)` as the guard's `audit` sink.
   */
  readonly alerts: AlertEngine | undefined;
  /** The gateway's Prometheus registry (undefined with metrics off): an application may merge it into its own. */
  readonly metrics: Registry | undefined;
  /** close stops accepting, waits for in-flight requests (up to `drainMs`, default 10 s), then releases everything. Idempotent. */
  close(opts?: { drainMs?: number }): Promise<void>;
}

export async function startGateway(opts: GatewayOptions): Promise<GatewayHandle> {
  const progress = opts.onProgress ?? (() => {});
  const events = new EventEmitter();
  let obs: Observability | undefined;
  const warn = (err: unknown) => {
    const e = err instanceof Error ? err : new Error(String(err));
    obs?.log.logger.warn({ err: e }, e.message);
    if (opts.onWarning) opts.onWarning(e);
    else if (events.listenerCount("warning") > 0) events.emit("warning", e);
  };

  const resolved = typeof opts.config === "string" ? await loadGatewayConfig(opts.config) : resolveConfigPaths(validateGatewayConfig(opts.config), opts.baseDir ?? process.cwd());
  const env = opts.env ?? process.env;

  // Keys and policy first: a wrong one fails the start before the gateway joins the tailnet.
  const { providers, secrets, shortKeys } = await buildProviders(resolved, env);
  for (const name of shortKeys) {
    warn(
      new MeshguardError(ErrorCode.INVALID_OPTIONS, `the key of provider ${JSON.stringify(name)} is shorter than ${SHORT_KEY} characters: it is still removed wherever it appears (answers, errors, logs), and so is any ordinary text that happens to equal it`, {
        hint: "check that the environment variable or file names the real key",
      }),
    );
  }
  const router = new Router(providers);
  const cleanup: Array<() => Promise<unknown>> = [() => router.close()];
  const undo = async () => {
    for (const f of cleanup.reverse()) await f().catch(() => {});
  };
  try {
    let guard: SelfGuard = { kind: "none" };
    if (opts.selfGuard === true) {
      guard = installSelfGuard(resolved, resolved.tailnet?.hostname ?? opts.tailnet?.hostname ?? opts.node?.hostname ?? "ai-gateway", (opts.approvals ?? resolved.approvals)?.webhook, env);
      if (guard.kind === "own") {
        const h = guard.handle;
        cleanup.push(() => h.close());
        progress(`guarding this process: outbound calls only to ${guard.origins.join(", ")}${guard.database ? ` and PostgreSQL at ${guard.database}` : ""}`);
      } else progress("this process already has a guard: the gateway uses it (its policy must allow the providers and hooks)");
    }
    const holder = new PolicyHolder();
    holder.current = await readPolicyFile(resolved.policy, "the gateway's");
    progress(`policy ${resolved.policy} loaded (${holder.current.rules.length} rules)`);

    // The tailnet node.
    let node = opts.node;
    const tn = opts.tailnet ?? (resolved.tailnet ? { ...resolved.tailnet, authKey: resolved.tailnet.authKey ? await readKey(resolved.tailnet.authKey, "the tailnet auth key", env) : undefined } : undefined);
    // The auth key is a credential too: scrubbed wherever the provider keys are.
    if (tn?.authKey) secrets.push(tn.authKey);
    if (node === undefined && tn !== undefined) {
      progress(`joining the tailnet at ${tn.controlUrl} as ${tn.hostname ?? "ai-gateway"}`);
      node = await MeshNode.start({
        controlUrl: tn.controlUrl,
        hostname: tn.hostname ?? "ai-gateway",
        ...(tn.authKey !== undefined ? { authKey: tn.authKey } : {}),
        ...(tn.dir !== undefined ? { dir: tn.dir } : {}),
        ephemeral: tn.ephemeral ?? false,
        onProgress: (ev) => progress(ev.message),
      });
      cleanup.push(() => node!.close());
    }

    const reloader: FileReloader = watchPolicyFile(holder, resolved.policy, node ? { node } : {});
    cleanup.push(() => reloader.close());
    holder.on("reloadError", (err: Error) => warn(err));
    holder.on("warning", (err: Error) => {
      // The gateway's own policy file is the admin's: being writable by the gateway is expected.
      if ((err as MeshguardError).code !== ErrorCode.POLICY_FILE_UNPROTECTED) warn(err);
    });
    holder.on("reload", (ev) => {
      obs?.log.logger.info({ policy: resolved.policy, ...ev }, "policy reloaded");
      events.emit("reload", ev);
    });
    await reloader.ready;

    const inflight = new Inflight();
    const chains = new WeakMap<Caller, string[][]>();
    const scrub = new KeyScrubber(secrets);
    const o = createObservability(resolved, scrub, opts.telemetry ?? {}, { inflight: () => inflight.count, gateway: node?.hostname ?? tn?.hostname ?? "ai-gateway", warn });
    obs = o;
    cleanup.push(() => o.close());
    const parts = await openParts(resolved, opts.parts ?? {}, secrets, holder, chains, warn, cleanup, o, env);
    progress(`store ${parts.store ? "open" : "off"}, ${Object.keys(resolved.quotas ?? {}).length} quota bucket(s), hooks ${parts.hooks ? "on" : "off"}`);
    const approvals = opts.approvals ?? resolved.approvals;
    // Filled in once the listeners are up; the info route reads it per request.
    const info: GatewayInfo = layoutInfo(resolved);
    const consoleCfg = resolved.console ?? { enabled: true, hosts: [] };
    const browserNames = new Set([...consoleCfg.hosts, ...(node ? [node.hostname, node.name.replace(/\.$/, "")] : [])].filter(Boolean).map((n) => n.toLowerCase()));
    const ctx: GatewayContext = {
      cfg: resolved,
      router,
      scrub,
      policy: () => holder.current,
      access: parts.access,
      chains,
      approvals,
      retention: parts.retention,
      store: parts.store,
      quotas: parts.quotas,
      hooks: parts.hooks,
      sessions: parts.sessions,
      prices: parts.prices,
      adminRoutes: [...parts.adminRoutes, ...o.routes(parts.store), infoRoute(() => info)],
      console: consoleCfg.enabled ? new ConsoleServer(warn) : undefined,
      browserNames,
      inflight,
      observe: o.observe,
      warn,
    };
    if (resolved.mcp !== undefined) {
      // Loaded only when configured: the MCP SDK is not needed by a gateway without MCP servers.
      const { McpEndpoint } = await import("./mcp/endpoint.js");
      const { endpoint: mcp, secrets: held } = await McpEndpoint.open(ctx, resolved.mcp, env);
      ctx.mcp = mcp;
      cleanup.push(() => mcp.close());
      // The MCP servers' credentials are scrubbed wherever the provider keys are (logs, errors, answers).
      scrub.add(held);
      // What a caller may see follows the policy: every session is told to list again.
      holder.on("reload", () => mcp.listsChanged());
      progress(`MCP endpoint at ${mcp.path}: ${Object.keys(resolved.mcp.servers).join(", ")}`);
    }

    if (resolved.connectors !== undefined) {
      const { ConnectorRouter } = await import("./connectors/http.js");
      const { router: connectors, secrets: held } = await ConnectorRouter.open(ctx, resolved.connectors, env);
      ctx.connectors = connectors;
      cleanup.push(() => connectors.close());
      // The connectors' credentials are scrubbed wherever the provider keys are (logs, errors, answers).
      scrub.add(held);
      progress(`HTTP connectors under ${connectors.prefixes.join(", ")}: ${Object.keys(resolved.connectors.http).join(", ")}`);
    }

    if (ctx.connectors !== undefined || ctx.mcp !== undefined) {
      // The OAuth 2.0 routes (consent start and callback, revocation, delegations) act on the sources of HTTP connectors and MCP servers (their names never clash: the config refuses it).
      const { oauthRoutes } = await import("./credentials/oauth-routes.js");
      (ctx as { adminRoutes: readonly AdminRoute[] }).adminRoutes = [
        ...ctx.adminRoutes,
        ...oauthRoutes((name) => ctx.connectors?.sourceOf(name) ?? ctx.mcp?.sourceOf(name), {
          identity: () => (holder.current === undefined ? undefined : identityOf(holder.current)),
          // MCP servers with a credential are listed beside the HTTP connectors (users connect to both alike).
          connectors: () => [...(ctx.connectors?.list() ?? []), ...(ctx.mcp?.list() ?? [])],
        }),
      ];
    }

    const servers: http.Server[] = [];
    let url: string | undefined;
    let ipUrl: string | undefined;
    if (node !== undefined) {
      const whois = new WhoisCache(node);
      const srv = http.createServer({ keepAliveTimeout: 65_000 }, requestHandler(ctx, (req) => whois.caller(req.socket, holder.current)));
      await node.listen(resolved.listen, srv);
      servers.push(srv);
      const port = resolved.listen === 80 ? "" : `:${resolved.listen}`;
      url = `http://${node.hostname}${port}`;
      ipUrl = node.ips[0] ? `http://${node.ips[0]}${port}` : undefined;
      progress(`listening on the tailnet at ${url}`);
      Object.assign(info, { hostname: node.hostname, dnsName: node.name.replace(/\.$/, ""), port: resolved.listen, url, ...(ipUrl ? { ipUrl } : {}), controlUrl: node.controlUrl });
    }

    let loopbackUrl: string | undefined;
    const lb = opts.loopback ?? resolved.loopback;
    if (lb !== undefined) {
      let memo: { policy: Policy | undefined; caller: BaseCaller } | undefined;
      const identify = (): BaseCaller => {
        if (memo === undefined || memo.policy !== holder.current) memo = { policy: holder.current, caller: callerFromPrincipal(lb.principal, holder.current) };
        return memo.caller;
      };
      const srv = http.createServer({ keepAliveTimeout: 65_000 }, requestHandler(ctx, identify));
      const at = lb.listen.lastIndexOf(":");
      const host = lb.listen.slice(0, at).replace(/^\[|\]$/g, "");
      await listenLoopback(srv, host, Number(lb.listen.slice(at + 1)));
      servers.push(srv);
      const addr = srv.address() as { port: number };
      loopbackUrl = `http://${host.includes(":") ? `[${host}]` : host}:${addr.port}`;
      progress(`listening on loopback at ${loopbackUrl}`);
      info.loopbackUrl = loopbackUrl;
    }
    if (servers.length === 0) {
      throw new MeshguardError(ErrorCode.INVALID_OPTIONS, "startGateway: nothing to listen on: give a node, tailnet settings (option or config \"tailnet\") or a loopback listener", {
        hint: 'add "tailnet": { "controlUrl": ..., "authKey": { "env": "TS_AUTHKEY" } } or "loopback": { "listen": "127.0.0.1:8787", "principal": "tag:local" } to the config',
      });
    }

    o.log.logger.info(
      { url, ipUrl, loopbackUrl, providers: Object.keys(resolved.providers), policy: resolved.policy, store: parts.store ? (resolved.storage?.engine ?? "sqlite") : "off", guard: guard.kind, metrics: o.metrics !== undefined, alerts: o.alerts !== undefined },
      "gateway started",
    );

    let closing: Promise<void> | undefined;
    const close = (c?: { drainMs?: number }): Promise<void> =>
      (closing ??= (async () => {
        inflight.closing = true;
        o.log.logger.info({ inflight: inflight.count }, "gateway stopping");
        for (const s of servers) {
          s.close();
          s.closeIdleConnections();
        }
        // MCP sessions hold open streams (GET) and wait on upstreams: they end first, or the drain would wait for them.
        await ctx.mcp?.close();
        const drained = await inflight.idle(c?.drainMs ?? 10_000);
        if (!drained) warn(new MeshguardError(ErrorCode.TIMEOUT, `gateway close: ${inflight.count} request(s) still running after ${c?.drainMs ?? 10_000} ms were cut off`));
        for (const s of servers) s.closeAllConnections();
        // The log closes last (cleanup runs in reverse): what the store and hooks report while closing is still written.
        o.log.logger.info({ drained }, "gateway stopped");
        await undo();
      })());

    return {
      url,
      ipUrl,
      loopbackUrl,
      node,
      config: resolved,
      store: parts.store,
      get policy() {
        return holder.current;
      },
      events,
      get inflight() {
        return inflight.count;
      },
      alerts: o.alerts,
      metrics: o.metrics?.registry,
      guard: guard.kind === "own" ? { kind: "own", origins: guard.origins, ...(guard.database ? { database: guard.database } : {}) } : guard,
      close,
      [Symbol.asyncDispose]: () => close(),
    };
  } catch (err) {
    await undo();
    throw err;
  }
}

function listenLoopback(srv: http.Server, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    srv.once("error", (err: NodeJS.ErrnoException) =>
      reject(new MeshguardError(err.code === "EADDRINUSE" ? ErrorCode.PORT_IN_USE : ErrorCode.INVALID_OPTIONS, `the gateway cannot listen on ${host}:${port}: ${err.message}`, { cause: err })),
    );
    srv.listen(port, host, () => resolve());
  });
}

export { GatewayConfigError };
