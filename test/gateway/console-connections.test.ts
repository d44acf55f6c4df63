// The console's Connections page in headless Chromium (Debian's chromium,
// playwright-core), over a real tailnet, with a real OAuth 2.0 authorization
// server (oidc-provider on 127.0.0.1) whose login and consent pages the
// browser fills in, and an upstream API (bench/lib/rest-sim.mjs) that takes
// a Bearer token only when the authorization server says, by introspection,
// it is active — and answers whose it is.
//
// bob connects his account through the page, delegates it to tag:agent-b
// (which he owns), and bob's tagged agent then calls the connector with his
// token; he revokes the delegation in the page and the agent is refused.
// carol, who co-owns tag:agent-b, sees nothing of bob's, and is told why she
// cannot take the tag. alice, an admin, sees both users' connections and
// bob's delegation and revokes them all. No token or secret is in any page,
// DOM or API answer the browsers got.
//
// The browsers are not nodes: each reaches the gateway through its own
// `meshguard connect` forward (bob's and carol's with their user's identity,
// alice's with hers). The connector's redirect URI names one local port, as
// every user's `meshguard connect --listen 127.0.0.1:4000` would: bob's
// forward listens there, then carol's.
//
// Screenshots: .cache/test-artifacts/console/connections-{user,admin}.png.
import { mkdirSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startRestSim, type RestSim } from "../../bench/lib/rest-sim.mjs";
import { connect, type Connection } from "../../src/connect/index.js";
import { CHROMIUM, chromiumUnavailable } from "./chromium.js";
import { PROVIDER_KEY, startGatewayTailnet, type GatewayTailnet } from "./gateway-tailnet.js";
import { startOAuthServer, WEB_CLIENT, webAuth, type OAuthServer } from "./oauth-server.js";

const ARTIFACTS = join(import.meta.dirname, "..", "..", ".cache", "test-artifacts", "console");
const unavailable = chromiumUnavailable();
if (unavailable) console.warn(`console connections browser tests skipped: ${unavailable}`);

const KEYRING_SECRET = randomBytes(32).toString("base64");
const SHARED_TOKEN = "shared-api-token-5ecret-never-shown-81c2";

