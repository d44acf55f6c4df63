// The OpenAI wire format of the simulated provider: chat completions,
// responses, embeddings and models, as the official `openai` package reads
// them (non-stream JSON; streams as `data:` lines, chat ending in
// `data: [DONE]`, responses as typed `event:` + `data:` pairs).

import { sendBrokenJson, sendJson, sendStream } from './respond.mjs';
import { collectText, embedding, plan, countTokens } from './text.mjs';

const ERRORS = {
  400: ['invalid_request_error', null],
  401: ['invalid_request_error', 'invalid_api_key'],
  403: ['invalid_request_error', 'unsupported_country_region_territory'],
  404: ['invalid_request_error', 'model_not_found'],
  429: ['requests', 'rate_limit_exceeded'],
  500: ['server_error', null],
  503: ['server_error', null],
};

/** error is OpenAI's error body: { error: { message, type, param, code } }. */
export function error(status, message, param = null) {
  const [type, code] = ERRORS[status] ?? ['server_error', null];
  const headers = status === 429 ? { 'retry-after': '1', 'x-ratelimit-remaining-requests': '0' } : {};
  return { status, headers, body: { error: { message, type, param, code } } };
}

/** auth checks `Authorization: Bearer <key>`; returns an error answer or undefined. */
export function auth(headers, key) {
  const h = headers.authorization;
  if (!h) return error(401, "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).");
  // The real API echoes a masked key; the simulator echoes none, so a key found in a reply is a gateway leak.
  if (h !== `Bearer ${key}`) return error(401, 'Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.');
  return undefined;
}

const usageChat = (p) => ({
  prompt_tokens: p.inputTokens,
  completion_tokens: p.outputTokens,
  total_tokens: p.inputTokens + p.outputTokens,
  prompt_tokens_details: { cached_tokens: 0, audio_tokens: 0 },
  completion_tokens_details: { reasoning_tokens: 0, audio_tokens: 0, accepted_prediction_tokens: 0, rejected_prediction_tokens: 0 },
});

export async function chat(ctx) {
  const b = ctx.body;
  if (typeof b.model !== 'string') return ctx.fail(error(400, 'you must provide a model parameter', 'model'));
  if (!Array.isArray(b.messages)) return ctx.fail(error(400, "Missing required parameter: 'messages'.", 'messages'));
  const max = b.max_completion_tokens ?? b.max_tokens;
  const p = plan(collectText(b.messages, []), max, ctx.answerTokens, ctx.chunks);
  const finish = p.truncated ? 'length' : 'stop';
  const id = `chatcmpl-sim${ctx.seq}`;
  const created = Math.floor(Date.now() / 1000);
  const usage = ctx.scenario.noUsage ? undefined : usageChat(p);
  ctx.charge(p.inputTokens, p.outputTokens);
  if (!b.stream) {
    const out = {
      id, object: 'chat.completion', created, model: b.model,
      choices: [{ index: 0, message: { role: 'assistant', content: p.text, refusal: null, annotations: [] }, logprobs: null, finish_reason: finish }],
      usage, service_tier: 'default', system_fingerprint: 'fp_sim',
    };
    return ctx.scenario.breakStream ? sendBrokenJson(ctx.res, out) : sendJson(ctx.res, 200, out, ctx.extraHeaders);
  }
  // With stream_options.include_usage every chunk carries "usage": null and a
  // last chunk with no choices carries the usage; without it there is no usage at all.
  const withUsage = b.stream_options?.include_usage === true && usage !== undefined;
  const base = { id, object: 'chat.completion.chunk', created, model: b.model, service_tier: 'default', system_fingerprint: 'fp_sim' };
  const line = (choices, extra) => `data: ${JSON.stringify({ ...base, choices, ...(withUsage ? { usage: null } : {}), ...extra })}\n\n`;
  await sendStream(ctx, {
    contentType: 'text/event-stream; charset=utf-8',
    head: line([{ index: 0, delta: { role: 'assistant', content: '', refusal: null }, logprobs: null, finish_reason: null }]),
    chunks: p.deltas.map((d) => line([{ index: 0, delta: { content: d }, logprobs: null, finish_reason: null }])),
    tail:
      line([{ index: 0, delta: {}, logprobs: null, finish_reason: finish }]) +
      (withUsage ? `data: ${JSON.stringify({ ...base, choices: [], usage })}\n\n` : '') +
      'data: [DONE]\n\n',
    errorEvent: `data: ${JSON.stringify({ error: { message: 'The server had an error while processing your request.', type: 'server_error', param: null, code: null } })}\n\n`,
  });
}

