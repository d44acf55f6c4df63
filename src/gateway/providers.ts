/**
 * The provider table: each configured upstream with its key read, its model
 * matcher compiled and one keep-alive connection pool (undici), and routing
 * of a request's model to a provider.
 *
 * Routing: only providers of the request's API format are considered (the
 * gateway never translates between formats). A model written
 * "provider/model" whose prefix is a configured provider goes there with
 * the prefix removed; otherwise the first provider (in config order) whose
 * `models` match the name takes it. A name such as "meta-llama/Llama-3"
 * whose prefix is no provider is matched whole.
 */

import { Pool } from "undici";
import { anyOf, flatGlob, hasGlob, type Matcher } from "../policy/glob.js";
import type { ApiFormat, ModelPrice } from "./types.js";
import type { GatewayConfig, ProviderConfig } from "./config.js";
import { readKey } from "./keys.js";
import { SHORT_KEY } from "./scrub.js";

export interface Provider {
  readonly name: string;
  readonly format: ApiFormat;
  /** "https://api.openai.com" (scheme, host and port of baseUrl). */
  readonly origin: string;
  /** baseUrl's path without a trailing slash ("/v1", ""). */
  readonly prefix: string;
  readonly passthroughKey: boolean;
  /** The header carrying the key for this format, lower-case. */
  readonly keyHeader: string;
  /** The value of keyHeader ("Bearer sk-..." for openai); undefined: no key configured. */
  readonly keyValue: string | undefined;
  readonly matches: Matcher;
  /** The models named without a glob (what model listings show). */
  readonly listed: readonly string[];
  /** Whether some of `models` are globs: listings then also show the upstream's own models that match (./models.ts). */
  readonly hasGlobs: boolean;
  readonly prices: Readonly<Record<string, ModelPrice>>;
  readonly timeoutMs: number;
  readonly pool: Pool;
  /** upstreamPath maps the client's path (with query) to the upstream's. */
  upstreamPath(clientPath: string): string;
}

/** The header each format authenticates with. */
const KEY_HEADER: Record<ApiFormat, string> = { openai: "authorization", anthropic: "x-api-key", gemini: "x-goog-api-key" };

/**
 * buildProviders reads every key (failing the start on the first that
 * cannot be read) and opens one pool per provider. Returns the providers in
 * config order, every key value (for the scrubber) and the providers whose
 * key is so short that scrubbing it also replaces ordinary text.
 */
export async function buildProviders(cfg: GatewayConfig, env: NodeJS.ProcessEnv = process.env): Promise<{ providers: Provider[]; secrets: string[]; shortKeys: string[] }> {
  const providers: Provider[] = [];
  const secrets: string[] = [];
  const shortKeys: string[] = [];
  for (const [name, p] of Object.entries(cfg.providers)) {
    const key = p.key ? await readKey(p.key, `provider ${JSON.stringify(name)}`, env) : undefined;
    if (key !== undefined) secrets.push(key);
    if (key !== undefined && key.length < SHORT_KEY) shortKeys.push(name);
    providers.push(makeProvider(name, p, key));
  }
  return { providers, secrets, shortKeys };
}

function makeProvider(name: string, p: ProviderConfig, key: string | undefined): Provider {
  const u = new URL(p.baseUrl);
  const prefix = u.pathname.replace(/\/+$/, "");
  const format = p.format;
  // The OpenAI base URL conventionally ends in /v1 and clients call /v1/...: the client's /v1 is the base URL's.
  const strip = format === "openai" ? "/v1" : "";
  const keyHeader = KEY_HEADER[format];
  return {
    name,
    format,
    origin: u.origin,
    prefix,
    passthroughKey: p.passthroughKey,
    keyHeader,
    keyValue: key === undefined ? undefined : format === "openai" ? `Bearer ${key}` : key,
    matches: anyOf(p.models.map(flatGlob)),
    listed: p.models.filter((m) => !hasGlob(m)),
    hasGlobs: p.models.some((m) => hasGlob(m)),
    prices: p.prices ?? {},
    timeoutMs: p.timeout,
    pool: new Pool(u.origin, { keepAliveTimeout: 30_000, headersTimeout: p.timeout, bodyTimeout: p.timeout, connect: { timeout: Math.min(p.timeout, 10_000) } }),
    upstreamPath: (clientPath) => prefix + (strip && clientPath.startsWith(strip) ? clientPath.slice(strip.length) : clientPath),
  };
}

/** Route is where a request goes: the provider and the model name the upstream knows. */
export interface Route {
  provider: Provider;
  /** The model without a "provider/" prefix. */
  model: string;
  /** True when the client named "provider/model" and the body or path must carry the bare name upstream. */
  prefixed: boolean;
}

/** Router finds a request's provider by model; it is built once per provider table. */
export class Router {
  private readonly byFormat = new Map<ApiFormat, Provider[]>();
  private readonly byName = new Map<string, Provider>();
  /** A small memo of bare model names seen (clients use a handful). */
  private readonly memo = new Map<string, Provider | null>();
  readonly providers: readonly Provider[];

  constructor(providers: readonly Provider[]) {
    this.providers = providers;
    for (const p of providers) {
      this.byName.set(p.name, p);
      const list = this.byFormat.get(p.format) ?? [];
      list.push(p);
      this.byFormat.set(p.format, list);
    }
  }

  /** route returns the provider for `model` in `format`, or undefined when none serves it. */
  route(format: ApiFormat, model: string): Route | undefined {
    const slash = model.indexOf("/");
    if (slash > 0) {
      const p = this.byName.get(model.slice(0, slash));
      const bare = model.slice(slash + 1);
      if (p !== undefined && p.format === format && p.matches(bare)) return { provider: p, model: bare, prefixed: true };
    }
    const key = `${format}\u0000${model}`;
    let p = this.memo.get(key);
    if (p === undefined) {
      p = (this.byFormat.get(format) ?? []).find((c) => c.matches(model)) ?? null;
      if (this.memo.size < 1024) this.memo.set(key, p);
    }
    return p === null ? undefined : { provider: p, model, prefixed: false };
  }

  /** formats lists the providers of one format, in config order. */
  of(format: ApiFormat): readonly Provider[] {
    return this.byFormat.get(format) ?? [];
  }

  /** close closes every pool (in-flight requests finish first). */
  async close(): Promise<void> {
    await Promise.all(this.providers.map((p) => p.pool.close().catch(() => {})));
  }
}
