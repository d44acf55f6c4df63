/**
 * Which server of a registered AI gateway a `resources/read` goes to.
 *
 * The gateway lists resources with their own URIs (not namespaced) and sends
 * a read to the server that listed the URI in that session (the first in
 * config order); its resources/list answer names that server in each
 * resource's `_meta["dev.meshguard/server"]` (./gateway-route.ts). The guard
 * learns URI → server from those answers, per transport and MCP session (a
 * new session starts empty, like the gateway's): the judging send notes the
 * ids of the resources/list requests it passes, and the transport's
 * `onmessage` (wrapped on the first such request, kept outermost when the
 * app assigns another) reads the answers to those ids before the client
 * does. At most MAX_URIS URIs per transport (least recently used dropped).
 *
 * A URI not learned: the gateway's only MCP server when the registration
 * names exactly one, else refused (the gateway refuses it too: "list
 * resources first").
 */

import type { McpTarget } from "../policy/types.js";
import { PolicyDeniedError } from "./errors.js";
import { RESOURCE_SERVER_META } from "./gateway-route.js";
import type { Gateway } from "./gateways.js";

export const MAX_URIS = 4096;
const MAX_PENDING = 256;

interface Learned {
  session: unknown;
  owners: Map<string, string>;
  /** ids (as `typeof:value`) of resources/list requests sent and not answered yet. */
  pending: Set<string>;
}

const learned = new WeakMap<object, Learned>();
/** Transports whose `onmessage` reads resources/list answers. */
const hooked = new WeakSet<object>();

function sessionOf(t: object): unknown {
  try {
    return (t as { sessionId?: unknown }).sessionId;
  } catch {
    return undefined;
  }
}

/** stateOf: the transport's learned URIs, emptied when its MCP session changed. */
function stateOf(t: object): Learned {
  const session = sessionOf(t);
  let s = learned.get(t);
  if (s === undefined || s.session !== session) learned.set(t, (s = { session, owners: new Map(), pending: new Set() }));
  return s;
}

function idKey(id: unknown): string | undefined {
  return typeof id === "string" || typeof id === "number" ? `${typeof id}:${id}` : undefined;
}

/** listIds: the ids of the resources/list requests in an outgoing message (a batch too; text or bytes read as JSON). */
export function listIds(m: unknown, out: string[] = [], depth = 0): string[] {
  if (depth === 0 && (typeof m === "string" || ArrayBuffer.isView(m))) {
    try {
      return listIds(JSON.parse(typeof m === "string" ? m : Buffer.from(m.buffer, m.byteOffset, m.byteLength).toString("utf8")) as unknown, out, 1);
    } catch {
      return out;
    }
  }
  if (Array.isArray(m)) {
    if (depth < 4) for (const e of m) listIds(e, out, depth + 1);
    return out;
  }
  if (m === null || typeof m !== "object") return out;
  const o = m as { method?: unknown; id?: unknown };
  const k = o.method === "resources/list" ? idKey(o.id) : undefined;
  if (k !== undefined) out.push(k);
  return out;
}

/** learn reads an incoming message: an answer to a noted resources/list teaches the servers of its resources. */
function learn(t: object, g: Gateway, m: unknown, depth = 0): void {
  if (Array.isArray(m)) {
    if (depth < 4) for (const e of m) learn(t, g, e, depth + 1);
    return;
  }
  if (m === null || typeof m !== "object" || "method" in m) return;
  const k = idKey((m as { id?: unknown }).id);
  const s = stateOf(t);
  if (k === undefined || !s.pending.delete(k)) return;
  const resources = (m as { result?: { resources?: unknown } }).result?.resources;
  if (!Array.isArray(resources)) return;
  for (const r of resources as unknown[]) {
    if (r === null || typeof r !== "object") continue;
    const uri = (r as { uri?: unknown }).uri;
    const server = ((r as { _meta?: unknown })._meta as Record<string, unknown> | null | undefined)?.[RESOURCE_SERVER_META];
    if (typeof uri !== "string" || typeof server !== "string") continue;
    // A server the registration does not name is not believed.
    if (g.mcpServers !== undefined && !g.mcpServers.has(server)) continue;
    s.owners.delete(uri);
    s.owners.set(uri, server);
    if (s.owners.size > MAX_URIS) s.owners.delete(s.owners.keys().next().value!);
  }
}

/** hook wraps the transport's `onmessage` (now and whatever is assigned later) so resources/list answers are read first. */
function hook(t: object, g: Gateway): void {
  if (hooked.has(t)) return;
  let inner = (t as { onmessage?: unknown }).onmessage;
  const wrapper = function onmessage(this: unknown, ...args: unknown[]): unknown {
    try {
      learn(t, g, args[0]);
    } catch {
      // learning never stands in the way of a message: an unlearned URI is refused
    }
    return typeof inner === "function" ? (inner as (...a: unknown[]) => unknown).apply(this, args) : undefined;
  };
  const d = Object.getOwnPropertyDescriptor(t, "onmessage");
  if (d !== undefined && d.configurable === false) return; // cannot watch: nothing is learned, unlearned URIs are refused
  try {
    Object.defineProperty(t, "onmessage", {
      get: () => wrapper,
      set: (v: unknown) => {
        inner = v;
      },
      enumerable: d?.enumerable ?? true,
      configurable: true,
    });
  } catch {
    return;
  }
  hooked.add(t);
}

/** noteResourcesList: the judging send passes resources/list requests `ids` to gateway `g` on transport `t`. */
export function noteResourcesList(t: object, g: Gateway, ids: string[]): void {
  hook(t, g);
  const s = stateOf(t);
  for (const k of ids) {
    s.pending.add(k);
    if (s.pending.size > MAX_PENDING) s.pending.delete(s.pending.values().next().value!);
  }
}

/** learnedOwner: the server the gateway named for `uri` in this transport's session (refreshed as recently used). */
export function learnedOwner(t: object, uri: string): string | undefined {
  const s = stateOf(t);
  const server = s.owners.get(uri);
  if (server !== undefined) {
    s.owners.delete(uri);
    s.owners.set(uri, server);
  }
  return server;
}

/**
 * decodeGatewayResource judges a `resources/read` of `uri` at gateway `g` as
 * the gateway does: the server that listed the URI in this session, else the
 * only server, else refused.
 */
export function decodeGatewayResource(t: object, g: Gateway, uri: unknown): McpTarget | PolicyDeniedError {
  const literal: McpTarget = { kind: "mcp", server: g.name, tool: "", args: {}, resource: typeof uri === "string" ? uri : String(uri) };
  if (typeof uri !== "string") return new PolicyDeniedError(literal, "the resource read's uri is not a string (the gateway would refuse it, and the guard fails closed)");
  const owner = learnedOwner(t, uri);
  const only = g.mcpServers !== undefined && g.mcpServers.size === 1 ? [...g.mcpServers][0]! : undefined;
  const server = owner ?? only;
  if (server === undefined) {
    return new PolicyDeniedError(
      literal,
      `unknown resource ${JSON.stringify(uri)} at the gateway ${g.name}: list resources first (resources/list) in this session, so the gateway (and the guard) know which server it belongs to; the guard fails closed`,
    );
  }
  return { kind: "mcp", server, tool: "", args: {}, resource: uri };
}
