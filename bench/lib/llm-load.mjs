// The load generator of bench/gateway: one HTTP client (undici Pool,
// keep-alive) and three load shapes, identical for every system measured,
// so that the difference between "via a gateway" and "direct to the
// simulated provider" is the gateway's alone.
//
// Times are milliseconds from performance.now(). A request that does not
// end in 200 with the whole body read counts as an error, never as a sample.

import { Pool } from 'undici';

/**
 * target describes where requests go: an origin (http://127.0.0.1:PORT),
 * the chat completions path, the headers the system needs (keys, routing),
 * and optionally `connect` (a function undici uses to open a socket: how a
 * tailnet client dials through its node).
 *
 * @param {{ name: string, origin: string, path?: string, headers?: Record<string,string>, connections?: number, connect?: Function }} t
 */
export function target(t) {
  const pool = new Pool(t.origin, {
    connections: t.connections ?? 64,
    pipelining: 1,
    keepAliveTimeout: 60_000,
    ...(t.connect ? { connect: t.connect } : {}),
  });
  return { name: t.name, pool, path: t.path ?? '/v1/chat/completions', headers: { 'content-type': 'application/json', ...t.headers } };
}

/** chatBody is the request every system gets: small prompt, bounded answer. */
export function chatBody({ model = 'gpt-4o-mini', stream = false, maxTokens = 16 } = {}) {
  return JSON.stringify({
    model,
    messages: [{ role: 'user', content: 'Summarize why a tailnet gateway needs no API keys on clients.' }],
    max_tokens: maxTokens,
    ...(stream ? { stream: true } : {}),
  });
}

class RequestFailed extends Error {}

/** once sends one non-streamed request and reads the whole answer; resolves its latency. */
export async function once(t, body) {
  const t0 = performance.now();
  const res = await t.pool.request({ method: 'POST', path: t.path, headers: t.headers, body });
  const text = await res.body.text();
  const ms = performance.now() - t0;
  if (res.statusCode !== 200) throw new RequestFailed(`${t.name}: HTTP ${res.statusCode}: ${text.slice(0, 300)}`);
  return ms;
}

// The first content token of an OpenAI chat stream: a non-empty "content" string, whatever the key order.
const CONTENT = /"content":\s*"[^"]/;

/** stream sends one streamed request; resolves { ttft, total }: first content token, and the end of the stream. */
export async function stream(t, body) {
  const t0 = performance.now();
  const res = await t.pool.request({ method: 'POST', path: t.path, headers: t.headers, body });
  let ttft;
  let seen = '';
  for await (const chunk of res.body) {
    if (ttft === undefined) {
      seen += chunk.toString('utf8');
      if (CONTENT.test(seen)) ttft = performance.now() - t0;
    }
  }
  const total = performance.now() - t0;
  if (res.statusCode !== 200) throw new RequestFailed(`${t.name}: HTTP ${res.statusCode}: ${seen.slice(0, 300)}`);
  if (ttft === undefined) throw new RequestFailed(`${t.name}: the stream carried no content: ${seen.slice(0, 300)}`);
  return { ttft, total };
}

/** sequential runs `n` requests one after another; returns the latencies and the errors. */
export async function sequential(fn, n) {
  const samples = [];
  const errors = [];
  for (let i = 0; i < n; i++) {
    try {
      samples.push(await fn());
    } catch (e) {
      errors.push(e);
    }
  }
  return { samples, errors };
}

/**
 * openLoop starts `n` requests at a fixed rate (per second) whether or not
 * earlier ones have finished: a system that slows down meets a growing
 * queue, as a real one does. Latency is from each request's start.
 * `late` holds how far each start fell behind its schedule (`lateMs`: the
 * p99): a run whose generator cannot keep the rate says so.
 */
export async function openLoop(fn, rate, n) {
  const samples = [];
  const errors = [];
  const late = [];
  const pending = [];
  const interval = 1000 / rate;
  const start = performance.now();
  for (let i = 0; i < n; i++) {
    const due = start + i * interval;
    const wait = due - performance.now();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    else if (wait > 0) await new Promise((r) => setImmediate(r));
    late.push(Math.max(0, performance.now() - due));
    pending.push(fn().then((ms) => samples.push(ms), (e) => errors.push(e)));
  }
  await Promise.all(pending);
  const elapsedS = (performance.now() - start) / 1000;
  const sorted = [...late].sort((a, b) => a - b);
  return { samples, errors, late, achievedRate: n / elapsedS, lateMs: sorted[Math.ceil(0.99 * sorted.length) - 1] ?? 0 };
}

/** closedLoop runs `n` requests over `clients` concurrent loops, each sending its next request when the last one ends. */
export async function closedLoop(fn, clients, n) {
  const samples = [];
  const errors = [];
  let left = n;
  const start = performance.now();
  const worker = async () => {
    while (left > 0) {
      left--;
      try {
        samples.push(await fn());
      } catch (e) {
        errors.push(e);
      }
    }
  };
  await Promise.all(Array.from({ length: clients }, worker));
  return { samples, errors, throughput: n / ((performance.now() - start) / 1000) };
}

/** close ends a target's connections. */
export function closeTarget(t) {
  return t.pool.close();
}
