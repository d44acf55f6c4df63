/**
 * The message protocol between the TypeScript host and the Go core: one
 * table of methods (params → result) and events (name → data). Both
 * transports (native addon, wasm) carry exactly these messages; nothing here
 * knows how they travel.
 *
 * The Go side is go/core/protocol.go. Both sides are checked against one
 * description, go/core/testdata/protocol.json: the Go table by a Go test,
 * this one by src/backend/protocol.test.ts through PROTOCOL_SHAPE below,
 * which the compiler ties to the interfaces. A field or method that differs
 * between Go and TypeScript fails one of the two tests.
 */

/** PROTOCOL_VERSION must equal core.ProtocolVersion; checked at load. */
export const PROTOCOL_VERSION = 4;

/** The params or result of a method that takes or returns nothing. */
export type Empty = Record<never, never>;

// ---- params and results -------------------------------------------------

export interface HelloResult {
  protocol: number;
  /** The tailscale.com module version linked into the core. */
  tailscale: string;
  knobs: Record<string, string>;
}

export interface ConfigureParams {
  /** TS_* knobs for the whole process; only before the first node exists. */
  env: Record<string, string>;
  /** GOMAXPROCS for the core; 0 leaves it. */
  maxProcs: number;
}

/** A node to create; names follow the public start options. */
export interface CoreConfig {
  dir: string;
  hostname: string;
  controlUrl: string;
  authKey: string;
  ephemeral: boolean;
  tags: string[];
  verbose: boolean;
}

export interface NodeParams {
  node: number;
}

export interface UpParams {
  node: number;
  /** Default 60 s. */
  timeoutMs?: number;
}

export interface UpResult {
  ips: string[];
  name: string;
  hostname: string;
  id: string;
  tags: string[];
  onlineMs: number;
}

export interface DialParams {
  node: number;
  host: string;
  port: number;
  /** Default 30 s. */
  timeoutMs?: number;
}

/** How the host finds a bridged connection; natively `fd` is set. */
export interface ConnHandle {
  /** The native transport: one end of a socketpair. */
  fd?: number;
  /** The wasm transport: a stream id whose bytes travel as worker messages. */
  stream?: number;
}

export interface DialResult extends ConnHandle {
  remoteAddr: string;
  localAddr: string;
  /** From the call to connected, warm-up included. */
  dialUs: number;
  warmUpUs: number;
  /** Disco pings sent to warm up a peer not dialed before. */
  pings: number;
}

export interface ListenParams {
  node: number;
  port: number;
}

export interface ListenerParams {
  listener: number;
}

export interface WhoIsParams {
  node: number;
  /** "ip" or "ip:port". */
  addr: string;
}

