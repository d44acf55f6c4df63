// The OAuth 2.0 credential kind against a real authorization server
// (oidc-provider, ./oauth-server.ts): client credentials (cache, renewal
// ahead of expiry, one request under concurrency, typed errors) and the
// per-user authorization code with PKCE (state bound to the identity,
// sealed storage, key rotation, renewal, revocation, delegation to a tag).
// The gateway's clock is injected; the server's tokens live an hour.
import { randomBytes } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { IncomingMessage } from "node:http";
import { DatabaseSync } from "node:sqlite";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { browserRefusal } from "../../src/gateway/console/browser.js";
import { readKey } from "../../src/gateway/keys.js";
import { openStore } from "../../src/gateway/store/index.js";
import { SourceFile } from "../../src/policy/source.js";
import { Keyring } from "../../src/gateway/credentials/keyring.js";
import { OAUTH2_KIND, OAuth2ConfigSchema, oauthOrigins, type ClientCredentialsSource, type OAuthEnv, type UserOAuthSource } from "../../src/gateway/credentials/oauth.js";
import { MemoryTokenStore, type OAuthTokenStore } from "../../src/gateway/credentials/token-store.js";
import { CredentialUnavailableError } from "../../src/gateway/credentials/types.js";
import type { Caller } from "../../src/gateway/types.js";
import { tokenStoreConformance } from "./token-store-conformance.js";
import { CC_CLIENT, consent, startOAuthServer, WEB_CLIENT, webAuth, type OAuthServer } from "./oauth-server.js";

const REDIRECT = "http://127.0.0.1:4999/meshguard/v1/connectors/crm/oauth/callback";
const K1 = `k1:${randomBytes(32).toString("base64")}`;
const K2 = `k2:${randomBytes(32).toString("base64")}`;

export function user(login: string, node = `${login}-laptop`): Caller {
  return { principal: { node, tags: [], user: login }, node, tags: [], user: login, owners: [login], groups: [], role: "user", addr: "100.64.0.9", via: "tailnet", caps: {} };
}
export function agent(node: string, tag: string, owners: string[]): Caller {
  return { principal: { node, tags: [tag] }, node, tags: [tag], user: owners[0] ?? "", owners, groups: [], role: "user", addr: "100.64.0.10", via: "tailnet", caps: {} };
}

class Clock {
  t = Date.now();
  now = () => this.t;
  advance(ms: number) {
    this.t += ms;
  }
}

let srv: OAuthServer;
beforeAll(async () => {
  srv = await startOAuthServer({ redirectUris: [REDIRECT] });
});
afterAll(async () => {
  await srv?.close();
});

function envOf(clock: Clock, vars: Record<string, string>, tokenStore?: OAuthTokenStore, warnings: string[] = []): OAuthEnv {
  return {
    connector: "crm",
    baseUrl: "http://127.0.0.1:1/api",
    readSecret: (src, what) => readKey(src, what, vars),
    dataDir: "/nonexistent",
    now: clock.now,
    warn: (m) => warnings.push(m),
    tokenStore,
    processEnv: vars,
  };
}

const ccConfig = (extra: object = {}) => OAuth2ConfigSchema.parse({ type: "oauth2", grant: "client_credentials", tokenUrl: srv.tokenUrl, clientId: CC_CLIENT.id, clientSecret: { env: "CC_SECRET" }, scopes: ["api:read"], ...extra });
const acConfig = (extra: object = {}) =>
  OAuth2ConfigSchema.parse({ ...webAuth(srv, REDIRECT), ...extra });

async function ccSource(clock: Clock, secret = CC_CLIENT.secret, extra: object = {}) {
  return (await OAUTH2_KIND.create(ccConfig(extra), envOf(clock, { CC_SECRET: secret }))) as ClientCredentialsSource;
}
async function acSource(clock: Clock, store: OAuthTokenStore, keys = K1) {
  return (await OAUTH2_KIND.create(acConfig(), envOf(clock, { WEB_SECRET: WEB_CLIENT.secret, OAUTH_KEYS: keys }, store))) as UserOAuthSource;
}
const bearer = (inj: { headers?: Record<string, string> }) => inj.headers!.authorization!.replace(/^Bearer /, "");

