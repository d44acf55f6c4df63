/**
 * Requests written as one line of text, used by a policy's `tests`, the CLI
 * and the audit log (so an observed call reads the same everywhere):
 *
 *   GET https://api.example.com/v2/users/7?page=2
 *   tcp db.internal:5432            tls db.internal:5432      (append " tailnet" for a MeshNode dial)
 *   mcp github create_issue {"repo":"acme/app"}
 *   llm openai/gpt-4o 4096          (the number is max tokens, optional)
 *   dns api.example.com             dns _x._tcp.example.com SRV @127.0.0.1:5353
 *                                   (record type optional: none is an address look-up, dns.lookup;
 *                                    "@server" only for a server other than the system's)
 *   udp metrics.internal:8125
 *   token http://billing GET https://billing/v2/transactions/*
 *                                   (may the caller get a token for this audience
 *                                    granting this method, or "*", on this location glob)
 *
 * formatTarget writes a Target back in the same syntax.
 */

import { requestError } from "./errors.js";
import { normalizeHost } from "./hosts.js";
import { formatServer, parseServer, RRTYPES } from "./dns.js";
import { parseLocation } from "./location.js";
import { METHOD_RE, normalizeAudience } from "./token-actions.js";
import { analyzeSql, formatAccess } from "./sql.js";
import type { DnsTarget, HttpTarget, LlmTarget, McpTarget, SqlAccessTarget, SqlTarget, Target, TcpTarget, TokenTarget, UdpTarget } from "./types.js";

/** Extra facts a one-line request cannot carry. */
export interface RequestExtras {
  headers?: Record<string, string>;
  bodySize?: number;
  body?: unknown;
  peerTags?: string[];
}

/** parseRequest reads one request line into a Target (throws MESHGUARD_POLICY_REQUEST_INVALID). */
export function parseRequest(text: string, extras: RequestExtras = {}): Target {
  const line = text.trim();
  const sp = line.indexOf(" ");
  const word = (sp < 0 ? line : line.slice(0, sp)).toLowerCase();
  const rest = sp < 0 ? "" : line.slice(sp + 1).trim();
  let t: Target;
  if (word === "tcp" || word === "tls") t = parseTcp(text, word === "tls", rest);
  else if (word === "mcp") t = parseMcp(text, rest);
  else if (word === "mcp-resource") t = parseMcpResource(text, rest);
  else if (word === "mcp-prompt") t = parseMcp(text, rest, "prompt");
  else if (word === "llm") t = parseLlm(text, rest);
  else if (word === "dns") t = parseDns(text, rest);
  else if (word === "udp") t = parseUdp(text, rest);
  else if (word === "token") t = parseToken(text, rest);
  else if (word === "sql") t = parseSql(text, rest);
  else if (/^https?:\/\//i.test(line)) t = parseHttp(text, "GET", line);
  else if (/^[A-Za-z]+$/.test(word) && rest) t = parseHttp(text, word.toUpperCase(), rest);
  else throw requestError(text, "it does not start with an HTTP method, a URL, tcp, tls, mcp, mcp-resource, mcp-prompt, llm, dns, udp, token or sql");
  if (extras.peerTags && (t.kind === "http" || t.kind === "tcp" || t.kind === "udp")) t.peer = { tags: extras.peerTags };
  if (t.kind === "http") {
    if (extras.headers) for (const [k, v] of Object.entries(extras.headers)) t.headers[k.toLowerCase()] = v;
    if (extras.bodySize !== undefined) t.bodySize = extras.bodySize;
    if (extras.body !== undefined) t.body = extras.body;
  }
  return t;
}

function parseHttp(text: string, method: string, url: string): HttpTarget {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw requestError(text, `${JSON.stringify(url)} is not a URL`);
  }
  if (u.protocol !== "http:" && u.protocol !== "https:") throw requestError(text, "only http:// and https:// URLs are HTTP requests");
  const scheme = u.protocol === "https:" ? "https" : "http";
  return {
    kind: "http",
    scheme,
    host: normalizeHost(u.hostname),
    port: u.port ? Number(u.port) : scheme === "https" ? 443 : 80,
    method,
    path: u.pathname || "/",
    query: u.search.startsWith("?") ? u.search.slice(1) : "",
    headers: {},
  };
}

/** hostPort reads "host:port" ("[v6]:port"), or undefined. */
function hostPort(addr: string | undefined): { host: string; port: number } | undefined {
  const m = addr ? /^(?:\[([^\]]+)\]|([^:\s]+)):(\d{1,5})$/.exec(addr) : null;
  if (!m || Number(m[3]) < 1 || Number(m[3]) > 65535) return undefined;
  return { host: normalizeHost(m[1] ?? m[2]!), port: Number(m[3]) };
}

