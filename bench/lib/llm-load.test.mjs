// Part of the vitest suite (test/vitest.config.ts): the load shapes of
// bench/gateway do what their figures claim, against the simulated provider.
import { afterAll, beforeAll, test } from 'vitest';
import assert from 'node:assert/strict';
import { startLlmSim } from './llm-sim.mjs';
import { chatBody, closedLoop, closeTarget, once, openLoop, sequential, stream, target } from './llm-load.mjs';

let sim;
let t;
beforeAll(async () => {
  sim = await startLlmSim({ key: 'k', chunks: 3, delayMs: 5 });
  t = target({ name: 'sim', origin: sim.url, headers: { authorization: 'Bearer k' } });
});
afterAll(async () => {
  await closeTarget(t);
  await sim.close();
});

test('closedLoop sends exactly n requests with at most `clients` in flight', async () => {
  sim.reset();
  let inflight = 0;
  let peak = 0;
  const fn = async () => {
    peak = Math.max(peak, ++inflight);
    try {
      return await once(t, chatBody());
    } finally {
      inflight--;
    }
  };
  const r = await closedLoop(fn, 4, 30);
  assert.equal(r.samples.length, 30);
  assert.equal(sim.totals.requests, 30);
  assert.equal(peak, 4);
  // 5 ms of service time each: latencies cannot be below it.
  assert.ok(Math.min(...r.samples) >= 4.5, `min ${Math.min(...r.samples)}`);
});

test('openLoop keeps its rate whether or not answers are back', async () => {
  sim.reset();
  const r = await openLoop(() => once(t, chatBody()), 200, 20);
  assert.equal(r.samples.length + r.errors.length, 20);
  // 20 starts at 200/s span 95 ms: the achieved rate cannot exceed the asked one by much.
  assert.ok(r.achievedRate <= 230, `achieved ${r.achievedRate}`);
});

test('errors are counted, never sampled; stream finds the first content token', async () => {
  const bad = target({ name: 'bad key', origin: sim.url, headers: { authorization: 'Bearer wrong' } });
  const r = await sequential(() => once(bad, chatBody()), 3);
  assert.equal(r.samples.length, 0);
  assert.equal(r.errors.length, 3);
  assert.match(r.errors[0].message, /HTTP 401/);
  await closeTarget(bad);
  const s = await stream(t, chatBody({ stream: true }));
  assert.ok(s.ttft >= 4.5 && s.ttft <= s.total, JSON.stringify(s));
});