/** connect runs a user's whole consent and returns the callback query the gateway got. */
async function connect(src: UserOAuthSource, who: Caller, login = who.user): Promise<URLSearchParams> {
  const { url } = src.start(who);
  return new URL(await consent(url, login, REDIRECT)).searchParams;
}

describe("client credentials", () => {
  it("fetches a token once, caches it, and renews it before it expires", async () => {
    const clock = new Clock();
    const src = await ccSource(clock);
    const before = srv.tokenPosts();
    const t1 = bearer(await src.resolve({ connector: "crm", caller: user("alice@") }));
    expect((await srv.introspect(t1)).active).toBe(true);
    expect(bearer(await src.resolve({ connector: "crm", caller: user("bob@") }))).toBe(t1);
    expect(srv.tokenPosts() - before).toBe(1);
    // 59 minutes 30 s later: inside the 60 s renewal window, the old token is still handed out while one renewal runs.
    clock.advance(3600_000 - 30_000);
    const inWindow = await Promise.all(Array.from({ length: 20 }, () => src.accessToken()));
    expect(new Set(inWindow)).toEqual(new Set([t1]));
    await expect.poll(() => srv.tokenPosts() - before).toBe(2);
    await expect.poll(() => src.accessToken()).not.toBe(t1);
    const t2 = await src.accessToken();
    expect((await srv.introspect(t2)).active).toBe(true);
    expect(srv.tokenPosts() - before).toBe(2);
    expect(src.secrets()).toEqual([CC_CLIENT.secret]);
    // The upstream refused the token (401): forgotten, the next call fetches another.
    src.invalidate();
    const t3 = await src.accessToken();
    expect(t3).not.toBe(t2);
    expect(srv.tokenPosts() - before).toBe(3);
  });

  it("makes 20 concurrent callers with an expired token share one request", async () => {
    const clock = new Clock();
    const src = await ccSource(clock);
    const t1 = await src.accessToken();
    clock.advance(2 * 3600_000);
    const before = srv.tokenPosts();
    const got = await Promise.all(Array.from({ length: 20 }, () => src.accessToken()));
    expect(srv.tokenPosts() - before).toBe(1);
    expect(new Set(got).size).toBe(1);
    expect(got[0]).not.toBe(t1);
  });

  it("fails with a typed error naming the OAuth error and never the secret", async () => {
    const clock = new Clock();
    const wrong = "wrong-secret-value-xyz-123";
    const src = await ccSource(clock, wrong);
    const err = await src.resolve({ connector: "crm", caller: user("alice@") }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CredentialUnavailableError);
    expect((err as CredentialUnavailableError).status).toBe(502);
    expect((err as Error).message).toMatch(/invalid_client/);
    expect((err as Error).message).not.toContain(wrong);
    const cause = (err as Error).cause as { code: string; oauthError: string; status: number };
    expect(cause).toMatchObject({ code: "MESHGUARD_CONNECTOR_OAUTH_FAILED", oauthError: "invalid_client", status: 401 });

    const unreachable = (await OAUTH2_KIND.create(ccConfig({ tokenUrl: "http://127.0.0.1:1/token" }), envOf(clock, { CC_SECRET: CC_CLIENT.secret }))) as ClientCredentialsSource;
    await expect(unreachable.accessToken()).rejects.toThrow(/http:\/\/127\.0\.0\.1:1\/token of connector "crm" could not be reached/);
  });

  it("refuses configs that would put a secret in the config or lack one", () => {
    const problems = (v: object) => {
      const r = OAuth2ConfigSchema.safeParse(v);
      return r.success ? "" : r.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("\n");
    };
    const cc = { type: "oauth2", grant: "client_credentials", tokenUrl: srv.tokenUrl, clientId: "x", clientSecret: { env: "S" } };
    expect(problems(cc)).toBe("");
    expect(problems({ ...cc, clientSecret: "plain-text" })).toMatch(/^clientSecret: must be \{ "env": "NAME" \} or \{ "file": "path" \}/);
    expect(problems({ ...cc, clientSecret: undefined })).toMatch(/^clientSecret: the client credentials grant needs a client secret/);
    expect(problems({ ...cc, tokenUrl: "http://id:pw@127.0.0.1/token" })).toMatch(/^tokenUrl: .*must not hold credentials/);
    expect(problems({ ...cc, grant: "password" })).toMatch(/^grant: must be "client_credentials"/);
    const ac = { ...cc, grant: "authorization_code", authorizeUrl: srv.authorizeUrl, redirectUri: REDIRECT, tokenKeys: { env: "K" } };
    expect(problems(ac)).toBe("");
    expect(problems({ ...ac, redirectUri: "http://gateway.example.com/meshguard/v1/connectors/crm/oauth/callback" })).toMatch(/^redirectUri: .*must be on loopback/);
    expect(problems({ ...ac, tokenKeys: undefined })).toMatch(/^tokenKeys: /);
    // What the gateway's own guard must let it reach: token and revocation endpoints, not the browser's authorization page.
    expect(oauthOrigins(acConfig({ authorizeUrl: "https://login.example.com/authorize", revocationUrl: "https://revoke.example.com/r" }))).toEqual([srv.url, "https://revoke.example.com"]);
    expect(oauthOrigins(ccConfig())).toEqual([srv.url]);
  });
});

