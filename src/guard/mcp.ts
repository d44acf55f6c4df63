/**
 * MCP at the wire: every JSON-RPC `tools/call` a client of the official
 * @modelcontextprotocol/sdk sends is judged as an `mcp` target in the
 * transport's `send` — the one point every outgoing message passes, whoever
 * built it (`callTool`, `Client.request`, a raw `transport.send`) and
 * whatever carries it (stdio, streamable HTTP, SSE, WebSocket, in-memory, a
 * custom Transport). A denied call never reaches the transport: no byte is
 * written to the server's stdin, no HTTP request is made.
 *
 * Where the check sits:
 *   - the SDK's transport classes (StdioClientTransport,
 *     StreamableHTTPClientTransport, SSEClientTransport,
 *     WebSocketClientTransport, InMemoryTransport): `send` (and `start`,
 *     which records what was spawned) on the prototype, so a transport
 *     used without any Client is covered too;
 *   - `Client.prototype.connect`: any other transport handed to a client
 *     gets a judging `send` (its class's, or the instance's own — kept
 *     outermost even if the app assigns `send` later);
 *   - `Client.prototype.request`: the same for a transport that reached
 *     the client without `connect`.
 * A message passing two judging sends (a custom transport wrapping an SDK
 * one) is judged once.
 *
 * What is judged is what is sent: the message is copied (as JSON) before it
 * is judged, and the copy is what the transport sends, so nothing can
 * change it during an approval or through a getter.
 *
 * The server's name is never what the server says about itself (the
 * initialize result's serverInfo.name). It is, in this order: the name the
 * app registered for this transport or client (`guard.registerMcpServer`),
 * the name of the entry of `installGuard({ mcp: { servers } })` matching the
 * transport's endpoint (its URL, or its stdio command and arguments), else
 * the URL's host (`host:port` when the port is not the scheme's default) or
 * the command's basename, else "unknown". Endpoints are read only from the
 * SDK's own transport classes, and are fixed once the guard has seen them
 * (the URL cannot be changed afterwards; the stdio command is the one
 * spawned), so a name cannot be borrowed by pointing a transport elsewhere.
 */

import { ErrorCode, MeshguardError } from "../errors.js";
import { normalizeHost } from "../policy/hosts.js";
import type { McpTarget } from "../policy/types.js";
import { refuseVia, type GuardCore } from "./core.js";
import { decodeGatewayMcp, hasGateways, mcpGatewayOf, type Gateway } from "./gateways.js";
import { decodeGatewayResource, listIds, noteResourcesList } from "./mcp-resources.js";
import { PolicyDeniedError } from "./errors.js";
import { patchMethod, type Fn } from "./patches.js";
import { current } from "./state.js";

/** How `installGuard({ mcp: { servers } })` names a server: its URL, or its stdio command (and, optionally, exact arguments). */
export type McpServerSpec = string | { command: string; args?: string[] };

/** The name given to a transport the guard cannot place (no registration, no endpoint). */
export const UNKNOWN_SERVER = "unknown";

type Endpoint = { kind: "url"; url: URL } | { kind: "command"; command: string; args: string[] };
type Matcher = { kind: "url"; scheme: string; host: string; port: number; path: string } | { kind: "command"; command: string; args?: string[] };

interface Registry {
  servers: { name: string; match: Matcher }[];
  /** Transports registered by the app, with their endpoint when registered. */
  transports: WeakMap<object, { name: string; key: string | undefined }>;
  clients: WeakMap<object, string>;
}

const registries = new WeakMap<GuardCore, Registry>();
/** Prototypes of the SDK's transport classes: the only objects whose endpoint fields are believed. */
const knownTransports = new WeakSet<object>();
/** The guard's judging `send` functions. */
const judgingSends = new WeakSet<object>();
/** Transports whose `send` is known to judge (reset when the guard's patches are removed). */
let guardedTransports = new WeakSet<object>();
/** Known transports whose `_url` is fixed. */
const pinned = new WeakSet<object>();
/** The command a known stdio transport spawned (recorded by `start`). */
const spawned = new WeakMap<object, { command: string; args: string[] }>();
/** The client a transport was connected to, and the transport's endpoint then. */
const clientOf = new WeakMap<object, { client: object; key: string | undefined }>();
/** Copies this module judged and handed on to an inner send, with their JSON: judged once. */
const judged = new WeakMap<object, string>();

