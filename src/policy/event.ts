/**
 * The decision event: the ONE record of a policy decision, whoever made it
 * (the in-process guard, the AI gateway) and wherever it goes (a guard's
 * `decision` listeners, an audit file, the observation log that
 * `meshguard policy learn` reads). It is built in one place, `decisionEvent`.
 *
 * Redaction is the default: the event carries no query values, no header
 * values, no MCP argument values and no bodies — only names and sizes —
 * unless a `Reveal` setting asks for them. The one-line `request` rendering
 * is `formatTarget` with the same setting, so the audit line, the
 * PolicyDeniedError message, `explain` and the CLI print a call identically.
 *
 * The JSON Schema of the event (docs/decision-event.schema.json) is generated
 * from `DecisionEventSchema` by `npm run schemas` and checked by a test.
 */

import { analyzeSql, formatAccess } from "./sql.js";
import { randomUUID } from "node:crypto";
import { formatTarget, type Reveal } from "./request.js";
import type { Decision, Effect, Principal, Target } from "./types.js";

/** DECISION_EVENT_VERSION is the `v` of events written now. Version 1 (meshguard 0.0.x audit lines) is still read by `readDecisionEvents`. */
export const DECISION_EVENT_VERSION = 2;

/**
 * Where a decision was made: an interception point of the guard ("fetch",
 * "http", "net", "tls", "ipc", "dial", "mcp", "llm-sdk", "dns" for node:dns
 * look-ups, "udp" for node:dgram sends), the AI gateway ("gateway"), the
 * token issuer ("tokens"), or a tool that replays decisions ("cli").
 */
export type DecisionLayer = "fetch" | "http" | "net" | "tls" | "ipc" | "dial" | "mcp" | "llm-sdk" | "dns" | "udp" | "gateway" | "tokens" | "cli" | "sql";

/** Who made the call, as the tailnet says: the Principal the policy judged, plus what whois adds. */
export interface EventPrincipal extends Principal {
  /** The caller's tailnet address (the gateway's view of a remote caller). */
  ip?: string;
  /** The humans accountable for the caller: the user, or the owners of its tags. */
  owners?: string[];
}

/** What was called, without values that may be secret (see the file comment). */
export type TargetSummary =
  | {
      kind: "http";
      scheme: "http" | "https";
      host: string;
      port: number;
      method: string;
      path: string;
      /** Names of the query parameters, in order of first appearance. */
      queryKeys?: string[];
      /** The whole query string: only with `reveal.query`. */
      query?: string;
      /** Values of the headers named in `reveal.headers`. */
      headers?: Record<string, string>;
      bodySize?: number;
      resolvedIp?: string;
      peer?: { name?: string; tags?: string[] };
    }
  | { kind: "tcp"; tls: boolean; host: string; port: number; tailnet?: boolean; resolvedIp?: string; peer?: { name?: string; tags?: string[] } }
  | {
      kind: "mcp";
      server: string;
      /** The tool called; "" for a resource read or a prompt get (format version 6). */
      tool: string;
      /** The URI of a resource read. */
      resource?: string;
      /** The name of a prompt asked for. */
      prompt?: string;
      /** Names of the tool arguments. */
      argKeys?: string[];
      /** The arguments themselves: only with `reveal.mcpArgs`. */
      args?: Record<string, unknown>;
    }
  | { kind: "llm"; provider: string; model: string; maxTokens?: number }
  | { kind: "dns"; name: string; rrtype?: string; server?: string }
  | { kind: "udp"; host: string; port: number; resolvedIp?: string; peer?: { name?: string; tags?: string[] } }
  | { kind: "token"; audience: string; method: string; location: string }
  | {
      kind: "sql";
      database: string;
      /** What the statement does, one access per entry ("select public.users (id, name)"): names only, never literals. */
      accesses: string[];
      /** The statement's length in characters. */
      length: number;
      /** The statement text itself: only with `reveal.sql`. */
      statement?: string;
    };

/** How an approve rule was settled. */
export interface ApprovalOutcome {
  approved: boolean;
  /** Who answered, when the approver said. */
  by?: string;
  /** How long the call was held, in milliseconds. */
  ms: number;
  reason?: string;
}

/** Tokens and cost of an LLM call (written by the gateway once the response is complete). */
export interface Usage {
  inputTokens?: number;
  outputTokens?: number;
  /** Input tokens served from a provider's prompt cache. */
  cachedTokens?: number;
  /** Cost in US dollars, from the gateway's price table. */
  costUsd?: number;
  /** True when the upstream reported no usage and the gateway estimated it. */
  estimated?: boolean;
}

