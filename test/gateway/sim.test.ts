// The simulated LLM provider (bench/lib/llm-sim.mjs) checked with the
// official SDKs pointed straight at it: if these pass, a gateway test that
// fails is the gateway's fault, not the simulator's.

import Anthropic from '@anthropic-ai/sdk';
import { GoogleGenAI } from '@google/genai';
import OpenAI from 'openai';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startLlmSim, type LlmSim } from '../../bench/lib/llm-sim.mjs';

const KEY = 'sk-sim-provider-key';
let sim: LlmSim;
let oai: OpenAI;
let ant: Anthropic;
let gem: GoogleGenAI;

beforeAll(async () => {
  sim = await startLlmSim({ key: KEY, outputTokens: 12, chunks: 4, embeddingDims: 6 });
  oai = new OpenAI({ baseURL: `${sim.url}/v1`, apiKey: KEY, maxRetries: 0 });
  ant = new Anthropic({ baseURL: sim.url, apiKey: KEY, maxRetries: 0 });
  gem = new GoogleGenAI({ apiKey: KEY, httpOptions: { baseUrl: sim.url, apiVersion: 'v1beta' } });
});
afterAll(() => sim.close());
beforeEach(() => {
  sim.reset();
  sim.options.lockstep = false;
});

const words = (s: string) => s.split(' ').length;

describe('OpenAI format', () => {
  it('chat completions: deterministic answer, usage, max_tokens cut with finish_reason length', async () => {
    const messages = [{ role: 'user' as const, content: 'Say something about tailnets.' }];
    const a = await oai.chat.completions.create({ model: 'gpt-4o-mini', messages });
    const b = await oai.chat.completions.create({ model: 'gpt-4o-mini', messages });
    expect(a.choices[0]!.message.content).toBe(b.choices[0]!.message.content);
    expect(words(a.choices[0]!.message.content!)).toBe(12);
    expect(a.choices[0]!.finish_reason).toBe('stop');
    expect(a.usage).toMatchObject({ prompt_tokens: Math.ceil('Say something about tailnets.'.length / 4), completion_tokens: 12 });
    const cut = await oai.chat.completions.create({ model: 'gpt-4o-mini', messages, max_tokens: 3 });
    expect(cut.usage!.completion_tokens).toBe(3);
    expect(cut.choices[0]!.finish_reason).toBe('length');
    expect(cut.choices[0]!.message.content).toBe(a.choices[0]!.message.content!.split(' ').slice(0, 3).join(' '));
    expect(sim.requests[0]!.headers.authorization).toBe(`Bearer ${KEY}`);
    expect(sim.requests[0]!.body).toMatchObject({ model: 'gpt-4o-mini', messages });
  });

  it('chat stream: usage chunk only when stream_options.include_usage asks for it', async () => {
    const messages = [{ role: 'user' as const, content: 'stream please' }];
    const whole = (await oai.chat.completions.create({ model: 'gpt-4o', messages })).choices[0]!.message.content;

    const plain = [];
    for await (const c of await oai.chat.completions.create({ model: 'gpt-4o', messages, stream: true })) plain.push(c);
    expect(plain.some((c) => 'usage' in c)).toBe(false);
    expect(plain.map((c) => c.choices[0]?.delta.content ?? '').join('')).toBe(whole);
    expect(plain.filter((c) => c.choices[0]?.delta.content).length).toBe(4);
    expect(plain.at(-1)!.choices[0]!.finish_reason).toBe('stop');

    const counted = [];
    for await (const c of await oai.chat.completions.create({ model: 'gpt-4o', messages, stream: true, stream_options: { include_usage: true } })) counted.push(c);
    const last = counted.at(-1)!;
    expect(last.choices).toEqual([]);
    expect(last.usage).toMatchObject({ prompt_tokens: 4, completion_tokens: 12, total_tokens: 16 });
    expect(counted.slice(0, -1).every((c) => c.usage === null)).toBe(true);
  });

  it('responses: JSON and the typed event stream, both with usage', async () => {
    const r = await oai.responses.create({ model: 'gpt-4o', input: 'hello responses', instructions: 'be brief' });
    expect(r.status).toBe('completed');
    expect(words(r.output_text)).toBe(12);
    expect(r.usage).toMatchObject({ input_tokens: Math.ceil('be briefhello responses'.length / 4), output_tokens: 12 });

    const types: string[] = [];
    let text = '';
    for await (const e of await oai.responses.create({ model: 'gpt-4o', input: 'hello responses', instructions: 'be brief', stream: true })) {
      types.push(e.type);
      if (e.type === 'response.output_text.delta') text += e.delta;
      if (e.type === 'response.completed') expect(e.response.usage!.output_tokens).toBe(12);
    }
    expect(text).toBe(r.output_text);
    expect(types[0]).toBe('response.created');
    expect(types.at(-1)).toBe('response.completed');
    expect(types.filter((t) => t === 'response.output_text.delta').length).toBe(4);

    // The SDK's accumulating helper rebuilds the same response from the events.
    const final = await oai.responses.stream({ model: 'gpt-4o', input: 'hello responses', instructions: 'be brief', max_output_tokens: 5 }).finalResponse();
    expect(final.status).toBe('incomplete');
    expect(final.output_text).toBe(r.output_text.split(' ').slice(0, 5).join(' '));
  });

  it('embeddings (the SDK default base64 and explicit float) and models', async () => {
    const e = await oai.embeddings.create({ model: 'text-embedding-3-small', input: ['one', 'two'] });
    expect(e.data.map((d) => d.embedding.length)).toEqual([6, 6]);
    expect(e.data[0]!.embedding).not.toEqual(e.data[1]!.embedding);
    expect(sim.requests[0]!.body.encoding_format).toBe('base64');
    const f = await oai.embeddings.create({ model: 'text-embedding-3-small', input: 'one', encoding_format: 'float', dimensions: 6 });
    f.data[0]!.embedding.forEach((x, i) => expect(x).toBeCloseTo(e.data[0]!.embedding[i]!, 5));
    expect(e.usage.prompt_tokens).toBe(2);

    const ids = [];
    for await (const m of oai.models.list()) ids.push(m.id);
    expect(ids).toEqual(['gpt-4o-mini', 'gpt-4o', 'text-embedding-3-small']);
  });
});