// ---- names ----

function defaultPortOf(protocol: string): number {
  return protocol === "https:" || protocol === "wss:" ? 443 : 80;
}

function trimPath(p: string): string {
  const t = p.replace(/\/+$/, "");
  return t === "" ? "/" : t;
}

function matcherOf(spec: McpServerSpec): Matcher {
  if (typeof spec === "string") {
    const u = new URL(spec);
    return { kind: "url", scheme: u.protocol, host: normalizeHost(u.hostname), port: u.port ? Number(u.port) : defaultPortOf(u.protocol), path: trimPath(u.pathname) };
  }
  return spec.args === undefined ? { kind: "command", command: spec.command } : { kind: "command", command: spec.command, args: [...spec.args] };
}

function matches(m: Matcher, ep: Endpoint): boolean {
  if (m.kind === "command") {
    if (ep.kind !== "command" || ep.command !== m.command) return false;
    return m.args === undefined || (m.args.length === ep.args.length && m.args.every((a, i) => a === ep.args[i]));
  }
  if (ep.kind !== "url") return false;
  const u = ep.url;
  if (u.protocol !== m.scheme || normalizeHost(u.hostname) !== m.host || (u.port ? Number(u.port) : defaultPortOf(u.protocol)) !== m.port) return false;
  const p = trimPath(u.pathname);
  return m.path === "/" || p === m.path || p.startsWith(`${m.path}/`);
}

function specificity(m: Matcher): number {
  return m.kind === "url" ? m.path.length : m.args !== undefined ? 1 : 0;
}

function keyOf(ep: Endpoint | undefined): string | undefined {
  if (ep === undefined) return undefined;
  if (ep.kind === "command") return `cmd:${JSON.stringify([ep.command, ...ep.args])}`;
  const u = new URL(ep.url.href);
  u.hash = "";
  return `url:${u.href}`;
}

/** fallbackName: the URL's host (`host:port` off the default port), or the command's basename. */
function fallbackName(ep: Endpoint): string {
  if (ep.kind === "command") {
    const base = ep.command.split(/[\\/]/).pop() ?? ep.command;
    return base.replace(/\.(exe|cmd|bat)$/i, "") || UNKNOWN_SERVER;
  }
  const host = normalizeHost(ep.url.hostname);
  if (!ep.url.port || Number(ep.url.port) === defaultPortOf(ep.url.protocol)) return host || UNKNOWN_SERVER;
  return `${host.includes(":") ? `[${host}]` : host}:${ep.url.port}`;
}

const SERVER_NAME = /^\S+$/;

/**
 * configureMcp gives a guard its server names (installGuard's
 * `mcp.servers`). Two names for the same endpoint are an error; where
 * entries overlap (a URL path below another), the more specific one names.
 */
export function configureMcp(core: GuardCore, servers: Record<string, McpServerSpec>): void {
  const list: Registry["servers"] = [];
  const seen = new Map<string, string>();
  for (const [name, spec] of Object.entries(servers)) {
    const match = matcherOf(spec);
    const id = JSON.stringify(match);
    const other = seen.get(id);
    if (other !== undefined) {
      throw new MeshguardError(ErrorCode.INVALID_OPTIONS, `invalid installGuard options: mcp.servers: "${other}" and "${name}" name the same server endpoint`, { hint: "give each MCP server one name" });
    }
    seen.set(id, name);
    list.push({ name, match });
  }
  list.sort((a, b) => specificity(b.match) - specificity(a.match));
  registries.set(core, { servers: list, transports: new WeakMap(), clients: new WeakMap() });
}

/**
 * registerMcpServer names the MCP server behind one connection: an MCP
 * `Client` (whatever transport it is or will be connected to) or a
 * Transport. The name holds for that endpoint only: a transport whose
 * endpoint is not the one it had when registered is named as unregistered.
 */
