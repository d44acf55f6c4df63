/**
 * The offline headscale configuration: everything on 127.0.0.1, the embedded
 * DERP as the only relay, no update checks, no log upload, no outside DNS.
 *
 * headscale reads it with viper from `config.yaml`; JSON is valid YAML, so it
 * is written as JSON and needs no YAML library. Keys checked against
 * headscale v0.29.2 (`config-example.yaml`, `hscontrol/types/config.go`):
 * - remote gRPC (`grpc_listen_addr`) only listens with TLS or
 *   `grpc_allow_insecure`, neither of which is set; the CLI uses the unix socket;
 * - an empty `metrics_listen_addr` disables the metrics server;
 * - with `derp.server.enabled` the STUN address is required, and the embedded
 *   region is the whole DERP map (`urls` and `paths` empty, no auto-update);
 *   its DERP is served over HTTP on `listen_addr`;
 * - `dns.override_local_dns: false` allows an empty nameserver list;
 *   `base_domain` must not contain the server URL's host;
 * - `unix_socket_permission` is parsed as octal without "0o" (the built-in
 *   default "0o770" silently falls back);
 * - `node.ephemeral.inactivity_timeout` must be more than 65 s.
 */

import { join } from "node:path";

export interface Layout {
  /** State directory: keys and SQLite live here. */
  dir: string;
  configPath: string;
  /** CLI socket; may live outside `dir` to respect the sun_path limit. */
  socketPath: string;
}

export interface Ports {
  http: number;
  grpc: number;
  stun: number;
}

/** MAGIC_DNS_DOMAIN is the tailnet's DNS suffix: nodes are `<name>.mesh.internal`. */
export const MAGIC_DNS_DOMAIN = "mesh.internal";

export function offlineConfig(layout: Layout, p: Ports & { logLevel: string; ephemeral: string }): Record<string, unknown> {
  const { dir } = layout;
  return {
    server_url: `http://127.0.0.1:${p.http}`,
    listen_addr: `127.0.0.1:${p.http}`,
    metrics_listen_addr: "",
    // Only opened with TLS or grpc_allow_insecure (neither is set); a
    // loopback address keeps even a future default from binding all interfaces.
    grpc_listen_addr: `127.0.0.1:${p.grpc}`,
    grpc_allow_insecure: false,
    disable_check_updates: true,
    noise: { private_key_path: join(dir, "noise_private.key") },
    // Random, not sequential: a freed address handed at once to a new node
    // meets peers that still map it to the old one (a 5 s WireGuard stall).
    prefixes: { v4: "100.64.0.0/10", v6: "fd7a:115c:a1e0::/48", allocation: "random" },
    derp: {
      server: {
        enabled: true,
        region_id: 999,
        region_code: "meshguard",
        region_name: "meshguard local DERP",
        verify_clients: true,
        stun_listen_addr: `127.0.0.1:${p.stun}`,
        private_key_path: join(dir, "derp_server_private.key"),
        automatically_add_embedded_derp_region: true,
        ipv4: "127.0.0.1",
        // "none" tells clients the DERP node has no IPv6; an empty value makes
        // every netcheck wait out a 3 s IPv6 STUN probe (4.7 s to online, not 0.2 s).
        ipv6: "none",
      },
      urls: [],
      paths: [],
      auto_update_enabled: false,
      update_frequency: "24h",
    },
    // headscale batches netmap changes (800 ms / 500 ms by default): fine for
    // a fleet, but it is most of a local node's time to online and of the
    // delay before a policy change reaches the nodes.
    tuning: { batch_change_delay: "50ms", node_store_batch_timeout: "20ms" },
    node: { expiry: "0", ephemeral: { inactivity_timeout: p.ephemeral } },
    database: { type: "sqlite", sqlite: { path: join(dir, "db.sqlite"), write_ahead_log: true } },
    log: { level: p.logLevel, format: "text" },
    policy: { mode: "database" },
    dns: {
      magic_dns: true,
      base_domain: MAGIC_DNS_DOMAIN,
      override_local_dns: false,
      nameservers: { global: [], split: {} },
      search_domains: [],
      extra_records: [],
    },
    unix_socket: layout.socketPath,
    unix_socket_permission: "0700",
    cli: { timeout: "15s" },
    logtail: { enabled: false },
    taildrop: { enabled: false },
    auto_update: { enabled: false },
  };
}
