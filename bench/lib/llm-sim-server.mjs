// The simulated provider (llm-sim.mjs) as a process of its own, so that a
// benchmark's load generator, the system under test and the provider do not
// share an event loop. Contract of bench/lib/child.mjs:
//
//   {"event":"listening","url":U,"port":P}   once listening
//   {"event":"stopped","totals":{...}}       after stdin closes
//
// Usage: node llm-sim-server.mjs [--key K] [--chunks N] [--output-tokens N] [--delay-ms N] [--chunk-delay-ms N]
// Requests are not recorded (a long benchmark would hold them all);
// GET /_sim/totals gives the counts while it runs.

import { parseArgs } from 'node:util';
import { startLlmSim } from './llm-sim.mjs';

const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
try {
  const { values: a } = parseArgs({
    options: Object.fromEntries(['key', 'chunks', 'output-tokens', 'delay-ms', 'chunk-delay-ms', 'port'].map((k) => [k, { type: 'string' }])),
  });
  const int = (v) => (v === undefined ? undefined : Number(v));
  const sim = await startLlmSim({
    key: a.key,
    chunks: int(a.chunks),
    outputTokens: int(a['output-tokens']),
    delayMs: int(a['delay-ms']),
    chunkDelayMs: int(a['chunk-delay-ms']),
    port: int(a.port),
    record: false,
  });
  emit({ event: 'listening', url: sim.url, port: sim.port });
  process.stdin.resume();
  await new Promise((r) => process.stdin.on('end', r));
  await sim.close();
  emit({ event: 'stopped', totals: sim.totals });
} catch (err) {
  emit({ event: 'error', message: String(err?.message ?? err) });
  process.exitCode = 1;
}
