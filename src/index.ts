export { MeshNode, type WhoIs, type NodeStatus, type DialOptions, type Peer, type PeerPath, type PingKind, type PingReply, type ProgressEvent, type StartOptions } from "./node.js";
export { MeshguardError, ErrorCode, isMeshguardError, type MeshguardErrorOptions } from "./errors.js";
export { CONNECTION_CHANNEL, DIAL_CHANNEL, FETCH_CHANNEL, type ConnectionMessage, type DialMessage, type DialVerdict, type FetchMessage, type MeshNodeEvents, type ProgressPhase, type TailnetIdentity } from "./node.js";
export { memoryStateStore, fileStateStore, type StateStore } from "./state-store.js";
