/**
 * The agent side (issue 10 item 6): a client that gets tokens from the
 * issuer over the tailnet, caches them per (task, audience, actions),
 * refreshes them before they expire, and — without code in the agent —
 * puts the right one on every MeshNode.fetch, and every node:http request
 * over a MeshNode.dial (src/tailnet-http.ts), to a service it has a target
 * for, through FETCH_CHANNEL (src/fetch-channel.ts; MeshNode does not import
 * this layer). With the guard installed, a request is published there only
 * once the guard has allowed it: the client never asks for a token for a
 * call the guard denies.
 *
 * Targets are given (`targets`) or read from the policy (`policy`): each
 * allowing token rule whose src matches this node, for each audience that
 * is a service origin, with the rule's actions. A call made before the
 * policy's targets are known waits for them; one whose target token is
 * being fetched waits for that fetch (get() shares a slot's pending
 * request), so the first call never asks twice.
 *
 * Which token a request gets. A request whose origin is a target's audience
 * (its MagicDNS short name or full name, same scheme and port) gets:
 * - the target's token, when the target names actions and the token's
 *   granted `authorization_details` cover the request (fetched ahead when
 *   the client starts, and refreshed ahead of expiry, so calls rarely wait);
 * - otherwise a token for exactly this request: its method on its path (no
 *   query). Least privilege without configuration: the policy's `token`
 *   rules decide whether the issuer grants it.
 * A request that already has an Authorization header, or that goes to the
 * issuer, is left alone. A token is only ever put on the first request of a
 * fetch, and follows redirects only while they stay at its origin (see
 * src/fetch-channel.ts), so a token never reaches another origin.
 *
 * Lifetimes: a cached token is handed out until MIN_REMAINING_S before its
 * expiry (judged on this machine's clock from `expires_in`, not from the
 * issuer's `exp`, so clock offsets do not matter) and renewed in the
 * background once three quarters of its life has passed.
 */

import dc from "node:diagnostics_channel";
import { ErrorCode, MeshguardError } from "../errors.js";
import { FETCH_CHANNEL, type FetchMessage } from "../index.js";
import { normalizeAudience, parseDuration, urlParts, type Policy, type Principal } from "../policy/index.js";
import { resolveSrc, srcMatches } from "../policy/identity.js";
import { currentTask, type Task } from "./client-task.js";
import { compileGrant, type GrantCheck } from "./verify-actions.js";
import { decodeJson } from "./jws.js";
import { GRANT_CLIENT_CREDENTIALS, GRANT_TOKEN_EXCHANGE, HTTP_DETAIL_TYPE, PATH_REVOKE, PATH_TOKEN, TOKEN_TYPE_JWT, type AccessTokenClaims, type HttpAuthorizationDetail, type TokenResponse } from "./types.js";

/** A token is not sent with less than this left (seconds); a new one is fetched instead. */
export const MIN_REMAINING_S = 5;

/** What the client needs of a MeshNode. */
export interface ClientNode {
  readonly id: string;
  /** The node's MagicDNS name ("agent.tailnet.example."): its suffix tells full service names. */
  readonly name: string;
  fetch(input: string, init?: { method?: string; headers?: Record<string, string>; body?: string }): Promise<{ ok: boolean; status: number; text(): Promise<string> }>;
  /** The node's tailnet IPs and whois: with `policy`, the client asks the tailnet who it is (its tags) to find the rules that apply to it. */
  readonly ips?: readonly string[];
  whois?(addr: string): Promise<{ node: { name: string; hostname: string; tags: string[] }; user: { login: string }; tagged: boolean }>;
}

/** Actions as the token endpoint takes them: `{ methods, locations }`, or scope strings ("http:GET:billing/v2/*"). */
export type ActionSpec = { methods: string[]; locations: string[] } | string;

/** A service the client gets tokens for. */
export interface TargetOptions {
  /** The service's audience: its origin on the tailnet, e.g. "http://billing". */
  audience: string;
  /** The actions to ask for up front (one token for all calls they cover). Omitted: a token per request. */
  actions?: ActionSpec[];
}

