// Response writing for the simulated provider: JSON answers, and the one
// stream driver every wire format uses (so lockstep, break-stream and
// stream-error behave the same for OpenAI, Anthropic and Gemini).

/** sendJson writes a complete JSON answer (keep-alive, with content-length). */
export function sendJson(res, status, obj, headers = {}) {
  const body = JSON.stringify(obj);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...headers });
  res.end(body);
}

/**
 * sendBrokenJson starts a JSON answer and destroys the socket halfway
 * through the body: what a client sees when the provider dies mid-answer.
 */
export function sendBrokenJson(res, obj) {
  const body = JSON.stringify(obj);
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.write(body.slice(0, body.length >> 1), () => res.socket?.destroy());
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * sendStream writes a streamed answer: `head` (events before any content),
 * then each of `chunks` (one content chunk each), then `tail` (finish,
 * usage, end marker). Between content chunks it waits for a lockstep permit
 * when the request is in lockstep mode, so chunk n+1 leaves only after the
 * test called sim.next().
 *
 * Scenarios: break-stream destroys the socket after 2 content chunks (no
 * tail); stream-error writes the format's in-stream error event after 2
 * chunks and ends the body.
 *
 * @param {object} ctx the request context (see llm-sim.mjs)
 * @param {{ contentType: string, head: string, chunks: string[], tail: string, errorEvent?: string }} s
 */
export async function sendStream(ctx, s) {
  const { res, rec, scenario, state } = ctx;
  res.writeHead(200, { 'content-type': s.contentType, 'cache-control': 'no-cache', ...ctx.extraHeaders });
  if (s.head) res.write(s.head);
  for (let i = 0; i < s.chunks.length; i++) {
    if (i > 0) {
      if (ctx.lockstep && !(await state.lockstep.acquire(res))) return void res.destroy();
      if (ctx.chunkDelayMs > 0) await sleep(ctx.chunkDelayMs);
      if (res.destroyed) return;
    }
    if (i === 2 && scenario.breakStream) return void res.socket?.destroy();
    if (i === 2 && scenario.streamError && s.errorEvent) return void res.end(s.errorEvent);
    // Before a deliberate break the chunks must be on the wire: destroy() drops what is still buffered.
    if (scenario.breakStream) await new Promise((r) => res.write(s.chunks[i], r));
    else res.write(s.chunks[i]);
    state.chunksSent++;
    if (rec) rec.chunksSent++;
  }
  if (scenario.breakStream) return void res.socket?.destroy();
  if (scenario.streamError && s.errorEvent) return void res.end(s.errorEvent);
  res.end(s.tail);
}

/**
 * Lockstep hands out permits: sim.next(k) adds k, and each stream takes one
 * before sending its next content chunk. A permit given while no stream is
 * waiting is kept for the next one, so there is no race between a test
 * calling next() and the simulator reaching its gate.
 */
export class Lockstep {
  permits = 0;
  /** @type {{ resolve: (ok: boolean) => void, res: object }[]} */
  waiters = [];
  /** @type {(() => void)[]} */
  watchers = [];
  closed = false;

  /** acquire resolves true with a permit, false when the simulator closes or the client goes away. */
  acquire(res) {
    if (this.closed) return Promise.resolve(false);
    if (this.permits > 0) {
      this.permits--;
      return Promise.resolve(true);
    }
    return new Promise((resolve) => {
      const w = { resolve, res };
      this.waiters.push(w);
      res.once('close', () => {
        const i = this.waiters.indexOf(w);
        if (i !== -1) {
          this.waiters.splice(i, 1);
          resolve(false);
        }
      });
      for (const f of this.watchers.splice(0)) f();
    });
  }

  next(k = 1) {
    for (let i = 0; i < k; i++) {
      const w = this.waiters.shift();
      if (w) w.resolve(true);
      else this.permits++;
    }
  }

  /** waiting resolves once at least one stream is blocked on a permit. */
  waiting() {
    if (this.waiters.length > 0) return Promise.resolve();
    return new Promise((r) => this.watchers.push(r));
  }

  close() {
    this.closed = true;
    for (const w of this.waiters.splice(0)) w.resolve(false);
    for (const f of this.watchers.splice(0)) f();
  }
}