/** DecisionEvent is one policy decision (format version 2; see DECISION_EVENT_VERSION). */
export interface DecisionEvent {
  v: 2;
  /** Unique id of this event. */
  id: string;
  /** ISO 8601 time of the decision. */
  time: string;
  layer: DecisionLayer;
  /** "enforce": the decision was applied; "observe": recorded only, the call went through. */
  mode: "enforce" | "observe";
  principal: EventPrincipal;
  /** The call as one request line (formatTarget), redacted like `target`. */
  request: string;
  target: TargetSummary;
  /** What the policy said. */
  effect: Effect;
  /** What happened to the call: in observe mode every call goes through ("allow"); an approve rule ends in either. */
  outcome: "allow" | "deny";
  /** id of the rule that decided; absent for the default deny and for refusals of the enforcing layer itself (no policy, evaluator failure). */
  ruleId?: string;
  /** Why, in words a person can act on. */
  reason: string;
  /** Time the decision took, in microseconds (evaluation only; an approval's wait is in approval.ms). */
  latencyUs: number;
  /** For approve rules: how the approval ended. */
  approval?: ApprovalOutcome;
  /** SHA-256 of the policy text that decided (Policy.hash). */
  policyHash?: string;
  /** The request this decision belongs to (the gateway's request id; several decisions may share one). */
  requestId?: string;
  /**
   * The call went to a registered AI gateway and `target` is what the
   * gateway will call upstream (an MCP server's tool, a connector's upstream
   * URL): the agent-side guard judged it as the gateway does.
   */
  via?: { gateway: string; connector?: string };
  /** LLM usage, when the layer knows it (the gateway). */
  usage?: Usage;
  /** What the token issuer did (layer "tokens"): src/tokens/audit.ts. */
  token?: TokenOperation;
}

/** What happened to a token at the issuer. Never the token itself: its jti names it. */
export interface TokenOperation {
  op: "issue" | "exchange" | "revoke";
  /** The token issued, or the one revoked (by token or jti). */
  jti?: string;
  /** Its expiry, epoch seconds (issued tokens). */
  exp?: number;
  /** The task it is for. */
  task?: string;
  /** An exchange: the jti of the token it narrowed. */
  subject?: string;
  /** A revocation of every token of a node: its stable node id, and the time before which they were issued (epoch seconds). */
  sub?: string;
  before?: number;
  /** A revocation: how many revocation-feed entries it added (0: nothing to revoke). */
  revoked?: number;
}

/** What goes into one event besides the request and the decision. */
export interface EventInfo {
  layer: DecisionLayer;
  outcome: "allow" | "deny";
  latencyUs: number;
  mode?: "enforce" | "observe";
  time?: Date;
  approval?: ApprovalOutcome;
  policyHash?: string;
  requestId?: string;
  /** The registered AI gateway the call went through (the guard's decoded calls). */
  via?: { gateway: string; connector?: string };
  usage?: Usage;
  /** What the token issuer did (layer "tokens"). */
  token?: TokenOperation;
  /** Values to keep in the event (default: none). */
  reveal?: Reveal;
  /** Overrides the generated id. */
  id?: string;
}

