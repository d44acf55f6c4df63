/**
 * One OpenTelemetry span per LLM request, following the GenAI semantic
 * conventions (gen_ai.*; they are still "development" status, so the
 * attribute names are written here rather than taken from a package that
 * renames them between releases). Only @opentelemetry/api is used: the
 * application registers an SDK and an exporter (or passes a TracerProvider);
 * without one the API's no-op tracer makes this cost nothing, and nothing is
 * sent anywhere by default.
 *
 * The span is made when the request finishes, with the request's own start
 * and end times: a request that never finishes is not traced, and a gateway
 * with tracing off does no per-request work at all.
 *
 * Token counts follow the conventions, not the log record:
 * gen_ai.usage.input_tokens includes cached input (the record counts cache
 * reads and writes apart), with the cache parts also given on their own.
 *
 * Checked against the conventions' inference span
 * (open-telemetry/semantic-conventions-genai, gen_ai.client.inference):
 * every Required and Conditionally Required attribute the gateway can know
 * is set, and of the Recommended ones: the request's generation settings
 * (read from its body only while spans are on), gen_ai.response.id, .model
 * and .finish_reasons (streams included, "error" for a generation cut
 * short), usage with cache reads/writes and reasoning tokens, time to first
 * chunk, server.address/port of the upstream. Not set: the Opt-In content
 * attributes (messages, system instructions, tool definitions: they would
 * copy prompts into the tracing backend), per-modality token counts (not
 * reported apart by the gateway) and prompt templates (not the gateway's).
 * gen_ai.conversation.id is set only when the client sent a session id of
 * its own: the conventions forbid a made-up one, and the gateway's own
 * session id (an idle-gap grouping) is meshguard.session.id.
 */

import { SpanKind, SpanStatusCode, trace, type Attributes, type Tracer, type TracerProvider } from "@opentelemetry/api";
import type { ApiOperation, CallFacts, LogRecord, RequestParams } from "../types.js";

const TRACER_NAME = "meshguard-gateway";

/** gen_ai.operation.name for each operation (count_tokens has no conventional name: it keeps its own). */
const OPERATION_NAME: Record<ApiOperation, string> = {
  "openai.chat": "chat",
  "openai.responses": "chat",
  "openai.embeddings": "embeddings",
  "openai.models": "models",
  "anthropic.messages": "chat",
  "anthropic.count_tokens": "count_tokens",
  "anthropic.models": "models",
  "gemini.generate": "generate_content",
  "gemini.stream": "generate_content",
  "gemini.count_tokens": "count_tokens",
  "gemini.models": "models",
  "mcp.call": "execute_tool",
  "mcp.read": "read_resource",
  "mcp.prompt": "get_prompt",
  "connector.call": "execute_tool",
};

/** gen_ai.provider.name: the well-known value of the API an upstream speaks (an OpenAI-compatible server speaks "openai"). */
const PROVIDER_NAME: Record<string, string> = { openai: "openai", anthropic: "anthropic", gemini: "gcp.gemini" };

/** The gen_ai.request.* attribute of each generation setting. */
const PARAM_ATTRIBUTE: Record<keyof RequestParams, string> = {
  temperature: "gen_ai.request.temperature",
  topP: "gen_ai.request.top_p",
  topK: "gen_ai.request.top_k",
  stopSequences: "gen_ai.request.stop_sequences",
  frequencyPenalty: "gen_ai.request.frequency_penalty",
  presencePenalty: "gen_ai.request.presence_penalty",
  seed: "gen_ai.request.seed",
  choiceCount: "gen_ai.request.choice.count",
  outputType: "gen_ai.output.type",
  reasoningLevel: "gen_ai.request.reasoning.level",
  previousResponseId: "gen_ai.request.previous_response.id",
};

/** server.address and server.port of an upstream's base URL (the port the scheme implies when it names none). */
function serverOf(baseUrl: string): { address: string; port: number } | undefined {
  try {
    const u = new URL(baseUrl);
    const port = u.port !== "" ? Number(u.port) : u.protocol === "https:" ? 443 : 80;
    return { address: u.hostname.replace(/^\[(.*)\]$/, "$1"), port };
  } catch {
    return undefined;
  }
}

export class GenAiSpans {
  private readonly tracer: Tracer;
  /** Each configured provider's server.address and server.port. */
  private readonly servers = new Map<string, { address: string; port: number }>();