describe("authorization code with PKCE, per user", () => {
  it("connects a user, seals the tokens, and injects that user's token only", async () => {
    const clock = new Clock();
    const store = new MemoryTokenStore();
    const src = await acSource(clock, store);
    const alice = user("alice@");
    const q = await connect(src, alice);
    expect(q.get("code")).toBeTruthy();
    await expect(src.finish(alice, q)).resolves.toEqual({ user: "alice@" });
    const token = bearer(await src.resolve({ connector: "crm", caller: alice }));
    expect(await srv.introspect(token)).toMatchObject({ active: true, sub: "alice@" });
    const [row] = await store.listTokens({});
    expect(row).toMatchObject({ connector: "crm", subject: "user:alice", keyId: "k1" });
    expect(row!.sealed).not.toContain(token);
    expect(JSON.stringify(row)).not.toContain(token);
    // bob has not connected: refused with 401 and where to consent, never alice's token.
    const err = await src.resolve({ connector: "crm", caller: user("bob@") }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CredentialUnavailableError);
    expect((err as CredentialUnavailableError).status).toBe(401);
    expect((err as Error).message).toMatch(/\/meshguard\/v1\/connectors\/crm\/oauth\/start/);
    // The listing says when the token was granted and expires, its scopes and whether it renews: never the token.
    expect(await src.tokens()).toEqual([{ user: "alice", keyId: "k1", updatedAt: clock.t, grantedAt: clock.t, expiresAt: expect.any(Number), scopes: expect.arrayContaining(["api:read"]), renewable: true }]);
    expect(JSON.stringify(await src.tokens())).not.toContain(token);
  });

  it("binds state to the identity that started: another identity is refused and the state is spent", async () => {
    const clock = new Clock();
    const src = await acSource(clock, new MemoryTokenStore());
    const alice = user("alice@");
    const q = await connect(src, alice);
    await expect(src.finish(user("bob@"), q)).rejects.toMatchObject({ status: 403, apiCode: "wrong_identity", code: "MESHGUARD_CONNECTOR_OAUTH_STATE_INVALID" });
    await expect(src.finish(alice, q)).rejects.toMatchObject({ status: 400, apiCode: "bad_state" });
    // alice on another of her devices is another identity too.
    const q2 = await connect(src, alice);
    await expect(src.finish(user("alice@", "alice-phone"), q2)).rejects.toMatchObject({ status: 403 });
    // An expired consent is refused.
    const q3 = await connect(src, alice);
    clock.advance(11 * 60_000);
    await expect(src.finish(alice, q3)).rejects.toMatchObject({ status: 400, apiCode: "bad_state" });
    // A forged state is refused.
    await expect(src.finish(alice, new URLSearchParams({ code: "x", state: "forged" }))).rejects.toMatchObject({ status: 400 });
    // One identity keeps at most 8 consents open: the oldest are dropped.
    const states = Array.from({ length: 9 }, () => new URL(src.start(alice).url).searchParams.get("state")!);
    await expect(src.finish(alice, new URLSearchParams({ state: states[0]!, code: "x" }))).rejects.toMatchObject({ apiCode: "bad_state" });
    await expect(src.finish(alice, new URLSearchParams({ state: states[8]!, code: "x" }))).rejects.toMatchObject({ apiCode: "token_exchange_failed" });
    // A tagged node cannot start a consent: it has no user.
    expect(() => src.start(agent("ci-1", "tag:agent-a", ["alice@"]))).toThrow(expect.objectContaining({ status: 403, apiCode: "no_user" }));
  });

  it("reports a refused consent with the provider's error", async () => {
    const clock = new Clock();
    const src = await acSource(clock, new MemoryTokenStore());
    const alice = user("alice@");
    const { url } = src.start(alice);
    const back = new URL(await consent(url, "alice@", REDIRECT, { deny: true }));
    await expect(src.finish(alice, back.searchParams)).rejects.toMatchObject({ status: 400, apiCode: "consent_refused", message: expect.stringMatching(/access_denied/) });
  });

  it("renews a user's token with one refresh under 20 concurrent calls, and keeps users apart", async () => {
    const clock = new Clock();
    const store = new MemoryTokenStore();
    const src = await acSource(clock, store);
    const alice = user("alice@");
    const bob = user("bob@");
    await src.finish(alice, await connect(src, alice));
    await src.finish(bob, await connect(src, bob));
    const a1 = await src.accessToken("user:alice");
    const b1 = await src.accessToken("user:bob");
    expect(a1).not.toBe(b1);
    clock.advance(3 * 3600_000);
    const before = srv.tokenRequests.filter((r) => r.grant === "refresh_token").length;
    const posts = srv.tokenPosts();
    const got = await Promise.all(Array.from({ length: 20 }, () => src.resolve({ connector: "crm", caller: alice }).then(bearer)));
    expect(srv.tokenPosts() - posts).toBe(1);
    expect(srv.tokenRequests.filter((r) => r.grant === "refresh_token").length - before).toBe(1);
    expect(new Set(got).size).toBe(1);
    expect(got[0]).not.toBe(a1);
    expect(await srv.introspect(got[0]!)).toMatchObject({ active: true, sub: "alice@" });
    // bob's renewal is his own.
    const b2 = await src.accessToken("user:bob");
    expect(b2).not.toBe(b1);
    expect(await srv.introspect(b2)).toMatchObject({ active: true, sub: "bob@" });
  });

  it("opens rows sealed with an old key after a rotation, writes with the new one, and reseals", async () => {
    const clock = new Clock();
    const store = new MemoryTokenStore();
    const old = await acSource(clock, store, K1);
    const alice = user("alice@");
    const bob = user("bob@");
    await old.finish(alice, await connect(old, alice));
    await old.finish(bob, await connect(old, bob));
    const a1 = await old.accessToken("user:alice");
    const rotated = await acSource(clock, store, `${K1}\n${K2}`);
    expect(rotated.currentKeyId).toBe("k2");
    expect(await rotated.accessToken("user:alice")).toBe(a1);
    clock.advance(3 * 3600_000);
    await rotated.accessToken("user:alice"); // renewed: written with k2
    expect((await store.listTokens({})).map((r) => [r.subject, r.keyId])).toEqual([
      ["user:alice", "k2"],
      ["user:bob", "k1"],
    ]);
    expect(await rotated.reseal()).toBe(1);
    expect((await store.listTokens({})).every((r) => r.keyId === "k2")).toBe(true);
    // The old key can now leave the ring.
    const onlyNew = await acSource(clock, store, K2);
    expect(await onlyNew.accessToken("user:bob")).toBeTruthy();
    // A ring without the key a row was sealed with says so.
    const stranger = await acSource(clock, store, `k3:${randomBytes(32).toString("base64")}`);
    await expect(stranger.accessToken("user:bob")).rejects.toThrow(/sealed with the key "k2", which is not in the keyring \(k3\)/);
  });

  it("a sealed row moved to another user does not open", async () => {
    const clock = new Clock();
    const store = new MemoryTokenStore();
    const src = await acSource(clock, store);
    await src.finish(user("alice@"), await connect(src, user("alice@")));
    const row = (await store.getToken("crm", "user:alice"))!;
    await store.putToken({ ...row, subject: "user:mallory" });
    await expect(src.accessToken("user:mallory")).rejects.toThrow(/does not open/);
  });

  it("revokes a user's tokens (here and at the provider)", async () => {
    const clock = new Clock();
    const store = new MemoryTokenStore();
    const src = await acSource(clock, store);
    const alice = user("alice@");
    await src.finish(alice, await connect(src, alice));
    const t = await src.accessToken("user:alice");
    expect(await src.revoke("alice@")).toBe(true);
    expect(await store.listTokens({})).toEqual([]);
    await expect(src.resolve({ connector: "crm", caller: alice })).rejects.toMatchObject({ status: 401 });
    expect(await src.revoke("alice@")).toBe(false);
    // The refresh token was revoked at the provider, which takes the grant's access tokens with it.
    await expect.poll(async () => (await srv.introspect(t)).active).toBe(false);
  });

  it("applies a revocation made by another instance sharing the store within 2 s", async () => {
    const clock = new Clock();
    const store = new MemoryTokenStore();
    const here = await acSource(clock, store);
    const there = await acSource(clock, store);
    const alice = user("alice@");
    await here.finish(alice, await connect(here, alice));
    const t = await here.accessToken("user:alice");
    expect(await there.accessToken("user:alice")).toBe(t);
    expect(await there.revoke("alice@")).toBe(true);
    await expect(there.accessToken("user:alice")).rejects.toMatchObject({ status: 401 });
    clock.advance(1_000);
    expect(await here.accessToken("user:alice")).toBe(t); // the opened row, at most 2 s old
    clock.advance(1_000);
    await expect(here.accessToken("user:alice")).rejects.toMatchObject({ status: 401 });
  });

  it("lets a tagged agent use a user's token only through that user's delegation, and only when the user owns it", async () => {
    const clock = new Clock();
    const src = await acSource(clock, new MemoryTokenStore());
    const alice = user("alice@");
    await src.finish(alice, await connect(src, alice));
    const agentA = agent("agent-a", "tag:agent-a", ["alice@"]);
    const agentB = agent("agent-b", "tag:agent-b", ["bob@"]);
    await expect(src.resolve({ connector: "crm", caller: agentA })).rejects.toMatchObject({ status: 401, message: expect.stringMatching(/no owner of the tagged node agent-a/) });
    await src.delegate("alice@", "tag:agent-a");
    const t = bearer(await src.resolve({ connector: "crm", caller: agentA }));
    expect(await srv.introspect(t)).toMatchObject({ active: true, sub: "alice@" });
    // alice delegating to bob's agents does not make her token theirs: she does not own them.
    await src.delegate("alice@", "tag:agent-b");
    await expect(src.resolve({ connector: "crm", caller: agentB })).rejects.toMatchObject({ status: 401 });
    // One user per tag: bob cannot take over alice's delegation.
    await expect(src.delegate("bob@", "tag:agent-a")).rejects.toMatchObject({ status: 409 });
    expect((await src.delegations("alice@")).map((d) => d.tag)).toEqual(["tag:agent-a", "tag:agent-b"]);
    // bob cannot remove alice's delegation; she can.
    expect(await src.undelegate("tag:agent-a", "bob@")).toBe(false);
    expect(await src.undelegate("tag:agent-a", "alice@")).toBe(true);
    await expect(src.resolve({ connector: "crm", caller: agentA })).rejects.toMatchObject({ status: 401 });
    await expect(src.delegate("alice@", "agent-a")).rejects.toMatchObject({ status: 400 });
  });
});

