/**
 * One policy, one answer: calls to a registered AI gateway are judged as
 * what the gateway will do with them, not as what they literally are.
 *
 *  - An MCP `tools/call` (or `prompts/get`) sent to the gateway's MCP
 *    endpoint names a namespaced tool, `github__create_issue`: it is judged
 *    as an `mcp` target on server `github`, tool `create_issue`, with its
 *    arguments — the name split by the gateway's own function
 *    (./gateway-route.ts). A name that does not split, or that names a
 *    server the gateway does not have (when its servers are known), is
 *    refused: the gateway would refuse it too.
 *  - An HTTP request (fetch, undici, node:http) to
 *    `<gateway><prefix>/<connector>/<path>` is judged as the upstream
 *    request the gateway builds: `<baseUrl><path>` with the query (the
 *    credential's parameter left out), the method and the headers that go
 *    upstream (./gateway-route.ts, shared with the gateway).
 *    A path the gateway refuses (`..`, encoded slashes) and an unknown
 *    connector under a connector prefix are refused here, before any byte
 *    is sent.
 *  - Anything else to the gateway (LLM calls, the MCP endpoint's HTTP
 *    requests themselves, the admin API) is judged as before: an `http`
 *    target on the gateway's host.
 *
 *  - A `resources/read` at the MCP endpoint is judged on the server the
 *    gateway named for the URI in this session's resources/list answers
 *    (./mcp-resources.ts), else the only server, else refused.
 *
 * Decision events of decoded calls carry `via: { gateway, connector? }`.
 * Not decoded: transports other than the SDK's own
 * classes (their endpoint is not known), and a gateway whose connector
 * prefix overlaps its LLM endpoints' paths (the gateway serves those
 * first).
 */

import { z } from "zod";
import { parseWith } from "../config.js";
import { ErrorCode, MeshguardError } from "../errors.js";
import { CONNECTOR_NAME_RE, CONNECTOR_PREFIX as PREFIX, connectorOfPath, credentialNames, dropParams, forwardedHeaders, MCP_SERVER_NAME_RE, pathRefusal, splitName, upstreamPath } from "./gateway-route.js";
import { normalizeHost } from "../policy/hosts.js";
import type { HttpTarget, McpTarget } from "../policy/types.js";
import { refuseVia, type CheckOptions, type GuardCore, type Verdict } from "./core.js";
import { PolicyDeniedError } from "./errors.js";
import { defaultPort, hostKey } from "./targets.js";
import type { GuardLayer } from "./types.js";

/** One HTTP API connector of a gateway, as the gateway's config names it (no credential: only the names it sets). */
export interface GatewayConnectorSpec {
  /** The upstream API (the connector's `baseUrl`). */
  baseUrl: string;
  /** The connector's own prefix, when not the gateway's `connectorsPrefix`. */
  prefix?: string;
  /** The header the connector's credential is sent in (`auth.header`); a caller's own header of that name never goes upstream. */
  credentialHeader?: string;
  /** The query parameter the connector's credential is sent in (`auth.query`); a caller's own parameter of that name is left out. */
  credentialQuery?: string;
}

/** A gateway registered with the guard (installGuard `gateways`, GuardHandle.registerGateway, or gatewayLayout()). */
export interface GatewaySpec {
  /** The gateway's URL, e.g. "http://ai-gateway" (its origin: scheme, host, port; a path is ignored). */
  url: string;
  /** Other URLs the same gateway is reached at (its MagicDNS name, its tailnet IP, a loopback listener). */
  aliases?: string[];
  /** Path of its aggregating MCP endpoint (default "/v1/mcp"); false: it has none. */
  mcpPath?: string | false;
  /** Its MCP servers' names: a call naming another server is refused. Absent: any name that splits is judged. */
  mcpServers?: string[];
  /** Where its HTTP API connectors are served (default "/v1/connectors"). */
  connectorsPrefix?: string;
  /** Its HTTP API connectors by name. */
  connectors?: Record<string, GatewayConnectorSpec>;
}

