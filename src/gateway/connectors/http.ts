/**
 * HTTP API connectors: `<prefix>/<connector>/<path>` at the gateway is
 * `<baseUrl><path>` upstream, sent with the connector's credential and
 * without the caller's own (docs/connectors.md#http-api-connectors).
 *
 * Order of a call, each step able to end it:
 * 1. the path is checked as sent: a `.`/`..` segment (plain or
 *    percent-encoded) or an encoded slash or backslash (`%2F`, `%5C`) is
 *    refused (400) before anything is decided — upstreams decode them and
 *    would reach another path than the one judged;
 * 2. the upstream request is built and the `http` rules of the one policy
 *    judge it (method, upstream scheme/host/port, path byte for byte, the
 *    query and headers as sent — the credential left out); `approve` holds it;
 * 3. the caller's quota chains are charged one call (`calls` buckets);
 * 4. pre-request hooks see it (the body is then read, bounded);
 * 5. the credential is resolved and injected; the request goes out through
 *    undici with the body streamed, no redirect followed;
 * 6. the answer streams back with every secret of the connector removed
 *    from headers and body (across chunk boundaries), a redirect to another
 *    origin losing its Location; post-request hooks see JSON answers.
 * Every call is one log record (operation `connector.call`).
 */

import type { IncomingMessage, ServerResponse } from "node:http";
import { Pool, type Dispatcher } from "undici";
import { normalizeHost } from "../../policy/hosts.js";
import type { Decision, HttpTarget } from "../../policy/types.js";
import { approve } from "../approve.js";
import type { GatewayContext } from "../context.js";
import { readCallBody, REQUEST_ID, RESPONSE_DROP, sendJson, TOO_LARGE } from "../http-util.js";
import { connectorOfPath, credentialNames, dropParams, forwardedHeaders, lowerHeaders, pathRefusal, upstreamPath as joinPath } from "../../guard/gateway-route.js";
import { finish, newCallState, type CallState } from "../record.js";
import { StreamScrub, type KeyScrubber } from "../scrub.js";
import { drained } from "../stream.js";
import type { CallFacts, Caller } from "../types.js";
import { openCredential } from "../credentials/registry.js";
import { CredentialUnavailableError, type CredentialSource, type InjectedCredential } from "../credentials/types.js";
import type { ConnectorsConfig, HttpConnectorConfig } from "./config.js";

export { pathRefusal } from "../../guard/gateway-route.js";

/** What the client receives is kept for the log up to this size. */
const MAX_KEPT = 1 << 20;

interface Connector {
  readonly name: string;
  readonly cfg: HttpConnectorConfig;
  readonly scheme: "http" | "https";
  readonly host: string;
  readonly port: number;
  readonly origin: string;
  /** The base URL's path without its trailing "/" ("" for the root). */
  readonly basePath: string;
  readonly pool: Pool;
  readonly source: CredentialSource;
  /** The connector's own quota chains (`quotas`), charged beside the caller's. */
  readonly chains: { chains: string[][] } | undefined;
}

/** A connector as GET /meshguard/v1/connectors lists it: never a secret. */
export interface ConnectorSummary {
  name: string;
  /** Where agents call it on the gateway ("/v1/connectors/crm"). */
  path: string;
  /** The upstream's origin. */
  upstream: string;
  /** The credential's kind: its `type` (and `grant` and configured `scopes` for oauth2). */
  auth: { type: string; grant?: string; scopes?: string[] };
  /** true: each user's own token (connect, delegate); false: one shared credential for every caller. */
  actsForUsers: boolean;
}

/** ConnectorRouter holds the HTTP connectors and proxies their calls. */
export class ConnectorRouter {
  private readonly byPrefix = new Map<string, Map<string, Connector>>();
  private readonly ctx: GatewayContext;
  private readonly connectors: Connector[];
  private readonly scrub: KeyScrubber;


