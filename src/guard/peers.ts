/**
 * Who a tailnet dial goes to: the peer's name and tags, from the dialing
 * node's netmap, so that host patterns like `tag:db` can match a
 * MeshNode.dial. The netmap is read once per node (the first dial waits for
 * it) and then kept current from the node's `netmap` events.
 */

import type { PeerInfo } from "../policy/types.js";
import { normalizeHost } from "../policy/hosts.js";

interface NetmapPeer {
  name: string;
  hostname: string;
  ips: string[];
  tags: string[];
}

interface PeerSource {
  peers?(): Promise<NetmapPeer[]>;
  on?(event: "netmap", fn: (ev: { peers: NetmapPeer[] }) => void): unknown;
}

const tables = new WeakMap<object, Map<string, PeerInfo> | Promise<Map<string, PeerInfo>>>();

function index(peers: NetmapPeer[]): Map<string, PeerInfo> {
  const m = new Map<string, PeerInfo>();
  for (const p of peers) {
    const info: PeerInfo = { name: normalizeHost(p.name), tags: [...(p.tags ?? [])] };
    // A dial names a peer by short name, full MagicDNS name or tailnet IP.
    for (const k of [p.name, p.hostname, ...(p.ips ?? [])]) if (k) m.set(normalizeHost(k), info);
  }
  return m;
}

/** peerTable returns the node's peers by name and IP (a Promise the first time). */
export function peerTable(node: object): Map<string, PeerInfo> | Promise<Map<string, PeerInfo>> | undefined {
  const known = tables.get(node);
  if (known !== undefined) return known;
  const src = node as PeerSource;
  if (typeof src.peers !== "function") return undefined;
  src.on?.("netmap", (ev) => tables.set(node, index(ev.peers)));
  const p = src.peers().then(
    (peers) => {
      const m = index(peers);
      if (tables.get(node) === p) tables.set(node, m);
      return m;
    },
    () => {
      // No netmap: no peer info (tag patterns do not match: fail closed).
      const m = new Map<string, PeerInfo>();
      if (tables.get(node) === p) tables.delete(node);
      return m;
    },
  );
  tables.set(node, p);
  return p;
}
