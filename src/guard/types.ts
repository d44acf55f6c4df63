/**
 * The guard's public option and event types. The policy side of the
 * contract (Principal, Target, Decision) is in ../policy/types.ts.
 */

import type { MeshguardError } from "../errors.js";
import type { AuditSink } from "../policy/audit.js";
import type { DecisionEvent, DecisionLayer, TargetSummary } from "../policy/event.js";
import type { Reveal } from "../policy/request.js";
import type { Decision, DecisionRequest, Principal } from "../policy/types.js";
import type { GatewaySpec } from "./gateways.js";
import type { McpServerSpec } from "./mcp.js";

/**
 * Evaluator is all the guard needs from a policy: a decision per request
 * that never throws (a loaded Policy from `loadPolicy` is one). The guard
 * still treats a throw or a malformed Decision as deny.
 */
export interface Evaluator {
  evaluate(req: DecisionRequest): Decision;
  /**
   * Optional screen (a loaded Policy has it): false when no rule could allow
   * a call to the target's host and port whatever else the call carries.
   * With it the guard denies such a call before connecting or looking the
   * name up, and looks a name up only when some rule could allow it; without
   * it a name is decided before it is looked up (then without its address).
   */
  mayAllow?(req: DecisionRequest): boolean;
}

export type GuardMode = "enforce" | "observe";

/** Where in the process a call was intercepted (the guard's values of DecisionEvent.layer). */
export type GuardLayer = Exclude<DecisionLayer, "gateway" | "tokens" | "cli">;

/** A policy a reloader applied to the guard (the `reload` event). */
export interface ReloadEvent {
  /** The file or policy server URL it came from. */
  source: string;
  /** SHA-256 of the policy text now in force. */
  hash: string;
  /** The bundle version, for signed bundles. */
  version?: number;
}

/**
 * GuardEvents types the events of a GuardHandle (EventEmitter<GuardEvents>),
 * as MeshNodeEvents does for MeshNode.
 */
export interface GuardEvents {
  /** Every decision (allows and denials; listen only when needed: building the event costs a little). */
  decision: [ev: DecisionEvent];
  /** Something went wrong that did not stop the guard (an audit sink failed, the own tags could not be read, ...). */
  warning: [err: Error];
  /** A reloader (watchPolicyFile, pollPolicyServer) applied a new policy. */
  reload: [ev: ReloadEvent];
  /** A reload failed; the last good policy stays in force (none: everything is denied). */
  reloadError: [err: MeshguardError];
}

/** What an approver is asked about. */
export interface ApprovalRequest {
  /** Unique id of this approval request. */
  id: string;
  principal: Principal;
  /** The call as one request line, redacted like an audit line (see GuardOptions.reveal). */
  request: string;
  /** The call, redacted like an audit event's target. */
  target: TargetSummary;
  /** The approve rule that holds the call. */
  ruleId?: string;
  reason: string;
  /** ISO time the call was held. */
  requestedAt: string;
  /** The approver has until then (ISO time); no answer means deny. */
  deadline: string;
}

/** An approver's answer. `true`/`false` is short for `{ approved }`. */
export type ApprovalAnswer = boolean | { approved: boolean; reason?: string; by?: string };

export interface ApprovalOptions {
  /** Called for every call held by an approve rule. */
  callback?: (req: ApprovalRequest, signal: AbortSignal) => ApprovalAnswer | Promise<ApprovalAnswer>;
  /**
   * A URL to POST the ApprovalRequest to (JSON). It answers 2xx with
   * `{"approved": true|false, "reason"?: "...", "by"?: "..."}`. The POST
   * itself is not subject to the guard.
   */
  webhook?: string;
  /** Extra headers for the webhook POST (e.g. an authorization token). */
  headers?: Record<string, string>;
  /** How long to hold a call waiting for an answer (default 60 s); then deny. */
  timeoutMs?: number;
}

