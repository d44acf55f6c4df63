/**
 * The OAuth 2.0 credential kind of connectors (`"auth": { "type": "oauth2" }`,
 * docs/connectors.md#oauth-20):
 *
 * - `grant: "client_credentials"` (RFC 6749 §4.4): one token for every
 *   caller, fetched from the token endpoint, kept in memory, renewed ahead of
 *   its expiry; concurrent callers share one request.
 * - `grant: "authorization_code"` with PKCE (RFC 7636, S256): each user
 *   connects once through the gateway's consent page (./oauth-routes.ts);
 *   their tokens are sealed with the keyring (./keyring.ts) and kept apart
 *   per user in the token store (./token-store.ts); a tagged agent (no user)
 *   uses a user's token only through a delegation that user granted to one
 *   of its tags, and only when that user owns the agent (whois `owners`).
 *
 * Nothing here logs or returns a token: errors name connectors, users and
 * endpoints; injections list their token in `secrets` for the scrubber.
 */

import { createHash, randomBytes } from "node:crypto";
import { z } from "zod";
import { ErrorCode, MeshguardError } from "../../errors.js";
import { normalizeUser } from "../../policy/identity.js";
import { DURATION_HINT, parseDuration } from "../store/duration.js";
import { KeySourceSchema, type KeySource } from "../keys.js";
import type { Caller } from "../types.js";
import { Keyring } from "./keyring.js";
import { OAuthError, refreshAt, requestToken, revokeToken, SingleFlight, type GrantedToken, type OAuthClient } from "./oauth-token.js";
import { MemoryTokenStore, type Delegation, type OAuthTokenStore, type SealedTokenRow } from "./token-store.js";
import { CredentialUnavailableError, type CredentialContext, type CredentialEnv, type CredentialKind, type CredentialSource, type InjectedCredential } from "./types.js";

/** Where the gateway serves a connector's OAuth pages and API, under /meshguard/v1. */
export const oauthPath = (connector: string) => `/connectors/${encodeURIComponent(connector)}/oauth`;

const httpUrl = (what: string) =>
  z
    .string()
    .url(`must be the ${what} URL`)
    .refine((u) => /^https?:$/.test(new URL(u).protocol), `the ${what} URL must be http:// or https://`)
    .refine((u) => new URL(u).username === "" && new URL(u).password === "", `the ${what} URL must not hold credentials: put the client secret in clientSecret`);
const duration = z.string().refine((s) => parseDuration(s) !== undefined, DURATION_HINT);
const scope = z.string().regex(/^[\x21\x23-\x5b\x5d-\x7e]+$/, "a scope is printable ASCII without spaces, quotes or backslashes");

const Common = {
  type: z.literal("oauth2"),
  tokenUrl: httpUrl("token endpoint"),
  clientId: z.string().min(1, "the client id the authorization server registered the gateway under"),
  clientSecret: KeySourceSchema.optional().describe("where the client secret is: { env } or { file }"),
  authMethod: z.enum(["client_secret_basic", "client_secret_post", "none"]).optional().describe("how the client authenticates at the token endpoint (default client_secret_basic with a secret, none without)"),
  scopes: z.array(scope).default([]),
  refreshBefore: duration.default("60s").describe("renew a token this long before it expires (at most half its life)"),
  timeout: duration.default("15s").describe("how long a token request may take"),
};

const ClientCredentialsSchema = z
  .object({
    ...Common,
    grant: z.literal("client_credentials"),
    /** Extra token-request parameters some servers need (audience, resource). */
    params: z.record(z.string().regex(/^[a-z_]+$/), z.string()).optional(),
  })
  .strict()
  .refine((c) => c.clientSecret !== undefined, { path: ["clientSecret"], message: "the client credentials grant needs a client secret: { env } or { file }" });

