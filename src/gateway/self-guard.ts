/**
 * The gateway guards itself (issue 8 item 9): in its own process it
 * installs meshguard's guard with a policy that allows only what the config
 * names — the providers' base URLs, the HTTP connectors' and MCP servers' URLs, the hook URLs, the approval webhook, the
 * alert webhooks and the PostgreSQL server of `storage` —
 * so a compromised dependency of the gateway cannot send the provider keys
 * anywhere else. (The tailnet's own traffic — control server, DERP,
 * WireGuard — is the Go core's, below Node's network APIs.) Embedded in a
 * process that already has a guard, the gateway uses that one: its policy
 * must then allow the providers and hooks (docs/gateway.md).
 */

import { guardInstalled, installGuard, type Evaluator, type GuardHandle } from "../guard/index.js";
import { normalizeHost } from "../policy/hosts.js";
import type { Decision, DecisionRequest, Target } from "../policy/types.js";
import type { GatewayConfig } from "./config.js";
import { oauthOrigins, type OAuth2Config } from "./credentials/oauth.js";
import { hookUrls } from "./hooks.js";

/** One destination the gateway may reach. */
interface Origin {
  scheme: "http" | "https";
  host: string;
  port: number;
}

/**
 * selfGuardDatabase is the PostgreSQL server the config stores in, as
 * "host:port" (the connection URL read from `env` as the store reads it:
 * host and port of the URL, or its `host`/`port` parameters, else PGHOST /
 * PGPORT, else localhost:5432); undefined for SQLite, a Unix socket, or a
 * URL that is missing or unreadable (the store then fails to open with the
 * reason).
 */
export function selfGuardDatabase(cfg: GatewayConfig, env: NodeJS.ProcessEnv = process.env): string | undefined {
  const st = cfg.storage;
  if (st?.engine !== "postgres") return undefined;
  const url = st.url ?? (st.urlEnv === undefined ? undefined : env[st.urlEnv]);
  if (url === undefined || url === "") return undefined;
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return undefined;
  }
  const host = u.searchParams.get("host") ?? (u.hostname !== "" ? decodeURIComponent(u.hostname) : (env.PGHOST ?? "localhost"));
  if (host === "" || host.startsWith("/")) return undefined; // a Unix socket directory: no TCP connection to allow
  const port = Number(u.searchParams.get("port") ?? (u.port || env.PGPORT || 5432));
  if (!Number.isInteger(port) || port < 1 || port > 65535) return undefined;
  const h = normalizeHost(host.replace(/^\[|\]$/g, ""));
  return `${h.includes(":") ? `[${h}]` : h}:${port}`;
}

/** selfGuardOrigins lists every destination the config needs, as "scheme://host:port". */
export function selfGuardOrigins(cfg: GatewayConfig, approvalWebhook?: string): string[] {
  const urls = [
    ...Object.values(cfg.providers).map((p) => p.baseUrl),
    ...(cfg.hooks ? hookUrls(cfg.hooks) : []),
    ...(approvalWebhook ? [approvalWebhook] : []),
    ...(cfg.alerts?.webhooks.map((w) => w.url) ?? []),
    ...Object.values(cfg.mcp?.servers ?? {}).flatMap((s) => ("url" in s ? [s.url, ...(s.auth?.type === "oauth2" ? oauthOrigins(s.auth as OAuth2Config) : [])] : [])),
    ...Object.values(cfg.connectors?.http ?? {}).flatMap((c) => [c.baseUrl, ...(c.auth.type === "oauth2" ? oauthOrigins(c.auth as OAuth2Config) : [])]),
  ];
  return [...new Set(urls.map((u) => fmt(origin(u))))];
}

function origin(url: string): Origin {
  const u = new URL(url);
  const scheme = u.protocol === "https:" ? "https" : "http";
  return { scheme, host: normalizeHost(u.hostname), port: u.port ? Number(u.port) : scheme === "https" ? 443 : 80 };
}