export interface TokenClientOptions {
  node: ClientNode;
  /** The issuer's URL on the tailnet, e.g. "http://tokens". */
  issuer: string;
  targets?: TargetOptions[];
  /**
   * The policy in force: every allowing `token` rule whose `src` matches
   * this node becomes a target, for each audience it names that is a
   * service origin, with the rule's actions — fetched ahead and kept fresh,
   * so calls to the service carry a token without waiting. A loaded Policy
   * (loadPolicy), or what keeps one current — the FileReloader of
   * watchPolicyFile, the PolicyServerClient of pollPolicyServer, anything
   * with a `current` Policy — whose changes the client follows (checked on
   * every call and once a second): targets of rules that are gone stop being
   * refreshed, new ones are fetched ahead.
   */
  policy?: Policy | PolicySource;
  /** Lifetime to ask for: seconds or a duration ("10m"); default: the issuer's. */
  ttl?: number | string;
  /** Put tokens on MeshNode.fetch calls to the targets (default true). */
  attach?: boolean;
  /** Epoch milliseconds (tests). */
  now?: () => number;
  /** Background failures (a refresh that failed; the next call retries). */
  onWarning?: (err: MeshguardError) => void;
}

/** What keeps a policy current (FileReloader, PolicyServerClient): the client follows `current`. */
export interface PolicySource {
  readonly current: Policy | undefined;
}

/** How often a client following a PolicySource looks for a new policy when no call did. */
const POLICY_CHECK_MS = 1000;

/** A token the client obtained. */
export interface IssuedToken {
  /** The compact JWT, for `Authorization: Bearer …`. */
  readonly value: string;
  readonly audience: string;
  readonly jti: string;
  /** The claims as issued (decoded, not verified: the service verifies). */
  readonly claims: Readonly<AccessTokenClaims>;
  readonly authorizationDetails: readonly HttpAuthorizationDetail[];
  /** Local expiry, epoch milliseconds (from expires_in). */
  readonly expiresAtMs: number;
  readonly task: string | undefined;
  /** released says whether release() was called. */
  readonly released: boolean;
  /** release revokes the token at the issuer now (idempotent) and stops handing it out. */
  release(): Promise<void>;
}

/** A token request, as `token()` takes it. */
export interface TokenRequest {
  audience: string;
  actions: ActionSpec[];
  /** Seconds or a duration; default: the client's `ttl`. */
  ttl?: number | string;
}

/** A target: a service origin and, when known, actions to get one token for (explicit, or a policy rule's). */
interface Target {
  audience: string;
  origin: URL;
  actions?: ActionSpec[];
  /** The policy rule it came from: a refusal then falls back to a token per request instead of failing the call. */
  rule?: string;
  /** Epoch ms until which a refused policy target is not asked for again. */
  refusedUntilMs?: number;
}

/** How long a policy target the issuer refused is left alone before it is asked for again. */
const REFUSED_RETRY_MS = 30_000;

interface Slot {
  token?: Token;
  pending?: Promise<Token>;
  timer?: ReturnType<typeof setTimeout>;
  /** Keep it fresh in the background (targets fetched ahead). */
  ahead: boolean;
}

class Token implements IssuedToken {
  released = false;
  readonly refreshAtMs: number;
  readonly covers: GrantCheck;
  readonly value: string;
  readonly audience: string;
  readonly claims: Readonly<AccessTokenClaims>;
  readonly authorizationDetails: readonly HttpAuthorizationDetail[];
  readonly expiresAtMs: number;
  private readonly revoke: (t: Token) => Promise<void>;

  constructor(
    value: string,
    audience: string,
    claims: Readonly<AccessTokenClaims>,
    authorizationDetails: readonly HttpAuthorizationDetail[],
    expiresAtMs: number,
    lifetimeMs: number,
    revoke: (t: Token) => Promise<void>,
  ) {
    this.value = value;
    this.audience = audience;
    this.claims = claims;
    this.authorizationDetails = authorizationDetails;
    this.expiresAtMs = expiresAtMs;
    this.revoke = revoke;
    this.refreshAtMs = expiresAtMs - lifetimeMs / 4;
    const origin = normalizeAudience(audience);
    this.covers = typeof origin === "string" && origin.includes("://") ? compileGrant(authorizationDetails, origin) : () => false;
  }
  get jti(): string {
    return this.claims.jti;
  }
  get task(): string | undefined {
    return this.claims.task;
  }
  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    await this.revoke(this);
  }
}

