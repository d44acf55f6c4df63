/**
 * The quota manager against the real SQLite store: reservations that cannot
 * overspend under concurrency, chains, refill and retry-after, settling, and
 * recovery after a restart.
 */

import { execFile } from "node:child_process";
import { mkdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { build } from "esbuild";
import { afterEach, describe, expect, test } from "vitest";

import { QuotasConfigSchema, type QuotasConfigInput } from "../../src/gateway/quotas/config.js";
import { createQuotaManager, type QuotaManagerOptions } from "../../src/gateway/quotas/manager.js";
import type { Caller, GatewayStore, QuotaVerdict, Reservation } from "../../src/gateway/types.js";
import { caller, facts, PRICE, sqliteStore, tempDir, usage } from "./quota-fixtures.js";

const open: GatewayStore[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((s) => s.close()));
});

async function setup(buckets: QuotasConfigInput, chains: (c: Caller) => string[][], opts: QuotaManagerOptions = {}, dir?: string) {
  const store = await sqliteStore(dir);
  open.push(store);
  const clock = { t: 1_700_000_000_000 };
  const qm = createQuotaManager(store, QuotasConfigSchema.parse(buckets), chains, { now: () => clock.t, ...opts });
  return { store, qm, clock };
}

const reserved = (v: QuotaVerdict): Reservation => {
  if (!v.ok || !v.reservation) throw new Error(`expected a reservation, got ${JSON.stringify(v)}`);
  return v.reservation;
};

/** 1000 input tokens and max_tokens 1000 at PRICE: $0.003 reserved. */
const REQ = { inputTokens: 1000, maxOutputTokens: 1000 };
const F = facts({ maxTokens: 1000 });
const COST = 0.003;

describe("reserve cannot overspend", () => {
  test("200 concurrent reserves against a dollar bucket that fits 37: exactly 37 pass, and settling leaves the right level", async () => {
    const { qm } = await setup({ daily: { unit: "usd", capacity: 37 * COST, refill: "1/day" } }, () => [["daily"]]);
    const alice = caller();
    const verdicts = await Promise.all(Array.from({ length: 200 }, () => qm.reserve(alice, F, REQ, PRICE)));
    const ok = verdicts.filter((v) => v.ok);
    expect(ok.length).toBe(37);
    const refused = verdicts.filter((v) => !v.ok);
    expect(refused.every((v) => !v.ok && v.bucket === "daily/user:alice@example.com" && v.retryAfterS >= 1 && !v.permanent)).toBe(true);
    expect((await qm.state("daily/user:alice@example.com"))!.level).toBeCloseTo(0, 9);
    expect((await qm.state("daily/user:alice@example.com"))!.reserved).toBeCloseTo(37 * COST, 9);

    // Each really cost 1000 in + 500 out = $0.002: $0.001 of each hold comes back.
    await Promise.all(ok.map((v) => qm.settle(reserved(v), usage(1000, 500), 0.002)));
    const s = (await qm.state("daily/user:alice@example.com"))!;
    expect(s.level).toBeCloseTo(37 * 0.001, 9);
    expect(s.reserved).toBe(0);
  });

  test("200 concurrent reserves against a token bucket shared by 20 callers (global): exactly as many as fit pass", async () => {
    const { qm } = await setup({ pool: { unit: "tokens", capacity: 2000 * 53, refill: "1000/day", per: "global" } }, () => [["pool"]]);
    const verdicts = await Promise.all(Array.from({ length: 200 }, (_, i) => qm.reserve(caller({ user: `u${i % 20}@example.com` }), F, REQ, undefined)));
    expect(verdicts.filter((v) => v.ok).length).toBe(53);
    expect((await qm.state("pool/global"))!.level).toBe(0);
  });
});

test("4 gateway processes on one database, 50 concurrent reserves each, against a bucket that fits 37: exactly 37 pass", async () => {
  // Each process has its own SQLite connection: only the store's transaction keeps them from overspending.
  const root = fileURLToPath(new URL("../../", import.meta.url));
  mkdirSync(`${root}.cache`, { recursive: true });
  const script = `${root}.cache/quota-reserver.mjs`;
  await build({ entryPoints: [`${root}test/gateway/fixtures-quota/reserver.ts`], outfile: script, bundle: true, platform: "node", format: "esm", packages: "external", logLevel: "silent" });
  const dir = tempDir();
  const s = await sqliteStore(dir); // create the database before the processes race to
  await s.close();
  const run = promisify(execFile);
  const outs = await Promise.all(Array.from({ length: 4 }, () => run(process.execPath, [script, dir, "50", String(37 * COST)])));
  expect(outs.reduce((sum, o) => sum + Number(o.stdout), 0)).toBe(37);
  const { qm } = await setup({ daily: { unit: "usd", capacity: 37 * COST, refill: "1/day" } }, () => [["daily"]], {}, dir);
  expect(await qm.recover()).toBe(37);
}, 60_000);

