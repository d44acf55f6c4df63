/**
 * The HTTP layer of node:http / node:https: a request is judged as it goes
 * on the wire. Every ClientRequest — `http.request`, `https.request`,
 * `get`, any Agent (custom, keep-alive, the ones axios and got use),
 * `createConnection` — builds its header block in `_storeHeader` and
 * writes through `_send` / `_writeRaw` / `_flushOutput`. The guard:
 *
 *  - reads the header block Node built (request line and headers exactly
 *    as they will be sent, the Content-Length Node computed) and judges the
 *    request on it, once (one evaluation, one rate token). Changing
 *    `req.method`, `req.path` or headers after the request was created
 *    changes what is judged, because it changes what is sent;
 *  - holds every byte of the request (buffered as Node does before a socket
 *    exists) until it is allowed; a denied request is destroyed with
 *    nothing written;
 *  - judges host and port before the connection opens: the connect patch
 *    (net.ts) asks this request (a Carrier) first, and a request no rule
 *    could allow at its host and port is decided — denied — before any
 *    look-up or connection. When the header block is ready by then, the
 *    whole request is decided before connecting; otherwise the connection
 *    may open and the request is decided when its header block is built;
 *  - takes host and port from the request's own options (the URL the
 *    caller asked for), never from the Host header, and the address from
 *    the connection (a name is judged with `resolvedIp`);
 *  - sends no more body than the header block declares: bytes beyond a
 *    Content-Length, or a body on a request without Content-Length or
 *    Transfer-Encoding, would reach the server as another request, so the
 *    request is refused instead.
 */

import dc from "node:diagnostics_channel";
import http from "node:http";
import type net from "node:net";
import { normalizeHost } from "../policy/hosts.js";
import type { HttpTarget, Target } from "../policy/types.js";
import { errorText, type GuardCore, type Verdict } from "./core.js";
import { PolicyDeniedError } from "./errors.js";
import { isInternalSocket } from "./internal.js";
import { skipHttpCheck } from "./sdk-context.js";
import { gatewayHttpVerdict, gatewayScreen, NOT_GATEWAY } from "./gateways.js";
import { attachCarrier, socketDest, type Carrier } from "./net.js";
import { current } from "./state.js";
import { bufferHeldWrite, HTTP_REQUEST_CHANNEL, type HttpRequestMessage, type RequestPrepare } from "../fetch-channel.js";
import { defaultPort, headerRecord, httpTarget, llmProviderFor, splitPathQuery } from "./targets.js";

/** The header block as it goes on the wire. */
interface Head {
  method: string;
  rawPath: string;
  headers: Record<string, string>;
  /** Declared body size: Content-Length, 0 without any framing, undefined for chunked. */
  bodySize: number | undefined;
  /** Why the body framing is ambiguous (the request is then refused). */
  ambiguous?: string;
}

interface ReqState {
  /** The guard's own request (internal.ts): never judged. */
  internal: boolean;
  /** The port from the request's options (Agent.addRequest). */
  port?: number;
  head?: Head;
  socket?: net.Socket;
  /** The connection's address as net.ts reported it (known: the decision may be made). */
  addr?: { resolvedIp: string | undefined };
  verdict: "undecided" | "allowed" | PolicyDeniedError | Promise<void>;
  /** Body bytes the header block allows (undefined: chunked, no limit). */
  limit?: number;
  sent: number;
  carrier?: Carrier;
  /** The request's prepare step (the tokens client's credentials, claimed on HTTP_REQUEST_CHANNEL): run once allowed, before any byte goes. */
  prepare?: RequestPrepare;
}

type Req = http.ClientRequest & { _header?: string | null };
type Fn = (this: Req, ...a: unknown[]) => unknown;

const states = new WeakMap<http.ClientRequest, ReqState>();