describe('Anthropic format', () => {
  it('messages: JSON, and the SSE stream with ping, usage at start and in message_delta', async () => {
    const messages = [{ role: 'user' as const, content: 'hi claude' }];
    const m = await ant.messages.create({ model: 'claude-sonnet-4-5', max_tokens: 100, system: 'sys', messages });
    expect(m.content[0]).toMatchObject({ type: 'text' });
    expect(m.usage).toMatchObject({ input_tokens: Math.ceil('syshi claude'.length / 4), output_tokens: 12 });
    expect(m.stop_reason).toBe('end_turn');
    // @anthropic-ai/sdk 1.x sends apiKey as `Authorization: Bearer` (Claude Code still sends x-api-key); the simulator takes both.
    expect(sim.requests[0]!.headers.authorization).toBe(`Bearer ${KEY}`);

    const raw = await fetch(`${sim.url}/v1/messages`, {
      method: 'POST',
      headers: { 'x-api-key': KEY, 'anthropic-version': '2023-06-01', 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 7, stream: true, messages }),
    });
    const events = [...(await raw.text()).matchAll(/^event: (\S+)$/gm)].map((x) => x[1]);
    expect(events).toEqual(['message_start', 'content_block_start', 'ping', ...Array(4).fill('content_block_delta'), 'content_block_stop', 'message_delta', 'message_stop']);

    const final = await ant.messages.stream({ model: 'claude-sonnet-4-5', max_tokens: 7, system: 'sys', messages }).finalMessage();
    expect(final.usage.output_tokens).toBe(7);
    expect(final.stop_reason).toBe('max_tokens');
    expect((final.content[0] as { text: string }).text).toBe((m.content[0] as { text: string }).text.split(' ').slice(0, 7).join(' '));
  });

  it('count_tokens and models', async () => {
    const c = await ant.messages.countTokens({ model: 'claude-sonnet-4-5', messages: [{ role: 'user', content: 'count me please' }] });
    expect(c.input_tokens).toBe(4);
    const ids = [];
    for await (const m of ant.models.list()) ids.push(m.id);
    expect(ids).toEqual(['claude-sonnet-4-5', 'claude-haiku-4-5']);
  });
});

