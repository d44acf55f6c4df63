/**
 * startTokenIssuer: the token issuer as a tailnet app, run inside any
 * MeshNode (`meshguard tokens serve` is this plus a node). It listens on a
 * tailnet port and answers
 *
 *   GET  /.well-known/openid-configuration   discovery
 *   GET  /.well-known/jwks.json              the published keys
 *   POST /token                              client_credentials, token exchange
 *   POST /revoke                             RFC 7009 and admin revocation
 *   GET  /revocations?since=N                the signed revocation feed
 *
 * Every POST is authenticated by whois of its connection: the tailnet policy
 * decides who can reach the issuer at all, the meshguard policy's `token`
 * rules what each caller may be granted. Keys and the revocation log live in
 * the state directory (by default the node's: ../node.ts `dir`).
 */

import { EventEmitter } from "node:events";
import http from "node:http";
import { join } from "node:path";
import { z } from "zod";
import { parseWith } from "../config.js";
import { identityOf, watchPolicyFile, type FileReloader } from "../distribution/reload.js";
import type { ReloadEvent } from "../guard/types.js";
import { ErrorCode, MeshguardError } from "../errors.js";
import type { MeshNode } from "../node.js";
import { parseDuration, DURATION_HINT, Policy } from "../policy/index.js";
import { resolveSrc, srcMatches } from "../policy/identity.js";
import { createAuditor, type AuditSink } from "../policy/audit.js";
import { tokenAuditor } from "./audit.js";
import { callerOf, type Caller } from "./caller.js";
import { WhoisCache } from "./whois-cache.js";
import { IssuedIndex, nowS, type IssuerContext } from "./context.js";
import { discoveryDocument, revocationFeed } from "./discovery.js";
import { isForm, readBody, sendJson, sendJwt, sendRefusal } from "./http.js";
import { KeyStore } from "./keys.js";
import { OAuthRefusal, refuse } from "./oauth.js";
import { handleRevoke, revokeAsAdmin, type RevokeTarget } from "./revoke-endpoint.js";
import { RevocationLog } from "./revocations.js";
import { handleTokenRequest, type EndpointAnswer } from "./token-endpoint.js";
import { DEFAULT_TOKEN_TTL_SECONDS, PATH_DISCOVERY, PATH_JWKS, PATH_REVOCATIONS, PATH_REVOKE, PATH_TOKEN, type Jwks, type RevocationEntry, type TokenResponse } from "./types.js";

const Duration = z.union([
  z.string().refine((s) => parseDuration(s) !== undefined, DURATION_HINT),
  z.number().positive("a duration in milliseconds must be positive"),
]);
const ms = (d: string | number) => (typeof d === "number" ? d : parseDuration(d)!);

