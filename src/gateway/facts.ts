/**
 * Reading what a request asks for — operation, model, streaming, max tokens,
 * a client session id — from its method, path, headers and JSON body,
 * without validating the body against a schema: unknown fields pass, so the
 * next client release with a new field is not broken by the gateway.
 */

import { embeddingTokens } from "../guard/targets.js";
import type { ApiFormat, ApiOperation, RequestParams } from "./types.js";

/** An API endpoint the path names; `model` when the path carries it (Gemini). */
export interface Endpoint {
  operation: ApiOperation;
  format: ApiFormat;
  /** The model named in the path (Gemini), URL-decoded. */
  pathModel?: string;
}

const GEMINI_CALL_RE = /^\/(v1beta|v1|v1alpha)\/models\/(.+):(generateContent|streamGenerateContent|countTokens)$/;
const GEMINI_LIST_RE = /^\/(v1beta|v1|v1alpha)\/models$/;
const GEMINI_MODEL_RE = /^\/(v1beta|v1|v1alpha)\/models\/([^:]+)$/;
const GEMINI_OPS: Record<string, ApiOperation> = { generateContent: "gemini.generate", streamGenerateContent: "gemini.stream", countTokens: "gemini.count_tokens" };

/**
 * endpointOf names the endpoint of a request, or undefined (404). `path` is
 * without the query. GET /v1/models is Anthropic's when the client sends
 * `anthropic-version` (the Anthropic SDK always does), else OpenAI's.
 */
export function endpointOf(method: string, path: string, headers: Record<string, string | string[] | undefined>): Endpoint | undefined {
  if (method === "POST") {
    switch (path) {
      case "/v1/chat/completions":
        return { operation: "openai.chat", format: "openai" };
      case "/v1/messages":
        return { operation: "anthropic.messages", format: "anthropic" };
      case "/v1/responses":
        return { operation: "openai.responses", format: "openai" };
      case "/v1/embeddings":
        return { operation: "openai.embeddings", format: "openai" };
      case "/v1/messages/count_tokens":
        return { operation: "anthropic.count_tokens", format: "anthropic" };
    }
    const m = GEMINI_CALL_RE.exec(path);
    if (m) {
      let model: string;
      try {
        model = decodeURIComponent(m[2]!);
      } catch {
        return undefined;
      }
      return { operation: GEMINI_OPS[m[3]!]!, format: "gemini", pathModel: model };
    }
    return undefined;
  }
  if (method === "GET") {
    // A listing, or one model of it (`pathModel`): GET /v1/models[/{id}] is OpenAI's, or
    // Anthropic's when the client sends anthropic-version; /v1beta/models[/{model}] is Gemini's
    // (and /v1/models/... too when the client sends x-goog-api-key: the Gemini SDK with apiVersion v1).
    const gemini = GEMINI_LIST_RE.test(path) || GEMINI_MODEL_RE.test(path) ? !path.startsWith("/v1/") || headers["x-goog-api-key"] !== undefined : false;
    const format: ApiFormat = gemini ? "gemini" : headers["anthropic-version"] !== undefined ? "anthropic" : "openai";
    const operation: ApiOperation = `${format}.models`;
    if (path === "/v1/models" || GEMINI_LIST_RE.test(path)) return gemini || path === "/v1/models" ? { operation, format } : undefined;
    const one = GEMINI_MODEL_RE.exec(path);
    if (one && (gemini || path.startsWith("/v1/"))) {
      try {
        return { operation, format, pathModel: decodeURIComponent(one[2]!) };
      } catch {
        return undefined;
      }
    }
  }
  return undefined;
}

/** formatGuess is the API format to answer an unknown path in (a 404 the client can read). */
export function formatGuess(path: string, headers: Record<string, string | string[] | undefined>): ApiFormat {
  if (path.startsWith("/v1beta/") || path.startsWith("/v1alpha/") || headers["x-goog-api-key"] !== undefined) return "gemini";
  if (headers["anthropic-version"] !== undefined || headers["x-api-key"] !== undefined) return "anthropic";
  return "openai";
}

/** BodyFacts are what the body says (the path's model wins for Gemini). */
export interface BodyFacts {
  model: string | undefined;
  stream: boolean;
  maxTokens?: number;
  /** The tokens of an embeddings request's input (counted: token arrays exactly, text at ~4 characters a token). */
  inputTokens?: number;
}

/** What produces no output tokens: an embedding and a token count use their input alone. */
const NO_OUTPUT: ReadonlySet<ApiOperation> = new Set(["openai.embeddings", "anthropic.count_tokens", "gemini.count_tokens"]);

/** producesOutput is false for operations that produce no output tokens (embeddings, token counts). */
export function producesOutput(op: ApiOperation): boolean {
  return !NO_OUTPUT.has(op);
}

/**
 * bodyFacts reads model, stream and max tokens. Max tokens: OpenAI chat
 * `max_completion_tokens` (else the older `max_tokens`), Responses
 * `max_output_tokens`, Anthropic `max_tokens`, Gemini
 * `generationConfig.maxOutputTokens`. An embedding produces no output: the
 * tokens it uses are its input's, so its max tokens is the count of its
 * input (an `llm` rule's `maxTokens` bounds how much one embeddings call may
 * embed, and quotas reserve that count). Token counting costs nothing: its
 * max tokens is 0, so a `maxTokens` rule does not deny it for lack of a value.
 */
