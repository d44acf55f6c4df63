/**
 * The control socket's methods, over an Inspectable (a MeshNode). The
 * socket server calls them for each request, and the CLI calls them
 * directly on a node it brought up itself, so both answer alike.
 */

import { isIP } from "node:net";

import type { z } from "zod";

import { loadZod, parseWith } from "../config.js";
import { ErrorCode, MeshguardError } from "../errors.js";
import { askGuard } from "./channel.js";
import { SOCKET_METHODS, SOCKET_PROTOCOL_VERSION, type GuardInfo, type Inspectable, type PeerStatus, type SocketMethod, type SocketMethods, type StatusResult } from "./protocol.js";

const HOST_RE = /^[A-Za-z0-9.:_[\]-]{1,253}$/;

/** isAddr: "ip", "ipv4:port" or "[ipv6]:port" (whois's argument). */
export function isAddr(s: string): boolean {
  if (isIP(s)) return true;
  const m = /^\[([^\]]+)\]:(\d{1,5})$/.exec(s) ?? /^([^:]+):(\d{1,5})$/.exec(s);
  return m !== null && isIP(m[1]!) !== 0 && Number(m[2]) <= 65535;
}

/** schemasOf builds the params schemas (on the first request: zod loads then, not with the node). */
const schemasOf = (z: typeof import("zod").z) => ({
  hello: z.object({}).strict(),
  status: z.object({ ping: z.boolean().optional(), pingTimeoutMs: z.number().int().min(1).max(10_000).optional() }).strict(),
  whois: z.object({ addr: z.string().refine(isAddr, "must be a tailnet IP, optionally with a port (100.64.0.7, 100.64.0.7:80, [fd7a::1]:80)") }).strict(),
  ping: z
    .object({
      host: z.string().regex(HOST_RE, "must be a peer's MagicDNS name or tailnet IP"),
      kind: z.enum(["disco", "tsmp", "icmp"]).optional(),
      timeoutMs: z.number().int().min(1).max(30_000).optional(),
    })
    .strict(),
  explain: z
    .object({
      request: z.string().min(1).max(16_384),
      as: z.string().min(1).max(1024).optional(),
      at: z.string().max(64).optional(),
      headers: z.record(z.string().max(8192)).optional(),
      bodySize: z.number().int().min(0).optional(),
      peerTags: z.array(z.string().max(256)).max(64).optional(),
    })
    .strict(),
} satisfies Record<SocketMethod, z.ZodType>);
let schemas: ReturnType<typeof schemasOf> | undefined;

/** Details a server adds to the node's own: the socket it answers on. */
export interface HandlerContext {
  socket?: string;
}

/** isMethod tells whether `name` is a method of protocol version 1. */
export function isMethod(name: string): name is SocketMethod {
  return (SOCKET_METHODS as readonly string[]).includes(name);
}

/** callMethod validates params and runs one method on the node. */
export async function callMethod<M extends SocketMethod>(node: Inspectable, method: M, params: unknown, ctx: HandlerContext = {}): Promise<SocketMethods[M]["result"]> {
  if (!isMethod(method)) throw badRequest(`unknown method ${JSON.stringify(method)}; methods: ${SOCKET_METHODS.join(", ")}`);
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- the schema of the method validates it just below
  let p: any;
  try {
    p = parseWith((schemas ??= schemasOf(loadZod()))[method] as z.ZodType, params ?? {}, `${method} params`) as unknown;
  } catch (err) {
    throw badRequest((err as Error).message);
  }
  switch (method) {
    case "hello":
      return { v: SOCKET_PROTOCOL_VERSION, pid: process.pid, name: node.name, methods: [...SOCKET_METHODS] } as SocketMethods[M]["result"];
    case "status":
      return (await status(node, p as SocketMethods["status"]["params"], ctx)) as SocketMethods[M]["result"];
    case "whois":
      return (await node.whois(p.addr as string)) as SocketMethods[M]["result"];
    case "ping": {
      const q = p as SocketMethods["ping"]["params"];
      return (await node.ping(q.host, { ...(q.kind ? { kind: q.kind } : {}), ...(q.timeoutMs ? { timeoutMs: q.timeoutMs } : {}) })) as SocketMethods[M]["result"];
    }
    case "explain": {
      const answer = askGuard({ kind: "explain", node, params: p as SocketMethods["explain"]["params"] });
      if (answer === undefined) {
        throw new MeshguardError(ErrorCode.CONTROL_SOCKET_FAILED, `node ${node.hostname} (pid ${process.pid}) has no guard installed: there is no live policy to explain with`, {
          hint: "explain with a policy file instead: meshguard policy explain FILE --as WHO REQUEST",
        });
      }
      return (await answer) as SocketMethods[M]["result"];
    }
  }
  throw badRequest(`unknown method ${JSON.stringify(method)}`);
}

