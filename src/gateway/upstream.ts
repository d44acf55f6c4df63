/**
 * The upstream leg of a call: the request as the client sent it (unknown
 * fields and headers, beta flags and versions pass), with the provider key
 * in place of the client's; then the answer back, whole or streamed.
 *
 * A client that goes away aborts the upstream request (its usage so far is
 * still recorded). An upstream that cannot be reached or does not answer in
 * time is a 502 / 504 in the API's format; one that answers 4xx/5xx is
 * passed through with its body (keys scrubbed). A stream that breaks after
 * its headers were sent ends with an error event in the API's format.
 */

import type { IncomingMessage, ServerResponse } from "node:http";
import type { GatewayContext } from "./context.js";
import { CREDENTIAL_HEADERS, HOP_HEADERS, NEVER_FORWARDED, REQUEST_ID, RESPONSE_DROP, sendError } from "./http-util.js";
import type { Route } from "./providers.js";
import type { KeyScrubber } from "./scrub.js";
import type { CallState } from "./record.js";
import { jsonArrayTap, relay, sseTap, stripTap, type StreamTap } from "./stream.js";
import { UpstreamCall, type UpHead } from "./upstream-call.js";
import { answerOf } from "./answer.js";
import { estimateUsage, StreamUsage, usageFromBody } from "./usage.js";
import type { CallFacts } from "./types.js";
import { errorEvent } from "./wire-errors.js";

/** What the client receives is kept for the log up to this size. */
const MAX_KEPT = 1 << 20;
const INCLUDE_USAGE = Buffer.from('"stream_options":{"include_usage":true},');

export async function forward(
  ctx: GatewayContext,
  st: CallState,
  req: IncomingMessage,
  res: ServerResponse,
  route: Route,
  facts: CallFacts,
  body: Record<string, unknown>,
  raw: Buffer | undefined,
  path: string,
  query: string,
): Promise<void> {
  const p = route.provider;
  const format = p.format;

  // An OpenAI chat stream reports usage only when asked: ask, and strip the extra chunk later.
  let strip = false;
  if (facts.operation === "openai.chat" && facts.stream) {
    const so = body.stream_options as { include_usage?: unknown } | undefined;
    if (so === undefined && raw !== undefined) {
      const at = raw.indexOf(0x7b); // "{": the body parsed as an object, so it opens with one
      raw = Buffer.concat([raw.subarray(0, at + 1), INCLUDE_USAGE, raw.subarray(at + 1)]);
      strip = true;
    } else if (so === undefined || (so !== null && typeof so === "object" && so.include_usage !== true)) {
      body.stream_options = { ...(so ?? {}), include_usage: true };
      raw = undefined;
      strip = true;
    }
  }
  const payload = raw ?? Buffer.from(JSON.stringify(body));

  // The client may have gone while the call waited (an approval, a hook): nothing goes upstream then.
  const signal = st.abort.signal;
  if (signal.aborted || res.destroyed) {
    st.outcome = "client_aborted";
    st.reason = "the client closed the connection before the request went upstream";
    return;
  }
  const headers = upstreamHeaders(req, route);
  const clientGone = () => signal.aborted;

  let up: UpHead;
  let call: UpstreamCall;
  st.tUpstream = performance.now();
  try {
    call = new UpstreamCall(p.pool, { path: p.upstreamPath(path) + upstreamQuery(query, p.passthroughKey), method: "POST", headers, body: payload }, signal);
    up = await call.head;
  } catch (err) {
    if (clientGone()) {
      st.outcome = "client_aborted";
      st.reason = "the client closed the connection before the upstream answered";
      return;
    }
    const timeout = isTimeout(err);
    st.outcome = "upstream_unreachable";
    st.reason = `${timeout ? "no answer from" : "cannot reach"} provider ${p.name}: ${ctx.scrub.text(errText(err))}`;
    st.status = sendError(res, format, timeout ? "timeout" : "unreachable", st.reason, { headers: { [REQUEST_ID]: st.id } });
    return;
  }

  const ctype = String(up.headers["content-type"] ?? "");
  const streamed = up.statusCode < 300 && (ctype.startsWith("text/event-stream") || facts.stream);
  if (streamed) await streamBack(ctx, st, res, up, call, facts, payload.length, strip, ctype.startsWith("text/event-stream"), clientGone);
  else await wholeBack(ctx, st, res, up, call, facts, payload.length, body);
}