describe('Gemini format', () => {
  it('generateContent, generateContentStream (SSE), countTokens, models', async () => {
    const contents = 'hello gemini';
    const r = await gem.models.generateContent({ model: 'gemini-2.5-flash', contents, config: { maxOutputTokens: 9 } });
    expect(words(r.text!)).toBe(9);
    expect(r.candidates![0]!.finishReason).toBe('MAX_TOKENS');
    expect(r.usageMetadata).toMatchObject({ promptTokenCount: 3, candidatesTokenCount: 9, totalTokenCount: 12 });
    expect(sim.requests[0]!.headers['x-goog-api-key']).toBe(KEY);

    let text = '';
    let n = 0;
    let usage;
    for await (const c of await gem.models.generateContentStream({ model: 'gemini-2.5-flash', contents })) {
      text += c.text;
      n++;
      usage = c.usageMetadata;
    }
    expect(n).toBe(4);
    expect(words(text)).toBe(12);
    expect(usage).toMatchObject({ candidatesTokenCount: 12 });
    expect(sim.requests[1]!.query).toBe('?alt=sse');

    expect((await gem.models.countTokens({ model: 'gemini-2.5-flash', contents })).totalTokens).toBe(3);
    const names = [];
    for await (const m of await gem.models.list()) names.push(m.name);
    expect(names).toEqual(['models/gemini-2.5-flash', 'models/gemini-2.5-pro']);
  });

  it('streamGenerateContent without alt=sse is one JSON array; ?key= authenticates too', async () => {
    const res = await fetch(`${sim.url}/v1beta/models/gemini-2.5-pro:streamGenerateContent?key=${KEY}`, {
      method: 'POST',
      body: JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'array please' }] }] }),
    });
    const arr = await res.json();
    expect(arr).toHaveLength(4);
    expect(arr.at(-1).candidates[0].finishReason).toBe('STOP');
  });
});

describe('lockstep', () => {
  it('sends chunk n+1 only after next(), for each SDK', async () => {
    sim.options.lockstep = true;
    const check = async (seen: number) => {
      // The client holds chunk `seen`; the simulator must have sent exactly that many and be parked.
      expect(sim.totals.chunksSent).toBe(seen);
      await sim.waiting();
      expect(sim.totals.chunksSent).toBe(seen);
      sim.next();
    };
    let seen = 0;
    for await (const c of await oai.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }], stream: true })) {
      if (c.choices[0]?.delta.content && ++seen < 4) await check(seen);
    }
    expect(seen).toBe(4);

    sim.reset();
    seen = 0;
    for await (const e of await ant.messages.create({ model: 'claude-haiku-4-5', max_tokens: 50, stream: true, messages: [{ role: 'user', content: 'x' }] })) {
      if (e.type === 'content_block_delta' && ++seen < 4) await check(seen);
    }
    expect(seen).toBe(4);

    sim.reset();
    seen = 0;
    for await (const c of await gem.models.generateContentStream({ model: 'gemini-2.5-flash', contents: 'x' })) {
      if (c.text && ++seen < 4) await check(seen);
    }
    expect(seen).toBe(4);
  });

  it('a permit given before the stream reaches its gate is not lost', async () => {
    sim.options.lockstep = true;
    sim.next(3);
    const s = await oai.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }], stream: true });
    let text = '';
    for await (const c of s) text += c.choices[0]?.delta.content ?? '';
    expect(words(text)).toBe(12);
  });
});