export async function responses(ctx) {
  const b = ctx.body;
  if (typeof b.model !== 'string') return ctx.fail(error(400, "Missing required parameter: 'model'.", 'model'));
  const parts = collectText({ instructions: b.instructions, input: b.input }, []);
  const p = plan(parts, b.max_output_tokens, ctx.answerTokens, ctx.chunks);
  ctx.charge(p.inputTokens, p.outputTokens);
  const id = `resp_sim${ctx.seq}`;
  const msgId = `msg_sim${ctx.seq}`;
  const usage = ctx.scenario.noUsage
    ? null
    : { input_tokens: p.inputTokens, input_tokens_details: { cached_tokens: 0 }, output_tokens: p.outputTokens, output_tokens_details: { reasoning_tokens: 0 }, total_tokens: p.inputTokens + p.outputTokens };
  const part = (text) => ({ type: 'output_text', text, annotations: [], logprobs: [] });
  const item = (status, content) => ({ id: msgId, type: 'message', status, role: 'assistant', content });
  const response = (status, output, u) => ({
    id, object: 'response', created_at: Math.floor(Date.now() / 1000), status,
    background: false, error: null,
    incomplete_details: status === 'incomplete' ? { reason: 'max_output_tokens' } : null,
    instructions: b.instructions ?? null, max_output_tokens: b.max_output_tokens ?? null, model: b.model,
    output, parallel_tool_calls: true, previous_response_id: b.previous_response_id ?? null,
    reasoning: { effort: null, summary: null }, service_tier: 'default', store: b.store ?? true,
    temperature: b.temperature ?? 1, text: { format: { type: 'text' }, verbosity: 'medium' },
    tool_choice: 'auto', tools: [], top_p: 1, truncation: 'disabled', usage: u, user: null, metadata: b.metadata ?? {},
  });
  const final = p.truncated ? 'incomplete' : 'completed';
  const done = response(final, [item('completed', [part(p.text)])], usage);
  if (!b.stream) return ctx.scenario.breakStream ? sendBrokenJson(ctx.res, done) : sendJson(ctx.res, 200, done, ctx.extraHeaders);
  let seq = 0;
  const ev = (type, data) => `event: ${type}\ndata: ${JSON.stringify({ type, sequence_number: seq++, ...data })}\n\n`;
  const loc = { item_id: msgId, output_index: 0, content_index: 0 };
  const head =
    ev('response.created', { response: response('in_progress', [], null) }) +
    ev('response.in_progress', { response: response('in_progress', [], null) }) +
    ev('response.output_item.added', { output_index: 0, item: item('in_progress', []) }) +
    ev('response.content_part.added', { ...loc, part: part('') });
  // Encoded in sending order (head, chunks, tail) so sequence numbers increase on the wire.
  const chunks = p.deltas.map((d) => ev('response.output_text.delta', { ...loc, delta: d, logprobs: [] }));
  const tail =
    ev('response.output_text.done', { ...loc, text: p.text, logprobs: [] }) +
    ev('response.content_part.done', { ...loc, part: part(p.text) }) +
    ev('response.output_item.done', { output_index: 0, item: item('completed', [part(p.text)]) }) +
    ev(final === 'completed' ? 'response.completed' : 'response.incomplete', { response: done });
  await sendStream(ctx, {
    contentType: 'text/event-stream; charset=utf-8', head, chunks, tail,
    errorEvent: ev('error', { code: 'server_error', message: 'The server had an error while processing your request.', param: null }),
  });
}

export function embeddings(ctx) {
  const b = ctx.body;
  if (typeof b.model !== 'string') return ctx.fail(error(400, "Missing required parameter: 'model'.", 'model'));
  if (b.input === undefined) return ctx.fail(error(400, "Missing required parameter: 'input'.", 'input'));
  const inputs = typeof b.input === 'string' || (Array.isArray(b.input) && typeof b.input[0] === 'number') ? [b.input] : b.input;
  const dims = Number.isInteger(b.dimensions) && b.dimensions > 0 ? b.dimensions : ctx.opts.embeddingDims;
  let tokens = 0;
  const data = inputs.map((input, index) => {
    tokens += typeof input === 'string' ? countTokens([input]) : Array.isArray(input) ? input.length : 1;
    const v = embedding(input, dims);
    // The SDK asks for base64 (little-endian float32) unless the caller chose a format, and decodes it.
    const e = b.encoding_format === 'base64' ? Buffer.from(new Float32Array(v).buffer).toString('base64') : v;
    return { object: 'embedding', index, embedding: e };
  });
  ctx.charge(tokens, 0);
  sendJson(ctx.res, 200, { object: 'list', data, model: b.model, usage: { prompt_tokens: tokens, total_tokens: tokens } }, ctx.extraHeaders);
}

const model = (id) => ({ id, object: 'model', created: 1_700_000_000, owned_by: 'system' });

export function models(ctx) {
  sendJson(ctx.res, 200, { object: 'list', data: ctx.opts.models.openai.map(model) }, ctx.extraHeaders);
}

export function retrieveModel(ctx, id) {
  if (!ctx.opts.models.openai.includes(id)) return ctx.fail(error(404, `The model '${id}' does not exist or you do not have access to it.`));
  sendJson(ctx.res, 200, model(id), ctx.extraHeaders);
}
