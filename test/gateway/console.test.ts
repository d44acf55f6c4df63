// The gateway's web console in headless Chromium (Debian's chromium driven
// by playwright-core), over a real tailnet: the browser is not a node, so
// it reaches the gateway through `meshguard connect` forwards — one with a
// user's identity (bob's tagged node), one with an admin's (alice's own
// node, admin by the tailnet grant). The upstream is the simulator.
//
// Screenshots are kept in .cache/test-artifacts/console/: user.png,
// admin.png, denied.png, and the chat with an Anthropic and a Gemini model
// (chat-anthropic.png, chat-gemini.png).
import { mkdirSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { chromium, type Browser, type BrowserContext, type Locator, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect, type Connection } from "../../src/connect/index.js";
import type { LogRecord } from "../../src/gateway/index.js";
import { CHROMIUM, chromiumUnavailable } from "./chromium.js";
import { startGatewayTailnet, type GatewayTailnet } from "./gateway-tailnet.js";

const ARTIFACTS = join(import.meta.dirname, "..", "..", ".cache", "test-artifacts", "console");
const unavailable = chromiumUnavailable();
if (unavailable) console.warn(`console browser tests skipped: ${unavailable}`);

const MESHGUARD = {
  version: 3,
  rules: [
    { id: "bob", src: ["tag:agent-b"], llm: { model: ["openai/gpt-4o-mini", "openai/gpt-4o"] } },
    { id: "alice", src: ["alice@", "tag:agent-a"], llm: { model: ["*"] } },
  ],
  gateway: { roles: [{ src: ["tag:agent-a", "tag:agent-b", "alice@"], quotas: ["daily"] }] },
};
const CAPACITY = 100_000;
const BOB = "bob@";
const ALICE = "alice@";

let t: GatewayTailnet;
let bobFwd: Connection;
let aliceFwd: Connection;
let browser: Browser;
/** What went wrong in any page: uncaught errors and Content-Security-Policy violations. */
const pageProblems: string[] = [];

beforeAll(async () => {
  if (unavailable) return;
  mkdirSync(ARTIFACTS, { recursive: true });
  t = await startGatewayTailnet({ meshguard: MESHGUARD, config: { quotas: { daily: { unit: "tokens", capacity: CAPACITY, refill: "1/day" } } }, sim: { outputTokens: 12, chunks: 4 } });
  const users = await t.control.listUsers();
  const alice = users.find((u) => u.name === "alice")!;
  [bobFwd, aliceFwd] = await Promise.all([
    connect({ controlUrl: t.control.url, authKey: await t.control.createAuthKey({ tags: ["tag:agent-b"], ephemeral: true }), hostname: "bob-browser", forwards: [{ target: "ai-gateway:80" }], log: () => {} }),
    connect({ controlUrl: t.control.url, authKey: await t.control.createAuthKey({ user: alice.id, ephemeral: true }), hostname: "alice-browser", forwards: [{ target: "ai-gateway:80" }], log: () => {} }),
  ]);
  // Traffic of both users before anyone opens the console.
  await t.openai(t.nodes.agentA).chat.completions.create({ model: "gpt-4o", messages: [{ role: "user", content: "alice's agent asks" }] });
  await t.openai(t.nodes.agentB).chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "bob's agent asks" }] });
  await t.gw.store!.flush();
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
}, 180_000);

afterAll(async () => {
  await browser?.close();
  await bobFwd?.close();
  await aliceFwd?.close();
  await t?.close();
});

async function open(fwd: Connection): Promise<{ ctx: BrowserContext; page: Page; base: string }> {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  await ctx.addInitScript(() => {
    document.addEventListener("securitypolicyviolation", (e) => console.error(`CSP violation: ${e.violatedDirective} ${e.blockedURI}`));
  });
  const page = await ctx.newPage();
  page.on("pageerror", (e) => pageProblems.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) pageProblems.push(m.text());
  });
  return { ctx, page, base: `${fwd.forwards[0]!.url}/console/` };
}

/**
 * Lets a lockstep stream (the simulator's) run to its end one chunk at a
 * time, while `msg` shows it streaming: a permit is given only to a stream
 * that waits for one, so none is left over for the next test's stream.
 */
