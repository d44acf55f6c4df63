/**
 * GET /meshguard/v1/gateway: how to reach this gateway — what the console's
 * "connect your client" page and scripts need to write a client's settings.
 * Anyone who may call the gateway may read it (it names no other caller).
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
