// The Gemini wire format of the simulated provider (Generative Language API
// v1beta): generateContent, streamGenerateContent (SSE with ?alt=sse, else
// one JSON array written element by element), countTokens and models, as
// the official `@google/genai` reads them.

import { sendBrokenJson, sendJson, sendStream } from './respond.mjs';
import { collectText, countTokens, plan } from './text.mjs';

const STATUS = {
  400: 'INVALID_ARGUMENT',
  401: 'UNAUTHENTICATED',
  403: 'PERMISSION_DENIED',
  404: 'NOT_FOUND',
  429: 'RESOURCE_EXHAUSTED',
  500: 'INTERNAL',
  503: 'UNAVAILABLE',
  504: 'DEADLINE_EXCEEDED',
};

/** error is Google's error body: { error: { code, message, status, details? } }. */
export function error(status, message, details) {
  return { status, headers: {}, body: { error: { code: status, message, status: STATUS[status] ?? 'UNKNOWN', ...(details ? { details } : {}) } } };
}

/**
 * auth checks x-goog-api-key or ?key=. As the real API does, a missing key
 * is 403 PERMISSION_DENIED and a wrong one 400 INVALID_ARGUMENT with reason
 * API_KEY_INVALID (Google does not answer 401 to API-key callers).
 */
export function auth(headers, key, query) {
  const k = headers['x-goog-api-key'] ?? query.get('key') ?? undefined;
  if (k === undefined) {
    return error(403, "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.");
  }
  if (k !== key) {
    return error(400, 'API key not valid. Please pass a valid API key.', [
      { '@type': 'type.googleapis.com/google.rpc.ErrorInfo', reason: 'API_KEY_INVALID', domain: 'googleapis.com', metadata: { service: 'generativelanguage.googleapis.com' } },
    ]);
  }
  return undefined;
}

function promptOf(b) {
  return collectText({ systemInstruction: b.systemInstruction, contents: b.contents }, []);
}

function candidate(text, finishReason) {
  return { content: { parts: [{ text }], role: 'model' }, ...(finishReason ? { finishReason } : {}), index: 0 };
}

export async function generate(ctx, model, stream) {
  const b = ctx.body;
  if (!Array.isArray(b.contents)) return ctx.fail(error(400, '* GenerateContentRequest.contents: contents is not specified'));
  const p = plan(promptOf(b), b.generationConfig?.maxOutputTokens, ctx.answerTokens, ctx.chunks);
  ctx.charge(p.inputTokens, p.outputTokens);
  const finish = p.truncated ? 'MAX_TOKENS' : 'STOP';
  const noUsage = ctx.scenario.noUsage;
  const usage = (out) =>
    noUsage
      ? {}
      : {
          usageMetadata: {
            promptTokenCount: p.inputTokens,
            ...(out === undefined ? {} : { candidatesTokenCount: out }),
            totalTokenCount: p.inputTokens + (out ?? 0),
            promptTokensDetails: [{ modality: 'TEXT', tokenCount: p.inputTokens }],
          },
        };
  const ids = { modelVersion: model, responseId: `sim${ctx.seq}` };
  if (!stream) {
    const out = { candidates: [candidate(p.text, finish)], ...usage(p.outputTokens), ...ids };
    return ctx.scenario.breakStream ? sendBrokenJson(ctx.res, out) : sendJson(ctx.res, 200, out, ctx.extraHeaders);
  }
  // Every chunk carries the prompt count; the last one (with finishReason) the full usage.
  const deltas = p.deltas.length > 0 ? p.deltas : [''];
  const last = deltas.length - 1;
  const objs = deltas.map((d, i) => ({ candidates: [candidate(d, i === last ? finish : undefined)], ...usage(i === last ? p.outputTokens : undefined), ...ids }));
  const errObj = error(500, 'An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting').body;
  if (ctx.query.get('alt') === 'sse') {
    await sendStream(ctx, {
      contentType: 'text/event-stream',
      head: '',
      chunks: objs.map((o) => `data: ${JSON.stringify(o)}\r\n\r\n`),
      tail: '',
      errorEvent: `data: ${JSON.stringify(errObj)}\r\n\r\n`,
    });
  } else {
    await sendStream(ctx, {
      contentType: 'application/json; charset=UTF-8',
      head: '[',
      chunks: objs.map((o, i) => (i === 0 ? '' : ',\r\n') + JSON.stringify(o)),
      tail: ']',
      errorEvent: `,\r\n${JSON.stringify(errObj)}]`,
    });
  }
}

export function countTokensOp(ctx) {
  const b = ctx.body.generateContentRequest ?? ctx.body;
  sendJson(ctx.res, 200, { totalTokens: countTokens(promptOf(b)) }, ctx.extraHeaders);
}

const model = (id) => ({
  name: `models/${id}`, version: '001', displayName: id, description: `Simulated ${id}`,
  inputTokenLimit: 1_048_576, outputTokenLimit: 65_536,
  supportedGenerationMethods: id.includes('embedding') ? ['embedContent'] : ['generateContent', 'countTokens'],
});

export function models(ctx) {
  sendJson(ctx.res, 200, { models: ctx.opts.models.gemini.map(model) }, ctx.extraHeaders);
}

export function retrieveModel(ctx, id) {
  if (!ctx.opts.models.gemini.includes(id)) return ctx.fail(error(404, `models/${id} is not found for API version v1beta, or is not supported for generateContent.`));
  sendJson(ctx.res, 200, model(id), ctx.extraHeaders);
}
