/**
 * One upstream request through undici's `dispatch`, without the Readable
 * per answer that `request` makes: the answer's head resolves `head`, and
 * its chunks go to whatever sink the caller attaches (buffered until then).
 * The caller's signal aborts the request; the pool's headers and body
 * timeouts and any network error reject `head`, or reach the sink's
 * `error` once the head has come.
 */

import type { IncomingHttpHeaders } from "node:http";
import type { Dispatcher, Pool } from "undici";

export interface UpHead {
  statusCode: number;
  headers: IncomingHttpHeaders;
}

export interface UpSink {
  data(chunk: Buffer): void;
  end(): void;
  error(err: Error): void;
}

/** What aborts a call: the call's CallAbort (an EventEmitter emitting "abort"). */
export interface AbortSource {
  readonly aborted: boolean;
  readonly reason: unknown;
  once(event: "abort", fn: () => void): unknown;
  off(event: "abort", fn: () => void): unknown;
}

export class UpstreamCall implements Dispatcher.DispatchHandler {
  readonly head: Promise<UpHead>;
  controller: Dispatcher.DispatchController | undefined;
  private resolveHead!: (h: UpHead) => void;
  private rejectHead!: (e: Error) => void;
  private headed = false;
  private sink: UpSink | undefined;
  private pending: Buffer[] = [];
  private ended = false;
  private failed: Error | undefined;
  private readonly signal: AbortSource | undefined;
  private readonly onAbort = (): void => {
    const reason = this.signal?.reason;
    this.controller?.abort(reason instanceof Error ? reason : new Error("aborted"));
  };

  constructor(pool: Pool, opts: Dispatcher.DispatchOptions, signal?: AbortSource) {
    this.head = new Promise<UpHead>((resolve, reject) => {
      this.resolveHead = resolve;
      this.rejectHead = reject;
    });
    this.head.catch(() => {});
    this.signal = signal;
    pool.dispatch(opts, this);
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    if (this.signal) {
      if (this.signal.aborted) this.onAbort();
      else this.signal.once("abort", this.onAbort);
    }
  }

  onResponseStart(_c: Dispatcher.DispatchController, statusCode: number, headers: IncomingHttpHeaders): void {
    if (statusCode < 200) return; // 1xx: informational, another head follows
    this.headed = true;
    this.resolveHead({ statusCode, headers });
  }

  onResponseData(_c: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.sink) this.sink.data(chunk);
    else this.pending.push(chunk);
  }

  onResponseEnd(): void {
    this.signal?.off("abort", this.onAbort);
    if (this.sink) this.sink.end();
    else this.ended = true;
  }

  onResponseError(_c: Dispatcher.DispatchController, err: Error): void {
    this.signal?.off("abort", this.onAbort);
    if (!this.headed) return this.rejectHead(err);
    if (this.sink) this.sink.error(err);
    else this.failed = err;
  }

  /** attach sends the answer's chunks (those already come first) to sink. */
  attach(sink: UpSink): void {
    this.sink = sink;
    const p = this.pending;
    this.pending = [];
    for (const c of p) sink.data(c);
    if (this.failed) sink.error(this.failed);
    else if (this.ended) sink.end();
  }

  /** whole resolves with the whole answer body. */
  whole(): Promise<Buffer> {
    return new Promise<Buffer>((resolve, reject) => {
      const parts: Buffer[] = [];
      this.attach({
        data: (c) => parts.push(c),
        end: () => resolve(parts.length === 1 ? parts[0]! : Buffer.concat(parts)),
        error: reject,
      });
    });
  }

  pause(): void {
    this.controller?.pause();
  }

  resume(): void {
    this.controller?.resume();
  }

  abort(err: Error): void {
    this.controller?.abort(err);
  }
}
