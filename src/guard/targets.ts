/**
 * Building the policy Targets the guard asks about, from what each
 * interception point sees, in the normal form the contract fixes
 * (src/policy/types.ts): hosts lower-case without a trailing dot or IPv6
 * brackets, methods upper-case, header names lower-case, path without query.
 */

import { normalizeHost } from "../policy/hosts.js";
import type { HttpTarget, LlmTarget } from "../policy/types.js";

/** hostKey is the key of a destination in the guard's tables: "host:port" in normal form. */
export function hostKey(host: string, port: number): string {
  return `${normalizeHost(host)}:${port}`;
}

/** defaultPort of an URL scheme. */
export function defaultPort(scheme: string): number {
  return scheme === "https" || scheme === "https:" ? 443 : 80;
}

/** splitPathQuery splits "/a/b?x=1" into ["/a/b", "x=1"]; an absolute-form path keeps only its path part. */
export function splitPathQuery(raw: string): [string, string] {
  let p = raw || "/";
  if (!p.startsWith("/") && /^[a-z][a-z0-9+.-]*:\/\//i.test(p)) {
    // absolute-form (a request through an HTTP proxy): the target is the URL's
    try {
      const u = new URL(p);
      return [u.pathname || "/", u.search.slice(1)];
    } catch {
      return [p, ""];
    }
  }
  const q = p.indexOf("?");
  if (q < 0) return [p, ""];
  const path = p.slice(0, q) || "/";
  return [path, p.slice(q + 1)];
}

/**
 * headerRecord turns the header shapes Node and undici use into one record
 * with lower-case names: a flat [k, v, k, v] array, an array of pairs, an
 * iterable of pairs, or an object. Repeated headers are joined with ", ".
 */
export function headerRecord(h: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  const add = (k: unknown, v: unknown) => {
    if (k === undefined || k === null || v === undefined || v === null) return;
    const name = (Buffer.isBuffer(k) ? k.toString("latin1") : String(k)).toLowerCase();
    const value = Array.isArray(v) ? v.map((x) => (Buffer.isBuffer(x) ? x.toString("latin1") : String(x))).join(", ") : Buffer.isBuffer(v) ? v.toString("latin1") : String(v);
    out[name] = out[name] === undefined ? value : `${out[name]}, ${value}`;
  };
  if (h === null || h === undefined) return out;
  if (Array.isArray(h)) {
    if (h.length > 0 && Array.isArray(h[0])) for (const pair of h as unknown[][]) add(pair[0], pair[1]);
    else for (let i = 0; i + 1 < h.length; i += 2) add(h[i], h[i + 1]);
    return out;
  }
  if (typeof h === "object" && typeof (h as Iterable<unknown>)[Symbol.iterator] === "function") {
    for (const pair of h as Iterable<[unknown, unknown]>) add(pair[0], pair[1]);
    return out;
  }
  if (typeof h === "object") for (const [k, v] of Object.entries(h as Record<string, unknown>)) add(k, v);
  return out;
}

export interface HttpParts {
  scheme: "http" | "https";
  host: string;
  port: number;
  method: string;
  /** Path as sent, possibly with a query. */
  rawPath: string;
  headers: Record<string, string>;
  bodySize?: number;
  body?: unknown;
}

/** httpTarget builds the HttpTarget of one request. */
export function httpTarget(p: HttpParts): HttpTarget {
  const [path, query] = splitPathQuery(p.rawPath);
  const t: HttpTarget = { kind: "http", scheme: p.scheme, host: normalizeHost(p.host), port: p.port, method: p.method.toUpperCase(), path, query, headers: p.headers };
  if (p.bodySize !== undefined) t.bodySize = p.bodySize;
  if (p.body !== undefined) t.body = p.body;
  return t;
}

/** The LLM providers known by API host. Other hosts are added with GuardOptions.llm.providers. */
export const DEFAULT_LLM_PROVIDERS: Readonly<Record<string, string>> = Object.freeze({
  "api.openai.com": "openai",
  "api.anthropic.com": "anthropic",
  "generativelanguage.googleapis.com": "gemini",
  "api.mistral.ai": "mistral",
  "api.groq.com": "groq",
  "api.deepseek.com": "deepseek",
  "api.x.ai": "xai",
  "openrouter.ai": "openrouter",
});

/** Paths of the LLM APIs whose request body names a model (OpenAI chat/responses/completions/embeddings, Anthropic messages). */
const LLM_PATH_RE = /\/(chat\/completions|completions|responses|messages|embeddings)$/;

/**
 * llmProviderFor says whether a request is an LLM API call and for which
 * provider: a POST to a known provider host ("host:port" or "host"), or a
 * POST to an LLM API path on any host (an OpenAI-compatible server: the
 * provider is then the host). Undefined: not an LLM call.
 */
export function llmProviderFor(providers: ReadonlyMap<string, string>, host: string, port: number, method: string, path: string): string | undefined {
  if (method !== "POST") return undefined;
  const known = providers.get(`${host}:${port}`) ?? providers.get(host);
  if (known !== undefined) return known;
  return LLM_PATH_RE.test(path) ? host : undefined;
}

/**
 * llmTarget reads model and max tokens from a parsed request body: OpenAI
 * `max_tokens` / `max_completion_tokens` / `max_output_tokens`, Anthropic
 * `max_tokens`; for an embeddings call (`path` ends in /embeddings), which
 * produces no output, the tokens of its input (embeddingTokens), as the AI
 * gateway counts them. A body without a string `model` is not a model call
 * (undefined).
 */
export function llmTarget(provider: string, body: unknown, path?: string): LlmTarget | undefined {
  if (body === null || typeof body !== "object") return undefined;
  const b = body as Record<string, unknown>;
  if (typeof b.model !== "string") return undefined;
  const t: LlmTarget = { kind: "llm", provider, model: b.model };
  if (path !== undefined && path.endsWith("/embeddings")) {
    t.maxTokens = embeddingTokens(b.input);
    return t;
  }
  const mt = b.max_tokens ?? b.max_completion_tokens ?? b.max_output_tokens;
  if (typeof mt === "number" && Number.isFinite(mt)) t.maxTokens = mt;
  return t;
}

/**
 * embeddingTokens counts the tokens of an OpenAI embeddings `input`: a
 * string, an array of strings, an array of token ids, or an array of such
 * arrays. Token ids count one each; text about 4 characters a token (the
 * estimate the gateway uses wherever it has no tokenizer). Anything else
 * counts 0 and is the upstream's to refuse.
 */
export function embeddingTokens(input: unknown): number {
  const text = (s: string) => Math.ceil(s.length / 4);
  if (typeof input === "string") return text(input);
  if (!Array.isArray(input)) return 0;
  let n = 0;
  for (const x of input) {
    if (typeof x === "string") n += text(x);
    else if (typeof x === "number") n += 1;
    else if (Array.isArray(x)) n += x.length;
  }
  return n;
}