describe("refill and retry-after", () => {
  test("an exhausted bucket answers when the refill covers the request, and passes again then", async () => {
    // $0.0864/day = $0.000001/s: one $0.003 request needs 3000 s of refill from empty.
    const { qm, clock } = await setup({ daily: { unit: "usd", capacity: 0.006, refill: "0.0864/day" } }, () => [["daily"]]);
    const alice = caller();
    reserved(await qm.reserve(alice, F, REQ, PRICE));
    reserved(await qm.reserve(alice, F, REQ, PRICE));
    const no = await qm.reserve(alice, F, REQ, PRICE);
    expect(no).toMatchObject({ ok: false, bucket: "daily/user:alice@example.com", retryAfterS: 3000 });
    expect(!no.ok && no.reason).toMatch(/daily\/user:alice@example\.com.*\$0\.0030/);

    clock.t += 2999_000;
    expect(await qm.reserve(alice, F, REQ, PRICE)).toMatchObject({ ok: false, retryAfterS: 1 });
    clock.t += 1_000;
    expect((await qm.reserve(alice, F, REQ, PRICE)).ok).toBe(true);
  });

  test("a bucket refills at its rate up to its capacity, not beyond", async () => {
    const { qm, clock } = await setup({ t: { unit: "tokens", capacity: 10_000, refill: "100/minute" } }, () => [["t"]]);
    const r = reserved(await qm.reserve(caller(), F, REQ, undefined));
    await qm.settle(r, usage(1000, 1000), undefined);
    expect((await qm.state("t/user:alice@example.com"))!.level).toBe(8000);
    clock.t += 60_000;
    expect((await qm.state("t/user:alice@example.com"))!.level).toBeCloseTo(8100, 6);
    clock.t += 365 * 86_400_000;
    expect((await qm.state("t/user:alice@example.com"))!.level).toBe(10_000);
  });
});

describe("chains", () => {
  const buckets: QuotasConfigInput = {
    daily: { unit: "usd", capacity: 0.004, refill: "0.004/day", overdraft: "reserve" },
    reserve: { unit: "usd", capacity: 1, refill: "1/month" },
  };

  test("what the first bucket cannot cover spills to its overdraft, and settling charges the first bucket first", async () => {
    const { qm } = await setup(buckets, () => [["daily"]]);
    const alice = caller();
    reserved(await qm.reserve(alice, F, REQ, PRICE)); // daily: 0.004 → 0.001
    const r = reserved(await qm.reserve(alice, F, REQ, PRICE)); // 0.001 from daily, 0.002 from reserve
    expect(r.holds.map((h) => [h.key, +h.amount.toFixed(9)])).toEqual([
      ["daily/user:alice@example.com", 0.001],
      ["reserve/user:alice@example.com", 0.002],
    ]);
    expect((await qm.state("reserve/user:alice@example.com"))!.level).toBeCloseTo(0.998, 9);
    // It really cost $0.0005: all of it from daily; reserve gets its whole hold back.
    await qm.settle(r, usage(500, 0), 0.0005);
    expect((await qm.state("daily/user:alice@example.com"))!.level).toBeCloseTo(0.0005, 9);
    expect((await qm.state("reserve/user:alice@example.com"))!.level).toBeCloseTo(1, 9);
  });

  test("every chain of a caller must cover the request; a refused request charges none of them", async () => {
    const { qm } = await setup(
      { ...buckets, team: { unit: "tokens", capacity: 2500, refill: "2500/day", per: "group" } },
      () => [["daily"], ["team"]],
    );
    const alice = caller({ groups: ["group:eng"] });
    reserved(await qm.reserve(alice, F, REQ, PRICE)); // team: 2500 → 500
    const no = await qm.reserve(alice, F, REQ, PRICE);
    expect(no).toMatchObject({ ok: false, bucket: "team/group:eng" });
    expect((await qm.state("daily/user:alice@example.com"))!.level).toBeCloseTo(0.001, 9);
    expect((await qm.state("team/group:eng"))!.level).toBe(500);
  });

  test("instances are per user, per tag, per node, per group or global", async () => {
    const { qm } = await setup(
      {
        u: { unit: "tokens", capacity: 2000, refill: "1/day" },
        t: { unit: "tokens", capacity: 4000, refill: "1/day", per: "tag" },
        n: { unit: "tokens", capacity: 9000, refill: "1/day", per: "node" },
      },
      () => [["u"], ["t"], ["n"]],
    );
    const a = caller({ user: "Alice@Example.com", tags: ["tag:ci"], node: "runner-1" });
    const b = caller({ user: "bob@example.com", tags: ["tag:ci"], node: "runner-2" });
    expect(qm.keysOf(a)).toEqual(["u/user:alice@example.com", "t/tag:ci", "n/node:runner-1"]);
    expect((await qm.reserve(a, F, REQ, undefined)).ok).toBe(true);
    expect((await qm.reserve(a, F, REQ, undefined)).ok).toBe(false); // alice's own 2000 tokens are spent
    expect((await qm.reserve(b, F, REQ, undefined)).ok).toBe(true); // bob has his own; the tag bucket is shared: 4000 → 0
    const c = caller({ user: "carol@example.com", tags: ["tag:ci"], node: "runner-3" });
    expect(await qm.reserve(c, F, REQ, undefined)).toMatchObject({ ok: false, bucket: "t/tag:ci" });
  });
});

