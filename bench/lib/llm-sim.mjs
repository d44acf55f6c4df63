// llm-sim: a simulated LLM provider on 127.0.0.1 speaking the real wire
// formats of OpenAI, Anthropic and Google Gemini, as their official SDKs
// read them. It is the only simulated component of the gateway's tests and
// benchmarks: everything between a client SDK and this server is real.
//
//   const sim = await startLlmSim({ key: 'sk-provider' });
//   new OpenAI({ baseURL: `${sim.url}/v1`, apiKey: 'sk-provider' });
//   new Anthropic({ baseURL: sim.url, apiKey: 'sk-provider' });
//   new GoogleGenAI({ apiKey: 'sk-provider', httpOptions: { baseUrl: sim.url, apiVersion: 'v1beta' } });
//
// Routes:
//   OpenAI     POST /v1/chat/completions, /v1/responses, /v1/embeddings;
//              GET /v1/models, /v1/models/{id}
//   Anthropic  POST /v1/messages, /v1/messages/count_tokens;
//              GET /v1/models, /v1/models/{id} (told from OpenAI's by the
//              anthropic-version header the SDK always sends)
//   Gemini     POST /v1beta/models/{model}:generateContent,
//              :streamGenerateContent (?alt=sse: SSE, else a JSON array),
//              :countTokens; GET /v1beta/models, /v1beta/models/{model}
//
// Options (all optional):
//   key          provider key to require: a string for every format, or
//                { openai, anthropic, gemini }. Wrong or missing → the
//                provider's own error (OpenAI/Anthropic 401; Gemini 403
//                missing, 400 API_KEY_INVALID wrong, as Google answers).
//                Unset: no key is checked.
//   chunks       content chunks per stream (default 5; fewer when the
//                answer has fewer tokens, one word being one token)
//   outputTokens answer length N before max_tokens (default 16)
//   delayMs      service time before the answer starts (default 0)
//   chunkDelayMs time between content chunks (default 0)
//   lockstep     streams send content chunk n+1 only after sim.next()
//   record       keep each request in sim.requests (default true; a long
//                benchmark sets false and reads sim.totals)
//   models       { openai: [...], anthropic: [...], gemini: [...] } listed by the models routes
//   embeddingDims vector length of embeddings (default 8)
//   host, port   listen address (default 127.0.0.1, 0)
//
// Per-request overrides (headers pass through a faithful gateway):
//   x-sim-scenario, x-sim-output-tokens, x-sim-delay-ms, x-sim-lockstep: 1|0
//
// Scenarios, by x-sim-scenario or by the model name ending in one of them
// ("fail-500", "gpt-4o-hang", "claude-x:no-usage"; Gemini: the model in the path):
//   fail-NNN      answers status NNN in the format's error JSON (429 with retry-after)
//   hang          never answers (the socket stays open until the client or close() ends it)
//   break-stream  a stream sends 2 content chunks then the socket is destroyed;
//                 a JSON answer is cut halfway through its body
//   stream-error  a stream sends 2 content chunks then the format's in-stream error event
//   no-usage      the answer carries no usage (stream or not)
//   slow-NNN      NNN ms more service time
//
// Answers are deterministic (bench/lib/llm-sim/text.mjs): input_tokens =
// ceil(prompt chars / 4), output_tokens = min(max_tokens, N).
//
// GET /_sim/totals answers `totals` as JSON (not itself counted): how a
// benchmark reads a simulator running in another process.
//
// The handle: { url, port, requests, totals, options, handler, next(k), waiting(), reset(), close() }
//   requests[i]  { seq, time, method, path, query, headers, body, format, operation,
//                  model, scenario, status, chunksSent } (headers lower-case, body parsed JSON
//                  or the raw text when it is not JSON)
//   totals       { requests, inputTokens, outputTokens, chunksSent, byOperation: { op: n } }:
//                what the provider served (and would bill), for lost/double-charge checks
//   options      the live options: a test may flip options.lockstep or options.key

import http from 'node:http';
import * as anthropic from './llm-sim/anthropic.mjs';
import * as gemini from './llm-sim/gemini.mjs';
import * as openai from './llm-sim/openai.mjs';
import { Lockstep, sendJson } from './llm-sim/respond.mjs';

const FORMATS = { openai, anthropic, gemini };

const DEFAULT_MODELS = Object.freeze({
  openai: ['gpt-4o-mini', 'gpt-4o', 'text-embedding-3-small'],
  anthropic: ['claude-sonnet-4-5', 'claude-haiku-4-5'],
  gemini: ['gemini-2.5-flash', 'gemini-2.5-pro'],
});

const SCENARIO = /(?:^|[-:/])(fail-(\d{3})|hang|break-stream|stream-error|no-usage|slow-(\d+))$/;

