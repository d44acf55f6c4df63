/**
 * The control socket's protocol, version 1: newline-delimited JSON over a
 * Unix socket in the node's state directory. One request per line, one
 * response line per request, matched by `id`:
 *
 *   → {"v":1,"id":1,"method":"status","params":{"ping":true}}
 *   ← {"v":1,"id":1,"result":{...}}
 *   ← {"v":1,"id":1,"error":{"code":"MESHGUARD_...","message":"...","hint":"..."}}
 *
 * The method, param and result shapes below are the stable contract
 * (docs/cli.md, "The control socket protocol"); a field may be added, none
 * renamed or removed without a new version. The server answers a request of
 * another version with MESHGUARD_CONTROL_SOCKET_BAD_REQUEST naming the one
 * it speaks.
 */

import type { PeerPath } from "../backend/protocol.js";

/** SOCKET_PROTOCOL_VERSION is the `v` of every request and response. */
export const SOCKET_PROTOCOL_VERSION = 1;

/** SOCKET_NAME is the socket's file name inside the node's state directory. */
export const SOCKET_NAME = "meshguard.sock";

/** Limits the server enforces; a client needs to know only the request size. */
export const LIMITS = {
  /** One request line, newline excluded. */
  maxRequestBytes: 64 * 1024,
  /** A connection with no request in flight is closed after this. */
  idleTimeoutMs: 30_000,
  /** A request that has not answered in this time is answered with MESHGUARD_TIMEOUT. */
  requestTimeoutMs: 60_000,
  /** Open connections at once; one more is told so and closed. */
  maxConnections: 16,
  /** Requests read but not yet answered on one connection. */
  maxPending: 32,
} as const;

export type RequestId = string | number;

export interface SocketRequest {
  v: typeof SOCKET_PROTOCOL_VERSION;
  id: RequestId;
  method: string;
  params?: Record<string, unknown>;
}

export interface SocketError {
  code: string;
  message: string;
  hint?: string;
}

export interface SocketResponse {
  v: typeof SOCKET_PROTOCOL_VERSION;
  /** null when the request's id could not be read. */
  id: RequestId | null;
  result?: unknown;
  error?: SocketError;
}

// ---- what the server needs of a node ------------------------------------

/** PeerPath is how a node reaches one peer now (MeshNode.paths): the core's own answer, as the backend protocol defines it. */
export type { PeerPath };

/** PingKind: "disco" (magicsock's own ping, reports the path), "tsmp" or "icmp" (through WireGuard). */
export type PingKind = "disco" | "tsmp" | "icmp";

/** PingReply is one answered ping (MeshNode.ping). */
export interface PingReply {
  /** The tailnet IP pinged. */
  ip: string;
  /** The peer's MagicDNS name. */
  name: string;
  latencyMs: number;
  /** "direct", "derp" or "peer-relay" for a disco ping; "" for tsmp and icmp, which do not see the path. */
  path: string;
  /** ip:port of a direct path. */
  endpoint?: string;
  /** The DERP region's code on a relayed path. */
  derpRegion?: string;
}

/** The parts of MeshNode the socket's methods use (MeshNode is one; the type keeps this layer below it). */
export interface Inspectable {
  readonly name: string;
  readonly hostname: string;
  readonly id: string;
  readonly ips: string[];
  readonly dir: string;
  readonly controlUrl: string;
  status(): Promise<{ state: string; health?: string[] | null }>;
  peers(): Promise<{ id: string; name: string; hostname: string; ips: string[]; tags: string[]; online: boolean; user?: string }[]>;
  paths(): Promise<PeerPath[]>;
  ping(host: string, opts?: { kind?: PingKind; timeoutMs?: number }): Promise<PingReply>;
  whois(addr: string): Promise<unknown>;
}

// ---- methods --------------------------------------------------------------

/** hello: who answers. */
export interface HelloResult {
  v: typeof SOCKET_PROTOCOL_VERSION;
  pid: number;
  name: string;
  methods: string[];
}

export interface StatusParams {
  /** Ping every online peer to report its latency (default true); false answers at once. */
  ping?: boolean;
  /** Per-peer ping timeout, default 1000 ms. */
  pingTimeoutMs?: number;
}

/** The guard installed in the node's process, as status reports it. */
export interface GuardInfo {
  mode: string;
  /** The identity the guard decides as. */
  principal: { node?: string; tags: string[]; user?: string };
  /** The policy in force; null: none (every call is denied). */
  policy: { hash?: string; file?: string; format?: number } | null;
}

export interface SelfInfo {
  name: string;
  hostname: string;
  id: string;
  ips: string[];
  tags: string[];
  /** The owning user of an untagged node. */
  user?: string;
  /** The backend state ("Running", ...). */
  state: string;
  health: string[];
  controlUrl: string;
  dir: string;
  pid: number;
  /** The socket this answer came through; absent for a node brought up by the CLI itself. */
  socket?: string;
  /** The process's guard, or null when none is installed (or it is in another copy of meshguard that does not answer). */
  guard: GuardInfo | null;
}

export interface PeerStatus {
  id: string;
  name: string;
  hostname: string;
  ips: string[];
  tags: string[];
  user?: string;
  online: boolean;
  /** See PeerPath.path. */
  path: string;
  curAddr?: string;
  relay?: string;
  active: boolean;
  /** ISO 8601, or null for never. */
  lastHandshake: string | null;
  rxBytes: number;
  txBytes: number;
  /** Round trip of one disco ping; null when not pinged or not answered (pingError says why). */
  latencyMs: number | null;
  pingError?: string;
}

export interface StatusResult {
  self: SelfInfo;
  peers: PeerStatus[];
}

export interface WhoisParams {
  /** "ip" or "ip:port". */
  addr: string;
}

export interface PingParams {
  host: string;
  kind?: PingKind;
  timeoutMs?: number;
}

export interface ExplainParams {
  /** A request line, as `meshguard policy explain` takes it ("GET https://...", "tcp db:5432 tailnet", ...). */
  request: string;
  /** Decide as this identity instead of the guard's own ("tag:x", "alice@", "node:name", comma-separated). */
  as?: string;
  /** ISO 8601 time to decide at (default now). */
  at?: string;
  headers?: Record<string, string>;
  bodySize?: number;
  peerTags?: string[];
}

/** The result of explain: the engine's explanation plus which policy and identity it came from. */
export interface ExplainResult {
  decision: unknown;
  principal: unknown;
  request: string;
  rules: unknown[];
  /** The guard's policy in force. */
  policy: { hash?: string; file?: string; format?: number };
  mode: string;
}

/** Every method: params → result. */
export interface SocketMethods {
  hello: { params: Record<never, never>; result: HelloResult };
  status: { params: StatusParams; result: StatusResult };
  whois: { params: WhoisParams; result: unknown };
  ping: { params: PingParams; result: PingReply };
  explain: { params: ExplainParams; result: ExplainResult };
}
export type SocketMethod = keyof SocketMethods;
export const SOCKET_METHODS: readonly SocketMethod[] = ["hello", "status", "whois", "ping", "explain"];
