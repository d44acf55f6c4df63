/**
 * Model listings (OpenAI, Anthropic and Gemini shapes) that show a caller
 * only the models it may use: each configured model of a provider of that
 * API format is put to the policy as an `llm` call and listed unless the
 * policy denies it. Listing asks with `explain`, which spends no rate-limit
 * tokens: looking is not calling.
 *
 * A model configured by name is listed as is. A glob ("gpt-4o*", "*" for a
 * local Ollama) names no model, so for a provider with globs the gateway
 * asks the upstream for its own listing (with the provider key; kept for
 * UPSTREAM_LIST_TTL_MS) and lists the models in it that the globs match.
 * An upstream that cannot list (down, no models endpoint) leaves the named
 * models alone, and the failure is a warning.
 */

import type { LlmTarget } from "../policy/types.js";
import type { GatewayContext } from "./context.js";
import type { Provider } from "./providers.js";
import type { ApiFormat, Caller } from "./types.js";

/** How long an upstream's model listing is reused. */
const UPSTREAM_LIST_TTL_MS = 60_000;
/** A listing larger than this is not read (no real provider lists that many models). */
const MAX_LIST_BYTES = 4 << 20;

interface Listed {
  id: string;
  provider: string;
}

const upstreamLists = new WeakMap<Provider, { at: number; models: Promise<string[]> }>();

/** upstreamModels is the provider's own model listing (cached), or [] when it cannot be had. */
function upstreamModels(ctx: GatewayContext, p: Provider): Promise<string[]> {
  const now = Date.now();
  const c = upstreamLists.get(p);
  if (c !== undefined && now - c.at < UPSTREAM_LIST_TTL_MS) return c.models;
  const models = fetchModels(p).catch((err: unknown) => {
    ctx.warn(new Error(`provider ${p.name}: could not list the upstream's models for a listing (only models named without a glob are shown): ${ctx.scrub.text((err as Error)?.message ?? String(err))}`));
    upstreamLists.delete(p);
    return [] as string[];
  });
  upstreamLists.set(p, { at: now, models });
  return models;
}

async function fetchModels(p: Provider): Promise<string[]> {
  const path = p.format === "gemini" ? `${p.prefix}/v1beta/models?pageSize=1000` : `${p.upstreamPath("/v1/models")}${p.format === "anthropic" ? "?limit=1000" : ""}`;
  const headers: Record<string, string> = { accept: "application/json" };
  if (p.keyValue !== undefined) headers[p.keyHeader] = p.keyValue;
  if (p.format === "anthropic") headers["anthropic-version"] = "2023-06-01";
  const res = await p.pool.request({ method: "GET", path, headers, headersTimeout: Math.min(p.timeoutMs, 10_000), bodyTimeout: Math.min(p.timeoutMs, 10_000) });
  if (res.statusCode !== 200) {
    await res.body.dump().catch(() => {});
    throw new Error(`GET ${path} answered HTTP ${res.statusCode}`);
  }
  const parts: Buffer[] = [];
  let size = 0;
  for await (const chunk of res.body as AsyncIterable<Buffer>) {
    size += chunk.length;
    // Leaving the loop by a throw closes the body (the iterator's return()).
    if (size > MAX_LIST_BYTES) throw new Error(`GET ${path} answered more than ${MAX_LIST_BYTES} bytes`);
    parts.push(chunk);
  }
  const body = JSON.parse(Buffer.concat(parts).toString("utf8")) as { data?: Array<{ id?: unknown }>; models?: Array<{ name?: unknown }> };
  const names = p.format === "gemini" ? (body.models ?? []).map((m) => (typeof m?.name === "string" ? m.name.replace(/^models\//, "") : undefined)) : (body.data ?? []).map((m) => (typeof m?.id === "string" ? m.id : undefined));
  return names.filter((n): n is string => n !== undefined && n !== "");
}

/** allowedModels lists the models of `format` the caller may call, in config order, each name once. */
export async function allowedModels(ctx: GatewayContext, caller: Caller, format: ApiFormat): Promise<Listed[]> {
  const policy = ctx.policy();
  if (policy === undefined) return [];
  const seen = new Set<string>();
  const out: Listed[] = [];
  const providers = ctx.router.of(format);
  const fromUpstream = await Promise.all(providers.map((p) => (p.hasGlobs ? upstreamModels(ctx, p) : [])));
  for (const [i, p] of providers.entries()) {
    const names = p.hasGlobs ? [...p.listed, ...fromUpstream[i]!.filter((m) => p.matches(m))] : p.listed;
    for (const m of names) {
      if (seen.has(m)) continue;
      // One output token: a rule bounding maxTokens still lets the model be listed.
      const target: LlmTarget = { kind: "llm", provider: p.name, model: m, maxTokens: 1 };
      if (policy.explain({ principal: caller.principal, target }).decision.effect === "deny") continue;
      seen.add(m);
      out.push({ id: m, provider: p.name });
    }
  }
  return out;
}

/** allowedModel is one model the caller may use, configured by name or glob; undefined when no provider serves it or the policy denies it. */
export function allowedModel(ctx: GatewayContext, caller: Caller, format: ApiFormat, id: string): Listed | undefined {
  const policy = ctx.policy();
  const route = ctx.router.route(format, id);
  if (policy === undefined || route === undefined) return undefined;
  const target: LlmTarget = { kind: "llm", provider: route.provider.name, model: route.model, maxTokens: 1 };
  return policy.explain({ principal: caller.principal, target }).decision.effect === "deny" ? undefined : { id, provider: route.provider.name };
}

/** modelObject renders one model in the API's own shape. */
export function modelObject(format: ApiFormat, m: Listed): unknown {
  switch (format) {
    case "anthropic":
      return { type: "model", id: m.id, display_name: m.id, created_at: "1970-01-01T00:00:00Z" };
    case "gemini":
      return { name: `models/${m.id}`, displayName: m.id, supportedGenerationMethods: ["generateContent", "streamGenerateContent", "countTokens"] };
    default:
      return { id: m.id, object: "model", created: 0, owned_by: m.provider };
  }
}

/** modelList renders the listing in the API's own shape. */
export function modelList(format: ApiFormat, models: Listed[]): unknown {
  switch (format) {
    case "anthropic":
      return {
        data: models.map((m) => modelObject(format, m)),
        has_more: false,
        first_id: models[0]?.id ?? null,
        last_id: models.at(-1)?.id ?? null,
      };
    case "gemini":
      return { models: models.map((m) => modelObject(format, m)) };
    default:
      return { object: "list", data: models.map((m) => modelObject(format, m)) };
  }
}
