/**
 * How the AI gateway maps a call it receives onto the upstream call the
 * policy judges — pure functions shared by the gateway
 * (src/gateway/connectors/http.ts, src/gateway/mcp/) and the agent-side
 * guard (./gateways.ts), so both judge the very same target: one policy,
 * one answer. They live here, below the gateway, because layers import
 * downwards only (DESIGN.md decision 12).
 *
 *  - HTTP connectors: `<prefix>/<connector>/<path>` is `<baseUrl><path>`
 *    upstream: the path checks, the upstream path, the query without the
 *    credential's parameter and the headers that go upstream.
 *  - MCP: `github__create_issue` is tool `create_issue` of server `github`.
 */

import { z } from "zod";

/** A connector prefix ("/v1/connectors"): the gateway's config and a guard's registration of it validate it alike. */
export const CONNECTOR_PREFIX = z
  .string()
  .regex(/^\/[A-Za-z0-9_.-]+(?:\/[A-Za-z0-9_.-]+)*$/, 'must be a path such as "/v1/connectors" (no trailing "/")')
  .refine((p) => !p.split("/").some((s) => s === "." || s === ".."), 'must not contain "." or ".." segments');

/** Headers that describe one hop (RFC 9110 §7.6.1) or that the gateway sets itself. */
export const HOP_HEADERS = new Set(["connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "host", "content-length", "expect", "accept-encoding", "http2-settings"]);

/** Headers that carry a client's credentials: dropped unless the provider passes the client's key through. */
export const CREDENTIAL_HEADERS = new Set(["authorization", "x-api-key", "x-goog-api-key", "api-key"]);

/** Headers never sent upstream, logged or shown to a hook, whatever the provider says. */
export const NEVER_FORWARDED = new Set(["cookie", "proxy-authorization"]);

// ---- MCP names ----

/** MCP server names at the gateway: lower-case letters, digits and single "-" / "_" — never "__", the separator of namespaced names. */
export const MCP_SERVER_NAME_RE = /^[a-z0-9](?:[a-z0-9-]|_(?!_))*$/;

export const SEPARATOR = "__";

export function namespaced(server: string, name: string): string {
  return `${server}${SEPARATOR}${name}`;
}

/** splitName splits a namespaced name at its first "__" (server names never hold one); undefined when it does not split. */
export function splitName(full: string): { server: string; name: string } | undefined {
  const i = full.indexOf(SEPARATOR);
  if (i <= 0 || i + SEPARATOR.length >= full.length) return undefined;
  return { server: full.slice(0, i), name: full.slice(i + SEPARATOR.length) };
}

// ---- HTTP connectors ----

/** Connector names: a path segment and a word in logs and policy ("github", "crm-eu"). */
export const CONNECTOR_NAME_RE = /^[a-z0-9](?:[a-z0-9_-]*[a-z0-9])?$/;

/** A refused path: `why` is what the client is told. */
export function pathRefusal(rest: string): string | undefined {
  if (/%2f|%5c/i.test(rest)) return "an encoded slash or backslash (%2F, %5C) in the path is refused: the upstream would decode it into a path other than the one the policy judged";
  if (rest.includes("\\")) return "a backslash in the path is refused: some upstreams treat it as a slash";
  for (const seg of rest.split("/")) {
    if (/^(?:\.|%2e){1,2}$/i.test(seg)) return `a "${seg}" segment in the path is refused: it would climb out of the path the policy judges (send the path already resolved)`;
  }
  return undefined;
}

/** upstreamPath is `<base path><rest>` ("/" when both are empty). `basePath` has no trailing "/". */
export function upstreamPath(basePath: string, rest: string): string {
  return basePath + (rest === "" ? (basePath === "" ? "/" : "") : rest);
}

/** connectorOfPath splits `<prefix>/<name><rest>`: undefined when the path is not below `prefix` with a name segment. */
export function connectorOfPath(path: string, prefix: string): { name: string; rest: string } | undefined {
  if (path.length <= prefix.length + 1 || !path.startsWith(prefix) || path.charCodeAt(prefix.length) !== 0x2f) return undefined;
  const end = path.indexOf("/", prefix.length + 1);
  return { name: path.slice(prefix.length + 1, end < 0 ? undefined : end), rest: end < 0 ? "" : path.slice(end) };
}

/**
 * forwardedHeaders: the caller's headers that go upstream (lower-case names):
 * no hop headers, no cookie, none of the caller's credentials, none the
 * connector's credential sets (`drop`), no `x-meshguard-*`; the answer is
 * asked for uncompressed; a declared Content-Length is kept.
 */
export function forwardedHeaders(h: Record<string, string | string[] | undefined>, drop: ReadonlySet<string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k in h) {
    if (HOP_HEADERS.has(k) || NEVER_FORWARDED.has(k) || CREDENTIAL_HEADERS.has(k) || drop.has(k) || k.startsWith("x-meshguard-")) continue;
    const v = h[k];
    if (v !== undefined) out[k] = Array.isArray(v) ? v.join(", ") : v;
  }
  // The answer is searched for echoed credentials: it must come uncompressed.
  out["accept-encoding"] = "identity";
  const len = h["content-length"];
  if (len !== undefined) out["content-length"] = Array.isArray(len) ? len.join(", ") : len;
  return out;
}

/** dropParams removes parameters by (decoded) name from a raw query, keeping the rest byte for byte. */
export function dropParams(query: string, names: ReadonlySet<string>): string {
  if (query === "" || names.size === 0) return query;
  return query
    .split("&")
    .filter((kv) => {
      const n = kv.split("=", 1)[0]!;
      let dn = n;
      try {
        dn = decodeURIComponent(n.replace(/\+/g, " "));
      } catch {
        /* a malformed name is kept as written */
      }
      return !names.has(dn);
    })
    .join("&");
}

/** lowerHeaders copies a header record with lower-case names. */
export function lowerHeaders(h: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k in h) out[k.toLowerCase()] = h[k]!;
  return out;
}