  /** `providers`: the configured providers' base URLs by name, for server.address and server.port. */
  constructor(provider?: TracerProvider, providers: Readonly<Record<string, { baseUrl: string }>> = {}) {
    this.tracer = (provider ?? trace.getTracerProvider()).getTracer(TRACER_NAME);
    for (const [name, p] of Object.entries(providers)) {
      const server = serverOf(p.baseUrl);
      if (server) this.servers.set(name, server);
    }
  }

  /** record emits the span of one finished request. */
  record(rec: LogRecord, facts: CallFacts | undefined): void {
    const opName = OPERATION_NAME[rec.operation];
    const format = rec.operation.slice(0, rec.operation.indexOf("."));
    const providerName = PROVIDER_NAME[format] ?? format;
    const attrs: Attributes = {
      "gen_ai.operation.name": opName,
      "gen_ai.provider.name": providerName,
      // The attribute gen_ai.provider.name replaces; still read by many backends.
      "gen_ai.system": providerName,
      "gen_ai.request.model": rec.model,
      "http.response.status_code": rec.status,
      "meshguard.session.id": rec.sessionId,
      "meshguard.request.id": rec.id,
      "meshguard.provider": rec.provider,
      "meshguard.outcome": rec.outcome,
      "meshguard.caller.node": rec.caller.node,
      "meshguard.caller.user": rec.caller.user,
    };
    if (rec.caller.tags.length > 0) attrs["meshguard.caller.tags"] = rec.caller.tags;
    // Set if and only if streamed: unset means not streamed.
    if (rec.stream) attrs["gen_ai.request.stream"] = true;
    if (facts?.clientSessionId !== undefined) attrs["gen_ai.conversation.id"] = facts.clientSessionId;
    const server = this.servers.get(rec.provider);
    if (server) {
      attrs["server.address"] = server.address;
      attrs["server.port"] = server.port;
    }
    if (facts?.maxTokens !== undefined) attrs["gen_ai.request.max_tokens"] = facts.maxTokens;
    const params = facts?.params;
    if (params !== undefined) {
      for (const k in params) {
        const v = params[k as keyof RequestParams];
        // choice.count only when not 1, as the conventions ask.
        if (v !== undefined && !(k === "choiceCount" && v === 1)) attrs[PARAM_ATTRIBUTE[k as keyof RequestParams]] = v;
      }
    }
    const answer = rec.response;
    if (answer?.id !== undefined) attrs["gen_ai.response.id"] = answer.id;
    if (answer?.model !== undefined) attrs["gen_ai.response.model"] = answer.model;
    if (answer?.finishReasons !== undefined) attrs["gen_ai.response.finish_reasons"] = answer.finishReasons;
    if (answer?.reasoningTokens !== undefined) attrs["gen_ai.usage.reasoning.output_tokens"] = answer.reasoningTokens;
    const u = rec.usage;
    if (u !== undefined) {
      const cacheRead = u.cacheReadTokens ?? 0;
      const cacheWrite = u.cacheWriteTokens ?? 0;
      attrs["gen_ai.usage.input_tokens"] = u.inputTokens + cacheRead + cacheWrite;
      attrs["gen_ai.usage.output_tokens"] = u.outputTokens;
      if (cacheRead > 0) attrs["gen_ai.usage.cache_read.input_tokens"] = cacheRead;
      if (cacheWrite > 0) attrs["gen_ai.usage.cache_write.input_tokens"] = cacheWrite;
      if (u.estimated) attrs["meshguard.usage.estimated"] = true;
    }
    if (rec.costUsd !== undefined) attrs["meshguard.cost_usd"] = rec.costUsd;
    if (rec.ttftMs !== undefined) attrs["gen_ai.response.time_to_first_chunk"] = rec.ttftMs / 1000;
    if (rec.ruleId !== undefined) attrs["meshguard.policy.rule"] = rec.ruleId;
    const failed = rec.outcome !== "ok";
    // error.type: low-cardinality; the upstream's status for its errors, else what ended the request.
    // (A stream that broke after a 200 is "upstream_error": its status says nothing about the failure.)
    if (failed) attrs["error.type"] = rec.outcome === "upstream_error" && rec.status >= 400 ? String(rec.status) : rec.outcome;

    const span = this.tracer.startSpan(`${opName} ${rec.model}`.trim(), { kind: SpanKind.CLIENT, startTime: rec.time, attributes: attrs });
    if (failed) span.setStatus({ code: SpanStatusCode.ERROR, ...(rec.reason !== undefined ? { message: rec.reason } : {}) });
    span.end(rec.time + rec.durationMs);
  }
}
