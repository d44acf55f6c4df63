// The per-user OAuth routes through the gateway over a real tailnet: alice
// connects from her laptop node (whois: her user), the consent is driven on
// a real authorization server (oidc-provider), the provider's redirect comes
// back to the gateway's callback as alice's browser would send it through
// `meshguard connect` (from her node), and tagged nodes are refused what only
// a user or an admin may do. Identities are the tailnet's, never a header.
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readKey } from "../../src/gateway/keys.js";
import { OAUTH2_KIND, OAuth2ConfigSchema, type OAuthEnv, type UserOAuthSource } from "../../src/gateway/credentials/oauth.js";
import { oauthRoutes } from "../../src/gateway/credentials/oauth-routes.js";
import type { AdminRoute } from "../../src/gateway/types.js";
import type { MeshNode } from "../../src/index.js";
import { startGatewayTailnet, TAILNET, type GatewayTailnet } from "./gateway-tailnet.js";
import { consent, startOAuthServer, WEB_CLIENT, webAuth, type OAuthServer } from "./oauth-server.js";

const REDIRECT = "http://127.0.0.1:4999/meshguard/v1/connectors/crm/oauth/callback";
const KEYS = `k1:${randomBytes(32).toString("base64")}`;
const API = "/meshguard/v1/connectors/crm/oauth";

/**
 * A test-only route standing in for a connector call (proxying is not this
 * part's): it resolves the credential for the caller the gateway identified
 * by whois, and answers whose token it got (by introspection), never the token.
 */
const WHOSE_TOKEN: AdminRoute = {
  method: "GET",
  pattern: "/test/whose-token",
  async handle(req) {
    try {
      const inj = await src!.resolve({ connector: "crm", caller: req.caller });
      const token = inj.headers!.authorization!.replace(/^Bearer /, "");
      return { status: 200, body: { sub: (await srv.introspect(token)).sub } };
    } catch (err) {
      return { status: (err as { status?: number }).status ?? 500, body: { error: (err as Error).message } };
    }
  },
};

let t: GatewayTailnet;
let srv: OAuthServer;
let src: UserOAuthSource | undefined;

beforeAll(async () => {
  srv = await startOAuthServer({ redirectUris: [REDIRECT] });
  t = await startGatewayTailnet({
    meshguard: { version: 3, rules: [] },
    // The source is made once the gateway's store is open (it keeps the sealed tokens); routes look it up per request.
    gateway: { parts: { adminRoutes: [...oauthRoutes((name) => (name === "crm" ? src : undefined), { identity: () => ({ tagOwners: TAILNET.tagOwners, groups: {} }) }), WHOSE_TOKEN] } },
  });
  const cfg = OAuth2ConfigSchema.parse(webAuth(srv, REDIRECT));
  const vars = { WEB_SECRET: WEB_CLIENT.secret, OAUTH_KEYS: KEYS };
  const env: OAuthEnv = {
    connector: "crm",
    baseUrl: srv.url,
    readSecret: (s, what) => readKey(s, what, vars),
    dataDir: t.dir,
    now: Date.now,
    warn: () => undefined,
    tokenStore: t.gw.store!.oauthTokens,
    processEnv: vars,
  };
  src = (await OAUTH2_KIND.create(cfg, env)) as UserOAuthSource;
}, 180_000);

afterAll(async () => {
  await t?.close();
  await srv?.close();
});

const call = (node: MeshNode, path: string, init: RequestInit = {}) => node.fetch(`${t.gw.url}${path}` as never, { redirect: "manual", ...init } as never) as unknown as Promise<Response>;

/** startAndConsent: `node` starts a consent at the gateway; alice signs in at the provider; the callback URL comes back. */
async function startAndConsent(node: MeshNode): Promise<URL> {
  const res = await call(node, `${API}/start`, { method: "POST" });
  expect(res.status).toBe(303);
  const location = res.headers.get("location")!;
  expect(location.startsWith(srv.authorizeUrl)).toBe(true);
  expect(new URL(location).searchParams.get("code_challenge_method")).toBe("S256");
  return new URL(await consent(location, "alice@", REDIRECT));
}

