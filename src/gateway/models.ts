/**
 * Model listings (OpenAI, Anthropic and Gemini shapes) that show a caller
 * only the models it may use: each configured model (named without a glob)
 * of a provider of that API format is put to the policy as an `llm` call
 * and listed unless the policy denies it. Listing asks with `explain`,
 * which spends no rate-limit tokens: looking is not calling.
 */

import type { LlmTarget } from "../policy/types.js";
import type { GatewayContext } from "./context.js";
import type { ApiFormat, Caller } from "./types.js";

interface Listed {
  id: string;
  provider: string;
}

/** allowedModels lists the models of `format` the caller may call, in config order, each name once. */
export function allowedModels(ctx: GatewayContext, caller: Caller, format: ApiFormat): Listed[] {
  const policy = ctx.policy();
  if (policy === undefined) return [];
  const seen = new Set<string>();
  const out: Listed[] = [];
  for (const p of ctx.router.of(format)) {
    for (const m of p.listed) {
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

/** modelList renders the listing in the API's own shape. */
export function modelList(format: ApiFormat, models: Listed[]): unknown {
  switch (format) {
    case "anthropic":
      return {
        data: models.map((m) => ({ type: "model", id: m.id, display_name: m.id, created_at: "1970-01-01T00:00:00Z" })),
        has_more: false,
        first_id: models[0]?.id ?? null,
        last_id: models.at(-1)?.id ?? null,
      };
    case "gemini":
      return { models: models.map((m) => ({ name: `models/${m.id}`, displayName: m.id, supportedGenerationMethods: ["generateContent", "streamGenerateContent", "countTokens"] })) };
    default:
      return { object: "list", data: models.map((m) => ({ id: m.id, object: "model", created: 0, owned_by: m.provider })) };
  }
}
