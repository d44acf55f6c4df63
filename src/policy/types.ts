/**
 * The contract between the policy engine (parse, compile, evaluate) and the
 * enforcing layer (the guard). Both sides import only these types.
 */

/** Who is making a call: the agent's tailnet identity. */
export interface Principal {
  /** MagicDNS name or hostname of the node, e.g. "research-agent". */
  node?: string;
  /** Tags of the node, e.g. ["tag:research-agent"]. Empty for a user-owned node. */
  tags: string[];
  /** Login of the owning user for a user-owned node, e.g. "alice@example.com". */
  user?: string;
}

/**
 * The tailnet peer a connection goes to, when the guard knows it (a MeshNode
 * dial, or a host that resolved to a tailnet address). Host patterns such as
 * `tag:db` match on it.
 */
export interface PeerInfo {
  /** The peer's node name (MagicDNS short name or FQDN). */
  name?: string;
  /** The peer's tags, e.g. ["tag:db"]. */
  tags?: string[];
}

/** An outbound HTTP(S) request. */
export interface HttpTarget {
  kind: "http";
  scheme: "http" | "https";
  host: string; // lower-case, no trailing dot; IP literals as written (IPv6 without brackets)
  port: number;
  method: string; // upper-case
  path: string; // without query
  query: string; // without "?", "" if none
  headers: Record<string, string>; // lower-case names
  /** Declared or buffered body size in bytes; undefined when unknown (streamed). */
  bodySize?: number;
  /** Parsed JSON body when the guard buffered it (needed by LLM rules). */
  body?: unknown;
  /** The IP the host resolved to, when the guard resolved it (anti-rebinding). */
  resolvedIp?: string;
  /** The tailnet peer, when the host is one. */
  peer?: PeerInfo;
}

/** A raw TCP or TLS connection (database drivers, tailnet dials). */
export interface TcpTarget {
  kind: "tcp";
  tls: boolean;
  host: string;
  port: number;
  /** True for MeshNode.dial (the tailnet), false for the host network. */
  tailnet?: boolean;
  resolvedIp?: string;
  /** The tailnet peer, when the host is one. */
  peer?: PeerInfo;
}

/**
 * A tool call made through an MCP client; from format version 6 also a
 * resource read or a prompt get (the AI gateway's MCP endpoint judges all
 * three). Exactly one of a non-empty `tool`, `resource` or `prompt` names
 * what is asked for: a resource read or prompt get has `tool: ""`.
 */
export interface McpTarget {
  kind: "mcp";
  server: string; // the name the app gave the server in the guard (never its own initialize name), else URL host or command basename
  tool: string;
  /** Tool arguments; a prompt's arguments for a prompt get; `{}` for a resource read. */
  args: Record<string, unknown>;
  /** The URI of a resource read (`resources/read`), as the client sent it. */
  resource?: string;
  /** The name of a prompt asked for (`prompts/get`). */
  prompt?: string;
}

/** An LLM API call, recognised by provider base URL. */
export interface LlmTarget {
  kind: "llm";
  provider: string; // "openai" | "anthropic" | ... | base-URL host
  model: string;
  maxTokens?: number;
}

/**
 * A DNS look-up made by the process itself (`node:dns`): `dns.lookup` (the
 * system resolver, addresses only) or a query of one record type
 * (`resolve*`, `reverse`, a `dns.Resolver`). The look-ups a connection makes
 * for its own host are part of that connection's `tcp`/`http`/`udp`
 * decision, not `dns` targets.
 */
export interface DnsTarget {
  kind: "dns";
  /** The name looked up: lower-case, no trailing dot. A reverse look-up names the address's in-addr.arpa / ip6.arpa name. */
  name: string;
  /**
   * The record type asked for, upper-case ("A", "AAAA", "TXT", "SRV", "PTR", ...).
   * Absent: an address look-up (`dns.lookup` of any family), which asks for A and AAAA.
   */
  rrtype?: string;
  /**
   * The DNS server the query goes to when it is not one of the system's
   * (a Resolver with its own servers): "192.0.2.53", "127.0.0.1:5353",
   * "2001:db8::53", "[2001:db8::53]:5353" (port 53 is left out). Absent: the
   * system's resolver.
   */
  server?: string;
}

/** A UDP datagram (`node:dgram`): each send, to the destination it goes to. */
export interface UdpTarget {
  kind: "udp";
  host: string; // as TcpTarget.host
  port: number;
  /** The address a name resolved to (the datagram goes there and nowhere else). */
  resolvedIp?: string;
  /** The tailnet peer, when the host is one. */
  peer?: PeerInfo;
}

/**
 * A request to the token issuer for one action: may the caller get a token
 * for `audience` that lets it call `method` on `location`? A token request
 * with several actions is one decision per (method, location) pair.
 */
export interface TokenTarget {
  kind: "token";
  /** Canonical audience: an origin ("http://billing") or a name. */
  audience: string;
  /** Upper-case method, or "*" for any. */
  method: string;
  /** A location glob, "scheme://host[:port]/path-glob" (src/policy/location.ts). */
  location: string;
}

/**
 * A database statement (format version 5, `sql` rules): the text as the
 * client sends it, one statement or several. The engine parses it
 * (./sql.ts) and decides every operation on every object it finds; any
 * denied access denies the whole text.
 */
export interface SqlTarget {
  kind: "sql";
  /** The database the connection is to. */
  database: string;
  /** The statement text, as sent (parameters of the extended protocol are not part of it). */
  statement: string;
  /**
   * True where `rows` filters are enforced (the database gateway, which
   * applies them as row-security policies). Absent or false (the in-process
   * guard, whose session cannot be filtered): a rule with `rows` does not
   * allow.
   */
  rowFilters?: boolean;
}

/** @internal One access of a SqlTarget's statement, as `sql` rules match it. */
export interface SqlAccessTarget {
  kind: "sql-access";
  database: string;
  operation: string;
  object: string;
  columns?: readonly string[];
  dangerous?: boolean;
  rowFilters?: boolean;
}

export type Target = HttpTarget | TcpTarget | McpTarget | LlmTarget | DnsTarget | UdpTarget | TokenTarget | SqlTarget;

/** One decision request. `now` comes from the engine's injectable clock when absent. */
export interface DecisionRequest {
  principal: Principal;
  target: Target;
  now?: Date;
}

export type Effect = "allow" | "deny" | "approve";

/** Decision is what the evaluator returns; it never throws for a deny. */
export interface Decision {
  effect: Effect;
  /** id of the rule that decided; undefined for the default deny. */
  ruleId?: string;
  /** Why, in words a person can act on. */
  reason: string;
}