/** createTokenClient starts a client; with targets that name actions it fetches their tokens ahead (`ready`). */
export function createTokenClient(options: TokenClientOptions): TokenClient {
  return new TokenClient(options);
}

export class TokenClient {
  readonly issuer: string;
  /** Resolves once the targets' tokens were fetched ahead (failures are warnings: calls retry). */
  readonly ready: Promise<void>;
  private readonly node: ClientNode;
  /** The explicit targets, then the policy's. */
  private targets: Target[];
  private readonly explicitTargets: Target[];
  /** Settles once the policy's targets are known (undefined: no policy, or known). */
  private policyTargets: Promise<void> | undefined;
  /** The source followed (policy given as a reloader), the policy last applied, and this node's identity once asked. */
  private readonly source: PolicySource | undefined;
  private applied: Policy | undefined;
  private me: Promise<Principal> | undefined;
  private policyTimer: ReturnType<typeof setInterval> | undefined;
  private readonly ttlS: number | undefined;
  private readonly now: () => number;
  private readonly slots = new Map<string, Slot>();
  private readonly suffix: string;
  private readonly onFetch: (message: unknown) => void;
  private closed = false;
  private readonly opts: TokenClientOptions;

  constructor(opts: TokenClientOptions) {
    this.opts = opts;
    if (!opts || typeof opts.node?.fetch !== "function" || typeof opts.node.id !== "string") throw invalid("node must be a MeshNode (its id binds the tokens; its fetch reaches the issuer)");
    const iss = normalizeAudience(opts.issuer ?? "");
    if (typeof iss !== "string" || !iss.includes("://")) throw invalid(`issuer must be the issuer's origin on the tailnet, such as "http://tokens"; got ${JSON.stringify(opts.issuer)}`);
    this.issuer = iss;
    this.node = opts.node;
    this.now = opts.now ?? Date.now;
    this.ttlS = opts.ttl === undefined ? undefined : seconds(opts.ttl, "ttl");
    this.suffix = opts.node.name.replace(/\.$/, "").split(".").slice(1).join(".");
    this.explicitTargets = (opts.targets ?? []).map((t, i) => {
      const aud = normalizeAudience(t.audience);
      if (typeof aud !== "string" || !aud.includes("://")) throw invalid(`targets[${i}].audience must be a service origin such as "http://billing"; got ${JSON.stringify(t.audience)}`);
      if (t.actions !== undefined && t.actions.length === 0) throw invalid(`targets[${i}].actions is empty: leave it out for a token per request`);
      return { audience: aud, origin: new URL(aud), ...(t.actions ? { actions: t.actions } : {}) };
    });
    this.targets = this.explicitTargets;
    let first: Policy | undefined;
    if (opts.policy !== undefined) {
      const given = opts.policy as Partial<Policy> & Partial<PolicySource>;
      if (isPolicy(given)) first = given;
      else if (given !== null && typeof given === "object" && "current" in given) {
        this.source = given as PolicySource;
        first = this.source.current;
      } else throw invalid("policy must be a Policy (loadPolicy) or what keeps one current (watchPolicyFile's reloader, pollPolicyServer's client)");
      if (first !== undefined && !isPolicy(first)) throw invalid("policy.current must be a Policy (loadPolicy)");
      if (typeof opts.node.whois !== "function" || !opts.node.ips?.length) throw invalid("with policy, node must be a MeshNode (its whois tells which rules apply to it)");
      if (this.source !== undefined) {
        this.policyTimer = setInterval(() => this.follow(), POLICY_CHECK_MS);
        this.policyTimer.unref?.();
      }
    }
    this.onFetch = (m) => this.decorate(m as FetchMessage);
    if (opts.attach !== false) dc.subscribe(FETCH_CHANNEL, this.onFetch);
    const explicit = this.explicitTargets.filter((t) => t.actions).map((t) => this.ahead(t));
    this.ready = Promise.all([...explicit, first !== undefined ? this.setPolicy(first) : undefined]).then(() => {});
  }

