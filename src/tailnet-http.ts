/**
 * node:http over the tailnet: how HTTP that an agent writes with node:http
 * over a MeshNode.dial connection is published on FETCH_CHANNEL exactly as
 * a MeshNode.fetch is, so that a higher layer (the tokens client) adds its
 * credentials without the agent's code knowing and without MeshNode
 * importing it (layers import downwards only, DESIGN.md decision 12).
 *
 * Which requests. A node:http ClientRequest whose connection is a socket
 * MeshNode.dial returned (or a TLS socket over one, from `httpsAgent`): the
 * node's own `httpAgent` / `httpsAgent`, an `http.Agent` or a
 * `createConnection` the agent wrote around `node.dial` (with TLS of its own
 * too, `tls.connect({ socket })`), keep-alive or not.
 * The request is published when it is given its connection and before any
 * byte of it is written: ClientRequest buffers what the caller writes until
 * then, and the connection is handed over only once every hold has settled.
 * The URL published is where the connection really goes — the host and port
 * that were dialed, `https` over TLS — with the request's path; never the
 * request's `Host` header, which the caller writes.
 *
 * How requests are found. The node's agents mark each request they are
 * given; any other request is marked when Node publishes it on the
 * `http.client.request.created` diagnostics channel (Node ≥ 22.12; the
 * channel is subscribed once a MeshNode exists, and the subscriber does
 * nothing while nobody follows FETCH_CHANNEL). That channel is published
 * at the end of the request's constructor: before its connection exists,
 * except when an Agent hands it a kept-alive socket (`reusedSocket`), which
 * Node does inside the constructor and attaches on the next tick. Such a
 * request is held instead when Node first flushes it to its socket: until
 * the holds settle, what the caller writes is buffered exactly as Node
 * buffers it before a request has a socket (the guard's technique,
 * src/guard/http.ts, applied to this one request).
 *
 * Headers. Subscribers see the request's headers as a WHATWG `Headers`
 * (the same message shape as a fetch); what they set or delete is applied
 * to the request. When the caller has already ended the request, Node has
 * built its header block; it is then rewritten before anything is sent
 * (header names and values checked with http.validateHeaderName/Value).
 *
 * After the guard. Publishing is the request's prepare step: it is first
 * offered on HTTP_REQUEST_CHANNEL (src/fetch-channel.ts), where the guard
 * claims it and runs it once it has allowed the request (holding its bytes
 * meanwhile, as it does for any request it judges); a request it denies is
 * never published. Unclaimed, the step runs here, at the points above.
 *
 * A redirect is a new request over its own connection: it is published for
 * where it goes, so credentials chosen for one origin never ride along to
 * another (node:http follows no redirects by itself).
 */

import dc from "node:diagnostics_channel";
import type http from "node:http";
import type net from "node:net";
import type { Duplex } from "node:stream";
import { ErrorCode, MeshguardError } from "./errors.js";
import { bufferHeldWrite, diffHeaders, fetchHasSubscribers, offerRequestPrepare, publishFetch } from "./fetch-channel.js";

/** Where a tailnet connection goes, and which node opened it. */
interface Dialed {
  readonly node: { readonly hostname: string; readonly id: string };
  readonly host: string;
  readonly port: number;
  readonly tls: boolean;
}

/**
 * nodeHttp is node:http, loaded on first use. On Node 24 importing it loads
 * Node's bundled undici, http2 and tls (~16 MB of RSS, measured), which a
 * process that never speaks node:http over the tailnet should not pay
 * (docs/core.md, "Memory"). Anything that reaches the uses below (a request
 * created, an agent asked for) has loaded it already.
 */
const nodeHttp = (): typeof http => process.getBuiltinModule("node:http");

const dialed = new WeakMap<object, Dialed>();

/** markDialed records a socket MeshNode.dial returned (or a TLS socket over one). */
export function markDialed(socket: net.Socket, info: Dialed): void {
  dialed.set(socket, info);
}

/**
 * dialedInfo: where a request's connection goes, when it is a tailnet dial —
 * marked (the dialed socket, or the node's httpsAgent's TLS socket), or a
 * TLS socket the agent wrapped around a dialed one itself
 * (`tls.connect({ socket })`, which keeps it as `_parent`): then https.
 */
function dialedInfo(socket: net.Socket): Dialed | undefined {
  const own = dialed.get(socket);
  if (own !== undefined) return own;
  const parent = (socket as net.Socket & { encrypted?: boolean; _parent?: unknown })._parent;
  if ((socket as { encrypted?: boolean }).encrypted !== true || typeof parent !== "object" || parent === null) return undefined;
  const under = dialed.get(parent);
  if (under === undefined) return undefined;
  const info: Dialed = { ...under, tls: true };
  dialed.set(socket, info);
  return info;
}

type Req = http.ClientRequest & {
  _header?: string | null;
  _headerSent?: boolean;
  outputData?: { data: unknown; encoding?: unknown; callback?: unknown }[];
  outputSize?: number;
};
type OnSocket = (this: Req, socket: net.Socket | null, err?: unknown) => unknown;