/** summarizeTarget is the event's view of a target: names and sizes, values only where `reveal` asks. */
export function summarizeTarget(t: Target, reveal?: Reveal): TargetSummary {
  switch (t.kind) {
    case "http": {
      const s: TargetSummary = { kind: "http", scheme: t.scheme, host: t.host, port: t.port, method: t.method, path: t.path };
      if (t.query) {
        if (reveal?.query) s.query = t.query;
        else s.queryKeys = [...new Set(new URLSearchParams(t.query).keys())];
      }
      if (reveal?.headers?.length && t.headers) {
        const h: Record<string, string> = {};
        for (const name of reveal.headers) {
          const v = t.headers[name.toLowerCase()];
          if (v !== undefined) h[name.toLowerCase()] = v;
        }
        if (Object.keys(h).length) s.headers = h;
      }
      if (t.bodySize !== undefined) s.bodySize = t.bodySize;
      if (t.resolvedIp !== undefined) s.resolvedIp = t.resolvedIp;
      const peer = peerOf(t.peer);
      if (peer) s.peer = peer;
      return s;
    }
    case "tcp": {
      const s: TargetSummary = { kind: "tcp", tls: t.tls, host: t.host, port: t.port };
      if (t.tailnet) s.tailnet = true;
      if (t.resolvedIp !== undefined) s.resolvedIp = t.resolvedIp;
      const peer = peerOf(t.peer);
      if (peer) s.peer = peer;
      return s;
    }
    case "mcp": {
      const s: TargetSummary = { kind: "mcp", server: t.server, tool: t.tool };
      if (typeof t.resource === "string") s.resource = t.resource;
      if (typeof t.prompt === "string") s.prompt = t.prompt;
      const keys = Object.keys(t.args ?? {});
      if (keys.length) {
        if (reveal?.mcpArgs) s.args = structuredClone(t.args);
        else s.argKeys = keys;
      }
      return s;
    }
    case "llm": {
      const s: TargetSummary = { kind: "llm", provider: t.provider, model: t.model };
      if (t.maxTokens !== undefined) s.maxTokens = t.maxTokens;
      return s;
    }
    case "dns": {
      const s: TargetSummary = { kind: "dns", name: t.name };
      if (t.rrtype !== undefined) s.rrtype = t.rrtype;
      if (t.server !== undefined) s.server = t.server;
      return s;
    }
    case "udp": {
      const s: TargetSummary = { kind: "udp", host: t.host, port: t.port };
      if (t.resolvedIp !== undefined) s.resolvedIp = t.resolvedIp;
      const peer = peerOf(t.peer);
      if (peer) s.peer = peer;
      return s;
    }
    case "token":
      return { kind: "token", audience: t.audience, method: t.method, location: t.location };
    case "sql": {
      const a = analyzeSql(t.statement);
      const s: TargetSummary = { kind: "sql", database: t.database, accesses: a.ok ? a.accesses.map(formatAccess) : ["(does not parse)"], length: t.statement.length };
      if (reveal?.sql) s.statement = t.statement;
      return s;
    }
  }
}

function peerOf(p: { name?: string; tags?: string[] } | undefined): { name?: string; tags?: string[] } | undefined {
  if (!p || (!p.name && !p.tags?.length)) return undefined;
  const out: { name?: string; tags?: string[] } = {};
  if (p.name) out.name = p.name;
  if (p.tags?.length) out.tags = [...p.tags];
  return out;
}

/**
 * decisionEvent builds the event for one decision. It is the only place an
 * event is made: the guard, the gateway and tests all call it.
 */
export function decisionEvent(principal: EventPrincipal, target: Target, decision: Decision, info: EventInfo): DecisionEvent {
  const ev: DecisionEvent = {
    v: DECISION_EVENT_VERSION,
    id: info.id ?? randomUUID(),
    time: (info.time ?? new Date()).toISOString(),
    layer: info.layer,
    mode: info.mode ?? "enforce",
    principal: copyPrincipal(principal),
    request: formatTarget(target, info.reveal ? { reveal: info.reveal } : undefined),
    target: summarizeTarget(target, info.reveal),
    effect: decision.effect,
    outcome: info.outcome,
    reason: decision.reason,
    latencyUs: Math.round(info.latencyUs * 1000) / 1000,
  };
  if (decision.ruleId !== undefined) ev.ruleId = decision.ruleId;
  if (info.approval) ev.approval = { ...info.approval };
  if (info.policyHash !== undefined) ev.policyHash = info.policyHash;
  if (info.requestId !== undefined) ev.requestId = info.requestId;
  if (info.via !== undefined) ev.via = { ...info.via };
  if (info.usage) ev.usage = { ...info.usage };
  if (info.token) ev.token = { ...info.token };
  return ev;
}

function copyPrincipal(p: EventPrincipal): EventPrincipal {
  const out: EventPrincipal = { tags: [...p.tags] };
  if (p.node !== undefined) out.node = p.node;
  if (p.user !== undefined) out.user = p.user;
  if (p.ip !== undefined) out.ip = p.ip;
  if (p.owners !== undefined) out.owners = [...p.owners];
  return out;
}

/**
 * mustPersist says whether a sink must have an event on disk before the call
 * it records goes on: every denial, every approval and every observe-mode
 * event that the policy would have refused. Plain allows may be batched.
 */
export function mustPersist(ev: Pick<DecisionEvent, "outcome" | "effect">): boolean {
  return ev.outcome === "deny" || ev.effect !== "allow";
}