/** upstreamHeaders: the client's headers minus hop and credential headers, plus the provider key. */
function upstreamHeaders(req: IncomingMessage, route: Route): Record<string, string> {
  const p = route.provider;
  const out: Record<string, string> = {};
  const h = req.headers;
  let clientKey = false;
  for (const k in h) {
    if (HOP_HEADERS.has(k) || NEVER_FORWARDED.has(k)) continue;
    if (CREDENTIAL_HEADERS.has(k)) {
      if (!p.passthroughKey) continue;
      clientKey = true;
    }
    const v = h[k];
    if (v !== undefined) out[k] = Array.isArray(v) ? v.join(", ") : v;
  }
  if (p.keyValue !== undefined && !clientKey) out[p.keyHeader] = p.keyValue;
  return out;
}

/** upstreamQuery keeps the client's query (Gemini's alt=sse) minus a `key` parameter, unless keys pass through. */
function upstreamQuery(query: string, passthrough: boolean): string {
  if (query === "") return "";
  if (passthrough || !/(^|&)key=/.test(query)) return `?${query}`;
  const kept = query.split("&").filter((kv) => !kv.startsWith("key="));
  return kept.length ? `?${kept.join("&")}` : "";
}

/** responseHeaders: the upstream's headers minus hop headers, with any provider key an upstream echoes scrubbed. */
function responseHeaders(scrub: KeyScrubber, up: UpHead, extra?: Record<string, string>): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const k in up.headers) {
    if (RESPONSE_DROP.has(k)) continue;
    const v = up.headers[k];
    if (v !== undefined) out[k] = scrub.empty ? v : Array.isArray(v) ? v.map((x) => scrub.text(x)) : scrub.text(v);
  }
  return extra ? Object.assign(out, extra) : out;
}

/** wholeBack reads the whole answer, runs post hooks on a success, and sends it. */
async function wholeBack(ctx: GatewayContext, st: CallState, res: ServerResponse, up: UpHead, call: UpstreamCall, facts: CallFacts, requestBytes: number, requestBody: unknown): Promise<void> {
  let buf: Buffer;
  try {
    buf = await call.whole();
  } catch (err) {
    if (st.abort.signal.aborted || res.destroyed) {
      st.outcome = "client_aborted";
      st.reason = "the client closed the connection while the upstream was answering";
      return;
    }
    st.outcome = "upstream_unreachable";
    st.reason = `the answer of provider ${facts.provider} broke off: ${ctx.scrub.text(errText(err))}`;
    st.status = sendError(res, facts.format, isTimeout(err) ? "timeout" : "unreachable", st.reason, { headers: { [REQUEST_ID]: st.id } });
    return;
  }
  buf = ctx.scrub.bytes(buf);
  const ok = up.statusCode < 300;
  const hooked = ok && ctx.hooks?.hasPost === true;
  let parsed: unknown;
  const readUsage = () => {
    try {
      parsed = JSON.parse(buf.toString("utf8"));
    } catch {
      parsed = undefined;
    }
    st.usage = usageFromBody(facts.operation, parsed) ?? estimateUsage(facts.operation, requestBytes, parsed);
    st.answer = answerOf(facts.operation, parsed);
  };
  if (!ok) {
    st.outcome = "upstream_error";
    st.reason = `provider ${facts.provider} answered HTTP ${up.statusCode}: ${buf.subarray(0, 500).toString("utf8")}`;
  } else if (!hooked) {
    // Nothing decides on the answer: it goes out first, and is read for its usage after.
    send(ctx, st, res, up, buf);
    readUsage();
    return;
  } else readUsage();
  if (hooked) {
    const c = st.caller;
    const r = await ctx.hooks.post({ id: st.id, caller: { node: c.node, user: c.user, tags: c.tags, role: c.role }, facts, headers: st.requestHeaders ?? {}, body: requestBody }, { status: up.statusCode, body: parsed });
    if (r.action === "block") {
      st.outcome = "blocked";
      st.reason = `answer blocked by hook ${r.hook}: ${r.message}`;
      st.status = sendError(res, facts.format, "blocked", st.reason, { status: r.status, headers: { [REQUEST_ID]: st.id } });
      return;
    }
    if (r.action === "redact") buf = ctx.scrub.bytes(Buffer.from(JSON.stringify(r.body)));
  }
  send(ctx, st, res, up, buf);
}