const watched = new WeakSet<http.ClientRequest>();
/** Requests whose hooks have run: the hooks stay (deleting own properties would put the request object in V8's slow mode) and pass through. */
const done = new WeakSet<http.ClientRequest>();
/** Requests whose writes are being buffered while they are held (reusedFlush). */
const buffering = new WeakSet<http.ClientRequest>();

/** The prototype's method (Node's, or the guard's hook) behind an own hook. */
function inherited<K extends "onSocket" | "_flush" | "_writeRaw">(req: http.ClientRequest, k: K): (...a: unknown[]) => unknown {
  return (Object.getPrototypeOf(req) as Record<K, (...a: unknown[]) => unknown>)[k];
}

/**
 * watchRequest makes `req` publish itself when it is given a tailnet
 * connection. Two own methods in front of the prototype's (Node's, or the
 * guard's hooks), each acting once and passing through after (never
 * deleted: deleting own properties puts an object in V8's slow mode):
 * - `onSocket`, for a connection being opened: called once it is open
 *   (after every header the caller set in the same tick), and the request
 *   is handed its socket only after the holds;
 * - `_flush`, for a kept-alive socket an Agent handed over inside the
 *   constructor (`reusedSocket`): Node attaches it on the next tick and then
 *   flushes, and the flush is where the request is held.
 */
export function watchRequest(req: http.ClientRequest): void {
  if (watched.has(req)) return;
  watched.add(req);
  Object.defineProperty(req, "onSocket", { value: tailnetOnSocket, writable: true, configurable: true, enumerable: false });
  Object.defineProperty(req, "_flush", { value: reusedFlush, writable: true, configurable: true, enumerable: false });
}

let watching = false;

/** watchCreatedRequests subscribes (once, when the first MeshNode starts) to Node's request-created channel. */
export function watchCreatedRequests(): void {
  if (watching) return;
  watching = true;
  dc.subscribe("http.client.request.created", (m) => {
    if (!fetchHasSubscribers()) return;
    const req = (m as { request?: unknown }).request;
    if (req instanceof nodeHttp().ClientRequest) watchRequest(req);
  });
}

function reusedFlush(this: Req, ...a: unknown[]): unknown {
  const flush = () => inherited(this, "_flush").apply(this, a);
  if (done.has(this)) return flush();
  done.add(this);
  if (!this.reusedSocket) return flush(); // published by onSocket
  const socket = this.socket;
  const info = socket ? dialedInfo(socket) : undefined;
  if (info === undefined || !fetchHasSubscribers() || !this.path.startsWith("/")) return flush();
  const prepare = prepareOf(this, info);
  // A judge (the guard) that has not allowed the request yet runs the step once it does, holding the request meanwhile.
  if (offerRequestPrepare(this, prepare)) return flush();
  let held: Promise<void> | undefined;
  try {
    held = prepare();
  } catch (e) {
    this.destroy(e as Error);
    return undefined;
  }
  if (held === undefined) return flush();
  // Held: what the caller writes meanwhile is buffered as Node buffers it before a request has a socket.
  buffering.add(this);
  Object.defineProperty(this, "_writeRaw", { value: bufferedWriteRaw, writable: true, configurable: true, enumerable: false });
  const release = () => buffering.delete(this);
  held.then(
    () => {
      release();
      flush();
    },
    (e: unknown) => {
      release();
      this.destroy(e instanceof Error ? e : new Error(String(e)));
    },
  );
  return undefined;
}

/**
 * prepareOf is a request's prepare step: publish it on FETCH_CHANNEL (its
 * headers as they are when the step runs), wait for the holds, and give the
 * request what the subscribers set. Undefined when nothing was held.
 */
function prepareOf(req: Req, info: Dialed): () => undefined | Promise<void> {
  return () => {
    const before = headersOf(req);
    const after = headersOf(req);
    const held = publishFetch(info.node, urlOf(info, req.path), String(req.method).toUpperCase(), after);
    if (held === undefined) return applyHeaders(req, before, after);
    return held.then(() => applyHeaders(req, before, after));
  };
}

function bufferedWriteRaw(this: Req, data: unknown, encoding?: unknown, callback?: unknown, ...rest: unknown[]): unknown {
  if (!buffering.has(this)) return inherited(this, "_writeRaw").call(this, data, encoding, callback, ...rest);
  return bufferHeldWrite(this, data, encoding, callback);
}