describe('keys and scripted failures', () => {
  it('a wrong or missing key is the provider’s own error, with no key echoed', async () => {
    const bad = new OpenAI({ baseURL: `${sim.url}/v1`, apiKey: 'sk-wrong', maxRetries: 0 });
    const e1 = await bad.models.list().catch((e) => e);
    expect(e1).toBeInstanceOf(OpenAI.AuthenticationError);
    expect(e1.code).toBe('invalid_api_key');
    expect(JSON.stringify(e1.error)).not.toContain('sk-wrong');

    const e2 = await new Anthropic({ baseURL: sim.url, apiKey: 'sk-wrong', maxRetries: 0 }).models.list().catch((e) => e);
    expect(e2).toBeInstanceOf(Anthropic.AuthenticationError);
    expect(e2.error).toMatchObject({ type: 'error', error: { type: 'authentication_error' } });

    const e3 = await new GoogleGenAI({ apiKey: 'wrong', httpOptions: { baseUrl: sim.url, apiVersion: 'v1beta' } }).models
      .generateContent({ model: 'gemini-2.5-flash', contents: 'x' })
      .catch((e) => e);
    expect(e3.status).toBe(400);
    expect(e3.message).toContain('API_KEY_INVALID');
    const none = await fetch(`${sim.url}/v1beta/models`);
    expect(none.status).toBe(403);
    expect((await none.json()).error.status).toBe('PERMISSION_DENIED');
  });

  it('fail-NNN by model name or header, in each format', async () => {
    const e429 = await oai.chat.completions.create({ model: 'fail-429', messages: [{ role: 'user', content: 'x' }] }).catch((e) => e);
    expect(e429).toBeInstanceOf(OpenAI.RateLimitError);
    expect(e429.headers.get('retry-after')).toBe('1');
    const e500 = await ant.messages
      .create({ model: 'claude-x', max_tokens: 5, messages: [{ role: 'user', content: 'x' }] }, { headers: { 'x-sim-scenario': 'fail-500' } })
      .catch((e) => e);
    expect(e500).toBeInstanceOf(Anthropic.InternalServerError);
    expect(e500.error.error.type).toBe('api_error');
    const e503 = await gem.models.generateContent({ model: 'gemini-fail-503', contents: 'x' }).catch((e) => e);
    expect(e503.status).toBe(503);
    expect(e503.message).toContain('UNAVAILABLE');
  });

  it('hang never answers (the client times out)', async () => {
    const slow = new OpenAI({ baseURL: `${sim.url}/v1`, apiKey: KEY, maxRetries: 0, timeout: 300 });
    const e = await slow.chat.completions.create({ model: 'hang', messages: [{ role: 'user', content: 'x' }] }).catch((x) => x);
    expect(e).toBeInstanceOf(OpenAI.APIConnectionTimeoutError);
    expect(sim.requests[0]!.status).toBe(0);
  });

  it('break-stream delivers 2 chunks then a broken connection', async () => {
    const got: string[] = [];
    const e = await (async () => {
      for await (const c of await oai.chat.completions.create({ model: 'gpt-4o-break-stream', messages: [{ role: 'user', content: 'x' }], stream: true })) {
        if (c.choices[0]?.delta.content) got.push(c.choices[0].delta.content);
      }
    })().catch((x) => x);
    expect(got).toHaveLength(2);
    expect(e).toBeInstanceOf(Error);
    const cut = await ant.messages.create({ model: 'break-stream', max_tokens: 5, messages: [{ role: 'user', content: 'x' }] }).catch((x) => x);
    expect(cut).toBeInstanceOf(Error);
  });

  it('stream-error sends the in-stream error event after 2 chunks', async () => {
    const e = await (async () => {
      for await (const _ of await ant.messages.create({ model: 'claude-stream-error', max_tokens: 50, stream: true, messages: [{ role: 'user', content: 'x' }] }));
    })().catch((x) => x);
    expect(e).toBeInstanceOf(Anthropic.APIError);
    expect(e.error.error.type).toBe('overloaded_error');
  });

  it('no-usage answers without usage in every format', async () => {
    const c = await oai.chat.completions.create({ model: 'no-usage', messages: [{ role: 'user', content: 'x' }] });
    expect(c.usage).toBeUndefined();
    const chunks = [];
    for await (const x of await oai.chat.completions.create({ model: 'no-usage', messages: [{ role: 'user', content: 'x' }], stream: true, stream_options: { include_usage: true } })) chunks.push(x);
    expect(chunks.some((x) => x.usage)).toBe(false);
    const m = await ant.messages.create({ model: 'no-usage', max_tokens: 5, messages: [{ role: 'user', content: 'x' }] });
    expect(m.usage).toBeUndefined();
    const g = await gem.models.generateContent({ model: 'gemini-no-usage', contents: 'x' });
    expect(g.usageMetadata).toBeUndefined();
  });

  it('malformed JSON is a 400 in the format’s error shape, recorded as raw text', async () => {
    const res = await fetch(`${sim.url}/v1/messages`, { method: 'POST', headers: { 'x-api-key': KEY, 'anthropic-version': '2023-06-01' }, body: '{"model":' });
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ type: 'error', error: { type: 'invalid_request_error' } });
    expect(sim.requests[0]!.body).toBe('{"model":');
  });

  it('totals count what was served, for lost / double-charge checks', async () => {
    await oai.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'abcd' }], max_tokens: 2 });
    await ant.messages.create({ model: 'claude-x', max_tokens: 3, messages: [{ role: 'user', content: 'abcd' }] });
    expect(sim.totals).toMatchObject({ requests: 2, inputTokens: 2, outputTokens: 5, byOperation: { 'openai.chat': 1, 'anthropic.messages': 1 } });
  });
});
