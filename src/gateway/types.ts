/**
 * The gateway's contract: the types its parts (server, providers, quotas,
 * store, logs, hooks) share. Each part is a file or folder of its own and
 * talks to the others only through these shapes, so each can be tested on
 * its own and the store can gain a second engine (PostgreSQL, issue 9)
 * without touching the request path.
 *
 * Units: money is in US dollars as a JS number (prices per million tokens),
 * times are epoch milliseconds, durations milliseconds.
 */

import type { Principal } from "../policy/types.js";
import type { OAuthTokenStore } from "./credentials/token-store.js";

/** The API formats the gateway proxies, with no translation between them. */
export type ApiFormat = "openai" | "anthropic" | "gemini";

/** One operation of an API format (what a request asks for). */
export type ApiOperation =
  | "openai.chat" // POST /v1/chat/completions
  | "openai.responses" // POST /v1/responses
  | "openai.embeddings" // POST /v1/embeddings
  | "openai.models" // GET /v1/models
  | "anthropic.messages" // POST /v1/messages
  | "anthropic.count_tokens" // POST /v1/messages/count_tokens
  | "anthropic.models" // GET /v1/models with anthropic-version
  | "gemini.generate" // POST /v1beta/models/{model}:generateContent
  | "gemini.stream" // POST /v1beta/models/{model}:streamGenerateContent
  | "gemini.count_tokens" // POST /v1beta/models/{model}:countTokens
  | "gemini.models" // GET /v1beta/models
  | "mcp.call" // tools/call at the MCP endpoint (provider: the MCP server, model: the tool)
  | "mcp.read" // resources/read (model: the resource URI)
  | "mcp.prompt" // prompts/get (model: the prompt)
  | "connector.call"; // an HTTP connector call (provider: the connector, model: "METHOD /upstream/path")

/** Gateway roles: admin wins when both apply. */
export type Role = "user" | "admin";

/**
 * Caller is who made a request, as the tailnet says (whois) or as the
 * loopback listener is configured. `principal` is what the policy engine is
 * asked about; `user` is the human accountable (a user-owned node's login,
 * else the first owner of its tags), the key of per-user buckets and log
 * visibility.
 */
export interface Caller {
  principal: Principal;
  /** The node's name (MagicDNS short name), or the loopback principal's name. */
  node: string;
  tags: string[];
  /** The accountable human's login ("alice@example.com"); "" when none is known. */
  user: string;
  /** Every human accountable for the node (tag owners, groups expanded). */
  owners: string[];
  /** Groups of `user` (from the policy's and the tailnet's groups). */
  groups: string[];
  role: Role;
  /** The tailnet address the request came from, or "127.0.0.1". */
  addr: string;
  via: "tailnet" | "loopback";
  /** App capabilities from whois (e.g. `meshguard.dev/cap/gateway`). */
  caps: Record<string, unknown[]>;
}

/**
 * The facts of one LLM request the gateway reads from its body and path,
 * without validating the body against a schema (unknown fields pass).
 */
export interface CallFacts {
  operation: ApiOperation;
  format: ApiFormat;
  /** The configured provider name the request routes to. */
  provider: string;
  /** The model as the client named it (upstream name). */
  model: string;
  stream: boolean;
  /** max_tokens / max_output_tokens / maxOutputTokens, when the client set one. */
  maxTokens?: number;
  /** A client session id (Claude Code's x-claude-code-session-id, or metadata) when the client sends one. */
  clientSessionId?: string;
  /** The request's generation settings, read only when spans are on (they report them). */
  params?: RequestParams;
}

/** RequestParams are the generation settings a request sets (each absent when it sets none), in every API's spelling read into one shape. */
export interface RequestParams {
  temperature?: number;
  topP?: number;
  topK?: number;
  stopSequences?: string[];
  frequencyPenalty?: number;
  presencePenalty?: number;
  seed?: number;
  /** Generations asked for (OpenAI n, Gemini candidateCount). */
  choiceCount?: number;
  /** The kind of output asked for: "text", "json", "image" or "speech". */
  outputType?: string;
  /** The reasoning effort asked for, as sent (OpenAI reasoning_effort / reasoning.effort, Gemini thinkingLevel). */
  reasoningLevel?: string;
  /** The earlier response a Responses API request continues. */
  previousResponseId?: string;
}