function options(opts) {
  if (opts === null || typeof opts !== 'object') throw new TypeError('startLlmSim: options must be an object');
  const int = (name, dflt, min) => {
    const v = opts[name] ?? dflt;
    if (!Number.isInteger(v) || v < min) throw new TypeError(`startLlmSim: ${name} must be an integer ≥ ${min}, got ${String(opts[name])}`);
    return v;
  };
  const key = opts.key;
  if (key !== undefined && typeof key !== 'string' && (typeof key !== 'object' || key === null)) {
    throw new TypeError('startLlmSim: key must be a string or { openai, anthropic, gemini }');
  }
  return {
    key,
    chunks: int('chunks', 5, 1),
    outputTokens: int('outputTokens', 16, 0),
    delayMs: int('delayMs', 0, 0),
    chunkDelayMs: int('chunkDelayMs', 0, 0),
    embeddingDims: int('embeddingDims', 8, 1),
    lockstep: Boolean(opts.lockstep),
    record: opts.record ?? true,
    models: { ...DEFAULT_MODELS, ...opts.models },
    host: opts.host ?? '127.0.0.1',
    port: int('port', 0, 0),
  };
}

/** classify names the format and operation of a request, or undefined for an unknown route. */
function classify(method, path, headers) {
  if (path.startsWith('/v1beta/models')) {
    if (method === 'GET' && path === '/v1beta/models') return { format: 'gemini', operation: 'gemini.models' };
    const m = /^\/v1beta\/models\/([^/:]+)(?::(generateContent|streamGenerateContent|countTokens))?$/.exec(path);
    if (!m) return undefined;
    const model = decodeURIComponent(m[1]);
    if (method === 'GET' && !m[2]) return { format: 'gemini', operation: 'gemini.model', model };
    if (method !== 'POST' || !m[2]) return undefined;
    const operation = m[2] === 'generateContent' ? 'gemini.generate' : m[2] === 'countTokens' ? 'gemini.count_tokens' : 'gemini.stream';
    return { format: 'gemini', operation, model };
  }
  if (method === 'POST') {
    if (path === '/v1/chat/completions') return { format: 'openai', operation: 'openai.chat' };
    if (path === '/v1/responses') return { format: 'openai', operation: 'openai.responses' };
    if (path === '/v1/embeddings') return { format: 'openai', operation: 'openai.embeddings' };
    if (path === '/v1/messages') return { format: 'anthropic', operation: 'anthropic.messages' };
    if (path === '/v1/messages/count_tokens') return { format: 'anthropic', operation: 'anthropic.count_tokens' };
    return undefined;
  }
  if (method === 'GET' && path.startsWith('/v1/models')) {
    const format = headers['anthropic-version'] !== undefined ? 'anthropic' : 'openai';
    if (path === '/v1/models') return { format, operation: `${format}.models` };
    const m = /^\/v1\/models\/([^/]+)$/.exec(path);
    if (m) return { format, operation: `${format}.model`, model: decodeURIComponent(m[1]) };
  }
  return undefined;
}