function parseTcp(text: string, tls: boolean, rest: string): TcpTarget {
  const [addr, flag, extra] = rest.split(/\s+/);
  const hp = hostPort(addr);
  if (!hp) throw requestError(text, 'expected "host:port" (IPv6 as "[::1]:5432")');
  if ((flag !== undefined && flag !== "tailnet") || extra !== undefined) throw requestError(text, 'only "tailnet" may follow host:port');
  const t: TcpTarget = { kind: "tcp", tls, host: hp.host, port: hp.port };
  if (flag === "tailnet") t.tailnet = true;
  return t;
}

function parseUdp(text: string, rest: string): UdpTarget {
  const [addr, extra] = rest.split(/\s+/);
  const hp = hostPort(addr);
  if (!hp || extra !== undefined) throw requestError(text, 'expected "udp host:port" (IPv6 as "[::1]:8125")');
  return { kind: "udp", host: hp.host, port: hp.port };
}

const DNS_USAGE = 'expected "dns NAME [RRTYPE] [@SERVER]", e.g. "dns api.example.com", "dns example.com TXT @127.0.0.1:5353"';

function parseDns(text: string, rest: string): DnsTarget {
  const words = rest.split(/\s+/).filter(Boolean);
  const name = words.shift();
  if (name === undefined || name.startsWith("@")) throw requestError(text, DNS_USAGE);
  const t: DnsTarget = { kind: "dns", name: normalizeHost(name) };
  if (words.length && !words[0]!.startsWith("@")) {
    const rr = words.shift()!.toUpperCase();
    if (!(RRTYPES as readonly string[]).includes(rr)) throw requestError(text, `"${rr}" is not a record type (${RRTYPES.join(", ")})`);
    t.rrtype = rr;
  }
  if (words.length) {
    const at = words.shift()!;
    const server = at.startsWith("@") ? parseServer(at.slice(1)) : undefined;
    if (!server) throw requestError(text, `${DNS_USAGE}; a server is an address with an optional port: "@192.0.2.53", "@127.0.0.1:5353", "@[::1]:5353"`);
    t.server = formatServer(server.ip, server.port);
  }
  if (words.length) throw requestError(text, DNS_USAGE);
  return t;
}

function parseMcp(text: string, rest: string, item: "tool" | "prompt" = "tool"): McpTarget {
  const m = /^(\S+)\s+(\S+)(?:\s+([\s\S]+))?$/.exec(rest);
  if (!m) throw requestError(text, item === "tool" ? 'expected "mcp SERVER TOOL [{json arguments}]"' : 'expected "mcp-prompt SERVER PROMPT [{json arguments}]"');
  let args: Record<string, unknown> = {};
  if (m[3] !== undefined) {
    try {
      args = JSON.parse(m[3]) as Record<string, unknown>;
    } catch (err) {
      throw requestError(text, `the arguments are not JSON: ${(err as Error).message}`);
    }
    if (typeof args !== "object" || args === null || Array.isArray(args)) throw requestError(text, "the arguments must be a JSON object");
  }
  return item === "tool" ? { kind: "mcp", server: m[1]!, tool: m[2]!, args } : { kind: "mcp", server: m[1]!, tool: "", args, prompt: m[2]! };
}

function parseMcpResource(text: string, rest: string): McpTarget {
  const m = /^(\S+)\s+(\S+)$/.exec(rest);
  if (!m) throw requestError(text, 'expected "mcp-resource SERVER URI"');
  return { kind: "mcp", server: m[1]!, tool: "", args: {}, resource: m[2]! };
}

function parseLlm(text: string, rest: string): LlmTarget {
  const m = /^([^/\s]+)\/(\S+)(?:\s+(\d+))?$/.exec(rest);
  if (!m) throw requestError(text, 'expected "llm PROVIDER/MODEL [MAX_TOKENS]", e.g. "llm openai/gpt-4o 4096"');
  const t: LlmTarget = { kind: "llm", provider: m[1]!, model: m[2]! };
  if (m[3] !== undefined) t.maxTokens = Number(m[3]);
  return t;
}

const TOKEN_USAGE = 'expected "token AUDIENCE METHOD LOCATION", e.g. "token http://billing GET https://billing/v2/transactions/*"';

function parseToken(text: string, rest: string): TokenTarget {
  const words = rest.split(/\s+/).filter(Boolean);
  if (words.length !== 3) throw requestError(text, TOKEN_USAGE);
  const [aud, method, loc] = words as [string, string, string];
  const audience = normalizeAudience(aud);
  if (typeof audience !== "string") throw requestError(text, audience.error);
  const m = method.toUpperCase();
  if (!METHOD_RE.test(m)) throw requestError(text, `"${method}" is not an HTTP method (or "*"); ${TOKEN_USAGE}`);
  const l = parseLocation(loc);
  if (typeof l === "string") throw requestError(text, l);
  return { kind: "token", audience, method: m, location: l.text };
}