  /**
   * setPolicy makes the allowing `token` rules of `policy` that apply to
   * this node the client's policy targets, in place of the previous
   * policy's: tokens of targets that are gone are no longer refreshed
   * (they expire; calls get tokens per request or of the new targets), new
   * targets are fetched ahead. Resolves once those are fetched (failures
   * are warnings). A client given a reloader calls it by itself.
   */
  setPolicy(policy: Policy | undefined): Promise<void> {
    if (policy !== undefined && !isPolicy(policy)) return Promise.reject(invalid("setPolicy takes a Policy (loadPolicy)"));
    if (policy !== undefined && (typeof this.node.whois !== "function" || !this.node.ips?.length)) return Promise.reject(invalid("with policy, node must be a MeshNode (its whois tells which rules apply to it)"));
    this.applied = policy;
    const known = (async () => {
      const next = policy === undefined ? [] : this.fromPolicy(policy, await this.identity());
      // A newer setPolicy ran meanwhile: it decides.
      if (this.applied !== policy || this.closed) return [];
      const keep = new Set(next.map(targetKey));
      for (const old of this.targets) {
        if (old.rule === undefined || keep.has(targetKey(old))) continue;
        const slot = this.slots.get(slotKey(undefined, old.audience, old.actions!));
        if (slot !== undefined) {
          slot.ahead = false;
          clearTimeout(slot.timer);
        }
      }
      const before = new Set(this.targets.filter((t) => t.rule !== undefined).map(targetKey));
      this.targets = [...this.explicitTargets, ...next];
      return next.filter((t) => !before.has(targetKey(t)));
    })();
    const settled = known.then(
      () => {},
      (err: unknown) => this.warn(new MeshguardError(ErrorCode.TOKEN_REQUEST_FAILED, `tokens client: could not read which token rules apply to this node: ${err instanceof Error ? err.message : String(err)}`, { cause: err })),
    );
    this.policyTargets = settled;
    void settled.then(() => {
      if (this.policyTargets === settled) this.policyTargets = undefined;
    });
    return known.then(
      (added) => Promise.all(added.map((t) => this.ahead(t))).then(() => {}),
      () => {},
    );
  }

  /** follow applies the source's policy when it changed since the last look (a reference compare: cheap on every call). */
  private follow(): void {
    const src = this.source;
    if (src === undefined || this.closed) return;
    const cur = src.current;
    if (cur !== this.applied && (cur === undefined || isPolicy(cur))) void this.setPolicy(cur);
  }

  /** ahead fetches a target's token ahead (a failure is a warning: the calls retry, or fall back). */
  private ahead(t: Target): Promise<void> {
    return this.aheadToken(t, undefined).then(
      () => {},
      (err: unknown) => this.warn(err),
    );
  }

  /** identity: who this node is, as the tailnet tells it (asked once). */
  private identity(): Promise<Principal> {
    this.me ??= this.node.whois!(this.node.ips![0]!).then(
      (me) => {
        const full = me.node.name.replace(/\.$/, "");
        const principal: Principal = { node: full || me.node.hostname, tags: [...me.node.tags] };
        if (!me.tagged && me.user.login) principal.user = me.user.login;
        return principal;
      },
      (err: unknown) => {
        this.me = undefined;
        throw err;
      },
    );
    return this.me;
  }

  /**
   * fromPolicy lists a target for each audience (a service origin, no
   * pattern) of each allowing token rule whose src matches this node.
   * Rules for a pattern audience ("*", or a name) give no target: the
   * client cannot know the service's origin.
   */
  private fromPolicy(policy: Policy, principal: Principal): Target[] {
    const out: Target[] = [];
    const groups = policy.document.groups;
    for (const [i, rule] of policy.rules.entries()) {
      if (!rule.token || rule.effect !== "allow") continue;
      if (!srcMatches(resolveSrc(rule.src, groups), principal)) continue;
      for (const a of rule.token.audience) {
        const aud = normalizeAudience(a);
        if (typeof aud !== "string" || !aud.includes("://") || aud.includes("*")) continue;
        out.push({ audience: aud, origin: new URL(aud), actions: rule.token.actions as ActionSpec[], rule: rule.id ?? `rules[${i}]` });
      }
    }
    return out;
  }

  /**
   * token returns a token for the audience and actions: the cached one
   * while it has life left, else a new one from the issuer. Inside a task
   * (withTask) the token is the task's.
   */
  token(req: TokenRequest): Promise<IssuedToken> {
    return this.get(req, currentTask(), false);
  }