const CR = http.ClientRequest.prototype as unknown as Record<string, Fn>;
const HOOKED = ["_storeHeader", "_send", "_writeRaw", "_flushOutput", "_flush"] as const;
const hooks: Record<(typeof HOOKED)[number], Fn> = {
  _storeHeader: guardedStoreHeader,
  _send: guardedSend,
  _writeRaw: guardedWriteRaw,
  _flushOutput: guardedFlushOutput,
  _flush: guardedFlush,
};

let installed: { inherited: Record<string, Fn>; own: Record<string, PropertyDescriptor | undefined> } | undefined;
/** Node's own functions, kept after uninstall: a reference to a hook taken while installed still works then. */
let nodeOnSocket: Fn | undefined;
let nodeAddRequest: Fn | undefined;

export function installHttpPatch(): void {
  if (installed) return;
  const inherited: Record<string, Fn> = {};
  const own: Record<string, PropertyDescriptor | undefined> = {};
  for (const k of HOOKED) {
    own[k] = Object.getOwnPropertyDescriptor(CR, k);
    const f = CR[k];
    if (typeof f !== "function") throw new Error(`this Node.js has no http.ClientRequest.prototype.${k}; the guard cannot judge node:http requests`);
    inherited[k] = f;
  }
  const agentProto = http.Agent.prototype as unknown as Record<string, Fn>;
  nodeOnSocket = CR.onSocket!;
  nodeAddRequest = agentProto.addRequest!;
  installed = { inherited, own };
  dc.subscribe(HTTP_REQUEST_CHANNEL, onTailnetRequest);
  CR.onSocket = guardedOnSocket;
  agentProto.addRequest = guardedAddRequest;
  for (const k of HOOKED) Object.defineProperty(CR, k, { value: hooks[k], writable: true, configurable: true, enumerable: false });
}

export function uninstallHttpPatch(): void {
  if (!installed) return;
  dc.unsubscribe(HTTP_REQUEST_CHANNEL, onTailnetRequest);
  CR.onSocket = nodeOnSocket!;
  (http.Agent.prototype as unknown as Record<string, Fn>).addRequest = nodeAddRequest!;
  for (const k of HOOKED) {
    const d = installed.own[k];
    if (d !== undefined) Object.defineProperty(CR, k, d);
    else delete CR[k];
  }
  installed = undefined;
}

const inherited = (k: (typeof HOOKED)[number]): Fn => installed?.inherited[k] ?? (Object.getPrototypeOf(CR) as Record<string, Fn>)[k]!;

function stateOf(req: http.ClientRequest): ReqState {
  let st = states.get(req);
  if (st === undefined) states.set(req, (st = { internal: false, verdict: "undecided", sent: 0 }));
  return st;
}

/** held: bytes of this request must wait (a guard is installed and has not allowed it). */
function held(req: http.ClientRequest): boolean {
  const st = states.get(req);
  return st !== undefined && !st.internal && st.verdict !== "allowed" && current() !== undefined;
}

// ---- where the request goes ----

function schemeOf(req: Req): "http" | "https" {
  return req.protocol === "https:" ? "https" : "http";
}

function hostOf(req: Req): string {
  return normalizeHost(typeof req.host === "string" && req.host !== "" ? req.host : "localhost");
}

/** Node keeps the request's authority ("host[:port]" from its options) under a private symbol; found once by its description. */
let kAuthority: symbol | undefined;

function authorityPort(req: Req): number | undefined {
  if (kAuthority === undefined) kAuthority = Object.getOwnPropertySymbols(req).find((s) => s.description === "kAuthority");
  if (kAuthority === undefined) return undefined;
  const a = (req as unknown as Record<symbol, unknown>)[kAuthority];
  if (typeof a !== "string") return undefined;
  const end = a.startsWith("[") ? a.indexOf("]") + 1 : a.lastIndexOf(":") < 0 ? a.length : a.lastIndexOf(":");
  const m = /^:(\d{1,5})$/.exec(a.slice(end));
  return m ? Number(m[1]) : undefined;
}