function parseSql(text: string, rest: string): SqlTarget {
  const m = /^(\S+)\s+([\s\S]+)$/.exec(rest);
  if (!m) throw requestError(text, 'expected "sql DATABASE STATEMENT", e.g. "sql appdb SELECT id FROM public.users"');
  return { kind: "sql", database: m[1]!, statement: m[2]! };
}

/**
 * Reveal names the values a rendering or an event may carry. By default none:
 * query values, header values and MCP argument values may hold secrets.
 */
export interface Reveal {
  /** Keep query values (default: each value is shown as REDACTED). */
  query?: boolean;
  /** Header names whose values events keep (request lines never show headers). */
  headers?: string[];
  /** Keep MCP tool-call argument values (default: each value is shown as REDACTED). */
  mcpArgs?: boolean;
  /** Keep SQL statement texts, literals included (default: a statement is shown as the accesses it makes). */
  sql?: boolean;
}

/** REDACTED stands in for a value a rendering leaves out. */
export const REDACTED = "<redacted>";

/**
 * formatTarget writes a Target as a request line — the one rendering of a
 * call everywhere (errors, audit lines, explain, the CLI). Query and MCP
 * argument values are replaced by REDACTED unless `reveal` keeps them; with
 * `reveal: { query: true, mcpArgs: true }` parseRequest reads the line back
 * to the same target.
 */
export function formatTarget(t: Target, opts?: { reveal?: Reveal }): string {
  const reveal = opts?.reveal;
  switch (t.kind) {
    case "http": {
      const host = t.host.includes(":") ? `[${t.host}]` : t.host;
      const port = t.port === (t.scheme === "https" ? 443 : 80) ? "" : `:${t.port}`;
      const query = t.query ? `?${reveal?.query ? t.query : redactQuery(t.query)}` : "";
      return `${t.method} ${t.scheme}://${host}${port}${t.path}${query}`;
    }
    case "tcp": {
      const host = t.host.includes(":") ? `[${t.host}]` : t.host;
      return `${t.tls ? "tls" : "tcp"} ${host}:${t.port}${t.tailnet ? " tailnet" : ""}`;
    }
    case "mcp": {
      if (typeof t.resource === "string") return `mcp-resource ${t.server} ${t.resource}`;
      const head = typeof t.prompt === "string" ? `mcp-prompt ${t.server} ${t.prompt}` : `mcp ${t.server} ${t.tool}`;
      const args = t.args ?? {};
      const keys = Object.keys(args);
      if (!keys.length) return head;
      return `${head} ${JSON.stringify(reveal?.mcpArgs ? args : Object.fromEntries(keys.map((k) => [k, REDACTED])))}`;
    }
    case "llm":
      return `llm ${t.provider}/${t.model}${t.maxTokens !== undefined ? ` ${t.maxTokens}` : ""}`;
    case "dns":
      return `dns ${t.name}${t.rrtype !== undefined ? ` ${t.rrtype}` : ""}${t.server !== undefined ? ` @${t.server}` : ""}`;
    case "udp": {
      const host = t.host.includes(":") ? `[${t.host}]` : t.host;
      return `udp ${host}:${t.port}`;
    }
    case "token":
      return `token ${t.audience} ${t.method} ${t.location}`;
    case "sql":
      return `sql ${t.database} ${reveal?.sql ? t.statement : redactSql(t.statement)}`;
    case "sql-access" as string: {
      const a = t as unknown as SqlAccessTarget;
      return `sql ${a.database} ${formatAccess({ operation: a.operation as never, object: a.object, ...(a.columns ? { columns: [...a.columns] } : {}) })}`;
    }
    default:
      return `unknown target ${JSON.stringify((t as { kind?: unknown }).kind)}`;
  }
}

/** redactSql renders a statement as what it does ("[select public.users (id); call public.f]"), never its literals. */
export function redactSql(statement: string): string {
  const a = analyzeSql(statement);
  if (!a.ok) return `[a statement that does not parse, ${statement.length} characters]`;
  return `[${a.accesses.map(formatAccess).join("; ") || "transaction control"}]`;
}

/** redactQuery keeps the parameter names of a query string and replaces every value. */
function redactQuery(q: string): string {
  return q
    .split("&")
    .map((part) => {
      const eq = part.indexOf("=");
      return eq < 0 ? part : `${part.slice(0, eq)}=${REDACTED}`;
    })
    .join("&");
}
