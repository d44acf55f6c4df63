/**
 * Token usage, from a whole answer or from a stream's events, per API.
 * Input counts exclude cache reads and writes (types.ts Usage): OpenAI's
 * prompt_tokens include cached tokens, so they are subtracted; Anthropic
 * reports them apart already; Gemini's promptTokenCount includes
 * cachedContentTokenCount. Gemini's thinking tokens are output.
 *
 * When the upstream reports nothing (an OpenAI-compatible server without
 * usage, a stream cut short), usage is estimated at 4 characters a token
 * from the request body and the text streamed, and marked `estimated`.
 */

import { AnswerReader } from "./answer.js";
import type { ApiOperation, Usage } from "./types.js";

type Obj = Record<string, unknown>;

const num = (v: unknown): number => (typeof v === "number" && Number.isFinite(v) && v > 0 ? v : 0);
const obj = (v: unknown): Obj | undefined => (v !== null && typeof v === "object" ? (v as Obj) : undefined);

function make(input: number, output: number, cacheRead: number, cacheWrite: number): Usage {
  const u: Usage = { inputTokens: input, outputTokens: output, estimated: false };
  if (cacheRead > 0) u.cacheReadTokens = cacheRead;
  if (cacheWrite > 0) u.cacheWriteTokens = cacheWrite;
  return u;
}

/** openaiUsage reads a chat/embeddings `usage` ({prompt_tokens, completion_tokens}) or a Responses one ({input_tokens, output_tokens}). */
function openaiUsage(u: Obj): Usage {
  if (u.input_tokens !== undefined || u.output_tokens !== undefined) {
    const cached = num(obj(u.input_tokens_details)?.cached_tokens);
    return make(Math.max(0, num(u.input_tokens) - cached), num(u.output_tokens), cached, 0);
  }
  const cached = num(obj(u.prompt_tokens_details)?.cached_tokens);
  return make(Math.max(0, num(u.prompt_tokens) - cached), num(u.completion_tokens), cached, 0);
}

function anthropicUsage(u: Obj): Usage {
  return make(num(u.input_tokens), num(u.output_tokens), num(u.cache_read_input_tokens), num(u.cache_creation_input_tokens));
}

function geminiUsage(u: Obj): Usage {
  const cached = num(u.cachedContentTokenCount);
  return make(Math.max(0, num(u.promptTokenCount) - cached), num(u.candidatesTokenCount) + num(u.thoughtsTokenCount), cached, 0);
}

/** FREE operations cost nothing: counting tokens and listing models. */
const FREE = new Set<ApiOperation>(["anthropic.count_tokens", "gemini.count_tokens", "openai.models", "anthropic.models", "gemini.models"]);

/** usageFromBody reads the usage of a whole (non-streamed) answer; undefined when it has none. */
export function usageFromBody(op: ApiOperation, body: unknown): Usage | undefined {
  if (FREE.has(op)) return make(0, 0, 0, 0);
  const b = obj(body);
  if (!b) return undefined;
  if (op.startsWith("gemini.")) {
    const u = obj(b.usageMetadata);
    return u ? geminiUsage(u) : undefined;
  }
  const u = obj(b.usage);
  if (!u) return undefined;
  return op.startsWith("anthropic.") ? anthropicUsage(u) : openaiUsage(u);
}

/** estimateTokens: about 4 characters (bytes of JSON) a token. */
export function estimateTokens(chars: number): number {
  return Math.ceil(chars / 4);
}

/**
 * StreamUsage follows one streamed answer event by event: the usage the
 * upstream reports (the last report wins; Anthropic's is split over
 * message_start and message_delta) and the length of the text streamed, for
 * an estimate when no report comes.
 */
export class StreamUsage {
  private reported: Usage | undefined;
  private textChars = 0;
  /** The answer's id, model and finish reasons, read from the same events. */
  readonly answer: AnswerReader;
  private readonly op: ApiOperation;
  private readonly requestBytes: number;