describe("refusals that waiting does not fix", () => {
  test("a dollar bucket and a model without a price: refused with the reason, nothing charged", async () => {
    const { qm } = await setup({ daily: { unit: "usd", capacity: 5, refill: "5/day" } }, () => [["daily"]]);
    const v = await qm.reserve(caller(), facts({ provider: "local", model: "my-llama" }), REQ, undefined);
    expect(v).toMatchObject({ ok: false, permanent: true, bucket: "daily/user:alice@example.com" });
    expect(!v.ok && v.reason).toMatch(/no price is known for local\/my-llama.*add a price/);
    expect((await qm.state("daily/user:alice@example.com"))!.level).toBe(5);
  });

  test("a token bucket needs no price", async () => {
    const { qm } = await setup({ t: { unit: "tokens", capacity: 5000, refill: "5000/day" } }, () => [["t"]]);
    expect((await qm.reserve(caller(), facts({ provider: "local", model: "my-llama" }), REQ, undefined)).ok).toBe(true);
  });

  test("a request that can cost more than the chain ever holds, a caller without a user, an unconfigured bucket", async () => {
    const { qm } = await setup({ small: { unit: "tokens", capacity: 1500, refill: "1500/day" } }, (c) => (c.node === "ghost" ? [["nope"]] : [["small"]]));
    const big = await qm.reserve(caller(), F, REQ, undefined);
    expect(big).toMatchObject({ ok: false, permanent: true });
    expect(!big.ok && big.reason).toMatch(/up to 2000 tokens, more than "small\/user:alice@example.com" can ever hold \(1500 tokens\)/);
    const nobody = await qm.reserve(caller({ user: "" }), F, { inputTokens: 10, maxOutputTokens: 10 }, undefined);
    expect(nobody).toMatchObject({ ok: false, permanent: true });
    expect(!nobody.ok && nobody.reason).toMatch(/one instance per user, and this caller has no user/);
    const ghost = await qm.reserve(caller({ node: "ghost" }), F, REQ, undefined);
    expect(!ghost.ok && ghost.reason).toMatch(/"nope" is not configured/);
  });

  test("a caller with no buckets passes with no reservation", async () => {
    const { qm } = await setup({ t: { unit: "tokens", capacity: 1, refill: "1/day" } }, () => []);
    expect(await qm.reserve(caller(), F, REQ, undefined)).toEqual({ ok: true, reservation: undefined });
  });
});