  private constructor(
    ctx: GatewayContext,
    connectors: Connector[],
    /** The gateway's scrubber plus every connector's long-lived secrets. */
    scrub: KeyScrubber,
  ) {
    this.ctx = ctx;
    this.connectors = connectors;
    this.scrub = scrub;
    for (const c of connectors) {
      const p = c.cfg.prefix ?? "";
      let m = this.byPrefix.get(p);
      if (m === undefined) this.byPrefix.set(p, (m = new Map()));
      m.set(c.name, c);
    }
  }

  /**
   * open reads every connector's credential (a missing one fails the start,
   * naming it) and opens one connection pool per connector. `scrub` is the
   * gateway's; the returned router's secrets are added to it by the caller.
   */
  static async open(ctx: Omit<GatewayContext, "connectors">, cfg: ConnectorsConfig, env: NodeJS.ProcessEnv, now: () => number = Date.now): Promise<{ router: ConnectorRouter; secrets: string[] }> {
    const out: Connector[] = [];
    try {
      for (const [name, c] of Object.entries(cfg.http)) {
        const source = await openCredential(ctx, name, c.baseUrl, c.auth, env, now);
        const u = new URL(c.baseUrl);
        const scheme = u.protocol === "https:" ? "https" : "http";
        out.push({
          name,
          cfg: { ...c, prefix: c.prefix ?? cfg.prefix },
          scheme,
          host: normalizeHost(u.hostname.replace(/^\[|\]$/g, "")),
          port: u.port ? Number(u.port) : scheme === "https" ? 443 : 80,
          origin: u.origin,
          basePath: u.pathname.replace(/\/+$/, ""),
          pool: new Pool(u.origin, { keepAliveTimeout: 30_000, headersTimeout: c.timeout, bodyTimeout: c.timeout, connect: { timeout: Math.min(c.timeout, 10_000) } }),
          source,
          chains: c.quotas !== undefined ? { chains: c.quotas.map((h) => [h]) } : undefined,
        });
      }
    } catch (err) {
      await Promise.all(out.map((c) => Promise.all([c.pool.close().catch(() => {}), c.source.close?.().catch(() => {})])));
      throw err;
    }
    const secrets = out.flatMap((c) => [...c.source.secrets()]);
    return { router: new ConnectorRouter(ctx as GatewayContext, out, ctx.scrub.with(secrets)), secrets };
  }

  /** The prefixes connectors are served under (for the self-description and tests). */
  get prefixes(): string[] {
    return [...this.byPrefix.keys()];
  }

  /** sourceOf is the credential source of connector `name` (the OAuth routes act on it). */
  sourceOf(name: string): CredentialSource | undefined {
    return this.connectors.find((c) => c.name === name)?.source;
  }

  /**
   * list describes every connector without its secrets (GET
   * /meshguard/v1/connectors): where it is served, its upstream's origin,
   * and its credential's kind; `actsForUsers` is the per-user OAuth grant,
   * whose callers each connect their own account (or use one by delegation).
   */
  list(): ConnectorSummary[] {
    return this.connectors.map((c) => {
      const a = c.cfg.auth as { type: string; grant?: unknown; scopes?: unknown };
      const grant = typeof a.grant === "string" ? a.grant : undefined;
      return {
        name: c.name,
        path: `${c.cfg.prefix ?? ""}/${c.name}`,
        upstream: c.origin,
        auth: { type: a.type, ...(grant === undefined ? {} : { grant }), ...(Array.isArray(a.scopes) && a.scopes.length > 0 ? { scopes: a.scopes.map(String) } : {}) },
        actsForUsers: a.type === "oauth2" && grant === "authorization_code",
      };
    });
  }

  /** match finds the connector of a request path, with the rest of the path as sent ("" or "/..."). */
  match(path: string): { connector: Connector; rest: string } | undefined {
    for (const [prefix, m] of this.byPrefix) {
      const p = connectorOfPath(path, prefix);
      const c = p === undefined ? undefined : m.get(p.name);
      if (c !== undefined) return { connector: c, rest: p!.rest };
    }
    return undefined;
  }

  async close(): Promise<void> {
    await Promise.all(this.connectors.map((c) => Promise.all([c.pool.close().catch(() => {}), c.source.close?.().catch(() => {})])));
  }