/** hostPort reads "host:port" ("[::1]:5432" for IPv6). */
function hostPort(hp: string): { host: string; port: number } {
  const at = hp.lastIndexOf(":");
  return { host: normalizeHost(hp.slice(0, at).replace(/^\[|\]$/g, "")), port: Number(hp.slice(at + 1)) };
}

const fmt = (o: Origin) => `${o.scheme}://${o.host.includes(":") ? `[${o.host}]` : o.host}:${o.port}`;

const ALLOW: Readonly<Decision> = Object.freeze({ effect: "allow", ruleId: "gateway-self", reason: "a destination the gateway config names" });
const DENY: Readonly<Decision> = Object.freeze({ effect: "deny", ruleId: "gateway-self", reason: "the gateway may reach only the providers, hooks and approval webhook its config names" });

/**
 * selfGuardPolicy: HTTP(S) to a listed origin (and the model call it
 * carries: which model a caller may use was decided by the gateway's own
 * policy), TCP/TLS and address look-ups for the listed hosts and for the
 * `tcp` "host:port" list (the PostgreSQL server of the store); nothing else.
 */
export function selfGuardPolicy(origins: readonly string[], tcp: readonly string[] = []): Evaluator & { mayAllow(req: DecisionRequest): boolean } {
  const list = origins.map((o) => origin(o));
  const plain = tcp.map(hostPort);
  const hostPorts = new Set([...list, ...plain].map((o) => `${o.host}:${o.port}`));
  const hosts = new Set([...list, ...plain].map((o) => o.host));
  const allowed = (t: Target): boolean => {
    switch (t.kind) {
      case "http":
        return list.some((o) => o.scheme === t.scheme && o.host === t.host && o.port === t.port);
      case "tcp":
        return t.tailnet !== true && hostPorts.has(`${t.host}:${t.port}`);
      case "llm":
      case "mcp":
        // Which model or tool a caller may use was decided by the gateway's own policy.
        return true;
      case "dns":
        return t.server === undefined && hosts.has(t.name);
      default:
        return false;
    }
  };
  return {
    evaluate: (req) => (allowed(req.target) ? ALLOW : DENY),
    mayAllow: (req) => {
      const t = req.target as { kind: string; host?: string; port?: number };
      if (t.kind === "llm") return true;
      if (t.kind === "dns") return allowed(req.target);
      return t.host !== undefined && hostPorts.has(`${t.host}:${t.port}`);
    },
  };
}

/** What the gateway did about guarding itself. */
export type SelfGuard = { kind: "own"; handle: GuardHandle; origins: string[]; database?: string } | { kind: "existing" } | { kind: "none" };

/**
 * installSelfGuard installs the gateway's guard, or uses the one the process
 * has. `hostname` is the gateway's node name (the principal of its calls);
 * `env` is where the store's connection URL is read (storage.urlEnv).
 */
export function installSelfGuard(cfg: GatewayConfig, hostname: string, approvalWebhook?: string, env: NodeJS.ProcessEnv = process.env): SelfGuard {
  if (guardInstalled()) return { kind: "existing" };
  const origins = selfGuardOrigins(cfg, approvalWebhook);
  const database = selfGuardDatabase(cfg, env);
  const hostSet = new Set([...origins.map((o) => origin(o).host), ...(database ? [hostPort(database).host] : [])]);
  const handle = installGuard({
    policy: selfGuardPolicy(origins, database ? [database] : []),
    identity: { node: hostname, tags: [] },
    // A configured provider on a name that resolves to loopback (a local vLLM or Ollama) is meant.
    allowResolved: (host) => hostSet.has(normalizeHost(host)),
    // The gateway uses no LLM SDK itself (its upstream calls are judged at the HTTP layer). Worker
    // threads stay intercepted: it starts none, so one started by a dependency is refused.
    intercept: { sdk: false },
  });
  return { kind: "own", handle, origins, ...(database ? { database } : {}) };
}