const OptionsSchema = z
  .object({
    node: z.custom<MeshNode>((n) => typeof n === "object" && n !== null && typeof (n as MeshNode).listen === "function" && typeof (n as MeshNode).whois === "function", "must be a MeshNode"),
    policy: z.custom<Policy>((p) => p instanceof Policy, "must be a Policy (loadPolicy)").optional(),
    policyFile: z.string().min(1).optional(),
    port: z.number().int().min(1).max(65535).default(80),
    issuer: z
      .string()
      .regex(/^https?:\/\/[^/?#]+$/, 'must be an origin such as "http://tokens" (no path, no trailing "/")')
      .optional()
      .describe("the `iss` of tokens; default http://<node name>[:port]"),
    ttl: Duration.default("15m").describe("lifetime of a token that asks for none"),
    maxTtl: Duration.default("1h").describe("no token lives longer"),
    rotateEvery: Duration.default("24h"),
    overlap: Duration.default("5m"),
    skew: Duration.default("30s").describe("tolerance for a subject token's nbf"),
    stateDir: z.string().min(1).optional().describe("default: <node dir>/tokens"),
    keyDir: z.string().min(1).optional().describe("default: <stateDir>/keys"),
    admins: z.array(z.string().min(1)).default([]).describe("src patterns (tags, users, groups of the policy, node names) that may revoke any token"),
    clock: z.function().returns(z.number()).optional(),
    audit: z
      .custom<AuditSink>((v) => typeof v === "object" && v !== null && typeof (v as AuditSink).write === "function", "must be an audit sink with a write(event) method, e.g. jsonLinesSink(file)")
      .optional()
      .describe("where issued, refused, exchanged and revoked tokens are recorded (the guard's sinks)"),
  })
  .strict()
  .refine((o) => (o.policy === undefined) !== (o.policyFile === undefined), { message: "give exactly one of policy (a loaded Policy) and policyFile (a file to follow)", path: ["policy"] });

export type TokenIssuerOptions = z.input<typeof OptionsSchema>;

export interface TokenIssuerEvents {
  /** The followed policy file was reloaded. */
  reload: [ev: ReloadEvent];
  /** A policy file reload failed; the last good policy stays in force (none: nothing is granted). */
  reloadError: [err: MeshguardError];
  warning: [err: Error];
}

/** TokenIssuer is the handle of a running issuer. */
export class TokenIssuer extends EventEmitter<TokenIssuerEvents> implements AsyncDisposable {
  /** The issuer URL (`iss`, no trailing slash). */
  readonly url: string;
  readonly port: number;
  /** @internal */
  readonly ctx: IssuerContext;
  private closing: Promise<void> | undefined;
  private readonly server: http.Server;
  private readonly reloader: FileReloader | undefined;
  private readonly timer: NodeJS.Timeout;

  /** @internal use startTokenIssuer. */
  constructor(
    ctx: IssuerContext,
    port: number,
    server: http.Server,
    reloader: FileReloader | undefined,
    timer: NodeJS.Timeout,
  ) {
    super();
    this.server = server;
    this.reloader = reloader;
    this.timer = timer;
    this.ctx = ctx;
    this.url = ctx.iss;
    this.port = port;
  }

  /** Why no policy is in force (a policy file that has not loaded), or undefined when one is. */
  get policyError(): string | undefined {
    const p = this.ctx.policy();
    return "error" in p ? p.error : undefined;
  }

  /** The published keys (what `/.well-known/jwks.json` serves). */
  jwks(): Jwks {
    return this.ctx.keys.jwks();
  }

  /** rotateKeys makes a new signing key active now; the old one stays published until its tokens expire. Returns the new kid. */
  rotateKeys(): string {
    return this.ctx.keys.rotate().kid;
  }

  /**
   * revoke revokes as an admin: a token, a jti, or every token of a node
   * (`sub`) issued before `before` (epoch seconds; default now). Returns the
   * feed entries it added (a token also revokes the tokens exchanged from it).
   */
  revoke(target: RevokeTarget): RevocationEntry[] {
    return revokeAsAdmin(this.ctx, target);
  }

  /**
   * issue answers a token request as the endpoint would for this caller
   * (whois of a connection, or a WhoIs made by hand in tests and
   * benchmarks); `params` is the form. No HTTP involved.
   */
  issue(caller: Parameters<typeof callerOf>[0], params: Record<string, string> | URLSearchParams): EndpointAnswer<TokenResponse> {
    return handleTokenRequest(this.ctx, callerOf(caller), new URLSearchParams(params).toString());
  }

  /** close stops listening and following the policy file. Idempotent. */
  close(): Promise<void> {
    return (this.closing ??= (async () => {
      clearInterval(this.timer);
      await this.reloader?.close();
      await new Promise<void>((resolve) => {
        this.server.close(() => resolve());
        this.server.closeAllConnections();
      });
      this.ctx.revocations.close();
    })());
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/** startTokenIssuer opens the keys and the revocation log, loads the policy, and listens on the node. */
export async function startTokenIssuer(options: TokenIssuerOptions): Promise<TokenIssuer> {
  const o = parseWith(OptionsSchema, options, "startTokenIssuer options");
  const node = o.node;
  const clock = o.clock ?? Date.now;
  const maxTtlS = Math.floor(ms(o.maxTtl) / 1000);
  const defaultTtlS = Math.min(Math.floor(ms(o.ttl) / 1000), maxTtlS);
  if (defaultTtlS < 1) throw new MeshguardError(ErrorCode.INVALID_OPTIONS, "invalid startTokenIssuer options: ttl and maxTtl must be at least 1s");
  const stateDir = o.stateDir ?? join(node.dir, "tokens");
  const keys = KeyStore.open({ dir: o.keyDir ?? join(stateDir, "keys"), clock, rotateEveryMs: ms(o.rotateEvery), overlapMs: ms(o.overlap), maxTokenTtlMs: maxTtlS * 1000 });
  const revocations = RevocationLog.open(join(stateDir, "revocations.jsonl"), () => Math.floor(clock() / 1000));
  const shortName = node.name.replace(/\.$/, "").split(".")[0] || node.hostname;
  const iss = o.issuer ?? `http://${shortName}${o.port === 80 ? "" : `:${o.port}`}`;

  // The policy: fixed, or followed from a file (the last good one stays in force).
  const events = new EventEmitter();
  let reloader: FileReloader | undefined;
  let fixed: Policy | undefined = o.policy;
  let lastError = "the policy file has not loaded yet";
  if (fixed) node.setTailnetIdentity(identityOf(fixed));
  else {
    const target = {
      setPolicy: () => {},
      emit: (event: string, arg: unknown) => {
        if (event === "reloadError") lastError = (arg as Error).message;
        return events.emit(event, arg);
      },
    };
    reloader = watchPolicyFile(target as Parameters<typeof watchPolicyFile>[0], o.policyFile!, { node, clock: () => new Date(clock()) });
  }
  let admins = { policy: undefined as Policy | undefined, src: resolveSrc(o.admins, {}) };
  const currentPolicy = () => fixed ?? reloader?.current;
  const audit = o.audit
    ? tokenAuditor(
        createAuditor({ sink: o.audit as AuditSink, onError: (err) => events.emit("warning", err) }),
        () => currentPolicy()?.hash,
      )
    : undefined;
  const ctx: IssuerContext = {
    iss,
    keys,
    revocations,
    clock,
    defaultTtlS,
    maxTtlS,
    skewS: Math.floor(ms(o.skew) / 1000),
    issued: new IssuedIndex(),
    ...(audit ? { audit } : {}),
    self: { node: node.name.replace(/\.$/, "") || node.hostname, tags: [] },
    policy: () => fixed ?? reloader?.current ?? { error: lastError },
    isAdmin: (c: Caller) => {
      // Groups in `admins` are the policy's: resolved again when the policy changes.
      const p = fixed ?? reloader?.current;
      if (p !== admins.policy) admins = { policy: p, src: resolveSrc(o.admins, p?.document.groups ?? {}) };
      return srcMatches(admins.src, c.principal);
    },
  };

  const callers = new WhoisCache((socket) => node.whois(socket).then(callerOf), clock);
  const server = http.createServer((req, res) => {
    route(ctx, callers, req, res).catch((err: unknown) => {
      events.emit("warning", err instanceof Error ? err : new Error(String(err)));
      if (!res.headersSent) sendRefusal(res, refuse("server_error", "the issuer failed to answer; see its log"));
      else res.destroy();
    });
  });
  try {
    await node.listen(o.port, server);
  } catch (err) {
    revocations.close();
    throw err;
  }
  const timer = setInterval(() => {
    keys.tick();
    revocations.prune();
    ctx.issued.prune(nowS(ctx));
  }, 10_000).unref();
  const issuer = new TokenIssuer(ctx, o.port, server, reloader, timer);
  for (const ev of ["reload", "reloadError", "warning"] as const) events.on(ev, (arg) => issuer.emit(ev, arg as never));
  await reloader?.ready;
  return issuer;
}

const JWKS_MAX_AGE_S = 60;

async function route(ctx: IssuerContext, callers: WhoisCache<Caller>, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  const url = new URL(req.url ?? "/", "http://issuer");
  const path = url.pathname;
  const method = req.method ?? "GET";
  const only = (m: string) => {
    if (method === m || (m === "GET" && method === "HEAD")) return true;
    res.setHeader("allow", m === "GET" ? "GET, HEAD" : m);
    sendRefusal(res, new OAuthRefusal(405, "invalid_request", `use ${m} for ${path}`));
    return false;
  };
  if (path === PATH_DISCOVERY) {
    if (only("GET")) sendJson(res, 200, discoveryDocument(ctx.iss), `public, max-age=${JWKS_MAX_AGE_S}`);
    return;
  }
  if (path === PATH_JWKS) {
    if (only("GET")) sendJson(res, 200, ctx.keys.jwks(), `public, max-age=${JWKS_MAX_AGE_S}`);
    return;
  }
  if (path === PATH_REVOCATIONS) {
    if (!only("GET")) return;
    const since = url.searchParams.get("since") ?? "0";
    if (!/^\d{1,15}$/.test(since)) return sendRefusal(res, refuse("invalid_request", "since must be a feed sequence number (0 for everything)"));
    return sendJwt(res, revocationFeed(ctx, Number(since)));
  }
  if (path !== PATH_TOKEN && path !== PATH_REVOKE) return sendJson(res, 404, { error: "invalid_request", error_description: `no endpoint ${path}: see ${ctx.iss}${PATH_DISCOVERY}` });
  if (!only("POST")) return;
  if (!isForm(req)) return sendRefusal(res, refuse("invalid_request", "the body must be application/x-www-form-urlencoded"));
  // whois (once per connection) and the body arrive in parallel: the look-up was most of an issue's time.
  const who = callers.of(req.socket).catch((err: unknown) => err as Error);
  const body = await readBody(req);
  const caller: Caller | Error = await who;
  if (caller instanceof Error) return sendRefusal(res, refuse("invalid_client", `the caller is not known to the tailnet: ${caller.message}`));
  if (body === undefined) return sendRefusal(res, refuse("invalid_request", "the request body is too large"));
  const a = path === PATH_TOKEN ? handleTokenRequest(ctx, caller, body) : handleRevoke(ctx, caller, body);
  sendJson(res, a.status, a.body);
}