  /** handle proxies one call (the caller is already identified). */
  async handle(req: IncomingMessage, res: ServerResponse, caller: Caller, m: { connector: Connector; rest: string }, query: string, t0: number): Promise<void> {
    const c = m.connector;
    const method = req.method ?? "GET";
    const upstreamPath = joinPath(c.basePath, m.rest);
    const facts: CallFacts = { operation: "connector.call", format: "openai", provider: c.name, model: `${method} ${upstreamPath}`, stream: false };
    const st = newCallState(this.ctx, caller, { operation: "connector.call", format: "openai" }, t0);
    st.facts = facts;
    st.model = facts.model;
    const fail = (status: number, code: string, outcome: CallState["outcome"], message: string, extra?: Record<string, unknown>) => {
      st.status = status;
      st.outcome = outcome;
      st.reason = message;
      sendJson(res, status, JSON.stringify({ error: { code, message: this.scrub.text(message), connector: c.name, ...extra } }), { "x-meshguard-error": code, [REQUEST_ID]: st.id });
    };
    try {
      await this.run(req, res, caller, c, m.rest, upstreamPath, query, st, fail);
    } catch (err) {
      if (!res.headersSent) fail(502, "connector_failed", "upstream_error", `connector ${c.name}: ${(err as Error).message}`);
      else res.destroy();
    } finally {
      finish(this.ctx, st);
    }
  }

