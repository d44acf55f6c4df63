// Types of bench/lib/mcp-upstream.mjs for the TypeScript tests (see that file's header).

export interface McpUpstream {
  /** The streamable-HTTP endpoint, http://127.0.0.1:PORT/mcp. */
  url: string;
  /** Every get_issue / create_issue call that ran, in order. */
  ran: Array<{ tool: string; repo: string; title?: string }>;
  /** With `authorize`: every request's credential, whether it was accepted, and its method. */
  credentials: Array<{ credential: string; accepted: boolean; method: string }>;
  /** Open sessions by id. */
  sessions: Map<string, unknown>;
  /** Registers a tool on every session, present and future: each session's client is told its tool list changed. */
  addTool(name: string): void;
  close(): Promise<void>;
}

export function startMcpUpstream(opts?: {
  host?: string;
  port?: number;
  /** Requires a credential (bearer token, X-Api-Key, or ?api_key=): a request whose credential this refuses gets 401. */
  authorize?: (credential: string) => boolean | Promise<boolean>;
  /** The resources every session lists (default: file:///handbook/intro.md and file:///handbook/secret.md). */
  resources?: Array<{ name: string; uri: string; text: string }>;
}): Promise<McpUpstream>;