export function registerMcpServer(core: GuardCore, name: unknown, connection: unknown): void {
  if (typeof name !== "string" || !SERVER_NAME.test(name)) {
    throw new MeshguardError(ErrorCode.INVALID_OPTIONS, `registerMcpServer: the server name must be a non-empty string without spaces (got ${JSON.stringify(name)})`);
  }
  const c = connection as { send?: unknown; connect?: unknown; callTool?: unknown; _transport?: unknown } | null;
  let reg = registries.get(core);
  if (reg === undefined) registries.set(core, (reg = { servers: [], transports: new WeakMap(), clients: new WeakMap() }));
  if (c !== null && typeof c === "object" && typeof c.connect === "function" && typeof c.callTool === "function") {
    reg.clients.set(c, name);
    const t = c._transport;
    if (t !== null && typeof t === "object") {
      guardTransport(t);
      clientOf.set(t, { client: c, key: keyOf(endpointOf(t)) });
    }
    return;
  }
  if (c !== null && typeof c === "object" && typeof c.send === "function") {
    guardTransport(c);
    reg.transports.set(c, { name, key: keyOf(endpointOf(c)) });
    return;
  }
  throw new MeshguardError(ErrorCode.INVALID_OPTIONS, "registerMcpServer: the connection must be an MCP Client or a Transport (an object with send())");
}

function isKnown(t: object): boolean {
  for (let p = Object.getPrototypeOf(t) as object | null; p !== null && p !== Object.prototype; p = Object.getPrototypeOf(p) as object | null) {
    if (knownTransports.has(p)) return true;
  }
  return false;
}

/** pin fixes a known transport's URL: the SDK reads it on every send, and it must stay the one the name was given for. */
function pin(t: object): void {
  if (pinned.has(t)) return;
  pinned.add(t);
  const d = Object.getOwnPropertyDescriptor(t, "_url");
  if (d === undefined || !("value" in d) || !(d.value instanceof URL || typeof d.value === "string")) return;
  const isUrl = d.value instanceof URL;
  const href = isUrl ? (d.value as URL).href : (d.value as string);
  Object.defineProperty(t, "_url", {
    // A fresh copy each time: the URL object itself must not be mutable either.
    get: () => (isUrl ? new URL(href) : href),
    set: () => {
      throw new TypeError("meshguard: an MCP transport's URL cannot change once the guard has seen it (the server's name is bound to it)");
    },
    enumerable: d.enumerable === true,
    configurable: false,
  });
}

function commandOf(params: unknown): { command: string; args: string[] } | undefined {
  const p = params as { command?: unknown; args?: unknown } | null | undefined;
  if (p === null || typeof p !== "object" || typeof p.command !== "string") return undefined;
  return { command: p.command, args: Array.isArray(p.args) ? p.args.map(String) : [] };
}

/** endpointOf reads where a known SDK transport goes; undefined for any other transport. */
function endpointOf(t: object): Endpoint | undefined {
  if (!isKnown(t)) return undefined;
  pin(t);
  const o = t as { _serverParams?: unknown; _url?: unknown; _endpoint?: unknown };
  const cmd = spawned.get(t) ?? commandOf(o._serverParams);
  if (cmd !== undefined) return { kind: "command", ...cmd };
  let url: URL | undefined;
  if (o._url instanceof URL) url = o._url;
  else if (typeof o._url === "string") {
    try {
      url = new URL(o._url);
    } catch {
      url = undefined;
    }
  }
  if (url === undefined) return undefined;
  // SSE posts to an endpoint the server names; the SDK requires the same origin, and so does the name.
  if (o._endpoint instanceof URL && o._endpoint.origin !== url.origin) return { kind: "url", url: o._endpoint };
  return { kind: "url", url };
}

