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
 */

import { SpanKind, SpanStatusCode, trace, type Attributes, type Tracer, type TracerProvider } from "@opentelemetry/api";
import type { ApiOperation, CallFacts, LogRecord } from "../types.js";

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
};

/** gen_ai.provider.name: the well-known value of the API an upstream speaks (an OpenAI-compatible server speaks "openai"). */
const PROVIDER_NAME: Record<string, string> = { openai: "openai", anthropic: "anthropic", gemini: "gcp.gemini" };

export class GenAiSpans {
  private readonly tracer: Tracer;

  constructor(provider?: TracerProvider) {
    this.tracer = (provider ?? trace.getTracerProvider()).getTracer(TRACER_NAME);
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
      "gen_ai.request.stream": rec.stream,
      "gen_ai.conversation.id": rec.sessionId,
      "http.response.status_code": rec.status,
      "meshguard.request.id": rec.id,
      "meshguard.provider": rec.provider,
      "meshguard.outcome": rec.outcome,
      "meshguard.caller.node": rec.caller.node,
      "meshguard.caller.user": rec.caller.user,
    };
    if (rec.caller.tags.length > 0) attrs["meshguard.caller.tags"] = rec.caller.tags;
    if (facts?.maxTokens !== undefined) attrs["gen_ai.request.max_tokens"] = facts.maxTokens;
    const u = rec.usage;
    if (u !== undefined) {
      const cacheRead = u.cacheReadTokens ?? 0;
      const cacheWrite = u.cacheWriteTokens ?? 0;
      attrs["gen_ai.usage.input_tokens"] = u.inputTokens + cacheRead + cacheWrite;
      attrs["gen_ai.usage.output_tokens"] = u.outputTokens;
      if (cacheRead > 0) attrs["gen_ai.usage.cache_read.input_tokens"] = cacheRead;
      if (cacheWrite > 0) attrs["gen_ai.usage.cache_creation.input_tokens"] = cacheWrite;
      if (u.estimated) attrs["meshguard.usage.estimated"] = true;
    }
    if (rec.costUsd !== undefined) attrs["meshguard.cost_usd"] = rec.costUsd;
    if (rec.ttftMs !== undefined) attrs["gen_ai.response.time_to_first_chunk"] = rec.ttftMs / 1000;
    if (rec.ruleId !== undefined) attrs["meshguard.policy.rule"] = rec.ruleId;
    const failed = rec.outcome !== "ok";
    // error.type: low-cardinality; the upstream's status for its errors, else what ended the request.
    if (failed) attrs["error.type"] = rec.outcome === "upstream_error" ? String(rec.status) : rec.outcome;

    const span = this.tracer.startSpan(`${opName} ${rec.model}`.trim(), { kind: SpanKind.CLIENT, startTime: rec.time, attributes: attrs });
    if (failed) span.setStatus({ code: SpanStatusCode.ERROR, ...(rec.reason !== undefined ? { message: rec.reason } : {}) });
    span.end(rec.time + rec.durationMs);
  }
}
