/**
 * The authorization code grant with PKCE of the `oauth2` kind: each user's
 * own token (docs/connectors.md, "Authorization code with PKCE"). Consents
 * are bound to the whois identity that started them; tokens are sealed
 * (./keyring.ts) in the token store (./token-store.ts), one row per user;
 * tagged agents use a user's token only through that user's delegation.
 */

import { createHash, randomBytes } from "node:crypto";
import { ErrorCode, MeshguardError } from "../../errors.js";
import { normalizeUser } from "../../policy/identity.js";
import { parseDuration } from "../store/duration.js";
import type { Caller } from "../types.js";
import type { Keyring } from "./keyring.js";
import { clientOf, UNKNOWN_TTL_MS, type AcConfig, type Runtime } from "./oauth-config.js";
import { OAuthError, refreshAt, requestToken, revokeToken, SingleFlight, type GrantedToken, type OAuthClient } from "./oauth-token.js";
import type { Delegation, OAuthTokenStore } from "./token-store.js";
import { CredentialUnavailableError, type CredentialContext, type CredentialSource, type InjectedCredential } from "./types.js";

/** Where the gateway serves a connector's OAuth pages and API, under /meshguard/v1. */
export const oauthPath = (connector: string) => `/connectors/${encodeURIComponent(connector)}/oauth`;

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
  readonly status: number;
  readonly apiCode: string;

  constructor(
    status: number,
    apiCode: string,
    message: string,
    errorCode: ErrorCode = ErrorCode.INVALID_OPTIONS,
  ) {
    super(errorCode, message);
    this.status = status;
    this.apiCode = apiCode;
    this.name = "OAuthRouteError";
  }
}

/** How long an opened row serves calls before it is read again (see UserOAuthSource.#opened). */
const ROW_CACHE_MS = 2_000;

/** Consents one identity may have open at once. */
const MAX_PENDING = 8;

const userSubject = (login: string) => `user:${normalizeUser(login)}`;

/** A tag as delegations name it. */
export const TAG_RE = /^tag:[A-Za-z0-9][A-Za-z0-9_-]*$/;

/** One user's stored tokens as the API lists them: never a token. */
export interface TokenRow {
  /** The user, normalized ("alice" for alice@). */
  user: string;
  keyId: string;
  updatedAt: number;
  /** When the provider granted the access token (ms since the epoch). */
  grantedAt?: number;
  /** When the access token expires, when the provider said. */
  expiresAt?: number;
  /** The scopes granted, when the provider said. */
  scopes?: string[];
  /** Whether a refresh token is held (the access token is renewed on use). */
  renewable?: boolean;
  /** false when the row does not open with the keyring (its key was removed): the user connects again. */
  readable?: boolean;
}

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
  /** Access tokens an upstream refused (401), by subject: the next call renews instead of sending it again. */
  readonly #refused = new Map<string, string>();
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
    const refused = this.#refused.get(subject);
    // A refused token is read again from the store: another instance may have renewed it already.
    const blob = await this.#read(subject, refused !== undefined);
    if (blob === undefined) throw this.#consentNeeded(`${subject.slice(5)} has not connected (or revoked)`);
    const now = this.#rt.now();
    if (refused !== undefined && refused !== blob.a) this.#refused.delete(subject);
    const valid = (blob.e === undefined || now < blob.e) && refused !== blob.a;
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
      this.#refused.delete(subject);
      if ((this.#epoch.get(subject) ?? 0) !== epoch) throw this.#consentNeeded(`the tokens of ${subject.slice(5)} were revoked`);
      return blob;
    });
  }

  /** rejected marks the token the upstream refused: the next call for the same user renews it (with the refresh token) instead of sending it again. */
  async rejected(ctx: CredentialContext, injected: InjectedCredential): Promise<void> {
    let subject: string;
    try {
      subject = await this.subjectOf(ctx.caller);
    } catch {
      return; // the delegation is gone: the next resolve says so
    }
    const held = this.#opened.get(subject)?.blob.a;
    if (held !== undefined && injected.secrets.includes(held)) this.#refused.set(subject, held);
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

  /**
   * tokens lists the users with stored tokens (all, or one user's), never
   * the tokens: when each was granted and expires (the access token; a
   * renewable one is renewed on use), its scopes when the provider said,
   * and whether a refresh token is held. A row that does not open (its key
   * left the keyring) is listed with `readable: false`.
   */
  async tokens(user?: string): Promise<TokenRow[]> {
    const rows = await this.#store.listTokens({ connector: this.connector, ...(user === undefined ? {} : { subject: userSubject(user) }) });
    return rows.map((r) => {
      const row: TokenRow = { user: r.subject.slice(5), keyId: r.keyId, updatedAt: r.updatedAt };
      try {
        const b = JSON.parse(this.#keys.open(r.sealed, this.#context(r.subject))) as TokenBlob;
        Object.assign(row, { grantedAt: b.g, ...(b.e === undefined ? {} : { expiresAt: b.e }), ...(b.s === undefined ? {} : { scopes: b.s.split(" ").filter(Boolean) }), renewable: b.r !== undefined });
      } catch {
        row.readable = false;
      }
      return row;
    });
  }

  /** delegate lets agents with `tag` use `user`'s token (while the user owns them); refused when another user holds the tag. */
  async delegate(user: string, tag: string): Promise<Delegation> {
    if (!TAG_RE.test(tag)) throw new OAuthRouteError(400, "bad_request", `"tag" must look like tag:name, not ${JSON.stringify(tag).slice(0, 80)}`);
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