function badRequest(message: string): MeshguardError {
  return new MeshguardError(ErrorCode.CONTROL_SOCKET_BAD_REQUEST, message);
}

/** PING_CONCURRENCY bounds the pings status sends at once. */
const PING_CONCURRENCY = 8;

async function status(node: Inspectable, p: SocketMethods["status"]["params"], ctx: HandlerContext): Promise<StatusResult> {
  const [st, peers, guard] = await Promise.all([node.status(), node.peers(), guardInfo(node)]);
  const latency = new Map<string, { ms: number } | { error: string }>();
  if (p.ping !== false) {
    // Pinging first also sets up the paths the table then shows.
    const online = peers.filter((x) => x.online && x.ips.length > 0);
    let next = 0;
    const worker = async () => {
      while (next < online.length) {
        const peer = online[next++]!;
        try {
          const r = await node.ping(peer.ips[0]!, { kind: "disco", timeoutMs: p.pingTimeoutMs ?? 1000 });
          latency.set(peer.id, { ms: r.latencyMs });
        } catch (err) {
          latency.set(peer.id, { error: (err as MeshguardError).code ?? (err as Error).message });
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(PING_CONCURRENCY, online.length) }, worker));
  }
  const paths = new Map((await node.paths()).map((x) => [x.id, x]));
  const self = await selfTags(node);
  return {
    self: {
      name: node.name,
      hostname: node.hostname,
      id: node.id,
      ips: [...node.ips],
      tags: self.tags,
      ...(self.user ? { user: self.user } : {}),
      state: st.state,
      health: [...(st.health ?? [])],
      controlUrl: node.controlUrl,
      dir: node.dir,
      pid: process.pid,
      ...(ctx.socket ? { socket: ctx.socket } : {}),
      guard,
    },
    peers: peers.map((x): PeerStatus => {
      const path = paths.get(x.id);
      const l = latency.get(x.id);
      return {
        id: x.id,
        name: x.name,
        hostname: x.hostname,
        ips: x.ips,
        tags: x.tags,
        ...(x.user ? { user: x.user } : {}),
        online: x.online,
        path: path?.path ?? "none",
        ...(path?.curAddr ? { curAddr: path.curAddr } : {}),
        ...(path?.relay ? { relay: path.relay } : {}),
        active: path?.active ?? false,
        lastHandshake: path?.lastHandshakeMs ? new Date(path.lastHandshakeMs).toISOString() : null,
        rxBytes: path?.rxBytes ?? 0,
        txBytes: path?.txBytes ?? 0,
        latencyMs: l && "ms" in l ? l.ms : null,
        ...(l && "error" in l ? { pingError: l.error } : {}),
      };
    }),
  };
}

/** The node's own tags and user, as the tailnet says (whois of its own address). */
async function selfTags(node: Inspectable): Promise<{ tags: string[]; user?: string }> {
  const ip = node.ips[0];
  if (ip === undefined) return { tags: [] };
  try {
    const w = (await node.whois(ip)) as { node: { tags: string[] }; user: { login: string }; tagged: boolean };
    return { tags: [...w.node.tags], ...(!w.tagged && w.user.login ? { user: w.user.login } : {}) };
  } catch {
    return { tags: [] };
  }
}

async function guardInfo(node: Inspectable): Promise<GuardInfo | null> {
  try {
    const answer = askGuard<{ kind: "guard"; node: object; answer?: GuardInfo | Promise<GuardInfo> }>({ kind: "guard", node });
    return answer === undefined ? null : await answer;
  } catch {
    return null;
  }
}