  /**
   * exchange narrows a token (RFC 8693 token exchange): same audience, a
   * subset of its actions, no longer life. For handing a sub-agent less
   * than you hold. Not cached.
   */
  async exchange(subject: IssuedToken | string, req: { actions?: ActionSpec[]; ttl?: number | string } = {}): Promise<IssuedToken> {
    const task = currentTask();
    task?.assertOpen(this.now());
    const form = new URLSearchParams({ grant_type: GRANT_TOKEN_EXCHANGE, subject_token: typeof subject === "string" ? subject : subject.value, subject_token_type: TOKEN_TYPE_JWT });
    if (req.actions) addActions(form, req.actions);
    const ttl = req.ttl === undefined ? undefined : seconds(req.ttl, "ttl");
    if (ttl !== undefined) form.set("ttl", String(ttl));
    if (task) form.set("task", task.id);
    const t = await this.request(form, typeof subject === "string" ? "the subject token's audience" : subject.audience);
    task?.add(t);
    return t;
  }

  /** authorization returns the `Authorization` value a request to `url` gets (for HTTP the client does not see, such as HTTP over MeshNode.dial), or undefined when no target matches. */
  async authorization(url: string, method = "GET"): Promise<string | undefined> {
    this.follow();
    await this.policyTargets;
    const t = await this.forRequest(url, method.toUpperCase(), currentTask());
    return t === undefined ? undefined : `Bearer ${t.value}`;
  }

  private warn(err: unknown): void {
    const e = err instanceof MeshguardError ? err : new MeshguardError(ErrorCode.TOKEN_REQUEST_FAILED, `tokens client: ${String(err)}`, { cause: err });
    this.opts.onWarning?.(e);
  }

  /** targetsOf finds the targets a URL belongs to: same scheme and port, the audience's host by short or full MagicDNS name. */
  private targetsOf(url: string): { targets: Target[]; path: string } | undefined {
    const u = urlParts(url);
    if (u === undefined) return undefined;
    const host = u.host.replace(/\.$/, "");
    const targets = this.targets.filter((target) => {
      const tp = urlParts(target.origin)!;
      if (tp.scheme !== u.scheme || tp.port !== u.port) return false;
      return host === tp.host || (this.suffix !== "" && host === `${tp.host}.${this.suffix}`);
    });
    return targets.length ? { targets, path: u.path } : undefined;
  }

  /** aheadToken is a target's own token (one for all the calls its actions cover). */
  private aheadToken(t: Target, task: Task | undefined): Promise<Token> {
    return this.get({ audience: t.audience, actions: t.actions! }, task, true).catch((err: unknown) => {
      // A policy target the issuer refuses (a deny rule carves into it, a `when` that does not hold now)
      // is left alone for a while: its calls get a token each meanwhile.
      if (t.rule !== undefined) t.refusedUntilMs = this.now() + REFUSED_RETRY_MS;
      throw err;
    });
  }

  /**
   * forRequest picks the token for a request: a target's when its actions
   * cover the request (waiting for one being fetched), else one for exactly
   * this method on this path.
   */
  private async forRequest(url: string, method: string, task: Task | undefined): Promise<Token | undefined> {
    const found = this.targetsOf(url);
    if (found === undefined) return undefined;
    const { targets, path } = found;
    for (const target of targets) {
      if (!target.actions || (target.refusedUntilMs ?? 0) > this.now()) continue;
      let t: Token;
      try {
        t = await this.aheadToken(target, task);
      } catch (err) {
        if (target.rule === undefined) throw err;
        this.warn(err);
        continue;
      }
      if (t.covers(method, path)) return t;
    }
    const audience = targets[0]!.audience;
    return this.get({ audience, actions: [{ methods: [method], locations: [`${audience}${path}`] }] }, task, false);
  }