function scenarioOf(name) {
  const m = typeof name === 'string' ? SCENARIO.exec(name) : null;
  if (!m) return {};
  if (m[2]) return { name: m[1], fail: Number(m[2]) };
  if (m[3]) return { name: m[1], slowMs: Number(m[3]) };
  return { name: m[1], hang: m[1] === 'hang', breakStream: m[1] === 'break-stream', streamError: m[1] === 'stream-error', noUsage: m[1] === 'no-usage' };
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const parts = [];
    req.on('data', (c) => parts.push(c));
    req.on('end', () => resolve(parts.length === 1 ? parts[0].toString('utf8') : Buffer.concat(parts).toString('utf8')));
    req.on('error', reject);
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * startLlmSim starts the simulated provider; resolves once it listens.
 * See the file header for options, scenarios and the handle.
 */
export async function startLlmSim(opts = {}) {
  const o = options(opts);
  const state = { lockstep: new Lockstep(), chunksSent: 0, seq: 0 };
  const requests = [];
  const totals = { requests: 0, inputTokens: 0, outputTokens: 0, chunksSent: 0, byOperation: {} };

  async function handle(req, res) {
    if (req.url === '/_sim/totals') return sendJson(res, 200, totals);
    const seq = ++state.seq;
    const q = req.url.indexOf('?');
    const path = q === -1 ? req.url : req.url.slice(0, q);
    const query = new URLSearchParams(q === -1 ? '' : req.url.slice(q + 1));
    const route = classify(req.method, path, req.headers);
    const raw = req.method === 'POST' || req.method === 'PUT' ? await readBody(req) : '';
    let body;
    let bodyError;
    if (raw !== '') {
      try {
        body = JSON.parse(raw);
      } catch (e) {
        bodyError = e;
      }
    }
    const h = req.headers;
    const model = route?.model ?? (typeof body?.model === 'string' ? body.model : undefined);
    const scenario = scenarioOf(h['x-sim-scenario'] ?? model);
    const rec = o.record
      ? { seq, time: Date.now(), method: req.method, path, query: q === -1 ? '' : req.url.slice(q), headers: { ...h }, body: bodyError ? raw : body, format: route?.format, operation: route?.operation, model, scenario: scenario.name, status: 0, chunksSent: 0 }
      : null;
    if (rec) requests.push(rec);
    totals.requests++;
    if (route) totals.byOperation[route.operation] = (totals.byOperation[route.operation] ?? 0) + 1;

    if (!route) {
      sendJson(res, 404, { error: { message: `Unknown request URL: ${req.method} ${path}.`, type: 'invalid_request_error', param: null, code: 'unknown_url' } });
      if (rec) rec.status = 404;
      return;
    }
    const fmt = FORMATS[route.format];
    const extraHeaders =
      route.format === 'openai' ? { 'x-request-id': `req_sim${seq}`, 'openai-processing-ms': '0' } : route.format === 'anthropic' ? { 'request-id': `req_sim${seq}` } : {};
    const ctx = {
      req, res, rec, state, opts: o, seq, query, scenario, extraHeaders,
      body: body ?? {},
      chunks: o.chunks,
      answerTokens: h['x-sim-output-tokens'] !== undefined ? Number(h['x-sim-output-tokens']) : o.outputTokens,
      lockstep: h['x-sim-lockstep'] !== undefined ? h['x-sim-lockstep'] === '1' : o.lockstep,
      chunkDelayMs: o.chunkDelayMs,
      fail(err) {
        if (route.format === 'anthropic') err.body.request_id = `req_sim${seq}`;
        sendJson(res, err.status, err.body, { ...extraHeaders, ...err.headers });
      },
      charge(input, output) {
        totals.inputTokens += input;
        totals.outputTokens += output;
      },
    };

    const key = typeof o.key === 'string' ? o.key : o.key?.[route.format];
    const denied = key === undefined ? undefined : fmt.auth(h, key, query);
    if (denied) ctx.fail(denied);
    else if (bodyError) ctx.fail(fmt.error(400, `We could not parse the JSON body of your request. (${bodyError.message})`));
    else if (raw !== '' && (body === null || typeof body !== 'object' || Array.isArray(body))) ctx.fail(fmt.error(400, 'The request body must be a JSON object.'));
    else {
      const delay = o.delayMs + (Number(h['x-sim-delay-ms']) || 0) + (scenario.slowMs ?? 0);
      if (delay > 0) await sleep(delay);
      if (scenario.fail) ctx.fail(fmt.error(scenario.fail, `Simulated failure ${scenario.fail}.`));
      else if (scenario.hang) return; // never answered; close() or the client ends the socket
      else await dispatch(ctx, route, fmt);
    }
    if (rec) rec.status = res.statusCode;
  }

  async function dispatch(ctx, route, fmt) {
    switch (route.operation) {
      case 'openai.chat': return openai.chat(ctx);
      case 'openai.responses': return openai.responses(ctx);
      case 'openai.embeddings': return openai.embeddings(ctx);
      case 'anthropic.messages': return anthropic.messages(ctx);
      case 'anthropic.count_tokens': return anthropic.countTokensOp(ctx);
      case 'gemini.generate': return gemini.generate(ctx, route.model, false);
      case 'gemini.stream': return gemini.generate(ctx, route.model, true);
      case 'gemini.count_tokens': return gemini.countTokensOp(ctx);
      default:
        if (route.operation.endsWith('.models')) return fmt.models(ctx);
        return fmt.retrieveModel(ctx, route.model);
    }
  }

  const handler = (req, res) => {
    handle(req, res).catch((e) => {
      // A simulator bug must be loud in a test, not a hung request.
      if (!res.headersSent) sendJson(res, 500, { error: { message: `llm-sim internal error: ${e?.stack ?? e}`, type: 'server_error' } });
      else res.destroy(e);
    });
  };
  const server = http.createServer(handler);
  server.keepAliveTimeout = 65_000;
  server.headersTimeout = 66_000;
  server.requestTimeout = 0;
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port, o.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = server.address().port;
  let closed;
  return {
    url: `http://${o.host}:${port}`,
    port,
    requests,
    totals: Object.defineProperty(totals, 'chunksSent', { get: () => state.chunksSent, enumerable: true }),
    options: o,
    /** handler serves the simulator from another http.Server too (a tailnet listener: MeshNode.listen(80, http.createServer(sim.handler))). */
    handler,
    /** next releases k lockstep chunks (each to the stream waiting longest, or to the next stream that waits). */
    next(k = 1) {
      state.lockstep.next(k);
    },
    /** waiting resolves once a lockstep stream is blocked before its next chunk. */
    waiting() {
      return state.lockstep.waiting();
    },
    /** reset forgets recorded requests and totals (not the connections). */
    reset() {
      requests.length = 0;
      totals.requests = totals.inputTokens = totals.outputTokens = 0;
      state.chunksSent = 0;
      totals.byOperation = {};
    },
    close() {
      closed ??= new Promise((resolve) => {
        state.lockstep.close();
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closed;
    },
    [Symbol.asyncDispose]() {
      return this.close();
    },
  };
}
