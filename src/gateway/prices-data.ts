/**
 * The most output tokens a model can produce in one answer, for models whose
 * clients often send no `max_tokens` (OpenAI chat, Gemini): the quota manager
 * reserves this much output before the upstream call. Prices come from the
 * maintained `@pydantic/genai-prices` package (./prices.ts); it has context
 * windows but not output limits, so those are kept here.
 *
 * As of 2025-10, from the providers' model pages: platform.openai.com/docs/models,
 * docs.anthropic.com/en/docs/about-claude/models/overview,
 * ai.google.dev/gemini-api/docs/models. Keys are model-id prefixes: the
 * longest prefix of the requested model wins, so dated snapshots
 * ("claude-sonnet-4-5-20250929", "gpt-4o-2024-08-06") find their family. A
 * model missing here falls back to the gateway's default (a limit too low
 * would under-reserve; a missing one reserves the configured default).
 */
export const MAX_OUTPUT_TOKENS: Readonly<Record<string, Readonly<Record<string, number>>>> = {
  openai: {
    "gpt-5": 128_000,
    "gpt-5-mini": 128_000,
    "gpt-5-nano": 128_000,
    "gpt-4.1": 32_768,
    "gpt-4o": 16_384,
    "gpt-4o-mini": 16_384,
    "gpt-4-turbo": 4_096,
    "gpt-3.5-turbo": 4_096,
    o1: 100_000,
    o3: 100_000,
    "o3-mini": 100_000,
    "o4-mini": 100_000,
  },
  anthropic: {
    "claude-opus-4": 32_000,
    "claude-sonnet-4": 64_000,
    "claude-haiku-4-5": 64_000,
    "claude-3-7-sonnet": 64_000,
    "claude-3-5-sonnet": 8_192,
    "claude-3-5-haiku": 8_192,
    "claude-3-opus": 4_096,
    "claude-3-haiku": 4_096,
  },
  google: {
    "gemini-2.5-pro": 65_536,
    "gemini-2.5-flash": 65_536,
    "gemini-2.0-flash": 8_192,
    "gemini-1.5-pro": 8_192,
    "gemini-1.5-flash": 8_192,
  },
};
