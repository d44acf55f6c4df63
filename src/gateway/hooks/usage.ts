/**
 * Usage webhooks: one event per finished request, delivered off the request
 * path. Each hook has its own bounded queue and one delivery in flight at a
 * time (events arrive in order); whatever queued while a POST was in flight
 * goes in the next POST, up to `batch` events, so a slow hook gets fewer,
 * larger POSTs rather than a growing backlog of small ones.
 *
 * Delivery is at least once: a POST that failed is sent again (network
 * error, timeout, 408, 429, 5xx; backoff 250 ms doubling to 5 s, with
 * jitter) up to `retries` times, so a hook that processed a batch but failed
 * to answer can see it twice — receivers deduplicate on the event `id`.
 * Events are lost only when reported: the queue was full, the retries ran
 * out, the hook refused them (another 4xx), or close() hit its deadline.
 *
 * The same queue delivers the gateway's alerts (src/gateway/obs/alerts):
 * a `SinkWire` gives the phase, how a batch is wrapped and what the
 * webhook is called in reports.
 */

import type { UsageEvent } from "../types.js";
import { callHook, HookFailedError, type FetchFn, type HookPhase, type HookTarget } from "./call.js";
import { resolveHeaders, type UsageHookDef } from "./config.js";
import { WIRE_VERSION, type OnError } from "./chain.js";

const BACKOFF_BASE_MS = 250;
const BACKOFF_MAX_MS = 5_000;

function retryable(e: HookFailedError): boolean {
  if (e.failure === "timeout" || e.failure === "unreachable") return true;
  if (e.failure === "status") return e.status === 408 || e.status === 429 || (e.status ?? 0) >= 500;
  return false;
}

/** How a sink's events go on the wire, for webhooks other than usage hooks. */
export interface SinkWire {
  phase: HookPhase;
  /** Where the webhook is configured, for errors about its headers ("alerts.webhooks[0]"). */
  where: string;
  /** What reports call it ("alert webhook"). */
  label: string;
  /** The POST body of a batch of serialized events. */
  wrap(events: string[]): string;
  /** false: any 2xx answer will do (its body is not read). */
  answer?: boolean;
}

/** The fields of a usage hook definition a sink uses. */
export type SinkDef = Pick<UsageHookDef, "name" | "url" | "headers" | "timeout" | "batch" | "retries" | "maxQueue">;

export class UsageSink {
  private readonly target: HookTarget;
  /** Serialized events: serializing at enqueue time snapshots them (the caller may reuse its objects). */
  private readonly queue: string[] = [];
  private running: Promise<void> | undefined;
  private closing = false;
  private readonly stop = new AbortController();
  /** Events dropped from a full queue since the last report. */
  private dropped = 0;
  private readonly def: SinkDef;
  private readonly fetchFn: FetchFn;
  private readonly onError: OnError;
  private readonly wire?: SinkWire;

  constructor(
    index: number,
    def: SinkDef,
    fetchFn: FetchFn,
    onError: OnError,
    wire?: SinkWire,
  ) {
    this.def = def;
    this.fetchFn = fetchFn;
    this.onError = onError;
    this.wire = wire;
    this.target = {
      name: def.name,
      phase: wire?.phase ?? "usage",
      url: def.url,
      headers: resolveHeaders(wire?.where ?? `hooks.usage[${index}]`, def.headers),
      timeoutMs: def.timeout,
      ...(wire?.answer === false ? { answer: false } : {}),
    };
  }

  push(json: string): void {
    if (this.closing) return this.report("dropped", "received an event after the gateway closed its hooks: dropped");
    if (this.queue.length >= this.def.maxQueue) {
      // Reported once per episode (the first drop, then the count when a delivery next succeeds), not per event.
      if (this.dropped++ === 0) this.report("dropped", `is not keeping up: its queue is full (${this.def.maxQueue} events) and new events are dropped`);
      return;
    }
    this.queue.push(json);
    this.running ??= this.loop().finally(() => {
      this.running = undefined;
    });
  }

  /** close delivers what is queued, giving up (and reporting what is lost) after `ms`. */
  async close(ms: number): Promise<void> {
    this.closing = true;
    if (!this.running) return;
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, ms);
    });
    await Promise.race([this.running, deadline]);
    clearTimeout(timer);
    if (this.running) {
      this.stop.abort();
      await this.running;
    }
  }

  private async loop(): Promise<void> {
    while (this.queue.length > 0) {
      if (this.stop.signal.aborted) {
        this.report("dropped", `could not be given ${this.queue.length} event(s) before the close deadline: dropped`);
        this.queue.length = 0;
        return;
      }
      const n = Math.min(this.def.batch, this.queue.length);
      const payload = this.wire
        ? this.wire.wrap(this.queue.slice(0, n))
        : `{"version":${WIRE_VERSION},"phase":"usage","hook":${JSON.stringify(this.def.name)},"events":[${this.queue.slice(0, n).join(",")}]}`;
      await this.deliver(payload, n);
      this.queue.splice(0, n);
    }
  }

  /** deliver sends one batch, retrying; it never throws (a lost batch is reported). */
  private async deliver(payload: string, n: number): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        await callHook(this.fetchFn, this.target, payload, { "x-meshguard-hook": this.def.name, "x-meshguard-phase": this.target.phase }, this.stop.signal);
        if (this.dropped > 0) {
          this.report("dropped", `dropped ${this.dropped} event(s) while its queue was full`);
          this.dropped = 0;
        }
        return;
      } catch (err) {
        const e = err as HookFailedError;
        const last = attempt >= this.def.retries || !retryable(e) || this.stop.signal.aborted;
        if (last) {
          const why = this.stop.signal.aborted ? "the close deadline passed" : retryable(e) ? `${attempt + 1} attempt(s) failed` : "the hook refused them";
          this.report(e.failure, `lost ${n} event(s): ${why}; last error: ${e.message}`, { cause: e, status: e.status });
          return;
        }
        await this.sleep(Math.min(BACKOFF_BASE_MS * 2 ** attempt, BACKOFF_MAX_MS) * (0.5 + Math.random() / 2));
      }
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      if (this.stop.signal.aborted) return resolve();
      const t = setTimeout(done, ms);
      // A backoff alone does not keep the process alive: close() is how queued events are delivered.
      t.unref();
      this.stop.signal.addEventListener("abort", done, { once: true });
      const signal = this.stop.signal;
      function done() {
        clearTimeout(t);
        signal.removeEventListener("abort", done);
        resolve();
      }
    });
  }

  private report(failure: HookFailedError["failure"], what: string, opts: { cause?: unknown; status?: number | undefined } = {}): void {
    try {
      const { cause, status } = opts;
      const label = this.wire?.label ?? "usage hook";
      this.onError(new HookFailedError(this.def.name, this.target.phase, failure, `${label} "${this.def.name}" ${what}`, status === undefined ? { cause } : { cause, status }));
    } catch {
      // A throwing reporter must not stop delivery.
    }
  }
}

/** serializeUsage is the wire form of one event (see docs/gateway-hooks.md). */
export function serializeUsage(ev: UsageEvent): string {
  return JSON.stringify(ev);
}