  constructor(
    op: ApiOperation,
    requestBytes: number,
  ) {
    this.op = op;
    this.requestBytes = requestBytes;
    this.answer = new AnswerReader(op);
  }

  /** event takes one parsed event (`data` as JSON); `name` is the SSE event name when there is one. */
  event(data: unknown, name?: string): void {
    const d = obj(data);
    if (!d) return;
    this.answer.event(d, name);
    switch (this.op) {
      case "openai.chat": {
        const u = obj(d.usage);
        if (u) this.reported = openaiUsage(u);
        const choices = d.choices;
        if (Array.isArray(choices)) for (const c of choices) this.text(obj(obj(c)?.delta)?.content);
        break;
      }
      case "openai.responses": {
        const type = d.type ?? name;
        if (type === "response.output_text.delta") this.text(d.delta);
        else if (type === "response.completed" || type === "response.incomplete" || type === "response.failed") {
          const u = obj(obj(d.response)?.usage);
          if (u) this.reported = openaiUsage(u);
        }
        break;
      }
      case "anthropic.messages": {
        const type = d.type ?? name;
        if (type === "message_start") {
          const u = obj(obj(d.message)?.usage);
          if (u) this.reported = anthropicUsage(u);
        } else if (type === "message_delta") {
          const u = obj(d.usage);
          if (u) {
            // Cumulative output so far; input and cache counts stay from message_start unless restated.
            const prev = this.reported ?? make(0, 0, 0, 0);
            const next = anthropicUsage(u);
            this.reported = make(next.inputTokens || prev.inputTokens, next.outputTokens, next.cacheReadTokens ?? prev.cacheReadTokens ?? 0, next.cacheWriteTokens ?? prev.cacheWriteTokens ?? 0);
          }
        } else if (type === "content_block_delta") this.text(obj(d.delta)?.text);
        break;
      }
      case "gemini.stream":
      case "gemini.generate": {
        const u = obj(d.usageMetadata);
        if (u) this.reported = geminiUsage(u);
        const cands = d.candidates;
        if (Array.isArray(cands)) for (const c of cands) for (const p of (obj(obj(c)?.content)?.parts as unknown[] | undefined) ?? []) this.text(obj(p)?.text);
        break;
      }
      default:
        break;
    }
  }

  private text(v: unknown): void {
    if (typeof v === "string") this.textChars += v.length;
  }

  /** Whether the upstream reported usage (else result() estimates). */
  get hasReport(): boolean {
    return this.reported !== undefined;
  }

  /** result is the reported usage, else the estimate. */
  result(): Usage {
    if (this.reported) return this.reported;
    return { inputTokens: estimateTokens(this.requestBytes), outputTokens: estimateTokens(this.textChars), estimated: true };
  }
}

/** estimateUsage is the estimate for a whole answer that reported no usage. */
export function estimateUsage(op: ApiOperation, requestBytes: number, body: unknown): Usage {
  return { inputTokens: estimateTokens(requestBytes), outputTokens: estimateTokens(answerChars(body)), estimated: true };
}

/** answerChars counts the text of a whole answer: chat choices, Responses output, Anthropic content, Gemini candidates. */
function answerChars(body: unknown): number {
  const b = obj(body);
  if (!b) return 0;
  let n = 0;
  const add = (v: unknown) => {
    if (typeof v === "string") n += v.length;
  };
  const each = (v: unknown, f: (x: Obj) => void) => {
    if (Array.isArray(v)) for (const x of v) if (obj(x)) f(x as Obj);
  };
  each(b.choices, (c) => add(obj(c.message)?.content));
  each(b.output, (o) => each(o.content, (c) => add(c.text)));
  each(b.content, (c) => add(c.text));
  each(b.candidates, (c) => each(obj(c.content)?.parts, (p) => add(p.text)));
  return n;
}
