/**
 * What an answer says about itself, beyond usage: the upstream's id for it,
 * the model that really answered (often a dated version of the one asked
 * for), why each generation stopped, and how many output tokens were
 * reasoning. Read from a whole answer or, event by event, from a stream,
 * for each API the gateway proxies; the log record keeps it and the GenAI
 * span reports it (gen_ai.response.*).
 *
 * Finish reasons are the provider's own values (OpenAI "stop", "length",
 * "tool_calls"; Anthropic "end_turn", "max_tokens", "tool_use"; Gemini
 * "STOP", "MAX_TOKENS"), one per generation in the order of the choices or
 * candidates. The Responses API has no per-choice reason: its status is
 * given as "stop" (completed), the incomplete_details reason (incomplete)
 * or "error" (failed). A generation whose reason never came (a stream cut
 * short, or an in-stream error) is "error", as the OpenTelemetry GenAI
 * conventions ask.
 */

import type { AnswerFacts, ApiOperation } from "./types.js";

type Obj = Record<string, unknown>;

/** Generations followed per answer (OpenAI's n is at most 128): an index past it is not believed. */
const MAX_GENERATIONS = 128;

const obj = (v: unknown): Obj | undefined => (v !== null && typeof v === "object" && !Array.isArray(v) ? (v as Obj) : undefined);
const str = (v: unknown): string | undefined => (typeof v === "string" && v !== "" ? v : undefined);
const count = (v: unknown): number | undefined => (typeof v === "number" && Number.isFinite(v) && v > 0 ? v : undefined);

/** The Responses API's status as a finish reason. */
function responsesReason(r: Obj): string | undefined {
  switch (r.status) {
    case "completed":
      return "stop";
    case "incomplete":
      return str(obj(r.incomplete_details)?.reason) ?? "incomplete";
    case "failed":
      return "error";
    default:
      return undefined;
  }
}

/**
 * AnswerReader gathers the facts of one answer. `whole` reads a complete
 * answer; `event` one streamed event (`data` as JSON, `name` the SSE event
 * name); `result` says what was gathered.
 */
export class AnswerReader {
  #id: string | undefined;
  #model: string | undefined;
  /** Finish reasons by generation index; a hole is a generation seen without one. */
  readonly #reasons: (string | undefined)[] = [];
  #reasoning: number | undefined;
  private readonly op: ApiOperation;

  constructor(op: ApiOperation) {
    this.op = op;
  }

  /** whole reads a complete (non-streamed) answer body. */
  whole(body: unknown): void {
    const b = obj(body);
    if (!b) return;
    if (this.op.startsWith("gemini.")) return this.#gemini(b);
    switch (this.op) {
      case "openai.chat":
        this.#ids(b.id, b.model);
        if (Array.isArray(b.choices)) b.choices.forEach((c, i) => this.#reason(numberOr(obj(c)?.index, i), obj(c)?.finish_reason));
        this.#reasoning = count(obj(obj(b.usage)?.completion_tokens_details)?.reasoning_tokens) ?? this.#reasoning;
        break;
      case "openai.responses":
        this.#responses(b);
        break;
      case "openai.embeddings":
        this.#ids(undefined, b.model);
        break;
      case "anthropic.messages":
        this.#ids(b.id, b.model);
        this.#reason(0, b.stop_reason);
        break;
      default:
        break;
    }
  }

  /** event reads one streamed event. */
  event(data: unknown, name?: string): void {
    const d = obj(data);
    if (!d) return;
    if (this.op.startsWith("gemini.")) return this.#gemini(d);
    switch (this.op) {
      case "openai.chat": {
        this.#ids(d.id, d.model);
        if (Array.isArray(d.choices)) for (const c of d.choices) this.#reason(numberOr(obj(c)?.index, 0), obj(c)?.finish_reason);
        const r = count(obj(obj(d.usage)?.completion_tokens_details)?.reasoning_tokens);
        if (r !== undefined) this.#reasoning = r;
        break;
      }
      case "openai.responses": {
        const type = d.type ?? name;
        const r = obj(d.response);
        if (r && (type === "response.created" || type === "response.completed" || type === "response.incomplete" || type === "response.failed")) this.#responses(r);
        break;
      }
      case "anthropic.messages": {
        const type = d.type ?? name;
        if (type === "message_start") {
          const m = obj(d.message);
          this.#ids(m?.id, m?.model);
          this.#reason(0, undefined);
        } else if (type === "message_delta") this.#reason(0, obj(d.delta)?.stop_reason);
        break;
      }
      default:
        break;
    }
  }

  /**
   * result is what the answer said, or undefined when it said nothing. A
   * generation seen without a finish reason has "error" (its final event
   * never came); `cutShort` (the answer broke off) gives one "error" when
   * no generation was seen at all.
   */
  result(cutShort = false): AnswerFacts | undefined {
    const a: AnswerFacts = {};
    if (this.#id !== undefined) a.id = this.#id;
    if (this.#model !== undefined) a.model = this.#model;
    if (this.#reasons.length > 0) a.finishReasons = Array.from(this.#reasons, (r) => r ?? "error");
    else if (cutShort) a.finishReasons = ["error"];
    if (this.#reasoning !== undefined) a.reasoningTokens = this.#reasoning;
    return Object.keys(a).length === 0 ? undefined : a;
  }

  #ids(id: unknown, model: unknown): void {
    this.#id ??= str(id);
    this.#model ??= str(model);
  }

  /** Notes that generation `i` was seen, and its finish reason when `reason` is one (a stream sends null until the last chunk). */
  #reason(i: number, reason: unknown): void {
    if (!Number.isInteger(i) || i < 0 || i >= MAX_GENERATIONS) return;
    while (this.#reasons.length <= i) this.#reasons.push(undefined);
    const r = str(reason);
    if (r !== undefined) this.#reasons[i] = r;
  }

  #responses(r: Obj): void {
    this.#ids(r.id, r.model);
    const reason = responsesReason(r);
    this.#reason(0, reason);
    const t = count(obj(obj(r.usage)?.output_tokens_details)?.reasoning_tokens);
    if (t !== undefined) this.#reasoning = t;
  }

  #gemini(b: Obj): void {
    this.#ids(b.responseId, b.modelVersion);
    if (Array.isArray(b.candidates)) b.candidates.forEach((c, i) => this.#reason(numberOr(obj(c)?.index, i), obj(c)?.finishReason));
    const t = count(obj(b.usageMetadata)?.thoughtsTokenCount);
    if (t !== undefined) this.#reasoning = t;
  }
}

function numberOr(v: unknown, dflt: number): number {
  return typeof v === "number" ? v : dflt;
}

/** answerOf reads the facts of a whole answer; undefined when it has none. */
export function answerOf(op: ApiOperation, body: unknown): AnswerFacts | undefined {
  const r = new AnswerReader(op);
  r.whole(body);
  return r.result();
}
