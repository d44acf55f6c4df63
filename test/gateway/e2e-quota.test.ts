// Quotas through the whole gateway: 200 concurrent requests against a bucket
// that covers a tenth of them. Each request holds its most expensive case
// (input + max_tokens) before it goes upstream, so the provider serves no
// more than the bucket holds, every refused request is a 429 with
// retry-after, and what was charged is exactly what the provider served.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Anthropic from "@anthropic-ai/sdk";
import OpenAI from "openai";
import { afterAll, beforeAll, expect, it } from "vitest";
import { startLlmSim, type LlmSim } from "../../bench/lib/llm-sim.mjs";
import { startGateway, type GatewayHandle } from "../../src/gateway/index.js";
import { PROVIDER_KEY, PROVIDERS } from "./gateway-tailnet.js";

const CAPACITY = 2_000; // tokens
const MAX_TOKENS = 100;

let dir: string;
let sim: LlmSim;
let gw: GatewayHandle;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "mg-gwq-"));
  writeFileSync(
    join(dir, "policy.hujson"),
    JSON.stringify({
      version: 3,
      rules: [{ id: "local", effect: "allow", src: ["tag:local"], llm: { model: ["*"] } }],
      gateway: { roles: [{ src: ["tag:local"], role: "admin", quotas: ["tight"] }] },
    }),
  );
  // Every answer uses its whole max_tokens, and starts after a pause so that the 200 requests overlap.
  sim = await startLlmSim({ key: PROVIDER_KEY, outputTokens: MAX_TOKENS, delayMs: 20, record: false });
  gw = await startGateway({
    config: {
      policy: join(dir, "policy.hujson"),
      dataDir: join(dir, "data"),
      loopback: { listen: "127.0.0.1:0", principal: "tag:local" },
      providers: PROVIDERS(sim.url),
      quotas: { tight: { unit: "tokens", capacity: CAPACITY, refill: "1/month", per: "global" } },
    },
    env: { SIM_PROVIDER_KEY: PROVIDER_KEY },
  });
});
afterAll(async () => {
  await gw?.close();
  await sim?.close();
  rmSync(dir, { recursive: true, force: true });
});

it("200 concurrent requests never overspend a bucket; refused ones are 429 with retry-after; nothing is charged twice or lost", async () => {
  const oai = new OpenAI({ baseURL: `${gw.loopbackUrl}/v1`, apiKey: "x", maxRetries: 0 });
  const ant = new Anthropic({ baseURL: gw.loopbackUrl, apiKey: "x", maxRetries: 0 });
  const results = await Promise.allSettled(
    Array.from({ length: 200 }, (_, i) =>
      i % 2 === 0
        ? oai.chat.completions.create({ model: "gpt-4o-mini", max_tokens: MAX_TOKENS, messages: [{ role: "user", content: `q${i}` }] }).then((r) => r.usage!.prompt_tokens + r.usage!.completion_tokens)
        : ant.messages.create({ model: "claude-haiku-4-5", max_tokens: MAX_TOKENS, messages: [{ role: "user", content: `q${i}` }] }).then((r) => r.usage.input_tokens + r.usage.output_tokens),
    ),
  );
  const ok = results.filter((r): r is PromiseFulfilledResult<number> => r.status === "fulfilled");
  const refused = results.filter((r): r is PromiseRejectedResult => r.status === "rejected").map((r) => r.reason);
  expect(ok.length).toBeGreaterThan(0);
  expect(ok.length + refused.length).toBe(200);
  // The provider served no more than the bucket holds (a gateway that charged after the answer would let all 200 through).
  const served = sim.totals.inputTokens + sim.totals.outputTokens;
  expect(served).toBeLessThanOrEqual(CAPACITY);
  expect(sim.totals.requests).toBe(ok.length);
  for (const e of refused) {
    expect(e.status).toBe(429);
    expect(Number(e.headers.get("retry-after"))).toBeGreaterThan(0);
  }
  // What the clients were answered is what was charged: the bucket is down by exactly that.
  const used = ok.reduce((s, r) => s + r.value, 0);
  expect(used).toBe(served);
  const res = await fetch(`${gw.loopbackUrl}/meshguard/v1/buckets/${encodeURIComponent("tight/global")}`);
  const bucket = (await res.json()) as { level: number; reserved: number };
  expect(bucket.reserved).toBe(0);
  expect(bucket.level).toBeGreaterThanOrEqual(0);
  expect(CAPACITY - bucket.level).toBeCloseTo(used, 0);
  // Every request is in the log once: the answered ones with their usage, the refused ones as quota.
  await gw.store!.flush();
  const recs = (await gw.store!.queryLogs({ limit: 1000 })).records;
  expect(recs).toHaveLength(200);
  expect(recs.filter((r) => r.outcome === "ok")).toHaveLength(ok.length);
  expect(recs.filter((r) => r.outcome === "quota")).toHaveLength(refused.length);
  expect(recs.filter((r) => r.outcome === "ok").reduce((s, r) => s + r.usage!.inputTokens + r.usage!.outputTokens, 0)).toBe(used);
}, 60_000);