/** send answers a whole (scrubbed) answer with the upstream's status and headers, and keeps it for the log. */
function send(ctx: GatewayContext, st: CallState, res: ServerResponse, up: UpHead, buf: Buffer): void {
  st.status = up.statusCode;
  st.responseParts?.push(buf.length <= MAX_KEPT ? buf : buf.subarray(0, MAX_KEPT));
  res.writeHead(up.statusCode, responseHeaders(ctx.scrub, up, { "content-length": String(buf.length), [REQUEST_ID]: st.id }));
  res.end(buf);
}

/** streamBack forwards a streamed answer chunk by chunk. */
async function streamBack(
  ctx: GatewayContext,
  st: CallState,
  res: ServerResponse,
  up: UpHead,
  call: UpstreamCall,
  facts: CallFacts,
  requestBytes: number,
  strip: boolean,
  sse: boolean,
  clientGone: () => boolean,
): Promise<void> {
  const usage = new StreamUsage(facts.operation, requestBytes);
  const tap: StreamTap = !sse ? jsonArrayTap(usage) : strip ? stripTap(usage) : sseTap(usage);
  st.status = up.statusCode;
  res.writeHead(up.statusCode, responseHeaders(ctx.scrub, up, { [REQUEST_ID]: st.id }));
  // The headers go out at once: a client sees the stream open before the first token.
  res.flushHeaders();
  let kept = 0;
  const keep = st.responseParts
    ? (b: Buffer | string) => {
        if (kept >= MAX_KEPT) return;
        kept += b.length;
        st.responseParts!.push(b);
      }
    : undefined;
  try {
    await relay(call, res, tap, ctx.scrub, () => (st.tFirstByte = performance.now()), keep);
    st.usage = usage.result();
    st.answer = usage.answer.result();
    res.end();
  } catch (err) {
    st.usage = usage.result();
    st.answer = usage.answer.result(true);
    if (clientGone() || res.destroyed) {
      st.outcome = "client_aborted";
      st.reason = "the client closed the connection mid-stream; the upstream request was aborted";
      call.abort(new Error("the client closed the connection"));
      return;
    }
    st.outcome = "upstream_error";
    st.reason = `the stream from provider ${facts.provider} broke: ${ctx.scrub.text(errText(err))}`;
    if (sse) res.end(errorEvent(facts.format, isTimeout(err) ? "timeout" : "unreachable", st.reason));
    else res.destroy();
  }
}

function isTimeout(err: unknown): boolean {
  const code = (err as { code?: unknown })?.code;
  return code === "UND_ERR_HEADERS_TIMEOUT" || code === "UND_ERR_BODY_TIMEOUT" || code === "UND_ERR_CONNECT_TIMEOUT" || code === "ETIMEDOUT";
}

function errText(err: unknown): string {
  const e = err as { message?: unknown; code?: unknown; cause?: { message?: unknown; code?: unknown } };
  const base = typeof e?.message === "string" && e.message ? e.message : String(err);
  const code = typeof e?.code === "string" ? e.code : typeof e?.cause?.code === "string" ? e.cause.code : undefined;
  return code && !base.includes(code) ? `${base} (${code})` : base;
}