const AuthorizationCodeSchema = z
  .object({
    ...Common,
    grant: z.literal("authorization_code"),
    authorizeUrl: httpUrl("authorization endpoint"),
    redirectUri: httpUrl("redirect").describe("the callback URL registered at the provider, as the user's browser reaches the gateway: http://127.0.0.1:PORT/meshguard/v1/connectors/NAME/oauth/callback through `meshguard connect`"),
    tokenKeys: KeySourceSchema.describe("the keyring that seals users' tokens at rest (ID:BASE64 entries, the last one seals new values)"),
    revocationUrl: httpUrl("revocation endpoint").optional().describe("RFC 7009 endpoint told when a user's tokens are revoked"),
    /** Extra authorization-request parameters (access_type, prompt, audience). */
    authorizeParams: z.record(z.string().regex(/^[a-z_]+$/), z.string()).optional(),
    consentTimeout: duration.default("10m").describe("how long a started consent may take"),
  })
  .strict()
  .refine((c) => new URL(c.redirectUri).pathname.endsWith("/oauth/callback"), { path: ["redirectUri"], message: "must end with /meshguard/v1/connectors/NAME/oauth/callback, the gateway's callback" })
  .refine((c) => new URL(c.redirectUri).protocol === "https:" || isLoopbackHost(new URL(c.redirectUri).hostname), {
    path: ["redirectUri"],
    message: "a plain http:// redirect URI must be on loopback (127.0.0.1, [::1], localhost), where `meshguard connect` forwards to the gateway; providers refuse others",
  });

