/** Prices from the maintained package, overrides from the config, long-context tiers, and output limits. */

import { describe, expect, test } from "vitest";

import { costOf, maxOutputTokensOf, priceOf } from "../../src/gateway/prices.js";

describe("priceOf", () => {
  test("current models of the three providers have prices, dated snapshots find their family", () => {
    expect(priceOf("openai", "gpt-4o")).toMatchObject({ input: 2.5, output: 10, cacheRead: 1.25 });
    expect(priceOf("openai", "gpt-4o-2024-08-06")).toEqual(priceOf("openai", "gpt-4o"));
    expect(priceOf("anthropic", "claude-sonnet-4-5-20250929")).toMatchObject({ input: 3, output: 15, cacheRead: 0.3, cacheWrite: 3.75 });
    expect(priceOf("gemini", "gemini-2.5-flash")).toMatchObject({ input: 0.3, output: 2.5 });
    expect(priceOf("google", "gemini-2.5-flash")).toEqual(priceOf("gemini", "gemini-2.5-flash"));
  });

  test("a provider under another name keeps the model's price; a local model has none", () => {
    expect(priceOf("my-openai-proxy", "gpt-4o")).toEqual(priceOf("openai", "gpt-4o"));
    expect(priceOf("local", "my-llama")).toBeUndefined();
    expect(priceOf("openai", "no-such-model-xyz")).toBeUndefined();
  });

  test("an override from the config wins: provider/model first, then model", () => {
    const overrides = { "openai/gpt-4o": { input: 1, output: 1 }, "gpt-4o": { input: 7, output: 7 }, "my-llama": { input: 0, output: 0 } };
    expect(priceOf("openai", "gpt-4o", overrides)).toEqual({ input: 1, output: 1 });
    expect(priceOf("azure", "gpt-4o", overrides)).toEqual({ input: 7, output: 7 });
    expect(priceOf("local", "my-llama", overrides)).toEqual({ input: 0, output: 0 });
    expect(priceOf("openai", "toString", {})).toBeUndefined();
  });
});

describe("costOf", () => {
  test("input, output and cache tokens at their prices, per million", () => {
    const p = { input: 3, output: 15, cacheRead: 0.3, cacheWrite: 3.75 };
    expect(costOf({ inputTokens: 1_000_000, outputTokens: 0 }, p)).toBeCloseTo(3, 12);
    expect(costOf({ inputTokens: 1000, outputTokens: 2000, cacheReadTokens: 10_000, cacheWriteTokens: 4000 }, p)).toBeCloseTo((3000 + 30_000 + 3000 + 15_000) / 1e6, 12);
  });

  test("cache tokens without a price of their own cost as input (never less than billed)", () => {
    expect(costOf({ inputTokens: 0, outputTokens: 0, cacheWriteTokens: 1_000_000 }, { input: 2, output: 8 })).toBeCloseTo(2, 12);
  });

  test("a prompt over a long-context threshold is priced wholly at the higher tier (Anthropic, Google over 200k)", () => {
    const p = priceOf("anthropic", "claude-sonnet-4-5")!;
    expect(p.tiers?.[0]).toMatchObject({ above: 200_000, input: 6, output: 22.5 });
    expect(costOf({ inputTokens: 200_000, outputTokens: 1000 }, p)).toBeCloseTo((200_000 * 3 + 1000 * 15) / 1e6, 12);
    // 150k input + 60k cache reads is a 210k prompt: every token at the tier's price.
    expect(costOf({ inputTokens: 150_000, outputTokens: 1000, cacheReadTokens: 60_000 }, p)).toBeCloseTo((150_000 * 6 + 1000 * 22.5 + 60_000 * 0.6) / 1e6, 12);
  });
});

describe("maxOutputTokensOf", () => {
  test("the most a model answers with, by family; unknown models have none", () => {
    expect(maxOutputTokensOf("openai", "gpt-4o-mini-2024-07-18")).toBe(16_384);
    expect(maxOutputTokensOf("openai", "gpt-4.1-nano")).toBe(32_768);
    expect(maxOutputTokensOf("anthropic", "claude-opus-4-1-20250805")).toBe(32_000);
    expect(maxOutputTokensOf("gemini", "gemini-2.5-pro")).toBe(65_536);
    expect(maxOutputTokensOf("my-openai-proxy", "gpt-4o")).toBe(16_384);
    expect(maxOutputTokensOf("openai", "gpt-4o1")).toBeUndefined();
    expect(maxOutputTokensOf("local", "my-llama")).toBeUndefined();
  });
});