/** What an answer says about itself (./answer.ts); each part absent when the answer did not say. */
export interface AnswerFacts {
  /** The upstream's id of the answer ("chatcmpl-…", "msg_…", Gemini's responseId). */
  id?: string;
  /** The model that answered, as the upstream names it (often a dated version of the one asked for). */
  model?: string;
  /** Why each generation stopped, in the order of the choices or candidates, as the provider says it ("error": it never said). */
  finishReasons?: string[];
  /** Output tokens spent on reasoning (part of the output count). */
  reasoningTokens?: number;
}

/** Token usage of one request; `estimated` when the upstream reported none. */
export interface Usage {
  inputTokens: number;
  outputTokens: number;
  /** Cache reads/writes (Anthropic cache_read/cache_creation, OpenAI cached_tokens), included in neither count above. */
  cacheReadTokens?: number;
  cacheWriteTokens?: number;
  estimated: boolean;
}

/** Price of a model in US dollars per million tokens. */
export interface ModelPrice {
  input: number;
  output: number;
  cacheRead?: number;
  cacheWrite?: number;
  /**
   * Long-context prices: a request whose prompt (input + cache tokens) is
   * more than `above` tokens is priced wholly at the last tier it passes
   * (how Anthropic and Google price prompts over 200k tokens). Ascending.
   */
  tiers?: { above: number; input: number; output: number; cacheRead?: number; cacheWrite?: number }[];
}

/** How the request ended. */
export type Outcome =
  | "ok" // the upstream answered 2xx and the answer reached the client
  | "denied" // policy said no (403)
  | "quota" // a bucket was exhausted (429)
  | "blocked" // a hook blocked it
  | "upstream_error" // the upstream answered 4xx/5xx
  | "upstream_unreachable" // connect failure or timeout
  | "client_aborted" // the client went away mid-request
  | "bad_request"; // the gateway could not read the request

/**
 * LogRecord is one request as the gateway stores it. Bodies are present
 * only under full retention; credentials (Authorization, x-api-key,
 * x-goog-api-key, provider keys) never appear in any field.
 */
export interface LogRecord {
  id: string;
  time: number;
  /** The session this request belongs to (see SessionPolicy). */
  sessionId: string;
  caller: { node: string; user: string; tags: string[]; addr: string; via: Caller["via"] };
  operation: ApiOperation;
  provider: string;
  model: string;
  stream: boolean;
  status: number;
  outcome: Outcome;
  /** Why, for anything but "ok" (a denial reason, an upstream error message with no key in it). */
  reason?: string;
  ruleId?: string;
  usage?: Usage;
  costUsd?: number;
  /** Gateway-added time: request received → upstream request sent. */
  overheadMs: number;
  /** Request received → last byte to the client. */
  durationMs: number;
  /** Request received → first body byte to the client (streams). */
  ttftMs?: number;
  /** What the answer said about itself: its id, the model that answered, finish reasons. */
  response?: AnswerFacts;
  /** Request headers, minus credentials. Full retention only. */
  requestHeaders?: Record<string, string>;
  requestBody?: string;
  responseBody?: string;
}

/** Log retention: what is kept and for how long. */
export interface Retention {
  /** "full": bodies and headers; "metadata": everything but bodies and headers; "none": nothing is stored. */
  mode: "full" | "metadata" | "none";
  /** Records older than this are deleted; undefined keeps them. */
  maxAgeMs?: number;
}

export interface LogQuery {
  /** Only this user's records (the API sets it for every non-admin). */
  user?: string;
  node?: string;
  /** Only records of this model (as logged: the name sent upstream, without a `provider/` prefix). */
  model?: string;
  sessionId?: string;
  since?: number;
  until?: number;
  /** Newest first; at most this many (default 100, max 1000). */
  limit?: number;
  /** Opaque cursor from the previous page. */
  before?: string;
}

export interface SessionSummary {
  id: string;
  user: string;
  node: string;
  firstTime: number;
  lastTime: number;
  requests: number;
  inputTokens: number;
  outputTokens: number;
  costUsd: number;
}

/**
 * UsageQuery asks for usage summed per time bucket and per user or model.
 * Buckets are aligned to UTC (an hour bucket starts at a whole hour, a day
 * bucket at 00:00 UTC); `since` inclusive, `until` exclusive.
 */
export interface UsageQuery {
  since: number;
  until: number;
  bucket: "hour" | "day";
  by: "user" | "model";
  /** Only this user's records (the API sets it for every non-admin). */
  user?: string;
}