describe("keyring", () => {
  it("refuses malformed keys with a message naming the source, never the key", () => {
    const short = `k1:${randomBytes(16).toString("base64")}`;
    expect(() => Keyring.parse(short, "environment variable X")).toThrow(/environment variable X: the key k1 is 16 bytes; AES-256 needs 32/);
    expect(() => Keyring.parse(`${K1}\n${K1}`, "f")).toThrow(/listed twice/);
    expect(() => Keyring.parse("nocolon", "f")).toThrow(/not ID:BASE64/);
    expect(() => Keyring.parse("# only a comment\n", "f")).toThrow(/holds no key/);
    try {
      Keyring.parse(short, "x");
    } catch (err) {
      expect((err as Error).message).not.toContain(short.slice(3));
    }
  });
});

tokenStoreConformance("memory", async () => ({ tokens: new MemoryTokenStore(), close: async () => undefined }));

describe("with the gateway's SQLite store", () => {
  it("stores only sealed values: the raw database holds no token, and the tokens survive a restart", async () => {
    const dir = mkdtempSync(join(tmpdir(), "mg-oauth-"));
    try {
      const clock = new Clock();
      let store = await openStore({}, { dataDir: dir, retention: { mode: "metadata" } });
      const src = await acSource(clock, store.oauthTokens!);
      const alice = user("alice@");
      await src.finish(alice, await connect(src, alice));
      const token = await src.accessToken("user:alice");
      clock.advance(3 * 3600_000);
      const renewed = await src.accessToken("user:alice");
      expect(renewed).not.toBe(token);
      await src.delegate("alice@", "tag:agent-a");
      await store.close();
      // Every byte of the database and its WAL: neither token (nor the refresh token, which the provider never showed us in clear here) appears.
      const raw = readdirSync(dir)
        .map((f) => readFileSync(join(dir, f)).toString("latin1"))
        .join("");
      expect(raw).toContain("user:alice");
      expect(raw).not.toContain(token);
      expect(raw).not.toContain(renewed);
      const db = new DatabaseSync(join(dir, "gateway.db"));
      const rows = db.prepare("SELECT * FROM oauth_tokens").all();
      db.close();
      expect(rows).toHaveLength(1);
      expect(rows[0]).toMatchObject({ connector: "crm", subject: "user:alice", key_id: "k1" });
      expect(String(rows[0]!.sealed)).toMatch(/^mgk1:k1:/);
      // Restarted: the same rows serve a new source, delegation included.
      store = await openStore({}, { dataDir: dir, retention: { mode: "metadata" } });
      const again = await acSource(clock, store.oauthTokens!);
      expect(bearer(await again.resolve({ connector: "crm", caller: agent("agent-a", "tag:agent-a", ["alice@"]) }))).toBe(renewed);
      await store.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("the examples docs/connectors.md shows", () => {
  it("are valid oauth2 auth configs", () => {
    for (const f of ["crm-oauth.jsonc", "billing-client-credentials.jsonc"]) {
      const src = SourceFile.parse(readFileSync(new URL(`../../examples/connectors/${f}`, import.meta.url), "utf8"));
      if (Array.isArray(src)) throw new Error(`${f}: ${JSON.stringify(src)}`);
      const r = OAuth2ConfigSchema.safeParse(src.value);
      expect(r.success ? "" : JSON.stringify(r.error.issues), f).toBe("");
    }
  });
});

describe("browsers", () => {
  const req = (method: string, headers: Record<string, string>) => ({ method, headers: { host: "127.0.0.1:4000", ...headers } }) as unknown as IncomingMessage;
  const nav = { "sec-fetch-site": "cross-site", "sec-fetch-mode": "navigate" };
  it("let the provider's redirect reach the callback and a link reach the consent page, nothing else from another site", () => {
    expect(browserRefusal(req("GET", nav), "/meshguard/v1/connectors/crm/oauth/callback", new Set())).toBeUndefined();
    expect(browserRefusal(req("GET", nav), "/meshguard/v1/connectors/crm/oauth/start", new Set())).toBeUndefined();
    expect(browserRefusal(req("POST", { ...nav, origin: "https://evil.example" }), "/meshguard/v1/connectors/crm/oauth/start", new Set())).toMatch(/another site/);
    expect(browserRefusal(req("GET", nav), "/meshguard/v1/connectors/crm/oauth/tokens", new Set())).toMatch(/another site/);
    expect(browserRefusal(req("GET", nav), "/meshguard/v1/connectors/crm/oauth/callback/x", new Set())).toMatch(/another site/);
    // The consent page's own button: a same-origin POST.
    expect(browserRefusal(req("POST", { "sec-fetch-site": "same-origin", origin: "http://127.0.0.1:4000" }), "/meshguard/v1/connectors/crm/oauth/start", new Set())).toBeUndefined();
  });
});