/** serverName: the registered name, the configured name, the endpoint's host or command, or "unknown" (see the file comment). */
export function serverName(core: GuardCore, t: unknown): string {
  if (t === null || typeof t !== "object") return UNKNOWN_SERVER;
  const ep = endpointOf(t);
  const key = keyOf(ep);
  const reg = registries.get(core);
  if (reg !== undefined) {
    const r = reg.transports.get(t);
    if (r !== undefined && r.key === key) return r.name;
    const c = clientOf.get(t);
    if (c !== undefined && c.key === key) {
      const n = reg.clients.get(c.client);
      if (n !== undefined) return n;
    }
    if (ep !== undefined) for (const s of reg.servers) if (matches(s.match, ep)) return s.name;
  }
  return ep === undefined ? UNKNOWN_SERVER : fallbackName(ep);
}

// ---- the judging send ----

type Call = { method: "tools/call" | "prompts/get" | "resources/read" | "resources/list"; id?: unknown; params?: { name?: unknown; arguments?: unknown; uri?: unknown } };

/**
 * collectCalls finds the tools/call requests of a message (and, looked at
 * only at a registered gateway's endpoint: prompts/get and resources/read,
 * judged; resources/list, whose answer names each resource's server).
 */
function collectCalls(m: unknown, out: Call[], depth: number): void {
  if (Array.isArray(m)) {
    // A JSON-RPC batch.
    if (depth < 4) for (const e of m) collectCalls(e, out, depth + 1);
    return;
  }
  if (m === null || typeof m !== "object") return;
  const method = (m as { method?: unknown }).method;
  if (method === "tools/call" || method === "prompts/get" || method === "resources/read" || method === "resources/list") out.push(m as Call);
}

interface Outgoing {
  /** What the transport is handed. */
  send: unknown;
  calls: Call[];
}

function parseText(text: string): unknown {
  const s = text.trimStart();
  if (!s.startsWith("{") && !s.startsWith("[")) return undefined;
  try {
    return JSON.parse(s) as unknown;
  } catch {
    return undefined;
  }
}

/**
 * outgoing reads a message as it will go out. An object is copied through
 * JSON (what every wire transport sends) and the copy is sent; text and
 * bytes (a custom transport's) are read as JSON, and bytes are copied.
 */
function outgoing(message: unknown): Outgoing {
  const calls: Call[] = [];
  if (typeof message === "string") {
    collectCalls(parseText(message), calls, 0);
    return { send: message, calls };
  }
  if (message instanceof ArrayBuffer || ArrayBuffer.isView(message)) {
    const bytes = message instanceof ArrayBuffer ? new Uint8Array(message) : new Uint8Array(message.buffer, message.byteOffset, message.byteLength);
    const copy = Buffer.from(bytes);
    collectCalls(parseText(copy.toString("utf8")), calls, 0);
    return { send: calls.length ? copy : message, calls };
  }
  if (message === null || typeof message !== "object") return { send: message, calls };
  const json = JSON.stringify(message) as string | undefined;
  if (json === undefined) return { send: message, calls };
  const copy = JSON.parse(json) as unknown;
  collectCalls(copy, calls, 0);
  return { send: copy, calls };
}

function targetOf(self: object, server: string, c: Call, gw: Gateway | undefined): McpTarget | PolicyDeniedError {
  const p = c.params !== null && typeof c.params === "object" ? c.params : {};
  // A resource read at a registered gateway: the server the gateway named for the URI in this session (./mcp-resources.ts).
  if (c.method === "resources/read" && gw !== undefined) return decodeGatewayResource(self, gw, p.uri);
  const tool = typeof p.name === "string" ? p.name : String(p.name ?? "");
  const a = p.arguments;
  let args: Record<string, unknown> = {};
  if (a !== undefined && a !== null) {
    if (typeof a !== "object" || Array.isArray(a)) return new PolicyDeniedError({ kind: "mcp", server, tool, args: {} }, `the ${c.method === "tools/call" ? "tool call" : "prompt request"}'s arguments are not a JSON object (the guard fails closed)`);
    args = a as Record<string, unknown>;
  }
  // At a registered AI gateway's endpoint: the upstream server and tool the gateway will call (./gateways.ts).
  if (gw !== undefined) return decodeGatewayMcp(gw, c.method as "tools/call" | "prompts/get", tool, args);
  return { kind: "mcp", server, tool, args };
}