  private decorate(m: FetchMessage): void {
    try {
      if (this.closed || m.node.id !== this.node.id || m.headers.has("authorization")) return;
      if (new URL(m.url).origin === this.issuer) return;
      this.follow();
      const task = currentTask();
      const attach = () =>
        this.forRequest(m.url, m.method, task).then((t) => {
          if (t !== undefined) m.headers.set("authorization", `Bearer ${t.value}`);
        });
      // The policy's targets are not known yet (the client has just started): the call waits for them.
      if (this.policyTargets !== undefined) return m.hold(this.policyTargets.then(attach));
      const found = this.targetsOf(m.url);
      if (found === undefined) return;
      // The common case — the token is cached — is decided now: the request is not held at all.
      const t = this.cachedFor(found, m.method, task);
      if (t !== undefined) return void m.headers.set("authorization", `Bearer ${t.value}`);
      m.hold(attach());
    } catch (err) {
      m.hold(Promise.reject(err));
    }
  }

  /**
   * cachedFor is what forRequest would pick, when that is known without
   * waiting: every target before the covering one has its token cached.
   * Undefined means "ask forRequest" (a token to fetch, or none to give).
   */
  private cachedFor(found: { targets: Target[]; path: string }, method: string, task: Task | undefined): Token | undefined {
    const now = this.now();
    for (const target of found.targets) {
      if (!target.actions || (target.refusedUntilMs ?? 0) > now) continue;
      const t = this.cached({ audience: target.audience, actions: target.actions }, task, now);
      if (t === undefined) return undefined;
      if (t.covers(method, found.path)) return t;
    }
    const audience = found.targets[0]!.audience;
    return this.cached({ audience, actions: [{ methods: [method], locations: [`${audience}${found.path}`] }] }, task, now);
  }

  /** cached is a slot's token while it may be handed out (starting its renewal once it is due), as get() would. */
  private cached(req: TokenRequest, task: Task | undefined, now: number): Token | undefined {
    const slot = this.slots.get(slotKey(task, req.audience, req.actions));
    const t = slot?.token;
    if (slot === undefined || t === undefined || t.released || now >= t.expiresAtMs - MIN_REMAINING_S * 1000) return undefined;
    if (now >= t.refreshAtMs && slot.pending === undefined) void this.renew(slot, req, task).catch((err: unknown) => this.warn(err));
    return t;
  }

  private get(req: TokenRequest, task: Task | undefined, ahead: boolean): Promise<Token> {
    if (this.closed) return Promise.reject(new MeshguardError(ErrorCode.CLOSED, "the tokens client is closed"));
    const key = slotKey(task, req.audience, req.actions);
    let slot = this.slots.get(key);
    if (slot === undefined) this.slots.set(key, (slot = { ahead: ahead && task === undefined }));
    const t = this.cached(req, task, this.now());
    if (t !== undefined) return Promise.resolve(t);
    return slot.pending ?? this.renew(slot, req, task);
  }

  private renew(slot: Slot, req: TokenRequest, task: Task | undefined): Promise<Token> {
    const p = (async () => {
      task?.assertOpen(this.now());
      const form = new URLSearchParams({ grant_type: GRANT_CLIENT_CREDENTIALS, audience: req.audience });
      addActions(form, req.actions);
      let ttl = req.ttl !== undefined ? seconds(req.ttl, "ttl") : this.ttlS;
      if (task && Number.isFinite(task.deadlineMs)) ttl = Math.max(1, Math.min(ttl ?? Infinity, Math.floor((task.deadlineMs - this.now()) / 1000)));
      if (ttl !== undefined) form.set("ttl", String(ttl));
      if (task) form.set("task", task.id);
      const t = await this.request(form, req.audience);
      task?.add(t);
      return t;
    })();
    slot.pending = p;
    p.then(
      (t) => {
        if (slot.pending === p) slot.pending = undefined;
        slot.token = t;
        this.schedule(slot, req, t);
      },
      () => {
        if (slot.pending === p) slot.pending = undefined;
      },
    );
    return p;
  }

  /** schedule renews a target's token in the background at its refresh time, so calls do not wait. */
  private schedule(slot: Slot, req: TokenRequest, t: Token): void {
    if (!slot.ahead || this.closed) return;
    clearTimeout(slot.timer);
    slot.timer = setTimeout(() => void this.renew(slot, req, undefined).catch((err: unknown) => this.warn(err)), Math.max(0, t.refreshAtMs - this.now()));
    slot.timer.unref?.();
  }