/** portOf is the port the request's options name: never the Host header. */
function portOf(req: Req, st: ReqState): number {
  if (st.port !== undefined) return st.port;
  const p = authorityPort(req);
  if (p !== undefined) return p;
  const d = st.socket ? socketDest(st.socket) : undefined;
  if (d !== undefined && d.ipc === undefined && d.host === hostOf(req)) return d.port;
  const agentPort = (req as { agent?: { defaultPort?: unknown } | false }).agent;
  if (agentPort && typeof agentPort.defaultPort === "number") return agentPort.defaultPort;
  return defaultPort(schemeOf(req));
}

/**
 * addressOf says whether the request's connection address is known (then
 * the request may be decided) and what a name resolved to.
 */
function addressOf(req: Req, st: ReqState): { resolvedIp: string | undefined } | undefined {
  if (st.addr !== undefined) return st.addr;
  // The socket Node handed the request (req.socket: one handed over before the guard was installed).
  const s = st.socket ?? ((req.socket ?? undefined) as net.Socket | undefined);
  if (s === undefined) return undefined; // no socket yet: nothing can be sent
  const d = socketDest(s);
  if (d !== undefined) {
    if (d.ipc !== undefined) return { resolvedIp: undefined };
    if (d.host === hostOf(req) && d.port === portOf(req, st)) {
      if (d.literal) return { resolvedIp: undefined };
      return d.resolvedIp !== undefined ? { resolvedIp: d.resolvedIp } : undefined; // resolving: net.ts reports
    }
    return { resolvedIp: undefined }; // another destination (a proxy): judged as TCP on its own
  }
  // A socket whose connect() has not been called yet (a createConnection that connects later): wait for it.
  if ((s as { pending?: boolean }).pending === true && !s.connecting && !s.destroyed) return undefined;
  return { resolvedIp: undefined };
}

// ---- deciding ----

function headTarget(req: Req, st: ReqState, head: Head, resolvedIp: string | undefined): HttpTarget {
  const t = httpTarget({
    scheme: schemeOf(req),
    host: hostOf(req),
    port: portOf(req, st),
    method: head.method,
    rawPath: head.rawPath,
    headers: head.headers,
    ...(head.bodySize !== undefined ? { bodySize: head.bodySize } : {}),
  });
  if (resolvedIp !== undefined) t.resolvedIp = resolvedIp;
  return t;
}

/** What the request says so far, for a decision made before its header block exists (a denial on host or port). */
function liveHead(req: Req): Head {
  const headers = headerRecord(req.getHeaders());
  const cl = headers["content-length"];
  return { method: String(req.method), rawPath: String(req.path), headers, bodySize: cl !== undefined && /^\d+$/.test(cl) ? Number(cl) : undefined };
}

/** decide judges the request once and records the verdict; a held approval releases or refuses it when answered. */
function decide(core: GuardCore, req: Req, st: ReqState, head: Head, resolvedIp: string | undefined): Verdict {
  const t = headTarget(req, st, head, resolvedIp);
  // The request an LLM SDK call was decided for at the SDK layer, body included
  // (openai 4 sends through node-fetch, i.e. node:http): not judged twice.
  if (skipHttpCheck(t.scheme, t.host, t.port, t.method, head.rawPath)) return settle(req, st, undefined);
  // A connector call of a registered AI gateway: judged as the upstream request the gateway makes (./gateways.ts).
  const g = gatewayHttpVerdict(core, t, "http");
  if (g !== NOT_GATEWAY) return settle(req, st, g);
  let v = core.check(t, "http");
  // An LLM call needs its body to name the model; node:http streams the body
  // after the header block, so a model rule cannot be checked: fail closed.
  const [path] = splitPathQuery(head.rawPath);
  const provider = llmProviderFor(core.llmProviders, t.host, t.port, t.method, path);
  if (v === undefined && provider !== undefined && core.mode === "enforce") {
    const llm: Target = { kind: "llm", provider, model: "(unknown: body not readable with node:http)" };
    v = new PolicyDeniedError(llm, "an LLM API call made with node:http cannot be checked (the model is in the streamed body); use fetch or the provider's SDK");
    core.warn(v);
  }
  return settle(req, st, v);
}