  private async run(
    req: IncomingMessage,
    res: ServerResponse,
    caller: Caller,
    c: Connector,
    rest: string,
    upstreamPath: string,
    query: string,
    st: CallState,
    fail: (status: number, code: string, outcome: CallState["outcome"], message: string, extra?: Record<string, unknown>) => void,
  ): Promise<void> {
    const ctx = this.ctx;
    // 1. The path as sent.
    const refused = pathRefusal(rest) ?? pathRefusal(c.basePath);
    if (refused !== undefined) return fail(400, "connector_path_refused", "bad_request", refused);
    const max = ctx.cfg.maxBodyBytes;
    const tooLarge = () => {
      res.shouldKeepAlive = false;
      fail(413, "too_large", "bad_request", `the request body is larger than the gateway's limit of ${max} bytes (maxBodyBytes)`);
    };
    const declaredLength = req.headers["content-length"];
    if (declaredLength !== undefined && Number(declaredLength) > max) return tooLarge();

    // 2. The policy, on the upstream request as it will be sent (without the credential).
    const injectNames = injectedNames(c);
    const headers = forwardedHeaders(req.headers, injectNames.headers);
    const q = dropParams(query, injectNames.query);
    const target: HttpTarget = { kind: "http", scheme: c.scheme, host: c.host, port: c.port, method: (req.method ?? "GET").toUpperCase(), path: upstreamPath, query: q, headers: lowerHeaders(headers) };
    const declared = req.headers["content-length"];
    if (declared !== undefined && Number.isFinite(Number(declared))) target.bodySize = Number(declared);
    const signal = st.abort.signal;
    res.once("close", () => {
      if (!res.writableFinished) st.abort.abort();
    });
    const d = await this.decide(caller, target, signal);
    if (d.ruleId !== undefined) st.ruleId = d.ruleId;
    if (d.effect !== "allow") return fail(403, "policy_denied", "denied", `meshguard: ${d.reason}`, d.ruleId !== undefined ? { ruleId: d.ruleId } : undefined);

    // 3. Quotas: one call, in the caller's chains and the connector's own.
    if (ctx.quotas !== undefined) {
      const v = await ctx.quotas.reserve(caller, st.facts!, { inputTokens: 0, maxOutputTokens: 0 }, undefined, c.chains);
      if (!v.ok) {
        const status = v.permanent ? 403 : 429;
        if (status === 429) res.setHeader("retry-after", String(Math.max(1, Math.ceil(v.retryAfterS))));
        return fail(status, "quota_exhausted", "quota", `quota exhausted (${v.bucket}): ${v.reason}`, { bucket: v.bucket, retryAfterS: v.retryAfterS });
      }
      st.reservation = v.reservation;
    }

    // 4. Pre-request hooks: they see the body, so it is read (bounded) first. Without them it streams.
    const hasBody = req.headers["transfer-encoding"] !== undefined || (declared !== undefined && declared !== "0");
    const counted = { over: false };
    let body: AsyncIterable<Buffer> | Buffer | undefined = hasBody ? keptBody(req, st, max, counted) : undefined;
    if (!hasBody && declared === undefined) delete headers["content-length"];
    if (hasBody && ctx.hooks?.hasPre) {
      const raw = await readCallBody(req, st, ctx.cfg.maxBodyBytes);
      if (raw === undefined) return;
      if (raw === TOO_LARGE) return tooLarge();
      body = raw;
      st.requestBytes = raw.length;
      st.requestBody = raw;
      const r = await ctx.hooks.pre({ id: st.id, caller: hookCaller(caller), facts: st.facts!, headers: lowerHeaders(headers), body: parseJson(raw) });
      if (r.action === "block") return fail(r.status, "blocked", "blocked", `blocked by hook ${r.hook}: ${r.message}`);
      if (r.action === "modify") {
        body = Buffer.from(typeof r.body === "string" ? r.body : JSON.stringify(r.body));
        st.hookModified = true;
      }
      delete headers["transfer-encoding"];
      headers["content-length"] = String(body.length);
    } else if (!hasBody && ctx.hooks?.hasPre) {
      const r = await ctx.hooks.pre({ id: st.id, caller: hookCaller(caller), facts: st.facts!, headers: lowerHeaders(headers), body: null });
      if (r.action === "block") return fail(r.status, "blocked", "blocked", `blocked by hook ${r.hook}: ${r.message}`);
    }

    // 5. The credential, then the upstream.
    let cred: InjectedCredential;
    try {
      // The signal is made only for a kind that reads it (a token fetch): static kinds never do.
      let sig: AbortSignal | undefined;
      cred = await c.source.resolve({
        connector: c.name,
        caller,
        get signal() {
          return (sig ??= abortSignalOf(st));
        },
      });
    } catch (err) {
      const status = err instanceof CredentialUnavailableError ? err.status : 502;
      return fail(status, "credential_unavailable", status === 401 ? "denied" : "upstream_error", (err as Error).message);
    }
    const scrub = this.scrub.with(cred.secrets);
    for (const k in cred.headers) headers[k] = cred.headers[k]!;
    const fullQuery = withParams(q, cred.query);
    if (signal.aborted || res.destroyed) {
      st.outcome = "client_aborted";
      st.reason = "the client closed the connection before the request went upstream";
      return;
    }
    st.tUpstream = performance.now();
    let up: Dispatcher.ResponseData;
    try {
      up = await c.pool.request({ path: upstreamPath + (fullQuery ? `?${fullQuery}` : ""), method: target.method as Dispatcher.HttpMethod, headers, body: body as never, signal });
    } catch (err) {
      if (counted.over) {
        // The upstream got part of a body and then a broken request: it was not a call.
        st.notSent = true;
        return tooLarge();
      }
      if (signal.aborted) {
        st.outcome = "client_aborted";
        st.reason = "the client closed the connection before the upstream answered";
        return;
      }
      const code = (err as { code?: string }).code ?? "";
      const timeout = /TIMEOUT/.test(code);
      // A connection that failed carried nothing upstream (a timeout may have: it is charged).
      if (!timeout) st.notSent = true;
      return fail(timeout ? 504 : 502, timeout ? "upstream_timeout" : "upstream_unreachable", "upstream_unreachable", `${timeout ? "no answer from" : "cannot reach"} connector ${c.name}: ${scrub.text((err as Error).message)}${code ? ` (${code})` : ""}`);
    }

    // 6. The answer, scrubbed.
    const enc = String(up.headers["content-encoding"] ?? "identity").toLowerCase();
    if (enc !== "identity" && enc !== "") {
      up.body.destroy();
      return fail(502, "connector_encoded_answer", "upstream_error", `connector ${c.name} answered with content-encoding ${enc} although the gateway asked for identity: it cannot be checked for echoed credentials, so it is not passed on`);
    }
    const out = this.answerHeaders(c, up, scrub);
    out[REQUEST_ID] = st.id;
    if (up.statusCode === 401 && c.source.rejected !== undefined) {
      // The upstream refused the credential: an OAuth token is renewed for the next call (this one's body has gone: it is not sent again).
      await c.source.rejected({ connector: c.name, caller }, cred);
    }
    if (up.statusCode >= 400) {
      st.outcome = "upstream_error";
      st.reason = `connector ${c.name} answered HTTP ${up.statusCode}`;
    }
    const json = /^application\/(?:[\w.+-]*\+)?json\b/i.test(String(up.headers["content-type"] ?? ""));
    if (ctx.hooks?.hasPost && up.statusCode < 300 && json) return this.hookedBack(c, st, res, up, out, scrub, headers, body);
    st.status = up.statusCode;
    res.writeHead(up.statusCode, out);
    // A stream of unknown length shows its headers at once; a sized answer goes out with its first bytes (one write less).
    if (up.headers["content-length"] === undefined) res.flushHeaders();
    const s = new StreamScrub(scrub);
    let kept = 0;
    const keep = (b: Buffer) => {
      if (st.responseParts === undefined || kept >= MAX_KEPT) return;
      kept += b.length;
      st.responseParts.push(b);
    };
    try {
      for await (const chunk of up.body as AsyncIterable<Buffer>) {
        const clean = s.push(chunk);
        if (clean.length === 0) continue;
        if (st.tFirstByte === 0) st.tFirstByte = performance.now();
        keep(clean);
        if (!res.write(clean)) await drained(res);
      }
      const tail = s.end();
      keep(tail);
      res.end(tail);
    } catch (err) {
      up.body.destroy();
      if (signal.aborted || res.destroyed) {
        st.outcome = "client_aborted";
        st.reason = "the client closed the connection while the answer streamed; the upstream request was aborted";
        return;
      }
      st.outcome = "upstream_error";
      st.reason = `the answer of connector ${c.name} broke off: ${scrub.text((err as Error).message)}`;
      res.destroy();
    }
  }