export function bodyFacts(ep: Endpoint, body: Record<string, unknown>): BodyFacts {
  const model = ep.pathModel ?? (typeof body.model === "string" ? body.model : undefined);
  let stream = body.stream === true;
  let mt: unknown;
  switch (ep.operation) {
    case "openai.chat":
      mt = body.max_completion_tokens ?? body.max_tokens;
      break;
    case "openai.responses":
      mt = body.max_output_tokens;
      break;
    case "anthropic.messages":
      mt = body.max_tokens;
      break;
    case "gemini.generate":
    case "gemini.stream": {
      const gc = body.generationConfig as Record<string, unknown> | undefined;
      mt = gc !== null && typeof gc === "object" ? gc.maxOutputTokens : undefined;
      stream = ep.operation === "gemini.stream";
      break;
    }
    case "openai.embeddings": {
      const n = embeddingTokens(body.input);
      return { model, stream: false, maxTokens: n, inputTokens: n };
    }
    case "anthropic.count_tokens":
    case "gemini.count_tokens":
      mt = 0;
      stream = false;
      break;
  }
  const f: BodyFacts = { model, stream };
  if (typeof mt === "number" && Number.isInteger(mt) && mt >= 0) f.maxTokens = mt;
  return f;
}

/** Headers a client sends its session id in (Claude Code, Codex CLI, generic). */
const SESSION_HEADERS = ["x-claude-code-session-id", "session_id", "x-session-id"];

/** clientSessionId is the client's own session id, when it sends one. */
export function clientSessionId(headers: Record<string, string | string[] | undefined>): string | undefined {
  for (const h of SESSION_HEADERS) {
    const v = headers[h];
    if (typeof v === "string" && v !== "" && v.length <= 200) return v;
  }
  return undefined;
}

const num = (v: unknown): number | undefined => (typeof v === "number" && Number.isFinite(v) ? v : undefined);
const text = (v: unknown): string | undefined => (typeof v === "string" && v !== "" && v.length <= 200 ? v : undefined);
const rec = (v: unknown): Record<string, unknown> | undefined => (v !== null && typeof v === "object" && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined);

/** Stop sequences as a list: OpenAI's `stop` may be one string. At most 16 kept, each at most 200 characters. */
function stops(v: unknown): string[] | undefined {
  const list = typeof v === "string" ? [v] : Array.isArray(v) ? v.filter((x): x is string => typeof x === "string") : [];
  const out = list.slice(0, 16).map((x) => x.slice(0, 200));
  return out.length > 0 ? out : undefined;
}

/** The output type of an OpenAI response_format / text.format type, or a Gemini responseMimeType. */
function outputType(v: unknown): string | undefined {
  switch (v) {
    case "text":
    case "text/plain":
      return "text";
    case "json_object":
    case "json_schema":
    case "application/json":
    case "text/x.enum":
      return "json";
    default:
      return undefined;
  }
}

/**
 * requestParams reads the generation settings of a request, for its span
 * (the OpenTelemetry GenAI gen_ai.request.* attributes): OpenAI chat and
 * Responses, Anthropic messages, Gemini generationConfig. Only what the
 * request sets is returned; values of the wrong type are left out.
 */
export function requestParams(ep: Endpoint, body: Record<string, unknown>): RequestParams {
  const p: RequestParams = {};
  const set = <K extends keyof RequestParams>(k: K, v: RequestParams[K] | undefined) => {
    if (v !== undefined) p[k] = v;
  };
  switch (ep.operation) {
    case "openai.chat":
      set("temperature", num(body.temperature));
      set("topP", num(body.top_p));
      set("stopSequences", stops(body.stop));
      set("frequencyPenalty", num(body.frequency_penalty));
      set("presencePenalty", num(body.presence_penalty));
      set("seed", num(body.seed));
      set("choiceCount", num(body.n));
      set("outputType", outputType(rec(body.response_format)?.type) ?? (Array.isArray(body.modalities) && body.modalities.includes("audio") ? "speech" : undefined));
      set("reasoningLevel", text(body.reasoning_effort));
      break;
    case "openai.responses":
      set("temperature", num(body.temperature));
      set("topP", num(body.top_p));
      set("outputType", outputType(rec(rec(body.text)?.format)?.type));
      set("reasoningLevel", text(rec(body.reasoning)?.effort));
      set("previousResponseId", text(body.previous_response_id));
      break;
    case "anthropic.messages":
      set("temperature", num(body.temperature));
      set("topP", num(body.top_p));
      set("topK", num(body.top_k));
      set("stopSequences", stops(body.stop_sequences));
      set("reasoningLevel", text(rec(body.output_config)?.effort));
      break;
    case "gemini.generate":
    case "gemini.stream": {
      const g = rec(body.generationConfig) ?? {};
      set("temperature", num(g.temperature));
      set("topP", num(g.topP));
      set("topK", num(g.topK));
      set("stopSequences", stops(g.stopSequences));
      set("frequencyPenalty", num(g.frequencyPenalty));
      set("presencePenalty", num(g.presencePenalty));
      set("seed", num(g.seed));
      set("choiceCount", num(g.candidateCount));
      set("outputType", outputType(g.responseMimeType) ?? (Array.isArray(g.responseModalities) && g.responseModalities.includes("IMAGE") ? "image" : undefined));
      set("reasoningLevel", text(rec(g.thinkingConfig)?.thinkingLevel));
      break;
    }
    default:
      break;
  }
  return p;
}