function settle(req: Req, st: ReqState, v: Verdict): Verdict {
  if (v === undefined) return allow(req, st);
  st.verdict = v;
  if (v instanceof PolicyDeniedError) return v;
  v.then(
    () => void allow(req, st),
    (err: unknown) => {
      const e = err instanceof Error ? err : new Error(errorText(err));
      st.verdict = e instanceof PolicyDeniedError ? e : new PolicyDeniedError(headTarget(req, st, st.head ?? liveHead(req), undefined), errorText(e));
      refuse(req, e);
    },
  );
  return v;
}

/**
 * allow sends an allowed request: at once, or — when it has a prepare step
 * (a tailnet request a tokens client adds its token to) — once the step has
 * settled, its bytes held meanwhile. The step runs only here: a request the
 * guard denies never reaches the token layer.
 */
function allow(req: Req, st: ReqState): Verdict {
  const prepare = st.prepare;
  st.prepare = undefined;
  let p: undefined | Promise<void>;
  if (prepare !== undefined) {
    try {
      p = prepare();
    } catch (err) {
      p = Promise.reject(err);
    }
  }
  if (p === undefined) {
    st.verdict = "allowed";
    release(req);
    return undefined;
  }
  const waiting = p.then(
    () => {
      st.verdict = "allowed";
      release(req);
    },
    (err: unknown) => refuse(req, err instanceof Error ? err : new Error(errorText(err))),
  );
  st.verdict = waiting;
  return waiting;
}

/**
 * onTailnetRequest claims the prepare step of a node:http request over a
 * tailnet dial (fetch-channel.ts) unless the request is allowed already (a
 * kept-alive socket's request decided before Node flushed it: nothing of it
 * was sent, and the step then runs at once, after the decision). Never throws.
 */
function onTailnetRequest(message: unknown): void {
  try {
    if (current() === undefined) return;
    const m = message as HttpRequestMessage;
    const req = m?.request;
    if (!(req instanceof http.ClientRequest) || typeof m.claimPrepare !== "function") return;
    const st = stateOf(req);
    if (st.internal || st.verdict === "allowed") return;
    const prepare = m.claimPrepare();
    if (prepare !== undefined) st.prepare = prepare;
  } catch (err) {
    current()?.warn(err);
  }
}

/** tryDecide decides when both the header block and the address are known. */
function tryDecide(core: GuardCore, req: Req, st: ReqState): Verdict | "later" {
  if (st.verdict !== "undecided") return verdictOf(st);
  if (st.head === undefined) return "later";
  const addr = addressOf(req, st);
  if (addr === undefined) return "later";
  return decide(core, req, st, st.head, addr.resolvedIp);
}

function verdictOf(st: ReqState): Verdict {
  const v = st.verdict;
  return v === "allowed" || v === "undecided" ? undefined : v;
}

/** release writes what was held (Node's own flush: the socket's queue if it is still connecting). */
function release(req: Req): void {
  try {
    inherited("_flush").call(req);
  } catch (err) {
    refuse(req, err instanceof Error ? err : new Error(errorText(err)));
  }
}

/** refuse destroys a request the guard will not send (next tick: never inside the caller's write or end). */
function refuse(req: Req, err: Error): void {
  process.nextTick(() => {
    if (!req.destroyed) req.destroy(err);
  });
}

/** The Carrier net.ts asks when this request's own connection is about to open. */
class RequestCarrier implements Carrier {
  private readonly req: Req;
  private readonly st: ReqState;