  /** hookedBack reads a JSON answer whole so post-request hooks can block or redact it. */
  private async hookedBack(c: Connector, st: CallState, res: ServerResponse, up: Dispatcher.ResponseData, out: Record<string, string | string[]>, scrub: KeyScrubber, headers: Record<string, string>, body: AsyncIterable<Buffer> | Buffer | undefined): Promise<void> {
    let buf = scrub.bytes(Buffer.from(await up.body.arrayBuffer()));
    const r = await this.ctx.hooks!.post(
      { id: st.id, caller: hookCaller(st.caller), facts: st.facts!, headers: lowerHeaders(stripCredential(headers, c)), body: Buffer.isBuffer(body) ? parseJson(body) : st.requestBody !== undefined ? parseJson(st.requestBody) : null },
      { status: up.statusCode, body: parseJson(buf) },
    );
    if (r.action === "block") {
      st.outcome = "blocked";
      st.reason = `answer blocked by hook ${r.hook}: ${r.message}`;
      st.status = r.status;
      sendJson(res, r.status, JSON.stringify({ error: { code: "blocked", message: st.reason, connector: c.name } }), { "x-meshguard-error": "blocked", [REQUEST_ID]: st.id });
      return;
    }
    if (r.action === "redact") buf = scrub.bytes(Buffer.from(JSON.stringify(r.body)));
    st.status = up.statusCode;
    st.responseParts?.push(buf.length <= MAX_KEPT ? buf : buf.subarray(0, MAX_KEPT));
    out["content-length"] = String(buf.length);
    res.writeHead(up.statusCode, out);
    res.end(buf);
  }

