/**
 * The message protocol between the TypeScript host and the Go core. Both
 * transports (native addon, wasm) carry exactly these messages; see
 * go/core/protocol.go for the other side.
 */

/** PROTOCOL_VERSION must equal core.ProtocolVersion; checked at load. */
export const PROTOCOL_VERSION = 1;

export interface CoreResponse {
  id: number;
  result?: unknown;
  error?: { code: string; message: string };
}

export interface CoreEvent {
  event: "state" | "netmap" | "accept" | "listenerClosed" | "log" | "error" | "panic";
  node: number;
  data: Record<string, unknown>;
}

export type CoreMessage = CoreResponse | CoreEvent;

/** A tailnet connection handed over by the core. Natively `fd` is set. */
export interface ExportedConn {
  fd?: number;
  remoteAddr: string;
  localAddr: string;
  listener?: number;
  dialUs?: number;
}

export interface PeerInfo {
  id: string;
  /** MagicDNS name, fully qualified, without the trailing dot. */
  name: string;
  hostname: string;
  ips: string[];
  tags: string[];
  online: boolean;
  /** Login of the owning user, for user-owned (untagged) nodes. */
  user?: string;
}

export interface UpResult {
  ips: string[];
  name: string;
  hostname: string;
  id: string;
  tags: string[] | null;
  onlineMs: number;
}

export interface CoreWhoIs {
  node: { id: string; name: string; hostname: string; tags: string[] | null; ips: string[] | null };
  user: { login: string; displayName: string };
  tagged: boolean;
  caps: Record<string, unknown[]>;
}

export interface HelloResult {
  protocol: number;
  tailscale: string;
  knobs: Record<string, string>;
}

/** Backend is what MeshNode needs from a transport. */
export interface Backend {
  readonly kind: "native" | "wasm";
  call<T>(method: string, params?: Record<string, unknown>): Promise<T>;
  /** Subscribes to core events; returns the unsubscribe function. */
  onEvent(fn: (ev: CoreEvent) => void): () => void;
  /** Turns an exported connection into a socket the host owns. */
  openConn(conn: ExportedConn, opts: { allowHalfOpen: boolean }): import("node:net").Socket;
  /** Drops an exported connection nobody will use. */
  discardConn(conn: ExportedConn): void;
  /** Keeps the process alive until the returned function is called. */
  hold(): () => void;
}