/** gatewayOf: the registered AI gateway whose MCP endpoint this (SDK) transport sends to. */
function gatewayOf(core: GuardCore, t: unknown): Gateway | undefined {
  if (t === null || typeof t !== "object" || !hasGateways(core)) return undefined;
  const ep = endpointOf(t);
  return ep?.kind === "url" ? mcpGatewayOf(core, ep.url) : undefined;
}

function unreadable(err: unknown): PolicyDeniedError {
  return new PolicyDeniedError({ kind: "mcp", server: UNKNOWN_SERVER, tool: "(unreadable message)", args: {} }, `the guard could not read the outgoing MCP message (fails closed): ${(err as Error)?.message ?? String(err)}`, undefined, err);
}

/** guardedSend is the body of every judging send. */
function guardedSend(self: unknown, original: Fn, args: unknown[]): unknown {
  const core = current();
  if (core === undefined) return original.apply(self, args);
  const [message, ...rest] = args;
  let out: Outgoing | undefined;
  let verdict: undefined | PolicyDeniedError | Promise<void>;
  // Only reading and judging is inside the try: the transport's own errors pass through untouched.
  try {
    if (message !== null && typeof message === "object" && judged.has(message)) {
      const was = judged.get(message);
      judged.delete(message);
      if (JSON.stringify(message) !== was) out = outgoing(message);
    } else out = outgoing(message);
    if (out !== undefined && out.calls.length > 0) {
      const gw = gatewayOf(core, self);
      // prompts/get and resources/read are judged only where the gateway judges them too: at a registered gateway's endpoint.
      const calls = gw !== undefined ? out.calls.filter((c) => c.method !== "resources/list") : out.calls.filter((c) => c.method === "tools/call");
      if (gw !== undefined && calls.length < out.calls.length) noteResourcesList(self as object, gw, listIds(out.send));
      const server = gw !== undefined ? gw.name : serverName(core, self);
      const via = gw !== undefined ? { gateway: gw.name } : undefined;
      const targets: McpTarget[] = [];
      for (const c of calls) {
        const t = targetOf(self as object, server, c, gw);
        if (t instanceof PolicyDeniedError) {
          if (via === undefined) return Promise.reject(t);
          const r = refuseVia(core, t, "mcp", via);
          if (r !== undefined) return Promise.reject(r);
          continue;
        }
        targets.push(t);
      }
      if (targets.length > 0) verdict = targets.length === 1 ? core.check(targets[0]!, "mcp", via ? { via } : undefined) : core.checkAll(targets, "mcp", via ? { via } : undefined);
    }
  } catch (err) {
    core.warn(err);
    return Promise.reject(unreadable(err));
  }
  if (out === undefined) return original.apply(self, args); // judged already, by an outer send
  const send = out.send;
  if (out.calls.length === 0) return original.apply(self, [send, ...rest]);
  const go = () => {
    if (send !== null && typeof send === "object" && !ArrayBuffer.isView(send)) judged.set(send, JSON.stringify(send));
    return original.apply(self, [send, ...rest]);
  };
  if (verdict === undefined) return go();
  if (verdict instanceof PolicyDeniedError) return Promise.reject(verdict);
  return verdict.then(go);
}

function judgingSend(original: Fn): Fn {
  const send = function send(this: unknown, ...args: unknown[]): unknown {
    return guardedSend(this, original, args);
  };
  judgingSends.add(send);
  return send;
}

/** A stdio transport spawns in `start`: what it spawned is its endpoint from then on. */
function recordingStart(original: Fn): Fn {
  return function start(this: unknown, ...args: unknown[]): unknown {
    if (this !== null && typeof this === "object" && !spawned.has(this)) {
      try {
        const cmd = commandOf((this as { _serverParams?: unknown })._serverParams);
        if (cmd !== undefined) spawned.set(this, cmd);
        else pin(this);
      } catch {
        // a transport whose fields cannot be read is named "unknown"
      }
    }
    return original.apply(this, args);
  };
}