function isLoopbackHost(h: string): boolean {
  return h === "localhost" || h === "[::1]" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

/** OAuth2ConfigSchema picks the grant's schema by `grant`, so each issue is reported against the grant meant. */
export const OAuth2ConfigSchema = z
  .object({
    type: z.literal("oauth2"),
    grant: z.enum(["client_credentials", "authorization_code"], { errorMap: () => ({ message: 'must be "client_credentials" (one token for every caller) or "authorization_code" (each user\'s own token)' }) }),
  })
  .passthrough()
  .transform((v, ctx): z.output<typeof ClientCredentialsSchema> | z.output<typeof AuthorizationCodeSchema> => {
    const r = (v.grant === "client_credentials" ? ClientCredentialsSchema : AuthorizationCodeSchema).safeParse(v);
    if (r.success) return r.data;
    for (const i of r.error.issues) ctx.addIssue({ ...i } as z.IssueData);
    return z.NEVER;
  });
export type OAuth2Config = z.output<typeof OAuth2ConfigSchema>;
type CcConfig = z.output<typeof ClientCredentialsSchema>;
type AcConfig = z.output<typeof AuthorizationCodeSchema>;

/** The clock and dependencies a source runs with; tests inject `now` and `fetch`. */
interface Runtime {
  now(): number;
  fetch?: typeof fetch | undefined;
}

function clientOf(connector: string, c: OAuth2Config, secret: string | undefined, rt: Runtime): OAuthClient {
  return {
    connector,
    tokenUrl: c.tokenUrl,
    clientId: c.clientId,
    clientSecret: secret,
    authMethod: c.authMethod ?? (secret === undefined ? "none" : "client_secret_basic"),
    timeoutMs: parseDuration(c.timeout)!,
    fetch: rt.fetch,
  };
}

/** What a token source holds for one subject between requests. */
interface Held {
  token: GrantedToken;
  grantedAt: number;
}

const UNKNOWN_TTL_MS = 5 * 60_000;

/**
 * ClientCredentialsSource holds one client-credentials token. A token in its
 * renewal window is still handed out while one renewal runs in the
 * background; a missing or expired one makes callers wait for the (single)
 * request.
 */
export class ClientCredentialsSource implements CredentialSource {
  readonly type = "oauth2";
  readonly #client: OAuthClient;
  readonly #cfg: CcConfig;
  readonly #rt: Runtime;
  readonly #flight = new SingleFlight<Held>();
  #held: Held | undefined;

  constructor(connector: string, cfg: CcConfig, secret: string, rt: Runtime) {
    this.#cfg = cfg;
    this.#rt = rt;
    this.#client = clientOf(connector, cfg, secret, rt);
  }

  /** accessToken returns a valid token, fetching or renewing it when due. */
  async accessToken(): Promise<string> {
    const now = this.#rt.now();
    const h = this.#held;
    if (h !== undefined && (h.token.expiresAt === undefined || now < h.token.expiresAt)) {
      if (now >= refreshAt(h.grantedAt, h.token.expiresAt, parseDuration(this.#cfg.refreshBefore)!, UNKNOWN_TTL_MS)) {
        // Renewal failures here are not the caller's: the token in hand is still good; the next call tries again.
        this.#renew().catch(() => undefined);
      }
      return h.token.accessToken;
    }
    return (await this.#renew()).token.accessToken;
  }

  #renew(): Promise<Held> {
    return this.#flight.run("", async () => {
      const params: Record<string, string> = { grant_type: "client_credentials", ...(this.#cfg.params ?? {}) };
      if (this.#cfg.scopes.length > 0) params.scope = this.#cfg.scopes.join(" ");
      const grantedAt = this.#rt.now();
      const held = { token: await requestToken(this.#client, params, grantedAt), grantedAt };
      this.#held = held;
      return held;
    });
  }

  /** invalidate forgets the token (the upstream answered 401 to it): the next call fetches a new one. */
  invalidate(): void {
    this.#held = undefined;
  }

  async resolve(_ctx: CredentialContext): Promise<InjectedCredential> {
    let token: string;
    try {
      token = await this.accessToken();
    } catch (err) {
      throw new CredentialUnavailableError(`connector ${JSON.stringify(this.#client.connector)} could not get an OAuth token: ${(err as Error).message.split("\n")[0]}`, 502, { cause: err });
    }
    return { headers: { authorization: `Bearer ${token}` }, secrets: [token] };
  }

  secrets(): readonly string[] {
    return [this.#client.clientSecret ?? ""].filter((s) => s !== "");
  }
}

/** A consent in progress: started by `identity`, for `user`. */
interface Pending {
  identity: string;
  user: string;
  verifier: string;
  expiresAt: number;
}

/** The sealed form of a user's tokens (JSON inside the keyring's envelope). */
interface TokenBlob {
  a: string;
  r?: string | undefined;
  e?: number | undefined;
  g: number;
  s?: string | undefined;
}

/** identityOf is what binds a consent to the whois identity that started it: the node and its user (or the loopback principal). */
export function identityOf(caller: Pick<Caller, "via" | "node" | "user" | "tags">): string {
  return JSON.stringify([caller.via, caller.node, normalizeUser(caller.user), [...caller.tags].sort()]);
}

/**
 * OAuthRouteError carries the HTTP status and the code (`apiCode`) the
 * gateway's API answers with (./oauth-routes.ts). Its MeshguardError code
 * says the class: a bad or foreign `state` is CONNECTOR_OAUTH_STATE_INVALID,
 * a provider's refusal CONNECTOR_OAUTH_FAILED, a request the caller may not
 * make or got wrong INVALID_OPTIONS.
 */
export class OAuthRouteError extends MeshguardError {
  constructor(
    readonly status: number,
    readonly apiCode: string,
    message: string,
    errorCode: ErrorCode = ErrorCode.INVALID_OPTIONS,
  ) {
    super(errorCode, message);
    this.name = "OAuthRouteError";
  }
}

/** How long an opened row serves calls before it is read again (see UserOAuthSource.#opened). */
const ROW_CACHE_MS = 2_000;

/** Consents one identity may have open at once. */
const MAX_PENDING = 8;

const userSubject = (login: string) => `user:${normalizeUser(login)}`;

/**
 * UserOAuthSource is a connector whose calls carry the token of the user
 * behind the call (authorization code with PKCE). It also serves the
 * consent, callback, revocation and delegation routes (./oauth-routes.ts).
 */
export class UserOAuthSource implements CredentialSource {
  readonly type = "oauth2";
  readonly connector: string;
  readonly #cfg: AcConfig;
  readonly #client: OAuthClient;
  readonly #rt: Runtime;
  readonly #keys: Keyring;
  readonly #store: OAuthTokenStore;
  readonly #pending = new Map<string, Pending>();
  readonly #flight = new SingleFlight<TokenBlob>();
  /**
   * Tokens opened from the store, so a call neither reads nor decrypts its
   * row each time. Fresh for ROW_CACHE_MS: how long a revocation made by
   * another gateway instance sharing the store may take to apply here (this
   * instance's own revocations and writes apply at once).
   */
  readonly #opened = new Map<string, { blob: TokenBlob; at: number }>();
  /** Bumped by each revocation of a subject: a renewal that started before it must not write its tokens back. */
  readonly #epoch = new Map<string, number>();

  constructor(connector: string, cfg: AcConfig, secret: string | undefined, keys: Keyring, store: OAuthTokenStore, rt: Runtime) {
    this.connector = connector;
    this.#cfg = cfg;
    this.#rt = rt;
    this.#keys = keys;
    this.#store = store;
    this.#client = clientOf(connector, cfg, secret, rt);
  }

  /** The keyring's current key id (new writes are sealed with it). */
  get currentKeyId(): string {
    return this.#keys.current;
  }

  #context(subject: string): string {
    return `meshguard-oauth\u0000${this.connector}\u0000${subject}`;
  }

  /**
   * start begins a consent for the user behind `caller` and returns the
   * authorization URL to send their browser to. A tagged node has no user
   * and cannot start one.
   */
  start(caller: Caller): { url: string; expiresAt: number } {
    if (caller.tags.length > 0 || caller.user === "") {
      throw new OAuthRouteError(
        403,
        "no_user",
        `connector ${JSON.stringify(this.connector)} acts for users: ${caller.tags.length > 0 ? `the tagged node ${caller.node} has no user` : "this caller has no user"}. A user connects from their own device, then grants a tag use of their token with POST /meshguard/v1${oauthPath(this.connector)}/delegations`,
      );
    }
    const now = this.#rt.now();
    const identity = identityOf(caller);
    // Expired consents go; one identity keeps at most MAX_PENDING open (the oldest is dropped), so starts cannot fill the memory.
    let mine = 0;
    for (const [s, p] of this.#pending) {
      if (p.expiresAt <= now) this.#pending.delete(s);
      else if (p.identity === identity) mine++;
    }
    if (mine >= MAX_PENDING) {
      for (const [s, p] of this.#pending) {
        if (p.identity !== identity) continue;
        this.#pending.delete(s);
        if (--mine < MAX_PENDING) break;
      }
    }
    const state = randomBytes(32).toString("base64url");
    const verifier = randomBytes(32).toString("base64url");
    const expiresAt = now + parseDuration(this.#cfg.consentTimeout)!;
    this.#pending.set(state, { identity, user: caller.user, verifier, expiresAt });
    const u = new URL(this.#cfg.authorizeUrl);
    const q = u.searchParams;
    for (const [k, v] of Object.entries(this.#cfg.authorizeParams ?? {})) q.set(k, v);
    q.set("response_type", "code");
    q.set("client_id", this.#cfg.clientId);
    q.set("redirect_uri", this.#cfg.redirectUri);
    if (this.#cfg.scopes.length > 0) q.set("scope", this.#cfg.scopes.join(" "));
    q.set("state", state);
    q.set("code_challenge", createHash("sha256").update(verifier).digest("base64url"));
    q.set("code_challenge_method", "S256");
    return { url: u.toString(), expiresAt };
  }

  /**
   * finish completes a consent from the provider's redirect: the `state`
   * must be one this gateway issued, unexpired, unused, and started by the
   * same identity as `caller`; the code is then exchanged (with the PKCE
   * verifier) and the user's tokens stored sealed. A state is used once,
   * whoever presents it.
   */
  async finish(caller: Caller, query: URLSearchParams): Promise<{ user: string }> {
    const state = query.get("state") ?? "";
    const p = this.#pending.get(state);
    this.#pending.delete(state);
    if (p === undefined || p.expiresAt <= this.#rt.now()) {
      throw new OAuthRouteError(400, "bad_state", `this consent for connector ${JSON.stringify(this.connector)} is unknown, expired or already finished: start again at /meshguard/v1${oauthPath(this.connector)}/start`, ErrorCode.CONNECTOR_OAUTH_STATE_INVALID);
    }
    if (p.identity !== identityOf(caller)) {
      throw new OAuthRouteError(403, "wrong_identity", `this consent for connector ${JSON.stringify(this.connector)} was started by another identity; it is cancelled. Start again from your own device`, ErrorCode.CONNECTOR_OAUTH_STATE_INVALID);
    }
    const error = query.get("error");
    if (error !== null) {
      const desc = (query.get("error_description") ?? "").replace(/[\u0000-\u001f\u007f]+/g, " ").slice(0, 200);
      throw new OAuthRouteError(400, "consent_refused", `the authorization server did not grant access: ${error.slice(0, 64)}${desc ? ` (${desc})` : ""}`, ErrorCode.CONNECTOR_OAUTH_FAILED);
    }
    const code = query.get("code");
    if (code === null || code === "") throw new OAuthRouteError(400, "bad_request", "the callback has neither a code nor an error");
    const subject = userSubject(p.user);
    const epoch = this.#epoch.get(subject) ?? 0;
    const grantedAt = this.#rt.now();
    let token: GrantedToken;
    try {
      token = await requestToken(this.#client, { grant_type: "authorization_code", code, redirect_uri: this.#cfg.redirectUri, code_verifier: p.verifier }, grantedAt);
    } catch (err) {
      throw new OAuthRouteError(502, "token_exchange_failed", (err as Error).message.split("\n")[0]!, ErrorCode.CONNECTOR_OAUTH_FAILED);
    }
    await this.#write(subject, epoch, { a: token.accessToken, r: token.refreshToken, e: token.expiresAt, g: grantedAt, s: token.scope });
    return { user: p.user };
  }

  async #write(subject: string, epoch: number, blob: TokenBlob): Promise<void> {
    if ((this.#epoch.get(subject) ?? 0) !== epoch) return;
    await this.#store.putToken({ connector: this.connector, subject, keyId: this.#keys.current, sealed: this.#keys.seal(JSON.stringify(blob), this.#context(subject)), updatedAt: this.#rt.now() });
    if ((this.#epoch.get(subject) ?? 0) === epoch) this.#opened.set(subject, { blob, at: this.#rt.now() });
  }

  /** #read returns a subject's tokens: opened within ROW_CACHE_MS, or read and opened now (`fresh`: always). */
  async #read(subject: string, fresh = false): Promise<TokenBlob | undefined> {
    const held = this.#opened.get(subject);
    const now = this.#rt.now();
    if (!fresh && held !== undefined && now - held.at < ROW_CACHE_MS && now >= held.at) return held.blob;
    const epoch = this.#epoch.get(subject) ?? 0;
    const row = await this.#store.getToken(this.connector, subject);
    if (row === undefined) {
      this.#opened.delete(subject);
      return undefined;
    }
    const blob = JSON.parse(this.#keys.open(row.sealed, this.#context(subject))) as TokenBlob;
    if ((this.#epoch.get(subject) ?? 0) === epoch) this.#opened.set(subject, { blob, at: now });
    return blob;
  }

  /** subjectOf says whose token a call uses: the caller's own, or for a tagged agent its owner's delegated one. */
  async subjectOf(caller: Caller): Promise<string> {
    if (caller.tags.length === 0) {
      if (caller.user === "") throw this.#consentNeeded("this caller has no user");
      return userSubject(caller.user);
    }
    const owners = new Set(caller.owners.map(normalizeUser));
    for (const tag of caller.tags) {
      const d = await this.#store.getDelegation(this.connector, tag);
      if (d !== undefined && owners.has(normalizeUser(d.user))) return userSubject(d.user);
    }
    throw new CredentialUnavailableError(
      `connector ${JSON.stringify(this.connector)} acts for users, and no owner of the tagged node ${caller.node} (${caller.tags.join(", ")}) has delegated their token to its tags`,
      401,
      { hint: `an owner of the tag connects, then calls POST /meshguard/v1${oauthPath(this.connector)}/delegations with {"tag": "${caller.tags[0]}"}` },
    );
  }

  #consentNeeded(why: string): CredentialUnavailableError {
    return new CredentialUnavailableError(`connector ${JSON.stringify(this.connector)} has no token for this caller: ${why}`, 401, {
      hint: `open /meshguard/v1${oauthPath(this.connector)}/start on the gateway (through \`meshguard connect\`) and consent`,
    });
  }

  /** accessToken returns the token of `subject`, renewing it (one renewal per subject at a time) when due. */
  async accessToken(subject: string): Promise<string> {
    const blob = await this.#read(subject);
    if (blob === undefined) throw this.#consentNeeded(`${subject.slice(5)} has not connected (or revoked)`);
    const now = this.#rt.now();
    const valid = blob.e === undefined || now < blob.e;
    if (!valid || now >= refreshAt(blob.g, blob.e, parseDuration(this.#cfg.refreshBefore)!, UNKNOWN_TTL_MS)) {
      if (blob.r === undefined) {
        if (valid) return blob.a;
        throw this.#consentNeeded(`the token of ${subject.slice(5)} expired and the provider gave no refresh token`);
      }
      const renewal = this.#renew(subject, blob.r);
      if (!valid) return (await renewal).a;
      renewal.catch(() => undefined);
    }
    return blob.a;
  }

  #renew(subject: string, refresh: string): Promise<TokenBlob> {
    return this.#flight.run(subject, async () => {
      const epoch = this.#epoch.get(subject) ?? 0;
      const grantedAt = this.#rt.now();
      let t: GrantedToken;
      try {
        t = await requestToken(this.#client, { grant_type: "refresh_token", refresh_token: refresh }, grantedAt);
      } catch (err) {
        if (err instanceof OAuthError && err.oauthError === "invalid_grant") {
          // The provider no longer honours the refresh token (revoked there, expired): the user must consent again.
          this.#opened.delete(subject);
          await this.#store.deleteToken(this.connector, subject);
          throw this.#consentNeeded(`the provider refused to renew the token of ${subject.slice(5)} (invalid_grant)`);
        }
        throw err;
      }
      const blob: TokenBlob = { a: t.accessToken, r: t.refreshToken ?? refresh, e: t.expiresAt, g: grantedAt, s: t.scope };
      await this.#write(subject, epoch, blob);
      if ((this.#epoch.get(subject) ?? 0) !== epoch) throw this.#consentNeeded(`the tokens of ${subject.slice(5)} were revoked`);
      return blob;
    });
  }

  async resolve(ctx: CredentialContext): Promise<InjectedCredential> {
    const subject = await this.subjectOf(ctx.caller);
    let token: string;
    try {
      token = await this.accessToken(subject);
    } catch (err) {
      if (err instanceof CredentialUnavailableError) throw err;
      throw new CredentialUnavailableError(`connector ${JSON.stringify(this.connector)} could not get a token for ${subject.slice(5)}: ${(err as Error).message.split("\n")[0]}`, 502, { cause: err });
    }
    return { headers: { authorization: `Bearer ${token}` }, secrets: [token] };
  }

  /**
   * revoke deletes a user's tokens (and tells the provider when a
   * revocationUrl is configured; its failure does not keep the tokens).
   * Returns whether there were any.
   */
  async revoke(user: string): Promise<boolean> {
    const subject = userSubject(user);
    this.#epoch.set(subject, (this.#epoch.get(subject) ?? 0) + 1);
    this.#opened.delete(subject);
    let blob: TokenBlob | undefined;
    try {
      blob = await this.#read(subject, true);
    } catch {
      blob = undefined; // a row that does not open is deleted all the same
    }
    this.#opened.delete(subject);
    const had = await this.#store.deleteToken(this.connector, subject);
    if (blob !== undefined && this.#cfg.revocationUrl !== undefined) {
      await revokeToken(this.#client, this.#cfg.revocationUrl, blob.r ?? blob.a, blob.r ? "refresh_token" : "access_token").catch(() => false);
    }
    return had;
  }

  /** tokens lists the users with stored tokens (all, or one user's), without the tokens. */
  async tokens(user?: string): Promise<{ user: string; keyId: string; updatedAt: number }[]> {
    const rows = await this.#store.listTokens({ connector: this.connector, ...(user === undefined ? {} : { subject: userSubject(user) }) });
    return rows.map((r) => ({ user: r.subject.slice(5), keyId: r.keyId, updatedAt: r.updatedAt }));
  }

  /** delegate lets agents with `tag` use `user`'s token (while the user owns them); refused when another user holds the tag. */
  async delegate(user: string, tag: string): Promise<Delegation> {
    if (!/^tag:[A-Za-z0-9][A-Za-z0-9_-]*$/.test(tag)) throw new OAuthRouteError(400, "bad_request", `"tag" must look like tag:name, not ${JSON.stringify(tag).slice(0, 80)}`);
    const d: Delegation = { connector: this.connector, tag, user: normalizeUser(user), grantedAt: this.#rt.now() };
    const held = await this.#store.putDelegation(d);
    if (held !== undefined) throw new OAuthRouteError(409, "conflict", `${held.user} already delegates connector ${JSON.stringify(this.connector)} to ${tag}: they (or an admin) revoke it first`);
    return d;
  }

  /** undelegate removes a delegation; `user` undefined (an admin) removes whoever's it is. */
  async undelegate(tag: string, user: string | undefined): Promise<boolean> {
    return this.#store.deleteDelegation(this.connector, tag, user === undefined ? undefined : normalizeUser(user));
  }

  async delegations(user?: string): Promise<Delegation[]> {
    return this.#store.listDelegations({ connector: this.connector, ...(user === undefined ? {} : { user: normalizeUser(user) }) });
  }

  /** reseal re-seals every row not under the current key (after a rotation); returns how many. */
  async reseal(): Promise<number> {
    let n = 0;
    for (const row of await this.#store.listTokens({ connector: this.connector })) {
      if (row.keyId === this.#keys.current) continue;
      const plain = this.#keys.open(row.sealed, this.#context(row.subject));
      await this.#store.putToken({ ...row, keyId: this.#keys.current, sealed: this.#keys.seal(plain, this.#context(row.subject)), updatedAt: this.#rt.now() });
      n++;
    }
    return n;
  }

  secrets(): readonly string[] {
    return [this.#client.clientSecret ?? ""].filter((s) => s !== "");
  }
}

/** oauthOrigins lists the origins the gateway itself must reach for `cfg` (token and revocation endpoints), for its self-guard. The authorization page is the user's browser's to reach, not the gateway's. */
export function oauthOrigins(cfg: OAuth2Config): string[] {
  const urls = [cfg.tokenUrl, ...(cfg.grant === "authorization_code" && cfg.revocationUrl !== undefined ? [cfg.revocationUrl] : [])];
  return [...new Set(urls.map((u) => new URL(u).origin))];
}

/** OAuthEnv is the CredentialEnv plus where per-user tokens are kept (the gateway's store when it has one). */
export interface OAuthEnv extends CredentialEnv {
  tokenStore?: OAuthTokenStore | undefined;
  /** Reads keyring sources (default process.env). */
  processEnv?: NodeJS.ProcessEnv | undefined;
  fetch?: typeof fetch | undefined;
}

/** OAUTH2_KIND is the `oauth2` credential kind (./registry.ts lists it). */
export const OAUTH2_KIND: CredentialKind<OAuth2Config> = {
  schema: OAuth2ConfigSchema,
  async create(cfg, env: OAuthEnv) {
    const rt: Runtime = { now: () => env.now(), fetch: env.fetch };
    const secret = cfg.clientSecret === undefined ? undefined : await env.readSecret(cfg.clientSecret, `the OAuth client secret of connector ${env.connector}`);
    if (cfg.grant === "client_credentials") return new ClientCredentialsSource(env.connector, cfg, secret!, rt);
    const keys = await Keyring.load(cfg.tokenKeys, env.processEnv);
    let store = env.tokenStore;
    if (store === undefined) {
      env.warn(`connector ${env.connector}: the gateway has no store, so users' OAuth tokens are kept in memory only and lost at restart (configure storage)`);
      store = new MemoryTokenStore();
    }
    return new UserOAuthSource(env.connector, cfg, secret, keys, store, rt);
  },
  resolvePaths(cfg, abs) {
    const f = (k: KeySource | undefined) => (k?.file === undefined ? k : { file: abs(k.file) });
    const out = { ...cfg, clientSecret: f(cfg.clientSecret) };
    if (cfg.grant === "authorization_code") return { ...out, tokenKeys: f(cfg.tokenKeys)! } as OAuth2Config;
    return out as OAuth2Config;
  },
};

export type { SealedTokenRow };