/** What a decision event says about a call decoded at a gateway. */
export interface GatewayVia {
  /** The gateway's origin as registered, e.g. "http://ai-gateway". */
  gateway: string;
  /** The HTTP API connector the call went to (absent for MCP calls). */
  connector?: string;
}

const httpUrl = (example: string) =>
  z
    .string()
    .url(`must be an http(s) URL such as "${example}"`)
    .refine((u) => /^https?:\/\//i.test(u), `must be an http(s) URL such as "${example}"`)
    .refine((u) => {
      const x = new URL(u);
      return x.username === "" && x.password === "";
    }, "must not carry credentials");

export const GatewaySpecSchema = z
  .object({
    url: httpUrl("http://ai-gateway"),
    aliases: z.array(httpUrl("http://ai-gateway.tailnet.example")).optional(),
    mcpPath: z.union([z.literal(false), z.string().regex(/^\/[A-Za-z0-9/_.-]*$/, 'must be a path such as "/v1/mcp"')]).optional(),
    mcpServers: z.array(z.string().regex(MCP_SERVER_NAME_RE, 'an MCP server name of the gateway is lower-case letters, digits, "-" and single "_"')).optional(),
    connectorsPrefix: PREFIX.optional(),
    connectors: z
      .record(
        z.string().regex(CONNECTOR_NAME_RE, 'a connector name is lower-case letters, digits, "-" and "_" (it is a path segment)'),
        z
          .object({
            baseUrl: httpUrl("https://api.github.com").refine((u) => new URL(u).search === "", "must not have a query"),
            prefix: PREFIX.optional(),
            credentialHeader: z.string().regex(/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/, "must be a header name").optional(),
            credentialQuery: z.string().min(1).optional(),
          })
          .strict(),
      )
      .optional(),
  })
  .strict();

interface Connector {
  name: string;
  scheme: "http" | "https";
  host: string;
  port: number;
  basePath: string;
  dropHeaders: Set<string>;
  dropQuery: Set<string>;
}

/** A registered gateway, compiled. */
export interface Gateway {
  /** The registration as given (validated): what worker threads are handed. */
  spec: GatewaySpec;
  /** Its origin as registered ("http://ai-gateway"): what decision events name. */
  name: string;
  /** Keys ("host:port", normal form) and schemes it is reached at. */
  origins: Map<string, "http" | "https">;
  mcpPath: string | undefined;
  mcpServers: Set<string> | undefined;
  /** Connector prefixes, longest first, each with its connectors by name. */
  prefixes: [string, Map<string, Connector>][];
}

const registries = new WeakMap<GuardCore, Gateway[]>();

function originOf(u: string): { scheme: "http" | "https"; key: string; name: string } {
  const x = new URL(u);
  const scheme = x.protocol === "https:" ? "https" : "http";
  const port = x.port ? Number(x.port) : defaultPort(scheme);
  return { scheme, key: hostKey(x.hostname.replace(/^\[|\]$/g, ""), port), name: x.origin };
}

function trimPath(p: string): string {
  const t = p.replace(/\/+$/, "");
  return t === "" ? "/" : t;
}

function compile(spec: z.output<typeof GatewaySpecSchema>): Gateway {
  const main = originOf(spec.url);
  const origins = new Map<string, "http" | "https">([[main.key, main.scheme]]);
  for (const a of spec.aliases ?? []) {
    const o = originOf(a);
    origins.set(o.key, o.scheme);
  }
  const defaultPrefix = spec.connectorsPrefix ?? "/v1/connectors";
  const byPrefix = new Map<string, Map<string, Connector>>();
  for (const [name, c] of Object.entries(spec.connectors ?? {})) {
    const u = new URL(c.baseUrl);
    const scheme = u.protocol === "https:" ? "https" : "http";
    const names = credentialNames({ ...(c.credentialHeader ? { header: c.credentialHeader } : {}), ...(c.credentialQuery ? { query: c.credentialQuery } : {}) });
    const p = c.prefix ?? defaultPrefix;
    let m = byPrefix.get(p);
    if (m === undefined) byPrefix.set(p, (m = new Map()));
    m.set(name, {
      name,
      scheme,
      host: normalizeHost(u.hostname.replace(/^\[|\]$/g, "")),
      port: u.port ? Number(u.port) : defaultPort(scheme),
      basePath: u.pathname.replace(/\/+$/, ""),
      dropHeaders: names.headers,
      dropQuery: names.query,
    });
  }
  // The default prefix is the gateway's even without connectors listed: a call under it names an unknown connector.
  if (!byPrefix.has(defaultPrefix)) byPrefix.set(defaultPrefix, new Map());
  return {
    spec: structuredClone(spec) as GatewaySpec,
    name: main.name,
    origins,
    mcpPath: spec.mcpPath === false ? undefined : trimPath(spec.mcpPath ?? "/v1/mcp"),
    mcpServers: spec.mcpServers === undefined ? undefined : new Set(spec.mcpServers),
    prefixes: [...byPrefix.entries()].sort((a, b) => b[0].length - a[0].length),
  };
}

/** parseGateway validates one registration (MESHGUARD_INVALID_OPTIONS naming what is wrong). */
export function parseGateway(spec: unknown, what: string): Gateway {
  const o = parseWith(GatewaySpecSchema, spec, what);
  return compile(o);
}

/**
 * registerGateways adds gateways to a guard. A gateway reached at an origin
 * another registration already has is an error: the same address cannot
 * lead to two layouts.
 */
export function registerGateways(core: GuardCore, gateways: Gateway[]): void {
  const list = registries.get(core) ?? [];
  const seen = new Map<string, string>();
  for (const g of list) for (const k of g.origins.keys()) seen.set(k, g.name);
  for (const g of gateways) {
    for (const k of g.origins.keys()) {
      const other = seen.get(k);
      if (other !== undefined) {
        throw new MeshguardError(ErrorCode.INVALID_OPTIONS, `invalid gateway registration: ${k} is already the address of the registered gateway ${other}`, { hint: "register each gateway once, with all its addresses in `aliases`" });
      }
      seen.set(k, g.name);
    }
  }
  registries.set(core, [...list, ...gateways]);
}

/** gatewayAt finds the registered gateway reached at scheme://host:port. */
function gatewayAt(core: GuardCore, scheme: string, host: string, port: number): Gateway | undefined {
  const list = registries.get(core);
  if (list === undefined || list.length === 0) return undefined;
  const k = hostKey(host, port);
  for (const g of list) if (g.origins.get(k) === scheme) return g;
  return undefined;
}

/** gatewaySpecs: the registrations of a guard, for its worker threads. */
export function gatewaySpecs(core: GuardCore): GatewaySpec[] {
  return (registries.get(core) ?? []).map((g) => structuredClone(g.spec));
}

/** hasGateways: whether any gateway is registered (a cheap test for the hot paths). */
export function hasGateways(core: GuardCore): boolean {
  const list = registries.get(core);
  return list !== undefined && list.length > 0;
}

// ---- HTTP connectors ----

/** A decoded connector call: the upstream target, or why it is refused. */
export type DecodedHttp = { target: HttpTarget; via: GatewayVia } | { refused: PolicyDeniedError; via: GatewayVia };

/**
 * decodeGatewayHttp maps a request to a registered gateway's connector
 * prefix onto the upstream request the gateway will send. Undefined: not a
 * connector call of a registered gateway (judged as it is).
 */
export function decodeGatewayHttp(core: GuardCore, t: HttpTarget): DecodedHttp | undefined {
  if (!hasGateways(core)) return undefined;
  const g = gatewayAt(core, t.scheme, t.host, t.port);
  if (g === undefined) return undefined;
  const path = t.path;
  if (g.mcpPath !== undefined && path === g.mcpPath) return undefined;
  for (const [prefix, connectors] of g.prefixes) {
    if (path !== prefix && !path.startsWith(`${prefix}/`)) continue;
    const m = connectorOfPath(path, prefix);
    const c = m === undefined ? undefined : connectors.get(m.name);
    if (m === undefined || c === undefined) {
      const via: GatewayVia = { gateway: g.name, ...(m !== undefined ? { connector: m.name } : {}) };
      const known = [...connectors.keys()];
      const reason =
        m === undefined
          ? `a call to the gateway's connector prefix ${prefix} names no connector (the guard fails closed)`
          : `the gateway ${g.name} has no connector ${JSON.stringify(m.name)} under ${prefix} as registered with the guard (${known.length ? `it has ${known.join(", ")}` : "none registered"}); the guard cannot tell what it would call, so it refuses (register the gateway's connectors: gatewayLayout() or installGuard({ gateways }))`;
      return { refused: new PolicyDeniedError(t, reason), via };
    }
    const via: GatewayVia = { gateway: g.name, connector: c.name };
    const target: HttpTarget = {
      kind: "http",
      scheme: c.scheme,
      host: c.host,
      port: c.port,
      method: t.method,
      path: upstreamPath(c.basePath, m.rest),
      query: dropParams(t.query, c.dropQuery),
      headers: forwardedHeaders(t.headers, c.dropHeaders),
    };
    const declared = t.headers["content-length"];
    if (declared !== undefined && Number.isFinite(Number(declared))) target.bodySize = Number(declared);
    const refused = pathRefusal(m.rest) ?? pathRefusal(c.basePath);
    if (refused !== undefined) return { refused: new PolicyDeniedError(target, `the gateway would refuse this path: ${refused}`), via };
    return { target, via };
  }
  return undefined;
}

// ---- MCP ----

/** mcpGatewayOf: the registered gateway whose MCP endpoint is `url`, if any. */
export function mcpGatewayOf(core: GuardCore, url: URL): Gateway | undefined {
  if (!hasGateways(core)) return undefined;
  const scheme = url.protocol === "https:" ? "https" : url.protocol === "http:" ? "http" : undefined;
  if (scheme === undefined) return undefined;
  const g = gatewayAt(core, scheme, normalizeHost(url.hostname), url.port ? Number(url.port) : defaultPort(scheme));
  if (g === undefined || g.mcpPath === undefined || trimPath(url.pathname) !== g.mcpPath) return undefined;
  return g;
}

/**
 * decodeGatewayMcp judges a `tools/call` or `prompts/get` at the gateway's
 * MCP endpoint as the gateway does: the namespaced name split at its first
 * "__" into server and tool (or prompt).
 */
export function decodeGatewayMcp(g: Gateway, method: "tools/call" | "prompts/get", name: string, args: Record<string, unknown>): McpTarget | PolicyDeniedError {
  const what = method === "tools/call" ? "tool" : "prompt";
  const split = splitName(name);
  const literal: McpTarget = method === "tools/call" ? { kind: "mcp", server: g.name, tool: name, args } : { kind: "mcp", server: g.name, tool: "", args, prompt: name };
  if (split === undefined) {
    return new PolicyDeniedError(literal, `the ${what} name ${JSON.stringify(name)} does not name a server of the gateway ${g.name} (names there are "server__${what}"); the gateway would refuse it, and the guard fails closed`);
  }
  if (g.mcpServers !== undefined && !g.mcpServers.has(split.server)) {
    return new PolicyDeniedError(literal, `the gateway ${g.name} has no MCP server ${JSON.stringify(split.server)} (it has ${[...g.mcpServers].join(", ") || "none"}); the guard fails closed`);
  }
  return method === "tools/call" ? { kind: "mcp", server: split.server, tool: split.name, args } : { kind: "mcp", server: split.server, tool: "", args, prompt: split.name };
}

// ---- the gateway's own description ----

/** The layout part of GET /meshguard/v1/gateway (src/gateway/info-api.ts). */
interface InfoLayout {
  url?: string;
  ipUrl?: string;
  dnsName?: string;
  port?: number;
  loopbackUrl?: string;
  mcp?: { path: string; servers: string[] };
  connectors?: { prefix: string; http: Record<string, GatewayConnectorSpec> };
}

/**
 * gatewayLayout asks a gateway how its MCP endpoint and connectors are laid
 * out (GET <url>/meshguard/v1/gateway, which any caller of the gateway may
 * read and which names no secret) and returns the registration for
 * installGuard({ gateways }) or GuardHandle.registerGateway. `fetch`: the
 * fetch to use (a MeshNode's, to reach a tailnet gateway). Called after the
 * guard is installed, the request is judged like any other: the policy
 * must allow GET on the gateway's /meshguard/v1/gateway.
 */
/** What gatewayLayout needs of a fetch: the global one, undici's, or a MeshNode's (`node.fetch.bind(node)`). */
export type LayoutFetch = (input: string, init: { headers: Record<string, string>; signal?: AbortSignal }) => Promise<{ ok: boolean; status: number; text(): Promise<string> }>;

export async function gatewayLayout(url: string, opts: { fetch?: LayoutFetch; signal?: AbortSignal } = {}): Promise<GatewaySpec> {
  let base: URL;
  try {
    base = new URL(url);
  } catch {
    throw new MeshguardError(ErrorCode.INVALID_OPTIONS, `gatewayLayout: ${JSON.stringify(url)} is not a URL (give the gateway's URL, e.g. "http://ai-gateway")`);
  }
  const f: LayoutFetch = opts.fetch ?? ((input, init) => globalThis.fetch(input, init));
  const res = await f(new URL("/meshguard/v1/gateway", base).href, { headers: { accept: "application/json" }, ...(opts.signal ? { signal: opts.signal } : {}) });
  const text = await res.text();
  if (!res.ok) throw new MeshguardError(ErrorCode.INTERNAL, `gatewayLayout: ${base.origin} answered HTTP ${res.status} to GET /meshguard/v1/gateway: ${text.slice(0, 300)}`, { hint: "is this a meshguard AI gateway, and may this node call it?" });
  let info: InfoLayout;
  try {
    info = JSON.parse(text) as InfoLayout;
  } catch {
    throw new MeshguardError(ErrorCode.INTERNAL, `gatewayLayout: ${base.origin} did not answer JSON to GET /meshguard/v1/gateway`);
  }
  const aliases = new Set<string>();
  for (const u of [info.url, info.ipUrl, info.loopbackUrl, info.dnsName ? `http://${info.dnsName}${info.port && info.port !== 80 ? `:${info.port}` : ""}` : undefined]) {
    if (typeof u === "string" && u !== "") {
      try {
        if (new URL(u).origin !== base.origin) aliases.add(new URL(u).origin);
      } catch {
        /* an address that does not parse is left out */
      }
    }
  }
  const spec: GatewaySpec = { url: base.origin, mcpPath: info.mcp?.path ?? false };
  if (aliases.size > 0) spec.aliases = [...aliases];
  if (info.mcp !== undefined) spec.mcpServers = [...info.mcp.servers];
  if (info.connectors !== undefined) {
    spec.connectorsPrefix = info.connectors.prefix;
    spec.connectors = {};
    for (const [name, c] of Object.entries(info.connectors.http)) spec.connectors[name] = { ...c };
  }
  // Checked as any registration would be: a gateway answering nonsense is an error here, not a silent gap.
  parseGateway(spec, `the layout of the gateway ${base.origin}`);
  return spec;
}

// ---- verdicts ----

/** What gatewayHttpVerdict answers for a request that is not a connector call of a registered gateway. */
export const NOT_GATEWAY: unique symbol = Symbol("not a gateway connector call");

/**
 * gatewayHttpVerdict judges an HTTP request to a registered gateway's
 * connector prefix as the upstream request (see decodeGatewayHttp), or
 * answers NOT_GATEWAY: judge it as it is.
 */
export function gatewayHttpVerdict(core: GuardCore, t: HttpTarget, layer: GuardLayer, opts?: CheckOptions): Verdict | typeof NOT_GATEWAY {
  const d = decodeGatewayHttp(core, t);
  if (d === undefined) return NOT_GATEWAY;
  if ("refused" in d) return refuseVia(core, d.refused, layer, d.via);
  return core.check(d.target, layer, { ...opts, via: d.via });
}

/** gatewayScreen: the target to screen (mayAllow) a request with before connecting: the upstream's for a connector call; undefined when the call is refused anyway. */
export function gatewayScreen(core: GuardCore, t: HttpTarget): HttpTarget | undefined {
  const d = decodeGatewayHttp(core, t);
  if (d === undefined) return t;
  return "refused" in d ? undefined : d.target;
}