async function release(msg: Locator): Promise<void> {
  while ((await msg.getAttribute("data-streaming")) === "true") {
    const blocked = await Promise.race([t.sim.waiting().then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 50))]);
    if (blocked) t.sim.next();
  }
}

/** The user column of every row of the logs table. */
const logUsers = (page: Page) => page.locator('[data-testid="logs"] tbody tr[data-id] td:nth-child(2)').allInnerTexts();

async function records(filter: (r: LogRecord) => boolean): Promise<LogRecord[]> {
  await t.gw.store!.flush();
  return (await t.gw.store!.queryLogs({ limit: 1000 })).records.filter(filter);
}

describe.skipIf(Boolean(unavailable))("the console in Chromium", () => {
  it("serves the page with a strict Content-Security-Policy and no resource from elsewhere", async () => {
    const res = await fetch(`${bobFwd.forwards[0]!.url}/console/`);
    expect(res.status).toBe(200);
    const csp = res.headers.get("content-security-policy")!;
    expect(csp).toMatch(/default-src 'none'/);
    expect(csp).toMatch(/script-src 'self' 'sha256-[A-Za-z0-9+/=]+'(;|$)/);
    expect(csp).not.toMatch(/unsafe-inline|unsafe-eval|https?:/);
    expect(res.headers.get("x-frame-options")).toBe("DENY");
    const html = await res.text();
    expect(html).not.toMatch(/https?:\/\//);
  });

  describe("a user's view (bob, through his forward)", () => {
    let page: Page;
    let base: string;
    let ctx: BrowserContext;
    beforeAll(async () => {
      if (unavailable) return;
      ({ page, base, ctx } = await open(bobFwd));
    });
    afterAll(() => ctx?.close());

    it("shows who the tailnet says the caller is, and only their own logs", async () => {
      await page.goto(`${base}#/logs`);
      await expect.poll(() => page.locator('[data-testid="me"]').innerText()).toMatch(/bob@ · user/);
      await page.locator('[data-testid="logs"] tbody tr[data-id]').first().waitFor();
      const users = await logUsers(page);
      const bobs = await records((r) => r.caller.user === BOB);
      expect(users).toEqual(bobs.map(() => BOB));
      expect(await records((r) => r.caller.user === ALICE)).not.toHaveLength(0);
      await page.goto(`${base}#/sessions`);
      const sessionUsers = page.locator('[data-testid="sessions"] tbody tr td:nth-child(3)');
      await expect.poll(() => sessionUsers.allInnerTexts()).toEqual([BOB]);
    });

    it("a chat round trip streams into the page chunk by chunk, then is in their logs with the streamed answer", async () => {
      await page.goto(`${base}#/chat`);
      await expect.poll(() => page.locator('select[name="model"] option').allInnerTexts()).toEqual(["gpt-4o-mini", "gpt-4o"]);
      t.sim.reset();
      t.sim.options.lockstep = true;
      try {
        await page.fill("textarea", "Hello from the browser");
        await page.keyboard.press("Enter");
        const answer = page.locator('.msg[data-role="assistant"] .text');
        const streaming = page.locator('.msg[data-role="assistant"]');
        // The provider has sent the first chunk and waits: the page already shows it, still streaming.
        await t.sim.waiting();
        await expect.poll(() => answer.innerText()).not.toMatch(/^▍?$/);
        expect(await streaming.getAttribute("data-streaming")).toBe("true");
        const first = (await answer.innerText()).replace("▍", "");
        t.sim.next();
        await t.sim.waiting();
        await expect.poll(async () => (await answer.innerText()).replace("▍", "").length).toBeGreaterThan(first.length);
        expect(await streaming.getAttribute("data-streaming")).toBe("true");
        await release(streaming);
      } finally {
        t.sim.options.lockstep = false;
      }
      const text = await page.locator('.msg[data-role="assistant"] .text').innerText();
      expect(t.sim.requests.at(-1)!.body.stream).toBe(true);
      const link = page.locator('[data-testid="logged"]');
      const id = decodeURIComponent((await link.getAttribute("href"))!.split("/").pop()!);

      // The log record is the chat call, attributed to bob's forward node, with the streamed answer kept.
      const [rec] = await records((r) => r.id === id);
      expect(rec).toMatchObject({ caller: { user: BOB, node: "bob-browser" }, model: "gpt-4o-mini", stream: true, outcome: "ok", operation: "openai.chat" });
      expect(rec!.responseBody).toMatch(/^data: /);

      await page.goto(`${base}#/logs`);
      const firstRow = page.locator('[data-testid="logs"] tbody tr[data-id]').first();
      await expect.poll(() => firstRow.getAttribute("data-id")).toBe(id);
      expect(await logUsers(page)).not.toContain(ALICE);
      await page.screenshot({ path: join(ARTIFACTS, "user.png"), fullPage: true });

      await firstRow.locator("a").click();
      await page.locator('[data-testid="request"]').waitFor();
      expect(await page.locator('[data-testid="assembled"]').innerText()).toBe(text);
      expect(await page.locator('[data-testid="request"]').innerText()).toContain("Hello from the browser");
    });

    it("another user's request by id answers as if it did not exist", async () => {
      const [alices] = await records((r) => r.caller.user === ALICE);
      await page.goto(`${base}#/logs/${alices!.id}`);
      await expect.poll(() => page.locator('[data-testid="problem"]').innerText()).toMatch(/no log record/);
    });

    it("an admin page shows 'Admins only', because the gateway's API answered 403", async () => {
      await page.goto(`${base}#/quotas`);
      const denied = page.locator('[data-testid="denied"]');
      await denied.waitFor();
      expect(await denied.innerText()).toMatch(/Admins only[\s\S]*admin role/);
      expect(await page.locator('[data-testid="buckets"]').count()).toBe(0);
      await page.screenshot({ path: join(ARTIFACTS, "denied.png"), fullPage: true });
    });
  });

  describe("an admin's view (alice, through her forward)", () => {
    let page: Page;
    let base: string;
    let ctx: BrowserContext;
    beforeAll(async () => {
      if (unavailable) return;
      ({ page, base, ctx } = await open(aliceFwd));
    });
    afterAll(() => ctx?.close());

    it("lists everyone's logs, and filters them by user and model", async () => {
      await page.goto(`${base}#/logs`);
      // Alice's own node: the user whois names (headscale's login), admin by the tailnet grant.
      const me = await (await fetch(`${aliceFwd.forwards[0]!.url}/meshguard/v1/whoami`)).json();
      expect(me).toMatchObject({ node: "alice-browser", role: "admin" });
      await expect.poll(() => page.locator('[data-testid="me"]').innerText()).toBe(`${me.user} · admin`);
      await expect.poll(async () => new Set(await logUsers(page))).toEqual(new Set([ALICE, BOB]));
      await page.fill('input[name="user"]', BOB);
      await page.fill('input[name="model"]', "gpt-4o-mini");
      await page.click('form.filters button[type="submit"]');
      await expect.poll(() => page.url()).toMatch(/user=bob%40&model=gpt-4o-mini/);
      const want = await records((r) => r.caller.user === BOB && r.model === "gpt-4o-mini");
      await expect.poll(() => page.locator('[data-testid="logs"] tbody tr[data-id]').count()).toBe(want.length);
      expect(new Set(await logUsers(page))).toEqual(new Set([BOB]));
    });

    it("draws usage per user over time with uPlot", async () => {
      await page.goto(`${base}#/usage?span=24h&bucket=hour&by=user&metric=tokens`);
      await page.locator('[data-testid="usage-chart"] canvas').waitFor();
      // One series per user in the chart's legend, and the totals beside it.
      await expect.poll(() => page.locator('[data-testid="usage-chart"] .u-legend .u-series').allInnerTexts()).toEqual(expect.arrayContaining([expect.stringContaining(ALICE), expect.stringContaining(BOB)]));
      const totals = await page.locator('[data-testid="usage-totals"] tbody tr').allInnerTexts();
      const sum = (u: string) => records((r) => r.caller.user === u).then((rs) => rs.reduce((a, r) => a + (r.usage?.inputTokens ?? 0) + (r.usage?.outputTokens ?? 0), 0));
      expect(totals.join("\n")).toContain(`${ALICE}\t${(await sum(ALICE)).toLocaleString("en-US")}`);
      expect(totals.join("\n")).toContain(`${BOB}\t${(await sum(BOB)).toLocaleString("en-US")}`);
      const box = await page.locator('[data-testid="usage-chart"] canvas').boundingBox();
      expect(box!.width).toBeGreaterThan(300);
      await page.screenshot({ path: join(ARTIFACTS, "admin.png"), fullPage: true });
    });

    it("a page on another site cannot make the admin's browser refill a bucket (the gateway refuses cross-site requests)", async () => {
      const key = `daily/user:${BOB}`;
      const before = await (await fetch(`${aliceFwd.forwards[0]!.url}/meshguard/v1/buckets/${encodeURIComponent(key)}`)).json();
      expect(before.level).toBeLessThan(CAPACITY);
      // A page of another origin posting to the gateway as a form would (no preflight).
      const evil = http.createServer((_req, res) => {
        res.writeHead(200, { "content-type": "text/html" });
        res.end("<!doctype html><title>evil</title>");
      });
      await new Promise<void>((r) => evil.listen(0, "127.0.0.1", r));
      try {
        const other = await browser.newPage();
        await other.goto(`http://127.0.0.1:${(evil.address() as AddressInfo).port}/`);
        const target = `${aliceFwd.forwards[0]!.url}/meshguard/v1/buckets/${encodeURIComponent(key)}/refill`;
        const sent = await other.evaluate(async (url) => {
          const r = await fetch(url, { method: "POST", mode: "no-cors", headers: { "content-type": "text/plain" }, body: "{}" });
          return r.type;
        }, target);
        expect(sent).toBe("opaque");
        await other.close();
      } finally {
        evil.close();
      }
      const after = await (await fetch(`${aliceFwd.forwards[0]!.url}/meshguard/v1/buckets/${encodeURIComponent(key)}`)).json();
      expect(after.level).toBeLessThan(CAPACITY);
    });

    it("shows quota state and refills a bucket", async () => {
      const key = `daily/user:${BOB}`;
      await page.goto(`${base}#/quotas`);
      const row = page.locator(`[data-testid="buckets"] tr[data-key="${key}"]`);
      await row.waitFor();
      expect(await page.locator('[data-testid="quota-config"]').innerText()).toMatch(/daily\s+user\s+tokens\s+100,000 tokens\s+1\/day/);
      const level = async () => Number((await row.locator(".level").innerText()).replace(/[^0-9.]/g, ""));
      expect(await level()).toBeLessThan(CAPACITY);
      await row.locator('button[type="submit"]').click();
      await expect.poll(() => page.locator('[data-testid="refilled"]').innerText()).toMatch(new RegExp(`Refilled ${key}: 100,000 tokens left`));
      await expect.poll(level).toBe(CAPACITY);
      // The gateway holds it too (not only the page).
      const state = await (await fetch(`${aliceFwd.forwards[0]!.url}/meshguard/v1/buckets/${encodeURIComponent(key)}`)).json();
      expect(state.level).toBe(CAPACITY);
    });

    it("chats with Anthropic and Gemini models too, each in its own API, streamed, logged as her own call", async () => {
      const me = await (await fetch(`${aliceFwd.forwards[0]!.url}/meshguard/v1/whoami`)).json();
      const cases = [
        { format: "anthropic", model: "claude-sonnet-4-5", operation: "anthropic.messages", path: "/v1/messages" },
        { format: "gemini", model: "gemini-2.5-flash", operation: "gemini.stream", path: "/v1beta/models/gemini-2.5-flash:streamGenerateContent" },
      ] as const;
      for (const c of cases) {
        await page.goto(`${base}#/chat`);
        const select = page.locator('select[name="model"]');
        // Every API's models, grouped by API, as the gateway lists them to her.
        await expect.poll(() => select.locator("optgroup").evaluateAll((gs) => gs.map((g) => g.getAttribute("label")))).toEqual(["OpenAI API", "Anthropic API", "Gemini API"]);
        const value = await select.evaluate((s: HTMLSelectElement, c) => Array.from(s.options).find((o) => o.dataset.format === c.format && o.text === c.model)?.value, c);
        expect(value).toBeDefined();
        await select.selectOption(value!);
        const last = page.locator('.msg[data-role="assistant"]').last();
        const ask = async (prompt: string) => {
          t.sim.reset();
          t.sim.options.lockstep = true;
          try {
            await page.fill("textarea", prompt);
            await page.keyboard.press("Enter");
            // The provider has sent the first chunk and waits: the page shows it while still streaming.
            await t.sim.waiting();
            await expect.poll(async () => (await last.locator(".text").innerText()).replace("▍", "")).not.toBe("");
            expect(await last.getAttribute("data-streaming")).toBe("true");
            await release(last);
          } finally {
            t.sim.options.lockstep = false;
          }
          expect(await page.locator('[data-testid="problem"]').count()).toBe(0);
          return t.sim.requests.at(-1)!;
        };
        const first = await ask(`Hello ${c.format}`);
        expect(first.path).toBe(c.path);
        // A second turn carries the first, in the API's own shape.
        const second = await ask("And again");
        if (c.format === "anthropic") {
          expect(second.body).toMatchObject({ model: c.model, stream: true, max_tokens: 1024 });
          expect(second.body.messages.map((m: { role: string }) => m.role)).toEqual(["user", "assistant", "user"]);
        } else {
          expect(second.query).toContain("alt=sse");
          expect(second.body.contents.map((m: { role: string }) => m.role)).toEqual(["user", "model", "user"]);
        }
        const text = (await last.locator(".text").innerText()).trim();
        expect(text).not.toBe("");
        await page.screenshot({ path: join(ARTIFACTS, `chat-${c.format}.png`), fullPage: true });
        const id = decodeURIComponent((await last.locator('[data-testid="logged"]').getAttribute("href"))!.split("/").pop()!);
        const [rec] = await records((r) => r.id === id);
        expect(rec).toMatchObject({ caller: { user: me.user, node: "alice-browser" }, model: c.model, operation: c.operation, stream: true, outcome: "ok" });
        // The request page assembles the same text from the stored stream.
        await page.goto(`${base}#/logs/${encodeURIComponent(id)}`);
        await expect.poll(() => page.locator('[data-testid="assembled"]').innerText()).toBe(text);
        // What the answer said about itself, as the gateway read it from the stream.
        expect(rec!.response?.finishReasons).toEqual([c.format === "anthropic" ? "end_turn" : "STOP"]);
        expect(await page.locator('[data-testid="request"] .facts').allInnerTexts()).toEqual(expect.arrayContaining([expect.stringMatching(new RegExp(`Finish reason\\s+${rec!.response!.finishReasons![0]}`))]));
      }
    });

    it("gives each client's settings with the gateway's address and the caller's models", async () => {
      await page.goto(`${base}#/connect`);
      const text = await page.locator('[data-testid="connect"]').innerText();
      const origin = aliceFwd.forwards[0]!.url;
      expect(text).toContain(`ANTHROPIC_BASE_URL=${origin}`);
      expect(text).toContain(`base_url = "${origin}/v1"`);
      expect(text).toContain('wire_api = "responses"');
      expect(text).toContain(`curl ${origin}/v1/chat/completions`);
      expect(text).toContain(`meshguard connect ai-gateway:80 --listen 127.0.0.1:4000`);
      expect(text).toContain(`--control ${t.control.url}`);
      expect(text).toContain("http://ai-gateway");
      await expect.poll(() => page.locator('[data-testid="models"] li').allInnerTexts()).toEqual(expect.arrayContaining(["gpt-4o-mini (OpenAI API)", "claude-sonnet-4-5 (Anthropic API)", "gemini-2.5-flash (Gemini API)"]));
    });
  });

  it("no page had an uncaught error or a Content-Security-Policy violation", () => {
    expect(pageProblems).toEqual([]);
  });
});