/** A free port on 127.0.0.1 (the forward that takes the provider's redirect listens on it). */
async function freePort(): Promise<number> {
  const s = http.createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  const port = (s.address() as AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

let t: GatewayTailnet;
let srv: OAuthServer;
let rest: RestSim;
let browser: Browser;
let port: number;
let redirect: string;
let aliceFwd: Connection;
const forwards: Connection[] = [];
/** Everything the browsers received from the gateway (bodies of its answers, the pages' DOM), searched for secrets at the end. */
const seen: string[] = [];
const pageProblems: string[] = [];

beforeAll(async () => {
  if (unavailable) return;
  mkdirSync(ARTIFACTS, { recursive: true });
  port = await freePort();
  redirect = `http://127.0.0.1:${port}/meshguard/v1/connectors/crm/oauth/callback`;
  srv = await startOAuthServer({ redirectUris: [redirect] });
  rest = await startRestSim({ bearer: SHARED_TOKEN, introspect: (token) => srv.introspect(token) });
  t = await startGatewayTailnet({
    meshguard: {
      version: 6,
      // carol co-owns tag:agent-b (meshguard's part may name tag owners too; they win over the tailnet part's).
      tagOwners: { "tag:agent-b": ["bob@", "carol@"] },
      rules: [{ id: "crm", src: ["tag:agent-b"], http: { host: ["127.0.0.1"], path: ["/o/**", "/api/**"] } }],
    },
    config: {
      connectors: {
        http: {
          crm: { baseUrl: `${rest.url}/o`, auth: webAuth(srv, redirect) },
          wiki: { baseUrl: `${rest.url}/api`, auth: { type: "bearer", token: { env: "SHARED_TOKEN" } } },
        },
      },
    },
    gateway: { env: { SIM_PROVIDER_KEY: PROVIDER_KEY, WEB_SECRET: WEB_CLIENT.secret, OAUTH_KEYS: `k1:${KEYRING_SECRET}`, SHARED_TOKEN } },
  });
  await t.control.createUser("carol");
  const alice = (await t.control.listUsers()).find((u) => u.name === "alice")!;
  aliceFwd = await connect({ controlUrl: t.control.url, authKey: await t.control.createAuthKey({ user: alice.id, ephemeral: true }), hostname: "alice-browser", forwards: [{ target: "ai-gateway:80" }], log: () => {} });
  forwards.push(aliceFwd);
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
}, 180_000);

afterAll(async () => {
  await browser?.close();
  for (const f of forwards) await f.close().catch(() => {});
  await t?.close();
  await rest?.close();
  await srv?.close();
});

/** A browser for `user`, through a forward of a node of theirs on the redirect's port. */
async function userBrowser(user: string): Promise<{ fwd: Connection; ctx: BrowserContext; page: Page; base: string }> {
  const u = (await t.control.listUsers()).find((x) => x.name === user)!;
  const fwd = await connect({
    controlUrl: t.control.url,
    authKey: await t.control.createAuthKey({ user: u.id, ephemeral: true }),
    hostname: `${user}-browser`,
    forwards: [{ target: "ai-gateway:80", listen: `127.0.0.1:${port}` }],
    log: () => {},
  });
  forwards.push(fwd);
  return { fwd, ...(await open(fwd)) };
}

async function open(fwd: Connection): Promise<{ ctx: BrowserContext; page: Page; base: string }> {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  await ctx.addInitScript(() => {
    document.addEventListener("securitypolicyviolation", (e) => console.error(`CSP violation: ${e.violatedDirective} ${e.blockedURI}`));
  });
  const page = await ctx.newPage();
  const origin = fwd.forwards[0]!.url;
  page.on("pageerror", (e) => pageProblems.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource") && page.url().startsWith(origin)) pageProblems.push(m.text());
  });
  page.on("response", (res) => {
    if (!res.url().startsWith(origin) || res.url().includes("/console/vendor/")) return;
    res.text().then(
      (body) => seen.push(`${res.url()}\n${JSON.stringify(res.headers())}\n${body}`),
      () => seen.push(`${res.url()}\n${JSON.stringify(res.headers())}`),
    );
  });
  return { ctx, page, base: `${origin}/console/` };
}

/** The page's DOM as it is now, kept for the secret search. */
async function snapshot(page: Page): Promise<string> {
  const html = await page.content();
  seen.push(html);
  return html;
}

const crm = (page: Page) => page.locator('article[data-connector="crm"]');

/** Clicks Connect and goes through the gateway's consent page and the provider's login and consent as `login`, back to the console. */
async function connectThroughPage(page: Page, login: string): Promise<void> {
  await crm(page).locator('[data-testid="connect"]').click();
  // The gateway's consent page: it names the caller, and its button goes on to the provider.
  await page.waitForURL(/\/oauth\/start$/);
  await snapshot(page);
  await page.locator('form[method="post"] button[type="submit"]').click();
  // The provider's development login and consent pages (oidc-provider), on its own origin.
  await page.waitForURL((u) => u.toString().startsWith(srv.url));
  await page.locator('input[name="login"]').fill(login);
  await page.locator('input[name="password"]').fill("any");
  await page.locator('button[type="submit"]').click();
  await page.locator('input[name="prompt"][value="consent"]').waitFor({ state: "attached" });
  await page.locator('button[type="submit"]').click();
  // Back at the gateway's callback, which stored the token and says so.
  await page.waitForURL(/\/oauth\/callback\?/);
  expect(await page.locator("h1").innerText()).toBe("crm connected");
  await snapshot(page);
  await page.getByRole("link", { name: /Back to your connections/ }).click();
  await crm(page).locator('[data-testid="my-connection"]').waitFor();
}

/** The tagged agent's call to the connector, as an SDK on bob's agent node would make it. */
async function agentCall(): Promise<{ status: number; body: { subject?: string; credential?: string; error?: { message: string } }; text: string }> {
  const r = (await t.nodes.agentB.fetch(`${t.gw.url}/v1/connectors/crm/echo` as never)) as unknown as Response;
  const text = await r.text();
  seen.push(text);
  return { status: r.status, body: JSON.parse(text), text };
}

describe.skipIf(Boolean(unavailable))("the console's Connections page in Chromium", () => {
  describe("a user (bob) connects, delegates to his tag, and revokes", () => {
    let page: Page;
    let base: string;
    let ctx: BrowserContext;
    let fwd: Connection;
    beforeAll(async () => {
      if (unavailable) return;
      ({ page, base, ctx, fwd } = await userBrowser("bob"));
    }, 60_000);
    afterAll(async () => {
      await ctx?.close();
      // carol's browser takes the redirect's port next.
      await fwd?.close();
    });

    it("lists the connectors with their credential's kind; bob is not connected", async () => {
      await page.goto(`${base}#/connections`);
      await expect.poll(() => page.locator('[data-testid="me"]').innerText()).toMatch(/^bob@? · user$/);
      await expect.poll(() => crm(page).locator('[data-testid="kind"]').innerText()).toBe("acts for users");
      expect(await page.locator('article[data-connector="wiki"] [data-testid="kind"]').innerText()).toBe("shared credential");
      expect(await page.locator('article[data-connector="wiki"]').innerText()).toMatch(/its bearer credential: nothing to connect/);
      expect(await page.locator('article[data-connector="wiki"] [data-testid="connect"]').count()).toBe(0);
      await expect.poll(() => crm(page).locator('[data-testid="status"]').innerText()).toBe("not connected");
      // The tags bob owns are offered; he is no admin, so no one else's rows.
      expect(await crm(page).locator(".candidate").allInnerTexts()).toEqual(["tag:agent-b"]);
      expect(await crm(page).locator('[data-testid="all-connections"]').count()).toBe(0);
      // Before bob delegates, his agent is refused: no user's token is its own.
      const before = await agentCall();
      expect(before.status).toBe(401);
      expect(before.body.error!.message).toMatch(/acts for users, and no owner of the tagged node agent-b \(tag:agent-b\) has delegated/);
    });

    it("connects through the page (the provider's login and consent) and shows the connection, never the token", async () => {
      await connectThroughPage(page, "bob@");
      const facts = crm(page).locator('[data-testid="my-connection"]');
      expect(await crm(page).locator('[data-testid="status"]').innerText()).toBe("connected");
      expect(await facts.locator('[data-testid="scopes"]').innerText()).toMatch(/api:read/);
      expect(await facts.locator('[data-testid="expires"]').innerText()).toMatch(/renewed on use/);
      expect(await facts.locator('[data-testid="expires"]').innerText()).toMatch(/\d/);
      expect(srv.issued.length).toBeGreaterThanOrEqual(2);
      await snapshot(page);
    });

    it("delegates to tag:agent-b; bob's tagged agent then calls with bob's token (the API says whose, by introspection)", async () => {
      await crm(page).locator('input[name="tag"]').fill("tag:agent-b");
      await crm(page).locator('form.delegate button[type="submit"]').click();
      await expect.poll(() => crm(page).locator('[data-testid="my-delegations"] tbody tr[data-tag]').allInnerTexts()).toEqual([expect.stringMatching(/^tag:agent-b\tcrm\t/)]);
      expect(await crm(page).locator('[data-testid="action-done"]').innerText()).toBe("Delegated crm to tag:agent-b.");
      const r = await agentCall();
      expect(r.status, r.text).toBe(200);
      expect(r.body.subject).toBe("bob@");
      // The upstream echoed the token: the gateway scrubbed it from the agent's answer.
      expect(r.body.credential).not.toMatch(/^[A-Za-z0-9_-]{20,}$/);
      expect(srv.issued.some((tok) => r.text.includes(tok))).toBe(false);
      // A tag bob does not own is refused by the gateway, and the page says why.
      await crm(page).locator('input[name="tag"]').fill("tag:agent-a");
      await crm(page).locator('form.delegate button[type="submit"]').click();
      await expect.poll(() => crm(page).locator('[data-testid="action-error"]').innerText()).toMatch(/you \(bob@\) do not own tag:agent-a[\s\S]*HTTP 403/);
      await page.screenshot({ path: join(ARTIFACTS, "connections-user.png"), fullPage: true });
    });

    it("revokes the delegation in the page: the agent's call is refused with a clear error", async () => {
      await crm(page).locator('[data-testid="my-delegations"] tr[data-tag="tag:agent-b"] button').click();
      await expect.poll(() => crm(page).locator('[data-testid="my-delegations"] tbody tr[data-tag]').count()).toBe(0);
      const r = await agentCall();
      expect(r.status).toBe(401);
      expect(r.body.error!.message).toMatch(/no owner of the tagged node agent-b \(tag:agent-b\) has delegated their token to its tags/);
      // bob delegates again: carol will find the tag held.
      await crm(page).locator('input[name="tag"]').fill("tag:agent-b");
      await crm(page).locator('form.delegate button[type="submit"]').click();
      await expect.poll(() => crm(page).locator('[data-testid="my-delegations"] tbody tr[data-tag]').count()).toBe(1);
      expect((await agentCall()).body.subject).toBe("bob@");
      await snapshot(page);
    });
  });

  describe("a second user (carol) sees nothing of bob's", () => {
    let page: Page;
    let base: string;
    let ctx: BrowserContext;
    let fwd: Connection;
    beforeAll(async () => {
      if (unavailable) return;
      ({ page, base, ctx, fwd } = await userBrowser("carol"));
    }, 60_000);
    afterAll(() => ctx?.close());

    it("shows her own state only, through the page and the API alike", async () => {
      await page.goto(`${base}#/connections`);
      await expect.poll(() => crm(page).locator('[data-testid="status"]').innerText()).toBe("not connected");
      expect(await crm(page).locator('[data-testid="my-delegations"] tbody tr[data-tag]').count()).toBe(0);
      expect(await crm(page).locator('[data-testid="all-connections"]').count()).toBe(0);
      expect(await page.locator("main").innerText()).not.toMatch(/bob/);
      const api = `${fwd.forwards[0]!.url}/meshguard/v1/connectors/crm/oauth`;
      expect(await (await fetch(`${api}/tokens`)).json()).toEqual({ tokens: [] });
      expect(await (await fetch(`${api}/delegations`)).json()).toEqual({ delegations: [] });
      // She may not revoke bob's token or his delegation either.
      expect((await fetch(`${api}/tokens/bob`, { method: "DELETE" })).status).toBe(403);
      expect((await fetch(`${api}/delegations/tag%3Aagent-b`, { method: "DELETE" })).status).toBe(404);
    });

    it("connects her own account; the tag bob holds is refused to her with the conflict shown", async () => {
      await connectThroughPage(page, "carol@");
      expect(await crm(page).locator('[data-testid="status"]').innerText()).toBe("connected");
      await crm(page).locator('input[name="tag"]').fill("tag:agent-b");
      await crm(page).locator('form.delegate button[type="submit"]').click();
      await expect.poll(() => crm(page).locator('[data-testid="action-error"]').innerText()).toMatch(/bob already delegates connector "crm" to tag:agent-b: they \(or an admin\) revoke it first[\s\S]*HTTP 409/);
      // bob's agent still calls with bob's token.
      expect((await agentCall()).body.subject).toBe("bob@");
      await snapshot(page);
    });
  });

  it("a tagged node's browser has no user: the page says so and the API lists it nothing", async () => {
    const fwd = await connect({ controlUrl: t.control.url, authKey: await t.control.createAuthKey({ tags: ["tag:agent-b"], ephemeral: true }), hostname: "tagged-browser", forwards: [{ target: "ai-gateway:80" }], log: () => {} });
    forwards.push(fwd);
    const { ctx, page, base } = await open(fwd);
    try {
      await page.goto(`${base}#/connections`);
      await expect.poll(() => crm(page).locator('[data-testid="no-user"]').innerText()).toMatch(/tagged-browser\) is tagged: it has no user/);
      expect(await crm(page).locator('[data-testid="connect"]').count()).toBe(0);
      const api = `${fwd.forwards[0]!.url}/meshguard/v1/connectors`;
      expect(((await (await fetch(api)).json()) as { delegableTags: string[] }).delegableTags).toEqual([]);
      expect((await fetch(`${api}/crm/oauth/tokens`)).status).toBe(403);
      await snapshot(page);
    } finally {
      await ctx.close();
    }
  });

  describe("an admin (alice) sees and revokes everyone's", () => {
    let page: Page;
    let base: string;
    let ctx: BrowserContext;
    beforeAll(async () => {
      if (unavailable) return;
      ({ page, base, ctx } = await open(aliceFwd));
    });
    afterAll(() => ctx?.close());

    it("lists both users' connections and bob's delegation, and revokes each", async () => {
      await page.goto(`${base}#/connections`);
      await expect.poll(() => page.locator('[data-testid="me"]').innerText()).toMatch(/ · admin$/);
      const all = crm(page).locator('[data-testid="all-connections"]');
      await expect.poll(() => all.locator("tbody tr[data-user]").evaluateAll((rs) => rs.map((r) => r.getAttribute("data-user")))).toEqual(["bob", "carol"]);
      const dels = crm(page).locator('[data-testid="all-delegations"]');
      expect(await dels.locator("tbody tr[data-tag]").allInnerTexts()).toEqual([expect.stringMatching(/^tag:agent-b\tbob\t/)]);
      // alice owns tag:agent-a and tag:gateway herself, and has not connected.
      expect(await crm(page).locator(".candidate").allInnerTexts()).toEqual(["tag:agent-a", "tag:gateway"]);
      expect(await crm(page).locator('[data-testid="status"]').innerText()).toBe("not connected");
      await page.screenshot({ path: join(ARTIFACTS, "connections-admin.png"), fullPage: true });
      await snapshot(page);

      await dels.locator('tr[data-tag="tag:agent-b"] button').click();
      await expect.poll(() => dels.locator("tbody tr[data-tag]").count()).toBe(0);
      const refused = await agentCall();
      expect(refused.status).toBe(401);
      await all.locator('tr[data-user="bob"] button').click();
      await expect.poll(() => all.locator("tbody tr[data-user]").evaluateAll((rs) => rs.map((r) => r.getAttribute("data-user")))).toEqual(["carol"]);
      await all.locator('tr[data-user="carol"] button').click();
      await expect.poll(() => all.locator("tbody tr[data-user]").count()).toBe(0);
      expect(await crm(page).locator('[data-testid="action-done"]').innerText()).toBe("Disconnected carol from crm.");
      // The gateway holds it too.
      const api = `${aliceFwd.forwards[0]!.url}/meshguard/v1/connectors/crm/oauth`;
      expect(await (await fetch(`${api}/tokens`)).json()).toEqual({ tokens: [] });
      expect(await (await fetch(`${api}/delegations`)).json()).toEqual({ delegations: [] });
      // The provider was told: the tokens it issued are no longer active.
      for (const tok of srv.issued) expect((await srv.introspect(tok)).active).toBe(false);
      await snapshot(page);
    });
  });

  it("no token, client secret, keyring key or shared credential is in any page, DOM or answer the browsers and the agent got", async () => {
    // Let the last response bodies be read.
    await new Promise((r) => setTimeout(r, 200));
    const all = seen.join("\n");
    expect(seen.length).toBeGreaterThan(20);
    expect(srv.issued.length).toBeGreaterThanOrEqual(4);
    for (const secret of [...srv.issued, WEB_CLIENT.secret, KEYRING_SECRET, SHARED_TOKEN]) expect(all.includes(secret), `a secret (${secret.slice(0, 4)}…) leaked`).toBe(false);
    await t.gw.store!.flush();
    const logs = JSON.stringify(await t.gw.store!.queryLogs({ limit: 1000 }));
    for (const secret of [...srv.issued, WEB_CLIENT.secret, KEYRING_SECRET]) expect(logs.includes(secret)).toBe(false);
    expect(t.warnings.join("\n")).not.toContain(WEB_CLIENT.secret);
  });

  it("no console page had an uncaught error or a Content-Security-Policy violation", () => {
    expect(pageProblems).toEqual([]);
  });
});