describe("how much is reserved", () => {
  const one = (qm: Awaited<ReturnType<typeof setup>>["qm"], f: Parameters<typeof qm.reserve>[1]) =>
    qm.reserve(caller(), f, { inputTokens: 100, maxOutputTokens: 0 }, undefined).then((v) => reserved(v).holds[0]!.amount);

  test("max_tokens when the request sets it, else the model's maximum output, else the configured default", async () => {
    const { qm } = await setup({ t: { unit: "tokens", capacity: 1e9, refill: "1/day" } }, () => [["t"]], { defaultMaxOutputTokens: 777 });
    expect(await one(qm, facts({ maxTokens: 50 }))).toBe(150);
    expect(await one(qm, facts({ model: "gpt-4o-2024-08-06" }))).toBe(100 + 16_384);
    expect(await one(qm, facts({ provider: "anthropic", model: "claude-sonnet-4-5-20250929" }))).toBe(100 + 64_000);
    expect(await one(qm, facts({ provider: "local", model: "my-llama" }))).toBe(100 + 777);
  });

  test("settling a request that cost more than it reserved spends the difference (the level goes below zero and refills from there)", async () => {
    const { qm, clock } = await setup({ t: { unit: "tokens", capacity: 2000, refill: "1000/hour" } }, () => [["t"]]);
    const r = reserved(await qm.reserve(caller(), F, REQ, undefined));
    await qm.settle(r, usage(2500, 1000, { cacheReadTokens: 500 }), undefined); // 4000 tokens against 2000 held
    expect((await qm.state("t/user:alice@example.com"))!.level).toBe(-2000);
    // 2 tokens from -2000 at 1000/hour: 2002 tokens of refill = 7207.2 s.
    expect(await qm.reserve(caller(), facts({ maxTokens: 1 }), { inputTokens: 1, maxOutputTokens: 1 }, undefined)).toMatchObject({ ok: false, retryAfterS: 7208 });
    clock.t += 3600_000;
    expect((await qm.state("t/user:alice@example.com"))!.level).toBeCloseTo(-1000, 6);
  });
});

describe("reservations survive a restart", () => {
  test("a reservation of a process that died is charged in full by recover(); a late settle of it changes nothing", async () => {
    const dir = tempDir();
    const cfg: QuotasConfigInput = { daily: { unit: "usd", capacity: 0.01, refill: "0.01/day" } };
    const first = await setup(cfg, () => [["daily"]], {}, dir);
    const r = reserved(await first.qm.reserve(caller(), F, REQ, PRICE));
    reserved(await first.qm.reserve(caller(), F, REQ, PRICE));
    await first.store.close(); // the process dies: its two requests never settle

    const second = await setup(cfg, () => [["daily"]], {}, dir);
    second.clock.t = first.clock.t;
    expect(await second.store.reservations()).toHaveLength(2);
    expect(await second.qm.recover()).toBe(2);
    expect(await second.store.reservations()).toHaveLength(0);
    expect(await second.qm.recover()).toBe(0);
    expect((await second.qm.state("daily/user:alice@example.com"))!.level).toBeCloseTo(0.004, 9);
    await expect(second.qm.settle(r, usage(1, 1), 0.000003)).resolves.toBeUndefined();
    expect((await second.qm.state("daily/user:alice@example.com"))!.level).toBeCloseTo(0.004, 9);
  });

  test("recover() called while serving takes none of this process's own requests in flight; they settle normally", async () => {
    const { qm, store } = await setup({ t: { unit: "tokens", capacity: 10_000, refill: "1/day" } }, () => [["t"]]);
    const r = reserved(await qm.reserve(caller(), F, REQ, undefined));
    expect(await qm.recover()).toBe(0);
    expect(await store.reservations()).toHaveLength(1);
    await qm.settle(r, usage(100, 100), undefined);
    expect((await qm.state("t/user:alice@example.com"))!.level).toBe(9800);
  });

  test("a manager re-created on the same store (a config reload) settles the reservations of the one before", async () => {
    const cfg = { t: { unit: "tokens" as const, capacity: 2000, refill: "1/day" } };
    const { qm, store, clock } = await setup(cfg, () => [["t"]]);
    const r = reserved(await qm.reserve(caller(), F, REQ, undefined));
    const next = createQuotaManager(store, QuotasConfigSchema.parse(cfg), () => [["t"]], { now: () => clock.t });
    await next.settle(r, usage(100, 100), undefined);
    expect((await next.state("t/user:alice@example.com"))!.level).toBe(1800);
    expect(await store.reservations()).toHaveLength(0);
  });

  test("settling twice refunds once", async () => {
    const { qm } = await setup({ t: { unit: "tokens", capacity: 2000, refill: "1/day" } }, () => [["t"]]);
    const r = reserved(await qm.reserve(caller(), F, REQ, undefined));
    await qm.settle(r, usage(100, 100), undefined);
    await qm.settle(r, usage(100, 100), undefined);
    expect((await qm.state("t/user:alice@example.com"))!.level).toBe(1800);
  });
});