/** One bucket of usage of one key (a user's login, or a model name). Empty buckets are absent. */
export interface UsageRow {
  /** The bucket's start, epoch ms. */
  start: number;
  key: string;
  requests: number;
  inputTokens: number;
  outputTokens: number;
  costUsd: number;
}

/** A bucket's state as the store keeps it. `level` is what is left to spend. */
export interface BucketState {
  /** The bucket's instance key, e.g. "daily/user:alice@example.com". */
  key: string;
  level: number;
  /** When `level` was last brought up to date by refilling. */
  updatedAt: number;
}

export interface Reservation {
  id: string;
  /**
   * Amounts held per bucket key (a chain may split one request over several).
   * `chain` numbers the caller's chain a hold belongs to (absent: 0); the
   * holds of one chain are in chain order, so settling charges the first
   * bucket of each chain first. A store keeps holds as they are given.
   */
  holds: { key: string; amount: number; chain?: number }[];
  time: number;
}

/**
 * GatewayStore is everything the gateway keeps. Writes of log records are
 * batched off the request path (appendLog returns at once); bucket changes
 * are durable when the call returns, so that reservations survive a crash.
 */
export interface GatewayStore {
  appendLog(rec: LogRecord): void;
  /** Writes every pending log record; resolves when they are durable. */
  flush(): Promise<void>;
  queryLogs(q: LogQuery): Promise<{ records: LogRecord[]; next?: string }>;
  getLog(id: string): Promise<LogRecord | undefined>;
  sessions(q: Omit<LogQuery, "sessionId">): Promise<SessionSummary[]>;
  /** Deletes records older than `before`; returns how many. */
  prune(before: number): Promise<number>;

  /**
   * Runs `fn` on the current states of `keys` (missing ones absent from the
   * map) atomically with respect to every other bucket transaction, and
   * stores what it returns: the new states and the reservation to add or
   * remove; resolves once that is durable. `fn` is synchronous and may be
   * run again (a store engine that retries a conflicting transaction).
   * SQLite runs it inside one immediate transaction; PostgreSQL (issue 9)
   * under row locks.
   */
  bucketTx<T>(
    keys: string[],
    fn: (states: Map<string, BucketState>) => { states: BucketState[]; add?: Reservation; remove?: string; result: T },
  ): Promise<T>;
  /** Every reservation not yet settled (after a restart: those of requests that died with the process). */
  reservations(): Promise<Reservation[]>;
  /**
   * The reservations whose requests died with their gateway instance, which
   * recovery may settle. Optional: without it every reservation counts (one
   * process per store, as with SQLite, recovering at start). A store shared
   * by several live instances (PostgreSQL) returns only those of instances
   * that are gone, never a live instance's.
   */
  recoverableReservations?(): Promise<Reservation[]>;
  /**
   * Every stored bucket state, for the admin API's list of buckets (instances
   * are created lazily per user, so only the store knows them all after a
   * restart). Optional: without it the list holds the instances used since start.
   */
  listBuckets?(): Promise<BucketState[]>;
  /**
   * Usage summed per time bucket and user or model, ordered by start then
   * key, for the usage API and the console's chart. Optional: without it
   * the usage API answers 501.
   */
  usage?(q: UsageQuery): Promise<UsageRow[]>;
  /**
   * Session state shared by every instance on the store (PostgreSQL), for
   * the requests of callers that send no session id of their own
   * (../sessions.ts). Atomically: when the caller `key`'s session was
   * active within `idleGapMs` of `time` (or later), it continues (its last
   * activity moves up to `time`) and its id is returned; else `newId`
   * starts a new one. Optional: without it each instance keeps sessions in
   * memory (one process per store, as with SQLite).
   */
  assignSession?(key: string, time: number, idleGapMs: number, newId: string): Promise<string>;
  /** Forgets the shared session state of callers idle since before `before` (epoch ms); returns how many. */
  forgetSessions?(before: number): Promise<number>;

  /**
   * Connectors' per-user OAuth tokens (sealed, never in clear) and users'
   * delegations to tags (./credentials/token-store.ts). Optional: without
   * it, users' tokens are kept in memory only.
   */
  readonly oauthTokens?: OAuthTokenStore;

  close(): Promise<void>;
}

/** What a quota check answers before the upstream call. */
export type QuotaVerdict =
  | { ok: true; reservation: Reservation | undefined }
  /**
   * `bucket` is the instance key of the chain that cannot cover the request.
   * `permanent`: waiting will not help (no price for a dollar bucket, a
   * request larger than the chain can ever hold, no instance for this
   * caller): the server answers 403 rather than 429 with retry-after.
   */
  | { ok: false; bucket: string; retryAfterS: number; reason: string; permanent?: boolean };

