/**
 * meshguard's control socket: a node's local socket that `meshguard status`,
 * `whois`, `ping` and `policy explain` attach to. Re-exports only.
 */

export { ControlClient, discoverSockets, defaultSocketCandidates, socketPathOf, type FoundSocket } from "./client.js";
export { callMethod, isAddr } from "./handlers.js";
export { openControlSocket, checkDirectory, permissionModelDenies, type ControlSocket } from "./server.js";
export { INSPECT_CHANNEL, type InspectMessage } from "./channel.js";
export {
  LIMITS,
  SOCKET_NAME,
  SOCKET_PROTOCOL_VERSION,
  SOCKET_METHODS,
  type ExplainParams,
  type ExplainResult,
  type GuardInfo,
  type HelloResult,
  type Inspectable,
  type PeerPath,
  type PeerStatus,
  type PingKind,
  type PingParams,
  type PingReply,
  type SelfInfo,
  type SocketMethod,
  type SocketMethods,
  type SocketRequest,
  type SocketResponse,
  type StatusParams,
  type StatusResult,
  type WhoisParams,
} from "./protocol.js";
