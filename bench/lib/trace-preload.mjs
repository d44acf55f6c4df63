// Loaded with `node --import` into a process bench/gateway-trace.mjs
// watches (the gateway, the simulated provider): it stamps each stage of
// every HTTP request the process serves and sends, every GC, and every
// message the process hands a worker thread (the SQLite store's log
// batches), on one clock shared by the processes of a machine
// (performance.timeOrigin + performance.now(), ms). Nothing is sent or
// printed while requests run; on SIGUSR2 the events are written to the
// file named by MESHGUARD_TRACE_OUT as JSON: [[time, kind, a?, b?], ...].
//
// kinds: req / fin (a request arrived / its answer was written: http.server
// diagnostics channels; a = how long this process's main thread has waited,
// in all, on the kernel's run queue: runnable, not running, ms — from
// /proc/thread-self/schedstat, -1 where there is none); up-send / up-head / up-end (an undici request's
// headers went out / its answer's headers came / its body ended); up-conn
// (undici opened a connection); gc (a = duration ms, b = kind: 1 scavenge,
// 2 mark-compact, 4 incremental, 8 weak callbacks); handoff (a = how long
// Worker.postMessage held the thread, b = rows in the message).
import dc from 'node:diagnostics_channel';
import { writeFileSync } from 'node:fs';
import { PerformanceObserver, performance } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import { schedstatReader } from './schedstat.mjs';

const out = process.env.MESHGUARD_TRACE_OUT;
const now = () => performance.timeOrigin + performance.now();
/** Bounded: a tracer must not become the leak it looks for. */
const MAX_EVENTS = 2_000_000;
const events = [];
const note = (e) => {
  if (events.length < MAX_EVENTS) events.push(e);
};

const runQueueWaitMs = schedstatReader();
for (const [channel, kind] of [
  ['http.server.request.start', 'req'],
  ['http.server.response.finish', 'fin'],
]) {
  dc.subscribe(channel, () => note([now(), kind, runQueueWaitMs()]));
}
for (const [channel, kind] of [
  ['undici:client:sendHeaders', 'up-send'],
  ['undici:request:headers', 'up-head'],
  ['undici:request:trailers', 'up-end'],
  ['undici:client:connected', 'up-conn'],
]) {
  dc.subscribe(channel, () => note([now(), kind]));
}
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) note([performance.timeOrigin + e.startTime, 'gc', e.duration, e.detail?.kind]);
}).observe({ entryTypes: ['gc'] });
const postMessage = Worker.prototype.postMessage;
Worker.prototype.postMessage = function tracedPostMessage(msg, ...rest) {
  const t = now();
  try {
    return postMessage.call(this, msg, ...rest);
  } finally {
    note([t, 'handoff', now() - t, Array.isArray(msg?.rows) ? msg.rows.length : 0]);
  }
};
if (out) process.on('SIGUSR2', () => writeFileSync(out, JSON.stringify(events)));