  constructor(
    req: Req,
    st: ReqState,
  ) {
    this.req = req;
    this.st = st;
  }

  get host(): string {
    return hostOf(this.req);
  }

  get port(): number {
    return portOf(this.req, this.st);
  }

  screen(): Verdict {
    const { req, st } = this;
    const core = current();
    if (core === undefined || st.internal) return undefined;
    if (st.verdict !== "undecided") return verdictOf(st);
    const head = st.head ?? liveHead(req);
    const screen = gatewayScreen(core, headTarget(req, st, head, undefined));
    if (screen !== undefined && core.mayAllow(screen)) return undefined;
    // No rule could allow a call to this host and port: decided now, before any look-up or connection.
    return decide(core, req, st, head, undefined);
  }

  connecting(resolvedIp: string | undefined): Verdict {
    const { req, st } = this;
    const core = current();
    if (core === undefined || st.internal) return undefined;
    if (st.verdict !== "undecided") return verdictOf(st);
    st.addr = { resolvedIp };
    if (st.head === undefined) return undefined; // connect; decided when the header block is built
    return decide(core, req, st, st.head, resolvedIp);
  }
}

function carrierFor(req: Req, st: ReqState): Carrier {
  return (st.carrier ??= new RequestCarrier(req, st));
}

// ---- the hooks ----

function guardedAddRequest(this: unknown, ...a: unknown[]): unknown {
  try {
    const [req, options] = a;
    if (current() !== undefined && req instanceof http.ClientRequest) {
      const port = typeof options === "object" && options !== null ? Number((options as { port?: unknown }).port) : Number(a[2]);
      if (Number.isInteger(port) && port > 0 && port < 65536) stateOf(req).port = port;
    }
  } catch {
    // the port then comes from the request's authority (portOf)
  }
  return nodeAddRequest!.apply(this as Req, a);
}

function guardedOnSocket(this: Req, socket: unknown, err?: unknown): unknown {
  const core = current();
  if (core !== undefined && socket && !err) {
    try {
      if (isInternalSocket(socket)) stateOf(this).internal = true;
      else {
        const st = stateOf(this);
        const s = socket as net.Socket;
        st.socket = s;
        attachCarrier(s, carrierFor(this, st));
        const v = tryDecide(core, this, st);
        if (v instanceof PolicyDeniedError) err = v;
      }
    } catch (e) {
      err = core.failed(placeholder(this), e);
    }
  }
  return nodeOnSocket!.call(this, socket, err);
}

function guardedStoreHeader(this: Req, ...a: unknown[]): unknown {
  const core = current();
  const st = core !== undefined ? stateOf(this) : undefined;
  // Built with this request's bytes held (an Expect: 100-continue header block is flushed from here).
  const r = inherited("_storeHeader").apply(this, a);
  if (core === undefined || st === undefined || st.internal) return r;
  try {
    const head = parseHead(String(this._header));
    st.head = head;
    st.limit = head.bodySize;
    if (head.ambiguous !== undefined) {
      const e = new PolicyDeniedError(headTarget(this, st, head, undefined), head.ambiguous);
      core.warn(e);
      st.verdict = e;
      refuse(this, e);
      return r;
    }
    const v = tryDecide(core, this, st);
    if (v instanceof PolicyDeniedError) refuse(this, v);
  } catch (err) {
    const e = core.failed(placeholder(this), err);
    st.verdict = e;
    refuse(this, e);
  }
  return r;
}