export interface GuardOptions {
  /** The policy: a loaded Policy or any Evaluator. Absent: every call is denied (fail closed) until `setPolicy` or a reloader sets one. */
  policy?: Evaluator;
  /** Who this process is: a MeshNode (tags read with whois, see GuardHandle.ready) or a Principal. */
  identity: Principal | { hostname: string; ips: readonly string[]; whois(addr: string): Promise<{ node: { tags: string[] }; user: { login: string }; tagged: boolean }> };
  /** "enforce" (default) refuses denied calls; "observe" lets every call through and records it (input of `meshguard policy learn`). */
  mode?: GuardMode;
  /**
   * The policy engine's audit sink (e.g. `jsonLinesSink("audit.jsonl")` from
   * meshguard/policy): every decision as a DecisionEvent — denials, approvals
   * and observe-mode events always, allows sampled by `sampleAllows`. The
   * observe-mode log is the input of `meshguard policy learn`.
   */
  audit?: AuditSink;
  /** Fraction of allowed decisions sent to `audit` (0..1, default 1). Denials and observe-mode events are always sent. */
  sampleAllows?: number;
  /**
   * Values that decision events and approval requests may show. Default:
   * none — query values, header values and MCP argument values are
   * redacted; bodies are never shown. Credential headers
   * (`authorization`, `proxy-authorization`, `x-api-key`, `cookie`,
   * `set-cookie`) may not be named in `headers` (MESHGUARD_INVALID_OPTIONS).
   * (A PolicyDeniedError's message is always redacted; its `target` holds
   * the call as made.)
   */
  reveal?: Reveal;
  /** How approve rules reach a human. Without it an approve rule denies. */
  approvals?: ApprovalOptions;
  /** LLM call recognition. */
  llm?: {
    /** Extra provider hosts: "host" or "host:port" → provider name, e.g. { "llm.internal:8080": "openai" }. */
    providers?: Record<string, string>;
  };
  /**
   * MCP server names for `mcp` rules' `server`. The name of a server is
   * never what it says about itself (its initialize result); it is the name
   * given here for the transport's endpoint: a URL (`"https://mcp.github.example/mcp"`:
   * that origin, that path and below; a URL ending in `/` or without a path:
   * the whole origin) or a stdio command (`{ command: "gh-mcp", args?: [...] }`:
   * the command exactly as spawned, and the arguments when given). Unnamed
   * servers are named by the URL's host (`host:port` off the default port)
   * or the command's basename; see also GuardHandle.registerMcpServer.
   */
  mcp?: {
    servers?: Record<string, McpServerSpec>;
  };
  /**
   * AI gateways (`meshguard gateway`) this process calls. A call to a
   * registered gateway's MCP endpoint or connector prefix is judged as what
   * the gateway will do with it, with the same policy — the `mcp` target
   * `github`/`create_issue` for a `tools/call` of `github__create_issue`,
   * the `http` target on the connector's upstream URL for
   * `<gateway>/v1/connectors/github/...` — so both layers give one answer
   * (docs/guard.md#calls-through-the-ai-gateway). `gatewayLayout(url)` reads
   * a gateway's layout from the gateway itself; see also
   * GuardHandle.registerGateway.
   */
  gateways?: GatewaySpec[];
  /** The largest request body the guard buffers to read an LLM call's model (default 8 MiB); larger or unknown-size bodies fail closed. */
  maxBodyBytes?: number;
  /**
   * Unix socket paths (exact, or a prefix ending in "/") that may be
   * connected to. Default: none — a unix socket connect is denied.
   */
  allowIpc?: string[];
  /**
   * A host name that resolves to a loopback, link-local (cloud metadata) or
   * unspecified address is refused unless this returns true. `localhost`
   * (and `*.localhost`) may resolve to loopback addresses only, whatever
   * this says. The connection always goes to the address checked.
   */
  allowResolved?: (host: string, ip: string) => boolean;
  /**
   * The guard's resolver, for service discovery: every address of a host
   * name, best first (`family` 4 or 6 asks for one family, 0 for either).
   * Used for every guarded connection by name that brings no `lookup` of
   * its own; its answer is judged (the request carries it as `resolvedIp`)
   * and the connection goes to the first address and nowhere else.
   * Default: the system resolver (getaddrinfo), as Node uses.
   */
  resolver?: (hostname: string, opts: { family: 0 | 4 | 6 }) => Promise<ReadonlyArray<{ address: string; family?: number }>> | ReadonlyArray<{ address: string; family?: number }>;
  /** Which interception points to install (default: all). `worker`: worker threads started while the guard is installed are guarded too (docs/guard.md); `dns`: node:dns look-ups; `dgram`: UDP sends. */
  intercept?: Partial<Record<"fetch" | "http" | "net" | "dial" | "sdk" | "worker" | "dns" | "dgram", boolean>>;

  /** Directories from which to find the official SDKs to instrument (default: the working directory and the main script's). */
  sdkSearchPaths?: string[];
}
