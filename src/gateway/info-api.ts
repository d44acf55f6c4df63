/**
 * GET /meshguard/v1/gateway: how to reach this gateway — what the console's
 * "connect your client" page and scripts need to write a client's settings.
 * Anyone who may call the gateway may read it (it names no other caller).
 * It also says where its MCP endpoint and HTTP API connectors are (each
 * connector's upstream base URL and the names its credential is sent
 * under, never the credential): what an agent's guard needs to judge a
 * call to the gateway as the gateway does (gatewayLayout in
 * src/guard/gateways.ts).
 */
import type { AdminRoute } from "./types.js";

export interface GatewayInfo {
  /** The gateway node's short name ("ai-gateway"), when it is on the tailnet. */
  hostname?: string;
  /** Its MagicDNS name ("ai-gateway.tailnet.example"). */
  dnsName?: string;
  /** The tailnet port. */
  port?: number;
  url?: string;
  ipUrl?: string;
  loopbackUrl?: string;
  /** The control server its node joined. */
  controlUrl?: string;
  /** The aggregating MCP endpoint: its path and the names of its servers (the prefixes of its tools' names). */
  mcp?: { path: string; servers: string[] };
  /** The HTTP API connectors: the default prefix, and each connector's upstream base URL, prefix and the names (not values) its credential is sent under. */
  connectors?: { prefix: string; http: Record<string, { baseUrl: string; prefix: string; credentialHeader?: string; credentialQuery?: string }> };
}

/** layoutInfo is the MCP and connector part of the description, from the gateway's config. */
export function layoutInfo(cfg: {
  mcp?: { path: string; servers: Record<string, unknown> } | undefined;
  connectors?: { prefix: string; http: Record<string, { baseUrl: string; prefix?: string | undefined; auth: unknown }> } | undefined;
}): Pick<GatewayInfo, "mcp" | "connectors"> {
  const out: Pick<GatewayInfo, "mcp" | "connectors"> = {};
  if (cfg.mcp !== undefined) out.mcp = { path: cfg.mcp.path, servers: Object.keys(cfg.mcp.servers) };
  if (cfg.connectors !== undefined) {
    const http: NonNullable<GatewayInfo["connectors"]>["http"] = {};
    for (const [name, c] of Object.entries(cfg.connectors.http)) {
      const a = c.auth as { header?: unknown; query?: unknown };
      http[name] = {
        baseUrl: c.baseUrl,
        prefix: c.prefix ?? cfg.connectors.prefix,
        ...(typeof a.header === "string" ? { credentialHeader: a.header } : {}),
        ...(typeof a.query === "string" ? { credentialQuery: a.query } : {}),
      };
    }
    out.connectors = { prefix: cfg.connectors.prefix, http };
  }
  return out;
}

export function infoRoute(info: () => GatewayInfo): AdminRoute {
  return {
    method: "GET",
    pattern: "/gateway",
    async handle() {
      return { status: 200, body: info() };
    },
  };
}