function guardedSend(this: Req, ...a: unknown[]): unknown {
  const st = states.get(this);
  if (st !== undefined && st.limit !== undefined && !st.internal && current() !== undefined) {
    const [data, encoding, , byteLength] = a;
    let n = 0;
    if (typeof byteLength === "number") n = byteLength;
    else if (typeof data === "string") n = Buffer.byteLength(data, typeof encoding === "string" ? (encoding as BufferEncoding) : "utf8");
    else if (data instanceof Uint8Array) n = data.byteLength;
    if (n > 0 && st.sent + n > st.limit) {
      const core = current()!;
      const reason =
        st.limit === 0
          ? "the request has a body but its header block declares none (no Content-Length, no Transfer-Encoding): the server would read the body as another request"
          : `the body is longer than its declared Content-Length (${st.limit} bytes): the excess would reach the server as another request`;
      const e = new PolicyDeniedError(headTarget(this, st, st.head ?? liveHead(this), st.addr?.resolvedIp), reason);
      core.warn(e);
      st.verdict = e;
      refuse(this, e);
      return false;
    }
    st.sent += n;
  }
  return inherited("_send").apply(this, a);
}

function guardedWriteRaw(this: Req, ...a: unknown[]): unknown {
  if (!held(this)) return inherited("_writeRaw").apply(this, a);
  // Held: buffer exactly as Node does before a request has its socket.
  return bufferHeldWrite(this, a[0], a[1], a[2]);
}

function guardedFlushOutput(this: Req, ...a: unknown[]): unknown {
  if (held(this)) return undefined;
  return inherited("_flushOutput").apply(this, a);
}

function guardedFlush(this: Req, ...a: unknown[]): unknown {
  if (held(this)) {
    // Node flushes once the request has its socket: decide now if that was all that was missing.
    const core = current()!;
    const st = states.get(this)!;
    if (st.verdict !== "undecided") return undefined;
    try {
      const v = tryDecide(core, this, st);
      if (v instanceof PolicyDeniedError) refuse(this, v);
    } catch (err) {
      st.verdict = core.failed(placeholder(this), err);
      refuse(this, st.verdict);
    }
    return undefined; // an allow has flushed already (release)
  }
  return inherited("_flush").apply(this, a);
}

/** The target reported when the guard cannot read a request. */
function placeholder(req: Req): HttpTarget {
  let host = "(unreadable)";
  try {
    host = hostOf(req);
  } catch {
    // keep the placeholder
  }
  return { kind: "http", scheme: "http", host, port: 0, method: "GET", path: "/", query: "", headers: {} };
}

/**
 * parseHead reads the header block Node built: the request line and every
 * header as sent. Body framing decides the declared size; a block whose
 * framing a server could read two ways (Content-Length with
 * Transfer-Encoding, or a Content-Length that is not one number) is refused.
 */
function parseHead(block: string): Head {
  const lines = block.split("\r\n");
  const first = lines[0] ?? "";
  const sp = first.indexOf(" ");
  const end = first.lastIndexOf(" HTTP/");
  if (sp <= 0 || end <= sp) throw new Error(`unreadable request line ${JSON.stringify(first.slice(0, 80))}`);
  const pairs: string[] = [];
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    if (line === "") break;
    const c = line.indexOf(":");
    if (c <= 0) throw new Error(`unreadable header line ${JSON.stringify(line.slice(0, 80))}`);
    pairs.push(line.slice(0, c).trim(), line.slice(c + 1).trim());
  }
  const headers = headerRecord(pairs);
  const method = first.slice(0, sp);
  const rawPath = first.slice(sp + 1, end);
  const te = headers["transfer-encoding"];
  const cl = headers["content-length"];
  const smuggling = ": a server could read the body two ways (request smuggling), so the request is refused";
  if (te !== undefined && cl !== undefined) return { method, rawPath, headers, bodySize: undefined, ambiguous: `the request declares both Content-Length and Transfer-Encoding${smuggling}` };
  if (cl !== undefined && !/^\d{1,15}$/.test(cl)) return { method, rawPath, headers, bodySize: undefined, ambiguous: `the request declares Content-Length ${JSON.stringify(cl.slice(0, 40))}${smuggling}` };
  const bodySize = te !== undefined ? undefined : cl !== undefined ? Number(cl) : 0;
  return { method, rawPath, headers, bodySize };
}
