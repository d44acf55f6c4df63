/**
 * Model prices: the maintained table of `@pydantic/genai-prices` (updated
 * with each release of the package; no look-up leaves the machine), overridden
 * per model by the gateway config. Prices are US dollars per million tokens
 * (../types.ts ModelPrice).
 *
 * Provider names are the gateway's configured ones: "openai", "anthropic" and
 * "google"/"gemini" name the package's providers directly; any other name
 * (an OpenAI-compatible upstream, "openai-eu") is matched by model id alone,
 * so a known model keeps its price behind a renamed provider and an unknown
 * local model has none.
 */

import { calcPrice, findProvider, type ModelPrice as PackagePrice } from "@pydantic/genai-prices";

import { MAX_OUTPUT_TOKENS } from "./prices-data.js";
import type { ModelPrice, Usage } from "./types.js";

const PROVIDER_ALIASES: Record<string, string> = { gemini: "google" };

const packageProviderId = (provider: string): string | undefined => {
  const id = PROVIDER_ALIASES[provider] ?? provider;
  return findProvider({ providerId: id }) ? id : undefined;
};

/** One look-up per provider/model: the package matches ids with regexes. Bounded: model names come from requests. */
const cache = new Map<string, ModelPrice | null>();
const CACHE_MAX = 4096;

/**
 * priceOf returns the price of `model` at `provider`: an override (keyed
 * "provider/model", else "model") wins, else the package's table; undefined
 * for a model nobody priced (a dollar bucket then refuses the request).
 */
export function priceOf(provider: string, model: string, overrides?: Record<string, ModelPrice>): ModelPrice | undefined {
  const o = overrides && (own(overrides, `${provider}/${model}`) ?? own(overrides, model));
  if (o) return o;
  const k = `${provider}\n${model}`;
  let p = cache.get(k);
  if (p === undefined) {
    p = lookup(provider, model) ?? null;
    if (cache.size >= CACHE_MAX) cache.clear();
    cache.set(k, p);
  }
  return p ?? undefined;
}

const own = <T>(r: Record<string, T>, k: string): T | undefined => (Object.hasOwn(r, k) ? r[k] : undefined);

function lookup(provider: string, model: string): ModelPrice | undefined {
  const id = packageProviderId(provider);
  let r;
  try {
    // The usage is a probe: the result's model_price is the model's whole price list.
    r = calcPrice({ input_tokens: 1, output_tokens: 1 }, model, id ? { providerId: id } : {});
  } catch {
    return undefined;
  }
  return r ? fromPackage(r.model_price) : undefined;
}

type Field = "input" | "output" | "cacheRead" | "cacheWrite";
const FIELDS: [Field, string][] = [
  ["input", "input_mtok"],
  ["output", "output_mtok"],
  ["cacheRead", "cache_read_mtok"],
  ["cacheWrite", "cache_write_mtok"],
];

/** fromPackage converts the package's per-field tiers ({ base, tiers: [{ start, price }] }) into whole-request tiers. */
function fromPackage(mp: PackagePrice): ModelPrice | undefined {
  const at = (f: string, tokens: number): number | undefined => {
    const v = mp[f];
    if (v === undefined) return undefined;
    if (typeof v === "number") return v;
    let price = v.base;
    for (const t of v.tiers) if (tokens > t.start) price = t.price;
    return price;
  };
  const priceAt = (tokens: number) => {
    const out: { input: number; output: number; cacheRead?: number; cacheWrite?: number } = { input: at("input_mtok", tokens) ?? 0, output: at("output_mtok", tokens) ?? 0 };
    for (const [f, key] of FIELDS.slice(2)) {
      const v = at(key, tokens);
      if (v !== undefined) out[f] = v;
    }
    return out;
  };
  if (mp["input_mtok"] === undefined && mp["output_mtok"] === undefined) return undefined;
  const starts = new Set<number>();
  for (const [, key] of FIELDS) {
    const v = mp[key];
    if (v !== undefined && typeof v !== "number") for (const t of v.tiers) starts.add(t.start);
  }
  const base: ModelPrice = priceAt(0);
  if (starts.size) base.tiers = [...starts].sort((a, b) => a - b).map((above) => ({ above, ...priceAt(above + 1) }));
  return base;
}

/** The prices that apply to a request with `promptTokens` of prompt (input + cache): the last tier it passes, else the base. */
function pricesFor(price: ModelPrice, promptTokens: number): Omit<ModelPrice, "tiers"> {
  let p: Omit<ModelPrice, "tiers"> = price;
  for (const t of price.tiers ?? []) if (promptTokens > t.above) p = t;
  return p;
}

/**
 * costOf is what `usage` costs at `price`, in dollars. Cache reads and
 * writes without a price of their own are charged as input (an upper bound:
 * never less than the provider bills).
 */
export function costOf(usage: Pick<Usage, "inputTokens" | "outputTokens" | "cacheReadTokens" | "cacheWriteTokens">, price: ModelPrice): number {
  const cr = usage.cacheReadTokens ?? 0;
  const cw = usage.cacheWriteTokens ?? 0;
  const p = pricesFor(price, usage.inputTokens + cr + cw);
  return (usage.inputTokens * p.input + usage.outputTokens * p.output + cr * (p.cacheRead ?? p.input) + cw * (p.cacheWrite ?? p.input)) / 1e6;
}

/** maxOutputTokensOf is the most output `model` can produce in one answer, when known (./prices-data.ts). */
export function maxOutputTokensOf(provider: string, model: string): number | undefined {
  const table = MAX_OUTPUT_TOKENS[PROVIDER_ALIASES[provider] ?? provider];
  const tables = table ? [table] : Object.values(MAX_OUTPUT_TOKENS);
  let best: string | undefined;
  let n: number | undefined;
  for (const t of tables) {
    for (const [prefix, max] of Object.entries(t)) {
      if ((model === prefix || model.startsWith(`${prefix}-`) || model.startsWith(`${prefix}.`)) && (best === undefined || prefix.length > best.length)) {
        best = prefix;
        n = max;
      }
    }
  }
  return n;
}
