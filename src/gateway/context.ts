/**
 * GatewayContext is everything the request path needs, built once by
 * startGateway (./start.ts). Each part (store, quotas, hooks, sessions) is
 * reached through its contract interface (./types.ts), so the request path
 * does not know which engine is behind it; an absent part is skipped
 * (no quotas configured: nothing is reserved).
 */

import type { ApprovalOptions } from "../guard/types.js";
import type { Policy } from "../policy/load.js";
import type { AccessResolver } from "./caller.js";
import type { ConsoleServer } from "./console/serve.js";
import type { GatewayConfig } from "./config.js";
import type { Router } from "./providers.js";
import type { ConnectorRouter } from "./connectors/http.js";
import type { McpEndpoint } from "./mcp/endpoint.js";
import type { KeyScrubber } from "./scrub.js";
import type { AdminRoute, Caller, CallFacts, GatewayStore, HookRunner, LogRecord, ModelPrice, QuotaManager, Retention } from "./types.js";

/** Sessions names the session of a request (the store part's SessionTracker, or SharedSessions when instances share the store: then it may have to ask the store). */
export interface Sessions {
  sessionOf(caller: Caller, clientSessionId: string | undefined, now: number): string | Promise<string>;
}

/** Prices answers what a model costs and how long its answers can be (the quota part's price table). */
export interface Prices {
  priceOf(provider: string, model: string, overrides: Readonly<Record<string, ModelPrice>>): ModelPrice | undefined;
  maxOutputTokensOf(provider: string, model: string): number | undefined;
}

export interface GatewayContext {
  readonly cfg: GatewayConfig;
  readonly router: Router;
  readonly scrub: KeyScrubber;
  /** The policy in force (reloaded on change); undefined denies every call. */
  policy(): Policy | undefined;
  readonly access: AccessResolver;
  /** The quota chains of each caller of a request in flight (set when access is decided; the quota manager reads them). */
  readonly chains: WeakMap<Caller, string[][]>;
  readonly approvals: ApprovalOptions | undefined;
  readonly retention: Retention;
  readonly store: GatewayStore | undefined;
  readonly quotas: QuotaManager | undefined;
  readonly hooks: HookRunner | undefined;
  readonly sessions: Sessions;
  readonly prices: Prices;
  readonly adminRoutes: readonly AdminRoute[];
  /** The web console (undefined when the config turns it off). */
  readonly console: ConsoleServer | undefined;
  /** The gateway's own names (lower-case) a browser may reach it by, besides IP addresses and localhost. */
  readonly browserNames: ReadonlySet<string>;
  /** The aggregating MCP endpoint (./mcp/), when the config has an `mcp` section; set once at start. */
  mcp?: McpEndpoint;
  /** The HTTP API connectors (./connectors/), when the config has a `connectors` section; set once at start. */
  connectors?: ConnectorRouter;
  /** Counts requests in flight, so close() can wait for them. */
  readonly inflight: Inflight;
  /**
   * Told every finished call's record (metadata; bodies only when stored),
   * once, after the answer: metrics, spans, alerts, the access log
   * (./obs/). Must not throw or wait.
   */
  readonly observe?: (rec: LogRecord, facts: CallFacts | undefined) => void;
  /** Something went wrong that is not a request's fault (a store write failed): reported, never thrown. */
  warn(err: unknown): void;
}

/** Inflight counts running requests and tells when none is left. */
export class Inflight {
  private n = 0;
  private waiters: Array<() => void> = [];
  /** Set by close(): new requests are refused with 503. */
  closing = false;

  enter(): void {
    this.n++;
  }

  leave(): void {
    if (--this.n === 0) for (const w of this.waiters.splice(0)) w();
  }

  get count(): number {
    return this.n;
  }

  /** idle resolves when no request is in flight, or after `ms` (false then). */
  idle(ms: number): Promise<boolean> {
    if (this.n === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const t = setTimeout(() => resolve(false), ms);
      t.unref();
      this.waiters.push(() => {
        clearTimeout(t);
        resolve(true);
      });
    });
  }
}
