/**
 * Forwarding a streamed answer: each chunk is written to the client as it
 * arrives (no buffering, backpressure from the client's socket reaches the
 * upstream read), and read on the side for usage.
 *
 * Three shapes:
 * - server-sent events, passed through byte for byte and parsed on the side
 *   (eventsource-parser);
 * - server-sent events the gateway asked usage for (an OpenAI chat stream
 *   without `stream_options.include_usage`): split into whole events, the
 *   usage-only chunk (no choices, a usage) dropped, everything else
 *   forwarded unchanged;
 * - a JSON array streamed in pieces (Gemini without `alt=sse`): forwarded,
 *   and kept aside (bounded) to read usage at the end.
 */

import type { ServerResponse } from "node:http";
import { createParser, type EventSourceParser } from "eventsource-parser";
import type { KeyScrubber } from "./scrub.js";
import type { UpstreamCall } from "./upstream-call.js";
import { StreamUsage } from "./usage.js";

/** StreamTap reads one stream on the side and decides what of each chunk goes on. */
export interface StreamTap {
  /** pass returns what to send to the client for this chunk ("" or empty: nothing yet). */
  pass(chunk: Buffer): Buffer | string;
  /** end returns what is left to send (a strip tap's last partial event). */
  end(): string;
  readonly usage: StreamUsage;
}

/** sseTap forwards every chunk unchanged and parses events for usage. */
export function sseTap(usage: StreamUsage): StreamTap {
  const decoder = new TextDecoder();
  const parser: EventSourceParser = createParser({
    onEvent(ev) {
      if (ev.data === "[DONE]") return;
      const d = parseJson(ev.data);
      if (d !== undefined) usage.event(d, ev.event);
    },
  });
  return {
    usage,
    pass(chunk) {
      parser.feed(decoder.decode(chunk, { stream: true }));
      return chunk;
    },
    end() {
      parser.feed(decoder.decode());
      return "";
    },
  };
}

const BOUNDARY = /\r?\n\r?\n|\r\r/g;

/**
 * stripTap forwards whole events and drops the usage-only chunk an OpenAI
 * chat stream carries because the gateway asked for it. A partial event is
 * held until its end arrives (the client could not use half an event).
 */
export function stripTap(usage: StreamUsage): StreamTap {
  const decoder = new TextDecoder();
  let pending = "";
  const take = (flush: boolean): string => {
    let out = "";
    let start = 0;
    BOUNDARY.lastIndex = 0;
    for (let m = BOUNDARY.exec(pending); m !== null; m = BOUNDARY.exec(pending)) {
      const end = m.index + m[0].length;
      const block = pending.slice(start, end);
      start = end;
      out += rewrite(block, usage);
    }
    pending = pending.slice(start);
    if (flush && pending) {
      out += rewrite(pending, usage);
      pending = "";
    }
    return out;
  };
  return {
    usage,
    pass(chunk) {
      pending += decoder.decode(chunk, { stream: true });
      return take(false);
    },
    end() {
      pending += decoder.decode();
      return take(true);
    },
  };
}

/**
 * The `"usage": null` member every chunk carries once usage is asked for.
 * It cannot occur inside a JSON string (the quotes would be escaped there),
 * so removing it textually leaves the rest of the event exactly as sent.
 */
const USAGE_NULL = /,\s*"usage"\s*:\s*null(?=\s*[,}])|"usage"\s*:\s*null\s*,/g;

/**
 * rewrite reads one event block for usage and returns what the client
 * gets: "" for the usage-only chunk, else the block without the
 * `"usage": null` member the client did not ask for.
 */
function rewrite(block: string, usage: StreamUsage): string {
  let data = "";
  for (const line of block.split(/\r?\n|\r/)) {
    if (line.startsWith("data:")) data += (data ? "\n" : "") + line.slice(line.startsWith("data: ") ? 6 : 5);
  }
  if (!data || data === "[DONE]") return block;
  const d = parseJson(data) as { choices?: unknown; usage?: unknown } | undefined;
  if (d === undefined) return block;
  usage.event(d);
  if (Array.isArray(d.choices) && d.choices.length === 0 && d.usage !== null && typeof d.usage === "object") return "";
  return d.usage === null ? block.replace(USAGE_NULL, "") : block;
}

/** MAX_ASIDE bounds what a JSON-array stream keeps aside for its usage. */
const MAX_ASIDE = 8 << 20;

/** jsonArrayTap forwards chunks and reads usage from the whole array at the end. */
export function jsonArrayTap(usage: StreamUsage): StreamTap {
  const parts: Buffer[] = [];
  let size = 0;
  return {
    usage,
    pass(chunk) {
      if (size + chunk.length <= MAX_ASIDE) parts.push(chunk);
      size += chunk.length;
      return chunk;
    },
    end() {
      if (size <= MAX_ASIDE) {
        const all = parseJson(Buffer.concat(parts).toString("utf8"));
        if (Array.isArray(all)) for (const item of all) usage.event(item);
      }
      return "";
    },
  };
}

function parseJson(s: string): unknown {
  try {
    return JSON.parse(s);
  } catch {
    return undefined;
  }
}

/**
 * relay writes each chunk of a streamed answer to the client as it comes
 * (through the tap, scrubbed), pausing the upstream while the client's
 * socket is full; it resolves at the answer's end and rejects when the
 * upstream breaks or the client goes.
 */
export function relay(call: UpstreamCall, res: ServerResponse, tap: StreamTap, scrub: KeyScrubber, onFirstByte: () => void, keep: ((b: Buffer | string) => void) | undefined): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let first = true;
    let done = false;
    const finish = (err?: Error): void => {
      if (done) return;
      done = true;
      res.off("drain", onDrain);
      res.off("close", onClose);
      if (err) reject(err);
      else resolve();
    };
    const onDrain = (): void => call.resume();
    const onClose = (): void => {
      if (!res.writableFinished) finish(new Error("the client closed the connection"));
    };
    res.on("drain", onDrain);
    res.on("close", onClose);
    const send = (out: Buffer | string): void => {
      if (out.length === 0 || done) return;
      const clean = typeof out === "string" ? scrub.text(out) : scrub.bytes(out);
      if (first) {
        first = false;
        onFirstByte();
      }
      keep?.(clean);
      if (!res.write(clean)) call.pause();
    };
    call.attach({
      data: (chunk) => {
        try {
          send(tap.pass(chunk));
        } catch (err) {
          call.abort(err as Error);
          finish(err as Error);
        }
      },
      end: () => {
        try {
          send(tap.end());
          finish();
        } catch (err) {
          finish(err as Error);
        }
      },
      error: (err) => finish(err),
    });
  });
}

/** drained resolves when the response can take more, or is gone. */
export function drained(res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      res.off("drain", done);
      res.off("close", done);
      resolve();
    };
    res.on("drain", done);
    res.on("close", done);
  });
}