  /**
   * answerHeaders: the upstream's headers minus hop headers and cookies,
   * every value scrubbed. A redirect's Location is kept only when it stays
   * under the connector's base URL (rewritten to the gateway's path for
   * it); to anywhere else it is removed — the client could not follow it
   * through the gateway, and it may carry a credential.
   */
  private answerHeaders(c: Connector, up: Dispatcher.ResponseData, scrub: KeyScrubber): Record<string, string | string[]> {
    const out: Record<string, string | string[]> = {};
    for (const k in up.headers) {
      if (RESPONSE_DROP.has(k) || k === "location" || k === "content-location") continue;
      const v = up.headers[k];
      if (v !== undefined) out[k] = Array.isArray(v) ? v.map((x) => scrub.text(x)) : scrub.text(v);
    }
    const loc = up.headers.location;
    if (typeof loc === "string") {
      let u: URL | undefined;
      try {
        u = new URL(loc, `${c.origin}${c.basePath}/`);
      } catch {
        u = undefined;
      }
      if (u !== undefined && u.origin === c.origin && (c.basePath === "" || u.pathname === c.basePath || u.pathname.startsWith(`${c.basePath}/`))) {
        out.location = scrub.text(`${c.cfg.prefix}/${c.name}${u.pathname.slice(c.basePath.length)}${u.search}`);
      } else {
        out["x-meshguard-redirect"] = "refused: the upstream redirected to another origin (or outside the connector's base URL); the gateway does not follow it and removed its Location";
      }
    }
    return out;
  }

  private async decide(caller: Caller, target: HttpTarget, signal: AbortSignal | CallState["abort"]): Promise<Decision> {
    const policy = this.ctx.policy();
    if (policy === undefined) return { effect: "deny", reason: "no policy is loaded (the gateway fails closed)" };
    const d = policy.evaluate({ principal: caller.principal, target });
    if (d.effect !== "approve") return d;
    return approve(this.ctx.approvals, caller.principal, target, d, toAbortSignal(signal));
  }
}

/**
 * keptBody streams the request body upstream, stopping it (an error, which
 * aborts the upstream request) once it grows past `max` bytes — a chunked
 * body, or one longer than its Content-Length said — and, under full
 * retention, keeps a copy of its first MAX_KEPT bytes for the log record.
 */
function keptBody(req: IncomingMessage, st: CallState, max: number, counted: { over: boolean }): AsyncIterable<Buffer> {
  const keep = st.responseParts !== undefined;
  return (async function* () {
    const parts: Buffer[] = [];
    let size = 0;
    try {
      for await (const c of req as AsyncIterable<Buffer>) {
        size += c.length;
        if (size > max) {
          counted.over = true;
          throw new Error(`the request body grew past the gateway's limit of ${max} bytes`);
        }
        if (keep && size - c.length < MAX_KEPT) parts.push(c);
        yield c;
      }
    } finally {
      st.requestBytes = size;
      if (keep) st.requestBody = Buffer.concat(parts);
    }
  })();
}

/** The header and query names a connector's credential sets: a client's own of the same name never goes upstream. */
function injectedNames(c: Connector): { headers: Set<string>; query: Set<string> } {
  return credentialNames(c.cfg.auth as { header?: string; query?: string });
}

function stripCredential(headers: Record<string, string>, c: Connector): Record<string, string> {
  const drop = injectedNames(c).headers;
  const out: Record<string, string> = {};
  for (const k in headers) if (k !== "authorization" && !drop.has(k.toLowerCase())) out[k] = headers[k]!;
  return out;
}

function withParams(query: string, add: Record<string, string> | undefined): string {
  if (add === undefined) return query;
  const extra = Object.entries(add).map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`);
  return [query, ...extra].filter((s) => s !== "").join("&");
}

function hookCaller(c: Caller) {
  return { node: c.node, user: c.user, tags: c.tags, role: c.role };
}

function parseJson(b: Buffer): unknown {
  if (b.length === 0) return null;
  try {
    return JSON.parse(b.toString("utf8"));
  } catch {
    return b.toString("utf8");
  }
}

/** The call's abort as a real AbortSignal (credential kinds and approvers take one). */
function abortSignalOf(st: CallState): AbortSignal {
  return toAbortSignal(st.abort);
}

function toAbortSignal(s: AbortSignal | CallState["abort"]): AbortSignal {
  if (s instanceof AbortSignal) return s;
  const ac = new AbortController();
  if (s.aborted) ac.abort(s.reason);
  else s.once("abort", () => ac.abort(s.reason));
  return ac.signal;
}
