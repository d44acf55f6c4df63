// The Anthropic wire format of the simulated provider: messages (JSON, and
// the SSE stream message_start … message_stop with ping), count_tokens and
// models, as the official `@anthropic-ai/sdk` reads them.

import { sendBrokenJson, sendJson, sendStream } from './respond.mjs';
import { collectText, countTokens, plan } from './text.mjs';

const TYPES = {
  400: 'invalid_request_error',
  401: 'authentication_error',
  403: 'permission_error',
  404: 'not_found_error',
  413: 'request_too_large',
  429: 'rate_limit_error',
  500: 'api_error',
  529: 'overloaded_error',
};

/** error is Anthropic's error body: { type: "error", error: { type, message }, request_id }. */
export function error(status, message) {
  const headers = status === 429 ? { 'retry-after': '1' } : {};
  return { status, headers, body: { type: 'error', error: { type: TYPES[status] ?? 'api_error', message }, request_id: null } };
}

/** auth checks x-api-key (or `Authorization: Bearer`, the SDK's authToken); returns an error answer or undefined. */
export function auth(headers, key) {
  const k = headers['x-api-key'] ?? (headers.authorization?.startsWith('Bearer ') ? headers.authorization.slice(7) : undefined);
  if (k === undefined) return error(401, 'x-api-key header is required');
  if (k !== key) return error(401, 'invalid x-api-key');
  return undefined;
}

function promptOf(b) {
  return collectText({ system: b.system, messages: b.messages }, []);
}

function check(ctx, needMax) {
  const b = ctx.body;
  if (typeof b.model !== 'string') return error(400, 'model: Field required');
  if (!Array.isArray(b.messages)) return error(400, 'messages: Field required');
  if (needMax && !Number.isInteger(b.max_tokens)) return error(400, 'max_tokens: Field required');
  return undefined;
}

export async function messages(ctx) {
  const bad = check(ctx, true);
  if (bad) return ctx.fail(bad);
  const b = ctx.body;
  const p = plan(promptOf(b), b.max_tokens, ctx.answerTokens, ctx.chunks);
  ctx.charge(p.inputTokens, p.outputTokens);
  const id = `msg_sim${ctx.seq}`;
  const stop = p.truncated ? 'max_tokens' : 'end_turn';
  const noUsage = ctx.scenario.noUsage;
  const usage = (output) => ({ input_tokens: p.inputTokens, cache_creation_input_tokens: 0, cache_read_input_tokens: 0, output_tokens: output, service_tier: 'standard' });
  if (!b.stream) {
    const out = {
      id, type: 'message', role: 'assistant', model: b.model,
      content: [{ type: 'text', text: p.text }],
      stop_reason: stop, stop_sequence: null,
      ...(noUsage ? {} : { usage: usage(p.outputTokens) }),
    };
    return ctx.scenario.breakStream ? sendBrokenJson(ctx.res, out) : sendJson(ctx.res, 200, out, ctx.extraHeaders);
  }
  const ev = (type, data) => `event: ${type}\ndata: ${JSON.stringify({ type, ...data })}\n\n`;
  await sendStream(ctx, {
    contentType: 'text/event-stream; charset=utf-8',
    head:
      ev('message_start', {
        message: { id, type: 'message', role: 'assistant', model: b.model, content: [], stop_reason: null, stop_sequence: null, ...(noUsage ? {} : { usage: usage(1) }) },
      }) +
      ev('content_block_start', { index: 0, content_block: { type: 'text', text: '' } }) +
      ev('ping', {}),
    chunks: p.deltas.map((d) => ev('content_block_delta', { index: 0, delta: { type: 'text_delta', text: d } })),
    tail:
      ev('content_block_stop', { index: 0 }) +
      ev('message_delta', { delta: { stop_reason: stop, stop_sequence: null }, ...(noUsage ? {} : { usage: { output_tokens: p.outputTokens } }) }) +
      ev('message_stop', {}),
    errorEvent: ev('error', { error: { type: 'overloaded_error', message: 'Overloaded' } }),
  });
}

export function countTokensOp(ctx) {
  const bad = check(ctx, false);
  if (bad) return ctx.fail(bad);
  const n = countTokens(promptOf(ctx.body));
  sendJson(ctx.res, 200, { input_tokens: n }, ctx.extraHeaders);
}

const model = (id) => ({ type: 'model', id, display_name: id, created_at: '2025-01-01T00:00:00Z' });

export function models(ctx) {
  const data = ctx.opts.models.anthropic.map(model);
  sendJson(ctx.res, 200, { data, has_more: false, first_id: data[0]?.id ?? null, last_id: data.at(-1)?.id ?? null }, ctx.extraHeaders);
}

export function retrieveModel(ctx, id) {
  if (!ctx.opts.models.anthropic.includes(id)) return ctx.fail(error(404, `model: ${id}`));
  sendJson(ctx.res, 200, model(id), ctx.extraHeaders);
}