export interface CoreWhoIs {
  node: { id: string; name: string; hostname: string; tags: string[]; ips: string[] };
  user: { login: string; displayName: string };
  tagged: boolean;
  caps: Record<string, unknown[]>;
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

export interface StatusResult {
  /** The backend state ("NoState", "Starting", "Running", ...). */
  state: string;
  ips: string[];
  health: string[];
  /** Absent before the node is up. */
  name?: string;
  id?: string;
}

export interface PingParams {
  node: number;
  /** A peer's MagicDNS name (short or full) or tailnet IP. */
  host: string;
  /** "disco" (default: also reports the path), "tsmp" or "icmp". */
  kind?: string;
  /** Default 5 s. */
  timeoutMs?: number;
}

export interface PingResult {
  /** The tailnet IP pinged. */
  ip: string;
  name: string;
  latencyUs: number;
  /** "direct", "derp" or "peer-relay" for a disco ping; "" for tsmp and icmp. */
  path: string;
  /** ip:port of a direct path (ip:port:vni:N of a peer relay). */
  endpoint?: string;
  /** The DERP region's code on a relayed path. */
  derpRegion?: string;
}

/** How this node reaches one peer now. */
export interface PeerPath {
  id: string;
  name: string;
  /** "direct", "derp", "peer-relay" or "none" (no path known yet). */
  path: string;
  /** The peer's ip:port on a direct path. */
  curAddr?: string;
  /** The peer's home DERP region code (the relay used when not direct). */
  relay?: string;
  /** Traffic flowed recently. */
  active: boolean;
  /** Last WireGuard handshake, Unix ms; 0 for never. */
  lastHandshakeMs: number;
  rxBytes: number;
  txBytes: number;
}

export interface CloseParams {
  node: number;
  /** Log out first, so the control server forgets the node at once. */
  logout?: boolean;
}

export interface HandlesResult {
  nodes: number;
  listeners: number;
  conns: number;
}

/** Methods is the protocol's method table: what each method takes and returns. */
export interface Methods {
  hello: { params: Empty; result: HelloResult };
  configure: { params: ConfigureParams; result: Record<string, string> };
  create: { params: { config: CoreConfig }; result: { node: number } };
  up: { params: UpParams; result: UpResult };
  dial: { params: DialParams; result: DialResult };
  listen: { params: ListenParams; result: { listener: number } };
  closeListener: { params: ListenerParams; result: Empty };
  whois: { params: WhoIsParams; result: CoreWhoIs };
  peers: { params: NodeParams; result: PeerInfo[] };
  status: { params: NodeParams; result: StatusResult };
  ping: { params: PingParams; result: PingResult };
  paths: { params: NodeParams; result: PeerPath[] };
  close: { params: CloseParams; result: Empty };
  handles: { params: Empty; result: HandlesResult };
}

export type Method = keyof Methods;
export type Params<M extends Method> = Methods[M]["params"];
export type Result<M extends Method> = Methods[M]["result"];

// ---- events -------------------------------------------------------------

export interface AcceptEvent extends ConnHandle {
  listener: number;
  remoteAddr: string;
  localAddr: string;
}

/** Events is the protocol's event table: the data each event carries. */
export interface Events {
  /** The node's backend state changed. */
  state: { state: string };
  /** The peers this node may reach changed. */
  netmap: { peers: PeerInfo[] };
  /** A listener accepted a connection. */
  accept: AcceptEvent;
  /** A listener stopped accepting. */
  listenerClosed: { listener: number };
  /** A line of tsnet's log (verbose nodes only). */
  log: { line: string };
  /** The backend reported an error outside any call. */
  error: { message: string };
  /** A panic on a core goroutine was recovered (node 0: outside any node). */
  panic: { where: string; message: string; stack: string };
}

/** CoreEvent is one event message, discriminated by `event`. */
export type CoreEvent = { [E in keyof Events]: { event: E; node: number; data: Events[E] } }[keyof Events];

/** The codes of the core's error responses (core.Err* in Go). */
export const CORE_ERROR_CODES = ["BAD_ARGS", "AUTH", "CONTROL_UNREACHABLE", "TIMEOUT", "NO_PEER", "DIAL", "PORT_IN_USE", "CLOSED", "WHOIS_NOT_FOUND", "PANIC", "INTERNAL", "UNKNOWN_METHOD"] as const;
export type CoreErrorCode = (typeof CORE_ERROR_CODES)[number];

export interface CoreResponse {
  id: number;
  result?: unknown;
  error?: { code: string; message: string };
}

export type CoreMessage = CoreResponse | CoreEvent;

/**
 * A tailnet connection handed over by the core, as a dial result or an
 * accept event: what MeshNode needs to wrap it in a socket.
 */
export interface ExportedConn extends ConnHandle {
  remoteAddr: string;
  localAddr: string;
  listener?: number;
  dialUs?: number;
}

// ---- the table as data ---------------------------------------------------

/**
 * Shape<T> is the JSON shape of T in the vocabulary of
 * go/core/testdata/protocol.json. A value `satisfies Shape<T>` only if it
 * names every field of T, no other, each with its type and optionality, so
 * PROTOCOL_SHAPE cannot drift from the interfaces above.
 */
export type Shape<T> = unknown extends T
  ? "any"
  : [T] extends [string]
    ? "string"
    : [T] extends [number]
      ? "number"
      : [T] extends [boolean]
        ? "boolean"
        : [T] extends [readonly (infer E)[]]
          ? { array: Shape<E> }
          : [T] extends [object]
            ? string extends keyof T
              ? { record: Shape<T[string & keyof T]> }
              : { object: { [K in keyof T]-?: Record<never, never> extends Pick<T, K> ? { optional: Shape<Exclude<T[K], undefined>> } : Shape<T[K]> } }
            : never;

/** The protocol as data, in the shape of go/core/testdata/protocol.json. */
export interface ProtocolShape {
  protocol: number;
  methods: { [M in Method]: { params: Shape<Params<M>>; result: Shape<Result<M>> } };
  events: { [E in keyof Events]: Shape<Events[E]> };
  errors: readonly string[];
}

const peer = {
  object: {
    id: "string",
    name: "string",
    hostname: "string",
    ips: { array: "string" },
    tags: { array: "string" },
    online: "boolean",
    user: { optional: "string" },
  },
} as const satisfies Shape<PeerInfo>;
const empty = { object: {} } as const satisfies Shape<Empty>;
const node = { object: { node: "number" } } as const satisfies Shape<NodeParams>;
const fd = { optional: "number" } as const;
const stream = { optional: "number" } as const;

/** PROTOCOL_SHAPE is the table above as data, for the test against Go's. */
export const PROTOCOL_SHAPE = {
  protocol: PROTOCOL_VERSION,
  methods: {
    hello: { params: empty, result: { object: { protocol: "number", tailscale: "string", knobs: { record: "string" } } } },
    configure: { params: { object: { env: { record: "string" }, maxProcs: "number" } }, result: { record: "string" } },
    create: {
      params: {
        object: {
          config: {
            object: { dir: "string", hostname: "string", controlUrl: "string", authKey: "string", ephemeral: "boolean", tags: { array: "string" }, verbose: "boolean" },
          },
        },
      },
      result: node,
    },
    up: {
      params: { object: { node: "number", timeoutMs: { optional: "number" } } },
      result: { object: { ips: { array: "string" }, name: "string", hostname: "string", id: "string", tags: { array: "string" }, onlineMs: "number" } },
    },
    dial: {
      params: { object: { node: "number", host: "string", port: "number", timeoutMs: { optional: "number" } } },
      result: { object: { fd, stream, remoteAddr: "string", localAddr: "string", dialUs: "number", warmUpUs: "number", pings: "number" } },
    },
    listen: { params: { object: { node: "number", port: "number" } }, result: { object: { listener: "number" } } },
    closeListener: { params: { object: { listener: "number" } }, result: empty },
    whois: {
      params: { object: { node: "number", addr: "string" } },
      result: {
        object: {
          node: { object: { id: "string", name: "string", hostname: "string", tags: { array: "string" }, ips: { array: "string" } } },
          user: { object: { login: "string", displayName: "string" } },
          tagged: "boolean",
          caps: { record: { array: "any" } },
        },
      },
    },
    peers: { params: node, result: { array: peer } },
    status: {
      params: node,
      result: { object: { state: "string", ips: { array: "string" }, health: { array: "string" }, name: { optional: "string" }, id: { optional: "string" } } },
    },
    ping: {
      params: { object: { node: "number", host: "string", kind: { optional: "string" }, timeoutMs: { optional: "number" } } },
      result: { object: { ip: "string", name: "string", latencyUs: "number", path: "string", endpoint: { optional: "string" }, derpRegion: { optional: "string" } } },
    },
    paths: {
      params: node,
      result: {
        array: {
          object: {
            id: "string",
            name: "string",
            path: "string",
            curAddr: { optional: "string" },
            relay: { optional: "string" },
            active: "boolean",
            lastHandshakeMs: "number",
            rxBytes: "number",
            txBytes: "number",
          },
        },
      },
    },
    close: { params: { object: { node: "number", logout: { optional: "boolean" } } }, result: empty },
    handles: { params: empty, result: { object: { nodes: "number", listeners: "number", conns: "number" } } },
  },
  events: {
    state: { object: { state: "string" } },
    netmap: { object: { peers: { array: peer } } },
    accept: { object: { fd, stream, listener: "number", remoteAddr: "string", localAddr: "string" } },
    listenerClosed: { object: { listener: "number" } },
    log: { object: { line: "string" } },
    error: { object: { message: "string" } },
    panic: { object: { where: "string", message: "string", stack: "string" } },
  },
  errors: CORE_ERROR_CODES,
} as const satisfies ProtocolShape;

// ---- transports ---------------------------------------------------------

/** The params argument of Backend.call: optional for methods that take none. */
export type ParamsArg<M extends Method> = Empty extends Params<M> ? [params?: Params<M>] : [params: Params<M>];

/** Backend is what MeshNode needs from a transport. */
export interface Backend {
  readonly kind: "native" | "wasm";
  /** Calls a core method; rejects with a MeshguardError carrying the core's code. */
  call<M extends Method>(method: M, ...params: ParamsArg<M>): Promise<Result<M>>;
  /** Subscribes to core events; returns the unsubscribe function. */
  onEvent(fn: (ev: CoreEvent) => void): () => void;
  /** Turns an exported connection into a socket the host owns. */
  openConn(conn: ConnHandle, opts: { allowHalfOpen: boolean }): import("node:net").Socket;
  /** Drops an exported connection nobody will use. */
  discardConn(conn: ConnHandle): void;
  /** Keeps the process alive until the returned function is called. */
  hold(): () => void;
}