  /** request posts a form to the token endpoint; an OAuth refusal becomes TOKEN_REQUEST_FAILED with the issuer's reason. */
  private async request(form: URLSearchParams, what: string): Promise<Token> {
    const sent = this.now();
    const body = await this.post(PATH_TOKEN, form, `a token for ${what}`);
    const r = body as Partial<TokenResponse>;
    const claims = typeof r.access_token === "string" ? (decodeJson(r.access_token.split(".")[1] ?? "") as AccessTokenClaims | undefined) : undefined;
    if (!claims || typeof r.expires_in !== "number" || typeof claims.jti !== "string") {
      throw new MeshguardError(ErrorCode.TOKEN_REQUEST_FAILED, `the issuer's answer for ${what} is not a token response`);
    }
    return new Token(r.access_token!, claims.aud, Object.freeze(claims), r.authorization_details ?? claims.authorization_details ?? [], sent + r.expires_in * 1000, r.expires_in * 1000, (t) => this.revoke(t));
  }

  private async post(path: string, form: URLSearchParams, what: string): Promise<unknown> {
    let res;
    let text: string;
    try {
      res = await this.node.fetch(this.issuer + path, { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded", accept: "application/json" }, body: form.toString() });
      text = await res.text();
    } catch (err) {
      throw new MeshguardError(ErrorCode.TOKEN_REQUEST_FAILED, `could not reach the token issuer ${this.issuer} for ${what}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
    let json: Record<string, unknown> | undefined;
    try {
      json = JSON.parse(text) as Record<string, unknown>;
    } catch {
      json = undefined;
    }
    if (!res.ok) {
      const why = json && typeof json.error === "string" ? `${json.error}: ${String(json.error_description ?? "")}` : `HTTP ${res.status}`;
      throw new MeshguardError(ErrorCode.TOKEN_REQUEST_FAILED, `the token issuer refused ${what}: ${why}`, { hint: "the issuer grants what a token rule of the policy allows this node" });
    }
    return json;
  }

  /** revoke sends RFC 7009 revocation of a token and forgets it. */
  private async revoke(t: Token): Promise<void> {
    for (const [key, slot] of this.slots) {
      if (slot.token === t) {
        clearTimeout(slot.timer);
        this.slots.delete(key);
      }
    }
    await this.post(PATH_REVOKE, new URLSearchParams({ token: t.value, token_type_hint: "access_token" }), `the revocation of token ${t.jti}`);
  }

  /** close stops attaching tokens and refreshing; tokens already issued live until their exp (release them to end them now). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.policyTimer);
    if (this.opts.attach !== false) dc.unsubscribe(FETCH_CHANNEL, this.onFetch);
    for (const s of this.slots.values()) clearTimeout(s.timer);
    this.slots.clear();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

function isPolicy(p: unknown): p is Policy {
  return typeof (p as Policy | undefined)?.document?.part?.rules === "object" && Array.isArray((p as Policy).rules);
}

/** targetKey: a policy target's identity across policies (its audience and actions). */
function targetKey(t: Target): string {
  return slotKey(undefined, t.audience, t.actions ?? []);
}

function slotKey(task: Task | undefined, audience: string, actions: ActionSpec[]): string {
  return `${task?.id ?? ""}\n${audience}\n${JSON.stringify(actions)}`;
}

function addActions(form: URLSearchParams, actions: ActionSpec[]): void {
  const details = actions.filter((a): a is { methods: string[]; locations: string[] } => typeof a !== "string").map((a) => ({ type: HTTP_DETAIL_TYPE, actions: a.methods, locations: a.locations }));
  const scopes = actions.filter((a): a is string => typeof a === "string");
  if (details.length) form.set("authorization_details", JSON.stringify(details));
  if (scopes.length) form.set("scope", scopes.join(" "));
}

function seconds(v: number | string, what: string): number {
  const ms = typeof v === "number" ? v * 1000 : parseDuration(v);
  if (ms === undefined || !(ms >= 1000)) throw invalid(`${what} must be at least 1 second (a number of seconds or a duration such as "10m"); got ${JSON.stringify(v)}`);
  return Math.floor(ms / 1000);
}

function invalid(message: string): MeshguardError {
  return new MeshguardError(ErrorCode.INVALID_OPTIONS, `createTokenClient: ${message}`);
}