/** credentialNames: the header and query parameter names a connector's `auth` sets (a caller's own of the same name never goes upstream). */
export function credentialNames(auth: { header?: string; query?: string }): { headers: Set<string>; query: Set<string> } {
  return {
    headers: new Set([...(auth.header ? [auth.header.toLowerCase()] : [])]),
    query: new Set([...(auth.query ? [auth.query] : [])]),
  };
}

// ---- MCP resources ----

/**
 * The `_meta` key under which the gateway's resources/list names the server
 * each resource belongs to. Resources keep their own URIs at the gateway
 * (not namespaced), and a resources/read goes to the server that listed the
 * URI in that session; the agent's guard learns the same from this key
 * (src/guard/mcp-resources.ts). MCP `_meta` key prefixes are reverse DNS
 * names followed by "/" ("modelcontextprotocol" and "mcp" as the second
 * label are reserved): meshguard.dev is "dev.meshguard/".
 */
export const RESOURCE_SERVER_META = "dev.meshguard/server";

/**
 * markResourceServers marks each listed resource with its server: `ownerOf`
 * gives the server of a URI. Upstream `_meta` entries are kept, except this
 * key, which is always the gateway's own (an upstream cannot name another
 * server).
 */
export function markResourceServers<T extends { uri: string; _meta?: Record<string, unknown> | undefined }>(resources: T[], ownerOf: (uri: string) => string | undefined): T[] {
  return resources.map((r) => {
    const server = ownerOf(r.uri);
    const meta: Record<string, unknown> = { ...(r._meta ?? {}) };
    delete meta[RESOURCE_SERVER_META];
    if (server !== undefined) meta[RESOURCE_SERVER_META] = server;
    return { ...r, _meta: meta };
  });
}
