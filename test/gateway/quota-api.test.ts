/**
 * The bucket routes of the gateway API: users see only their own buckets
 * (another user's is 404, as if absent), admins see and refill all.
 */

import { afterAll, beforeAll, describe, expect, test } from "vitest";

import { bucketRoutes } from "../../src/gateway/buckets-api.js";
import { QuotasConfigSchema } from "../../src/gateway/quotas/config.js";
import { createQuotaManager, type BucketView } from "../../src/gateway/quotas/manager.js";
import type { AdminResponse, AdminRoute, Caller, GatewayStore } from "../../src/gateway/types.js";
import { caller, facts, sqliteStore, usage } from "./quota-fixtures.js";

let store: GatewayStore;
let routes: AdminRoute[];
const alice = caller({ user: "alice@example.com" });
const bob = caller({ user: "bob@example.com" });
const admin = caller({ user: "root@example.com", role: "admin" });

beforeAll(async () => {
  store = await sqliteStore();
  const qm = createQuotaManager(
    store,
    QuotasConfigSchema.parse({ daily: { unit: "tokens", capacity: 10_000, refill: "1/day" }, shared: { unit: "tokens", capacity: 50_000, refill: "1/day", per: "global" } }),
    (c) => (c.user === "root@example.com" ? [] : [["daily"], ["shared"]]),
    { now: () => 1_700_000_000_000 }, // a still clock: levels are exact
  );
  routes = bucketRoutes(qm, QuotasConfigSchema.parse({ daily: { unit: "tokens", capacity: 10_000, refill: "1/day" }, shared: { unit: "tokens", capacity: 50_000, refill: "1/day", per: "global", overdraft: "daily" } }));
  for (const c of [alice, bob]) {
    const v = await qm.reserve(c, facts({ maxTokens: 1000 }), { inputTokens: 1000, maxOutputTokens: 1000 }, undefined);
    if (v.ok && v.reservation) await qm.settle(v.reservation, usage(1000, 500), undefined);
  }
});
afterAll(() => store.close());

async function call(who: Caller, method: "GET" | "POST", path: string, body?: unknown): Promise<AdminResponse & { body: unknown }> {
  for (const r of routes) {
    if (r.method !== method) continue;
    const names: string[] = [];
    const re = new RegExp(`^${r.pattern.replace(/:(\w+)/g, (_m, n: string) => (names.push(n), "([^/]+)"))}$`);
    const m = re.exec(path);
    if (!m) continue;
    const params = Object.fromEntries(names.map((n, i) => [n, decodeURIComponent(m[i + 1]!)]));
    return (await r.handle({ method, path, query: new URLSearchParams(), body, caller: who }, params)) as AdminResponse & { body: unknown };
  }
  throw new Error(`no route for ${method} ${path}`);
}

const keys = (res: { body: unknown }) => (res.body as { buckets: BucketView[] }).buckets.map((b) => b.key);
const enc = encodeURIComponent;

describe("GET /quotas", () => {
  test("an admin reads the configured buckets; a user gets 403 (their own instances are GET /buckets)", async () => {
    const ok = await call(admin, "GET", "/quotas");
    expect(ok.status).toBe(200);
    expect(ok.body).toEqual({
      quotas: [
        { name: "daily", unit: "tokens", capacity: 10_000, refill: "1/day", per: "user" },
        { name: "shared", unit: "tokens", capacity: 50_000, refill: "1/day", per: "global", overdraft: "daily" },
      ],
    });
    const denied = await call(alice, "GET", "/quotas");
    expect(denied.status).toBe(403);
    expect(JSON.stringify(denied.body)).toMatch(/admin role/);
  });
});

describe("GET /buckets", () => {
  test("a user sees their own buckets (and the shared ones they are charged to), with levels", async () => {
    const res = await call(alice, "GET", "/buckets");
    expect(res.status).toBe(200);
    expect(keys(res)).toEqual(["daily/user:alice@example.com", "shared/global"]);
    expect((res.body as { buckets: BucketView[] }).buckets[0]).toMatchObject({ unit: "tokens", capacity: 10_000, level: 8500, reserved: 0, refill: "1/day" });
  });

  test("an admin sees every bucket", async () => {
    expect(keys(await call(admin, "GET", "/buckets"))).toEqual(["daily/user:alice@example.com", "daily/user:bob@example.com", "shared/global"]);
  });
});

describe("GET /buckets/:key", () => {
  test("a user reads their own; another user's is 404, as is an unknown key", async () => {
    expect(await call(alice, "GET", `/buckets/${enc("daily/user:alice@example.com")}`)).toMatchObject({ status: 200, body: { level: 8500 } });
    expect((await call(alice, "GET", `/buckets/${enc("daily/user:bob@example.com")}`)).status).toBe(404);
    expect((await call(admin, "GET", `/buckets/${enc("daily/user:bob@example.com")}`)).status).toBe(200);
    expect((await call(admin, "GET", `/buckets/${enc("nope/user:bob@example.com")}`)).status).toBe(404);
    expect((await call(admin, "GET", `/buckets/${enc("daily/tag:ci")}`)).status).toBe(404); // daily is per user
  });
});

describe("POST /buckets/:key/refill", () => {
  test("is for admins only", async () => {
    const res = await call(alice, "POST", `/buckets/${enc("daily/user:alice@example.com")}/refill`, {});
    expect(res.status).toBe(403);
    expect((await call(alice, "GET", `/buckets/${enc("daily/user:alice@example.com")}`)).body).toMatchObject({ level: 8500 });
  });

  test("adds an amount (never above capacity), or fills to capacity without one", async () => {
    const path = `/buckets/${enc("daily/user:bob@example.com")}/refill`;
    expect(await call(admin, "POST", path, { amount: 1000 })).toMatchObject({ status: 200, body: { level: 9500 } });
    expect(await call(admin, "POST", path, { amount: 5000 })).toMatchObject({ status: 200, body: { level: 10_000 } });
    await call(admin, "POST", `/buckets/${enc("daily/user:alice@example.com")}/refill`, undefined);
    expect((await call(alice, "GET", `/buckets/${enc("daily/user:alice@example.com")}`)).body).toMatchObject({ level: 10_000, fullInS: 0 });
  });

  test("a bad amount is 400 with the reason; an unknown key is 404 saying what a key looks like", async () => {
    const path = `/buckets/${enc("daily/user:bob@example.com")}/refill`;
    expect(await call(admin, "POST", path, { amount: -5 })).toMatchObject({ status: 400, body: { error: { message: "amount must be more than 0" } } });
    expect(await call(admin, "POST", path, { amount: "5" })).toMatchObject({ status: 400, body: { error: { message: "amount must be a number" } } });
    expect(await call(admin, "POST", path, { amount: 5, extra: 1 })).toMatchObject({ status: 400 });
    const res = await call(admin, "POST", `/buckets/${enc("monthly/user:bob@example.com")}/refill`, {});
    expect(res.status).toBe(404);
    expect(JSON.stringify(res.body)).toMatch(/<bucket>\/user:<login>/);
  });
});