/** ReserveOptions: what a request is charged to besides its caller's chains. */
export interface ReserveOptions {
  /**
   * Bucket chains of the upstream itself (an HTTP connector's or an MCP
   * server's `quotas`), each written as its head; their instances follow the
   * bucket's `per` for this caller. A chain the caller's own chains already
   * name is charged once.
   */
  chains?: readonly (readonly string[])[];
}

/**
 * QuotaManager (src/gateway/quotas/) reserves the most a request can cost
 * before it goes upstream and settles the real cost after, so concurrent
 * requests cannot overspend a bucket.
 */
export interface QuotaManager {
  /** `price` is undefined for a model without a known price (dollar buckets then reserve by tokens only if configured, else refuse). */
  reserve(caller: Caller, facts: CallFacts, estimate: { inputTokens: number; maxOutputTokens: number }, price: ModelPrice | undefined, opts?: ReserveOptions): Promise<QuotaVerdict>;
  /**
   * Charges what the request really cost and releases the rest of its
   * reservation. Never throws for an unknown reservation (a restart settled
   * it). `sent: false` says the request never reached the upstream (a hook
   * blocked it, its credential was missing, the upstream could not be
   * reached): its call is refunded to "calls" buckets, as its tokens and
   * dollars are (usage zero).
   */
  settle(reservation: Reservation, usage: Usage, costUsd: number | undefined, opts?: { sent?: boolean }): Promise<void>;
}

/** The request as a pre-request hook sees it (credentials removed). */
export interface HookRequest {
  id: string;
  caller: Pick<Caller, "node" | "user" | "tags" | "role">;
  facts: CallFacts;
  headers: Record<string, string>;
  body: unknown;
}

export type PreHookResult =
  | { action: "allow" }
  | { action: "block"; status: number; message: string; hook: string }
  | { action: "modify"; body: unknown };

export type PostHookResult =
  | { action: "record" }
  | { action: "block"; status: number; message: string; hook: string }
  | { action: "redact"; body: unknown };

/** One finished request, for billing (sent to usage webhooks). */
export interface UsageEvent {
  id: string;
  time: number;
  caller: Pick<Caller, "node" | "user" | "tags">;
  provider: string;
  model: string;
  operation: ApiOperation;
  outcome: Outcome;
  usage?: Usage;
  costUsd?: number;
  sessionId: string;
}

/**
 * HookRunner (src/gateway/hooks.ts) runs the configured webhooks in order.
 * `pre` may change the body (the modified body is what goes upstream and
 * what later hooks see); `post` runs on non-streamed answers only; `usage`
 * never delays the request (queued, delivered in the background).
 */
export interface HookRunner {
  readonly hasPre: boolean;
  readonly hasPost: boolean;
  pre(req: HookRequest): Promise<PreHookResult>;
  post(req: HookRequest, response: { status: number; body: unknown }): Promise<PostHookResult>;
  usage(ev: UsageEvent): void;
  /** Delivers what is queued (usage events), up to `ms`. */
  close(ms?: number): Promise<void>;
}

/** A request to the gateway's own API (`/meshguard/v1/...`), already authenticated. */
export interface AdminRequest {
  method: string;
  /** The path after `/meshguard/v1`, e.g. "/logs" or "/buckets/daily%2Fuser%3Aalice%40/refill". */
  path: string;
  query: URLSearchParams;
  /** The parsed JSON body (POST/PUT), else undefined. */
  body: unknown;
  caller: Caller;
}

export type AdminResponse =
  | { status: number; body: unknown }
  /** A streamed answer (exports as JSON lines). */
  | { status: number; contentType: string; stream: AsyncIterable<string> }
  /** A page for a browser (the OAuth consent and callback pages), or a redirect (`location` in `headers`). Never cached. */
  | { status: number; html: string; headers?: Record<string, string> };

/** AdminRoute serves one method and path pattern of the gateway's API; `params` are the `:name` parts. */
export interface AdminRoute {
  method: "GET" | "POST" | "PUT" | "DELETE";
  /** e.g. "/logs", "/logs/:id", "/buckets/:key/refill". */
  pattern: string;
  handle(req: AdminRequest, params: Record<string, string>): Promise<AdminResponse>;
}