/** instrumentMcpTransport patches one of the SDK's transport classes (its endpoint is then believed). */
export function instrumentMcpTransport(cls: { prototype: object }): boolean {
  const proto = cls.prototype as Record<string, unknown>;
  if (typeof proto.send !== "function" || typeof proto.start !== "function" || typeof proto.callTool === "function") return false;
  knownTransports.add(proto);
  // A subclass of a class already patched inherits the judging send.
  if (judgingSends.has(proto.send as object)) return true;
  const done = patchMethod(proto, "send", judgingSend);
  patchMethod(proto, "start", recordingStart);
  return done;
}

function ownerOf(proto: object | null, name: string): object | undefined {
  for (let p = proto; p !== null && p !== Object.prototype; p = Object.getPrototypeOf(p) as object | null) if (Object.hasOwn(p, name)) return p;
  return undefined;
}

/**
 * guardTransport makes a transport's `send` judge: nothing to do for the
 * SDK's classes; another class gets its `send` patched; an object with its
 * own `send` gets an accessor that keeps the judging send outermost (an
 * assignment replaces what it calls). A transport that cannot be changed
 * (frozen) is refused.
 */
export function guardTransport(t: object): void {
  if (guardedTransports.has(t)) return;
  const send = (t as { send?: unknown }).send;
  if (typeof send === "function" && judgingSends.has(send)) {
    guardedTransports.add(t);
    return;
  }
  const own = Object.getOwnPropertyDescriptor(t, "send");
  if (own === undefined) {
    const proto = ownerOf(Object.getPrototypeOf(t) as object | null, "send");
    const d = proto === undefined ? undefined : Object.getOwnPropertyDescriptor(proto, "send");
    if (proto !== undefined && d !== undefined && typeof d.value === "function" && d.configurable === true && patchMethod(proto, "send", judgingSend)) {
      guardedTransports.add(t);
      return;
    }
  }
  let inner: unknown = send;
  const wrapper = judgingSend(function (this: unknown, ...args: unknown[]) {
    if (typeof inner !== "function") throw new TypeError("the MCP transport has no send function");
    return (inner as Fn).apply(this, args);
  });
  try {
    Object.defineProperty(t, "send", {
      get: () => wrapper,
      set: (v: unknown) => {
        inner = v;
      },
      enumerable: own?.enumerable ?? true,
      configurable: false,
    });
  } catch (err) {
    throw new PolicyDeniedError(
      { kind: "mcp", server: UNKNOWN_SERVER, tool: "(any)", args: {} },
      "the guard cannot intercept this MCP transport's send (a frozen or sealed object), so it refuses the connection",
      undefined,
      err,
    );
  }
  guardedTransports.add(t);
}

/**
 * instrumentMcpClient patches an MCP SDK `Client` class: a transport it is
 * connected to (or finds on itself when sending a request) gets a judging
 * send. The judging itself is in the transport (see the file comment).
 */
export function instrumentMcpClient(cls: { prototype: object }): boolean {
  const proto = cls.prototype as Record<string, unknown>;
  if (typeof proto.connect !== "function" || typeof proto.request !== "function" || typeof proto.callTool !== "function") return false;
  const done = patchMethod(proto, "connect", (original) =>
    function connect(this: unknown, transport: unknown, ...rest: unknown[]) {
      if (transport !== null && typeof transport === "object" && this !== null && typeof this === "object") {
        try {
          guardTransport(transport);
        } catch (err) {
          if (current() !== undefined) return Promise.reject(err);
        }
        clientOf.set(transport, { client: this, key: keyOf(endpointOf(transport)) });
      }
      return original.call(this, transport, ...rest);
    },
  );
  patchMethod(proto, "request", (original) =>
    function request(this: unknown, ...args: unknown[]) {
      const t = (this as { _transport?: unknown } | null)?._transport;
      if (t !== null && typeof t === "object" && current() !== undefined) {
        try {
          guardTransport(t);
        } catch (err) {
          return Promise.reject(err);
        }
      }
      return original.apply(this, args);
    },
  );
  return done;
}

/** resetMcp forgets which transports judge (the guard's patches were removed; instance wrappers stay and judge for the next guard). */
export function resetMcp(): void {
  guardedTransports = new WeakSet();
}
