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

/** A tool call made through an MCP client. */
export interface McpTarget {
  kind: "mcp";
  server: string; // the name the app gave the server in the guard (never its own initialize name), else URL host or command basename
  tool: string;
  args: Record<string, unknown>;
}

/** An LLM API call, recognised by provider base URL. */
export interface LlmTarget {
  kind: "llm";
  provider: string; // "openai" | "anthropic" | ... | base-URL host
  model: string;
  maxTokens?: number;
}

export type Target = HttpTarget | TcpTarget | McpTarget | LlmTarget;

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