describe("per-user OAuth through the gateway over the tailnet", () => {
  it("shows the consent page to a user and refuses a tagged node", async () => {
    const page = await call(t.nodes.laptop, `${API}/start`);
    expect(page.status).toBe(200);
    const html = await page.text();
    expect(html).toContain("alice@");
    expect(html).toContain('<form method="post">');
    const tagged = await call(t.nodes.agentA, `${API}/start`, { method: "POST" });
    expect(tagged.status).toBe(403);
    expect(((await tagged.json()) as { error: { message: string } }).error.message).toMatch(/the tagged node agent-a has no user/);
  });

  it("refuses a callback from another identity, then connects alice from her own node", async () => {
    const back = await startAndConsent(t.nodes.laptop);
    const hijack = await call(t.nodes.agentB, `${back.pathname}${back.search}`);
    expect(hijack.status).toBe(403);
    expect(await hijack.text()).toMatch(/started by another identity/);
    const late = await call(t.nodes.laptop, `${back.pathname}${back.search}`);
    expect(late.status).toBe(400);
    expect(await src!.tokens()).toEqual([]);

    const again = await startAndConsent(t.nodes.laptop);
    // (A browser sends this as a cross-site navigation, which the gateway lets through for this path: oauth.test.ts checks browserRefusal.)
    const ok = await call(t.nodes.laptop, `${again.pathname}${again.search}`);
    const text = await ok.text();
    expect(ok.status, text).toBe(200);
    expect(text).toMatch(/crm connected/);
    expect((await src!.tokens()).map((r) => r.user)).toEqual(["alice"]);
    const token = await src!.accessToken("user:alice");
    expect(await srv.introspect(token)).toMatchObject({ active: true, sub: "alice@" });
    // The token is in no answer and no log record the gateway wrote.
    expect(text).not.toContain(token);
    const listing = await call(t.nodes.laptop, `${API}/tokens`);
    const body = await listing.text();
    expect(listing.status).toBe(200);
    expect(JSON.parse(body)).toEqual({ tokens: [{ user: "alice", keyId: "k1", updatedAt: expect.any(Number), grantedAt: expect.any(Number), expiresAt: expect.any(Number), scopes: expect.arrayContaining(["api:read"]), renewable: true }] });
    expect(body).not.toContain(token);
    await t.gw.store!.flush();
    expect(JSON.stringify(await t.gw.store!.queryLogs({ limit: 1000 }))).not.toContain(token);
    expect(t.warnings.join("\n")).not.toContain(token);
    expect(t.warnings.join("\n")).not.toContain(WEB_CLIENT.secret);
  });

  it("refuses a cross-site POST to start (only the gateway's own page may)", async () => {
    const res = await call(t.nodes.laptop, `${API}/start`, { method: "POST", headers: { "sec-fetch-site": "cross-site", origin: "https://evil.example" } });
    expect(res.status).toBe(403);
  });

  it("lets alice delegate to her agent's tag; a tagged node may neither list, delegate nor revoke", async () => {
    const d = await call(t.nodes.laptop, `${API}/delegations`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ tag: "tag:agent-a" }) });
    expect(d.status).toBe(201);
    expect(((await d.json()) as { delegation: object }).delegation).toMatchObject({ connector: "crm", tag: "tag:agent-a", user: "alice" });
    for (const [method, path, body] of [
      ["GET", `${API}/tokens`, undefined],
      ["POST", `${API}/delegations`, JSON.stringify({ tag: "tag:agent-b" })],
      ["DELETE", `${API}/tokens/alice%40`, undefined],
      ["DELETE", `${API}/delegations/tag%3Aagent-a`, undefined],
      ["POST", `${API}/reseal`, undefined],
    ] as const) {
      const res = await call(t.nodes.agentB, path, { method, ...(body ? { body, headers: { "content-type": "application/json" } } : {}) });
      expect(res.status, `${method} ${path}`).toBe(403);
    }
    expect((await src!.delegations()).map((x) => x.tag)).toEqual(["tag:agent-a"]);
    expect(await src!.tokens()).toHaveLength(1);
  });

  it("gives each caller, as whois names it, the token it may use: alice hers, her agent hers by delegation, bob's agent none", async () => {
    const whose = async (node: MeshNode) => {
      const res = await call(node, "/meshguard/v1/test/whose-token");
      return { status: res.status, body: (await res.json()) as { sub?: string; error?: string } };
    };
    expect(await whose(t.nodes.laptop)).toEqual({ status: 200, body: { sub: "alice@" } });
    expect(await whose(t.nodes.agentA)).toEqual({ status: 200, body: { sub: "alice@" } });
    // alice may not delegate to tag:agent-b: bob owns it (the policy's tagOwners); bob's agent is refused her token.
    const d = await call(t.nodes.laptop, `${API}/delegations`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ tag: "tag:agent-b" }) });
    expect(d.status).toBe(403);
    expect(((await d.json()) as { error: { message: string } }).error.message).toMatch(/do not own tag:agent-b/);
    const none = await call(t.nodes.laptop, `${API}/delegations`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ tag: "tag:nobody" }) });
    expect(none.status).toBe(403);
    expect(((await none.json()) as { error: { message: string } }).error.message).toMatch(/names no owner of tag:nobody/);
    const b = await whose(t.nodes.agentB);
    expect(b.status).toBe(401);
    expect(b.body.error).toMatch(/no owner of the tagged node agent-b/);
    // alice withdraws the delegation to her agent: it is refused from then on.
    expect((await call(t.nodes.laptop, `${API}/delegations/tag%3Aagent-a`, { method: "DELETE" })).status).toBe(200);
    expect((await whose(t.nodes.agentA)).status).toBe(401);
  });

  it("lets the user revoke their tokens", async () => {
    const res = await call(t.nodes.laptop, `${API}/tokens/alice%40`, { method: "DELETE" });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ revoked: true });
    expect(await src!.tokens()).toEqual([]);
    const again = await call(t.nodes.laptop, `${API}/tokens/alice%40`, { method: "DELETE" });
    expect(again.status).toBe(404);
    const after = await call(t.nodes.laptop, "/meshguard/v1/test/whose-token");
    expect(after.status).toBe(401);
    expect(((await after.json()) as { error: string }).error).toMatch(/alice has not connected/);
  });
});
