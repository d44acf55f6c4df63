// The usage API (GET /meshguard/v1/usage): sums per hour or day and per
// user or model, a user's of their own records only, an admin's of all;
// defaults, validation, and a store that cannot sum.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openStore } from "../../src/gateway/store/index.js";
import type { AdminResponse, Caller, GatewayStore } from "../../src/gateway/types.js";
import { usageRoutes } from "../../src/gateway/usage-api.js";
import { record } from "./fixtures-records.js";

function caller(user: string, role: Caller["role"] = "user"): Caller {
  const node = user === "" ? "tagged-bot" : `${user.split("@")[0]}-laptop`;
  return { principal: { node, tags: [], ...(user ? { user } : {}) }, node, tags: [], user, owners: user ? [user] : [], groups: [], role, addr: "100.64.0.2", via: "tailnet", caps: {} };
}
const ALICE = caller("alice@example.com");
const BOB = caller("bob@example.com");
const ADMIN = caller("carol@example.com", "admin");
const NOBODY = caller("");

const H = 3_600_000;
const D0 = Date.UTC(2026, 2, 1);
let dir: string;
let store: GatewayStore;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "mg-usage-api-"));
  store = await openStore({}, { dataDir: dir, retention: { mode: "metadata" } });
  const usage = (i: number, o: number) => ({ inputTokens: i, outputTokens: o, estimated: false });
  const put = (who: Caller, t: number, model: string, i: number, o: number, cost: number) =>
    store.appendLog(record(who.user, t, { model, usage: usage(i, o), costUsd: cost, caller: { node: who.node, user: who.user, tags: [], addr: who.addr, via: "tailnet" } }));
  put(ALICE, D0 + 10, "gpt-4o", 100, 10, 1);
  put(ALICE, D0 + H + 10, "claude-haiku-4-5", 50, 5, 0.5);
  put(BOB, D0 + 20, "gpt-4o", 7, 7, 0.25);
  put(ALICE, Date.now() - 60_000, "gpt-4o", 1, 1, 0.125); // within the default window
  await store.flush();
});
afterAll(async () => {
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

async function get(who: Caller, url: string, s: GatewayStore = store): Promise<AdminResponse> {
  const u = new URL(url, "http://gw");
  return usageRoutes(s)[0]!.handle({ method: "GET", path: u.pathname, query: u.searchParams, body: undefined, caller: who }, {});
}
const body = (r: AdminResponse): any => ("body" in r ? r.body : undefined);
const day = `since=${D0}&until=${D0 + 24 * H}`;

describe("GET /usage", () => {
  it("a user's sums are of their own records only, whatever user they ask for", async () => {
    for (const url of [`/usage?${day}&bucket=hour`, `/usage?${day}&bucket=hour&user=${encodeURIComponent(BOB.user)}`]) {
      const res = await get(ALICE, url);
      expect(res.status).toBe(200);
      expect(body(res)).toEqual({
        since: D0,
        until: D0 + 24 * H,
        bucket: "hour",
        by: "user",
        rows: [
          { start: D0, key: ALICE.user, requests: 1, inputTokens: 100, outputTokens: 10, costUsd: 1 },
          { start: D0 + H, key: ALICE.user, requests: 1, inputTokens: 50, outputTokens: 5, costUsd: 0.5 },
        ],
      });
    }
  });

  it("an admin's sums are of everyone's records, or of the user asked for; by model too", async () => {
    expect(body(await get(ADMIN, `/usage?${day}`)).rows).toEqual([
      { start: D0, key: ALICE.user, requests: 2, inputTokens: 150, outputTokens: 15, costUsd: 1.5 },
      { start: D0, key: BOB.user, requests: 1, inputTokens: 7, outputTokens: 7, costUsd: 0.25 },
    ]);
    expect(body(await get(ADMIN, `/usage?${day}&user=${encodeURIComponent(BOB.user)}`)).rows.map((r: { key: string }) => r.key)).toEqual([BOB.user]);
    expect(body(await get(ADMIN, `/usage?${day}&by=model`)).rows).toEqual([
      { start: D0, key: "claude-haiku-4-5", requests: 1, inputTokens: 50, outputTokens: 5, costUsd: 0.5 },
      { start: D0, key: "gpt-4o", requests: 2, inputTokens: 107, outputTokens: 17, costUsd: 1.25 },
    ]);
  });

  it("defaults: by user, daily buckets over the last 30 days up to now", async () => {
    const before = Date.now();
    const b = body(await get(ALICE, "/usage"));
    expect(b.bucket).toBe("day");
    expect(b.by).toBe("user");
    expect(b.until).toBeGreaterThanOrEqual(before);
    expect(b.until - b.since).toBe(30 * 24 * H);
    expect(b.rows.map((r: { requests: number }) => r.requests)).toEqual([1]);
    const hourly = body(await get(ALICE, "/usage?bucket=hour"));
    expect(hourly.until - hourly.since).toBe(24 * H);
  });

  it("a non-admin with no accountable user sums nothing: 403", async () => {
    expect((await get(NOBODY, `/usage?${day}`)).status).toBe(403);
  });

  it.each([
    ["/usage?bucket=week", /bucket: must be "hour" or "day"/],
    ["/usage?by=node", /by: must be "user" or "model"/],
    ["/usage?since=yesterday", /since: "yesterday" is not a time/],
    [`/usage?since=${D0}&until=${D0}`, /since .* must be before until/],
    [`/usage?since=${D0}&until=${D0 + 3000 * H}&bucket=hour`, /spans 3000 hours, at most 2200 per answer: narrow since\/until or use bucket=day/],
    ["/usage?limit=5", /unknown query parameter\(s\) limit/],
  ])("%s is a 400 that says what is wrong", async (url, message) => {
    const res = await get(ADMIN, url);
    expect(res.status).toBe(400);
    expect(body(res).error.message).toMatch(message);
  });

  it("a store without usage() answers 501", async () => {
    const { usage: _u, ...rest } = Object.fromEntries(Object.getOwnPropertyNames(Object.getPrototypeOf(store)).map((k) => [k, (store as any)[k]?.bind?.(store)]));
    const res = await get(ADMIN, "/usage", rest as unknown as GatewayStore);
    expect(res.status).toBe(501);
  });
});