function tailnetOnSocket(this: Req, socket: net.Socket | null, err?: unknown): unknown {
  // One use: later calls (none in Node today) go straight to the prototype's.
  const next = inherited(this, "onSocket") as OnSocket;
  if (done.has(this)) return next.call(this, socket, err);
  // A kept-alive socket handed over in the constructor: the caller has not set its headers yet; _flush publishes.
  if (this.reusedSocket) return next.call(this, socket, err);
  done.add(this);
  const info = socket && !err ? dialedInfo(socket) : undefined;
  if (info === undefined || !fetchHasSubscribers() || !this.path.startsWith("/")) return next.call(this, socket, err);
  const prepare = prepareOf(this, info);
  // A judge (the guard) that has not allowed the request yet runs the step once it does, holding the request meanwhile.
  if (offerRequestPrepare(this, prepare)) return next.call(this, socket, err);
  let held: Promise<void> | undefined;
  try {
    held = prepare();
  } catch (e) {
    return next.call(this, socket, e);
  }
  if (held === undefined) return next.call(this, socket);
  held.then(
    () => next.call(this, socket),
    (e: unknown) => next.call(this, socket, e),
  );
  return undefined;
}

function urlOf(d: Dialed, path: string): string {
  const scheme = d.tls ? "https" : "http";
  const host = d.host.includes(":") ? `[${d.host}]` : d.host;
  const port = d.port === (d.tls ? 443 : 80) ? "" : `:${d.port}`;
  return `${scheme}://${host}${port}${path}`;
}

function headersOf(req: http.ClientRequest): Headers {
  const h = new Headers();
  for (const [k, v] of Object.entries(req.getHeaders())) {
    if (v === undefined) continue;
    if (Array.isArray(v)) for (const x of v) h.append(k, x);
    else h.append(k, String(v));
  }
  return h;
}

/**
 * applyHeaders gives the request what subscribers set or deleted. Before
 * the header block is built that is setHeader/removeHeader; after, the
 * block is rewritten in place (the request has no connection yet, so the
 * block is still in the request's own buffer, at the front).
 */
function applyHeaders(req: Req, before: Headers, after: Headers): undefined {
  const { set, removed } = diffHeaders(before, after);
  if (set.length === 0 && removed.length === 0) return undefined;
  for (const [k, v] of set) {
    nodeHttp().validateHeaderName(k);
    nodeHttp().validateHeaderValue(k, v);
  }
  const old = req._header;
  if (!old) {
    for (const k of removed) req.removeHeader(k);
    for (const [k, v] of set) req.setHeader(k, v);
    return undefined;
  }
  const drop = new Set<string>([...removed, ...set.map(([k]) => k)]);
  const lines = old.split("\r\n");
  const kept = lines.slice(1).filter((l) => l !== "" && !drop.has(l.slice(0, l.indexOf(":")).trim().toLowerCase()));
  const block = [lines[0], ...kept, ...set.map(([k, v]) => `${k}: ${v}`), "", ""].join("\r\n");
  if (req._headerSent) {
    const first = req.outputData?.[0];
    if (first === undefined || typeof first.data !== "string" || !first.data.startsWith(old)) {
      throw new MeshguardError(ErrorCode.INTERNAL, `could not add headers to the request for ${req.path}: its header block is not where Node keeps it`, {
        hint: "use node.httpAgent, or report this with the Node.js version",
      });
    }
    first.data = block + first.data.slice(old.length);
    req.outputSize = (req.outputSize ?? 0) + block.length - old.length;
  }
  req._header = block;
  return undefined;
}

/** TailnetAgent is a keep-alive http.Agent whose connections are tailnet dials (MeshNode.httpAgent / httpsAgent). */
export type TailnetAgent = http.Agent;
type Connect = (host: string, port: number, cb: (err: Error | null, socket?: net.Socket) => void) => void;
let agentClass: (new (connect: Connect, https: boolean) => http.Agent) | undefined;

/** createTailnetAgent returns a new TailnetAgent (the class is defined on first use: it extends node:http's Agent, see nodeHttp). */
export function createTailnetAgent(connect: Connect, https: boolean): TailnetAgent {
  agentClass ??= defineTailnetAgent(nodeHttp());
  return new agentClass(connect, https);
}

function defineTailnetAgent(h: typeof http): new (connect: Connect, https: boolean) => http.Agent {
  return class TailnetAgent extends h.Agent {
    private readonly connect: Connect;

    constructor(
      connect: Connect,
      https: boolean,
    ) {
      super({ keepAlive: true });
      this.connect = connect;
      if (https) {
        // https.request checks the agent's protocol; the TLS is this agent's own (connect).
        (this as unknown as { protocol: string }).protocol = "https:";
        (this as unknown as { defaultPort: number }).defaultPort = 443;
      }
    }

    override createConnection(options: http.ClientRequestArgs, cb?: (err: Error | null, stream: Duplex) => void): Duplex | undefined {
      const host = options.hostname ?? options.host ?? "localhost";
      const port = Number(options.port) || (this as unknown as { defaultPort: number }).defaultPort;
      this.connect(host, port, (err, socket) => cb?.(err, socket as Duplex));
      return undefined;
    }

    /** addRequest marks the request before it can be given a socket (a kept-alive one is given at once). */
    addRequest(req: http.ClientRequest, options: object): void {
      watchRequest(req);
      (h.Agent.prototype as unknown as { addRequest(this: http.Agent, r: http.ClientRequest, o: object): void }).addRequest.call(this, req, options);
    }
  };
}
