/**
 * The state of one call and its single end: settle the quota reservation
 * with what the call really cost, append the log record (per retention),
 * hand it to the observers (metrics, traces, alerts), send the usage event. `finish` runs once per call whatever happened, and
 * never throws: a failing store or quota write is a warning, not a client
 * error (the answer has already gone).
 */

import { randomUUID } from "node:crypto";
import { EventEmitter } from "node:events";
import type { GatewayContext } from "./context.js";
import { costOf } from "./prices.js";
import type { Endpoint } from "./facts.js";
import type { AnswerFacts, Caller, CallFacts, LogRecord, ModelPrice, Outcome, Reservation, Usage } from "./types.js";

export interface CallState {
  readonly id: string;
  /** Epoch ms when the request arrived. */
  readonly time: number;
  /** performance.now() when the request arrived. */
  readonly t0: number;
  readonly caller: Caller;
  readonly ep: Endpoint;
  facts: CallFacts | undefined;
  model: string;
  stream: boolean;
  status: number;
  outcome: Outcome;
  reason: string | undefined;
  ruleId: string | undefined;
  usage: Usage | undefined;
  /** What the answer said about itself (id, model, finish reasons). */
  answer: AnswerFacts | undefined;
  price: ModelPrice | undefined;
  reservation: Reservation | undefined;
  /** performance.now() when the upstream request was sent / the first body byte reached the client. */
  tUpstream: number;
  tFirstByte: number;
  /** The request did not reach the upstream although it was being sent (its connection failed, its credential was missing): its call is refunded. */
  notSent: boolean;
  requestBytes: number;
  requestBody: Buffer | undefined;
  requestHeaders: Record<string, string> | undefined;
  /** What the client received (full retention), in pieces. */
  responseParts: Array<Buffer | string> | undefined;
  hookModified: boolean;
  /** Aborted when the client goes away before its answer is complete: the upstream request is cancelled with it. */
  readonly abort: CallAbort;
}

/**
 * CallAbort is one call's abort signal: an EventEmitter with `aborted`,
 * which undici takes as a request's `signal` as it takes an AbortSignal.
 * Every call makes one and almost none is ever aborted; an
 * AbortController's EventTarget listener bookkeeping cost more per request.
 */
export class CallAbort extends EventEmitter {
  aborted = false;
  reason: unknown = undefined;

  /** The signal to hand undici (itself, as AbortController.signal is to its controller). */
  get signal(): this {
    return this;
  }

  abort(reason?: unknown): void {
    if (this.aborted) return;
    this.aborted = true;
    this.reason = reason ?? new Error("the client closed the connection");
    this.emit("abort");
  }
}

export function newCallState(ctx: GatewayContext, caller: Caller, ep: Endpoint, t0: number): CallState {
  return {
    id: randomUUID(),
    time: Date.now(),
    t0,
    caller,
    ep,
    facts: undefined,
    model: "",
    stream: false,
    status: 0,
    outcome: "ok",
    reason: undefined,
    ruleId: undefined,
    usage: undefined,
    answer: undefined,
    price: undefined,
    reservation: undefined,
    tUpstream: 0,
    tFirstByte: 0,
    notSent: false,
    requestBytes: 0,
    requestBody: undefined,
    requestHeaders: undefined,
    responseParts: ctx.retention.mode === "full" ? [] : undefined,
    hookModified: false,
    abort: new CallAbort(),
  };
}

const ZERO: Usage = Object.freeze({ inputTokens: 0, outputTokens: 0, estimated: false }) as Usage;

/** MAX_LOGGED_BODY bounds each stored body (a 32 MiB upload is not kept whole in the log). */
const MAX_LOGGED_BODY = 1 << 20;

/** finish ends a call: settle, log, usage event. Never throws. */
export function finish(ctx: GatewayContext, st: CallState): void {
  try {
    const end = performance.now();
    const usage = st.usage;
    const cost = usage && st.price ? costOf(usage, st.price) : undefined;
    if (st.reservation !== undefined && ctx.quotas !== undefined) {
      // A call that never reached its upstream (refused before it was sent, or its connection failed) costs no call.
      ctx.quotas.settle(st.reservation, usage ?? ZERO, cost ?? 0, { sent: st.tUpstream > 0 && !st.notSent }).catch((err: unknown) => ctx.warn(err));
    }
    const provider = st.facts?.provider ?? "";
    const model = st.facts?.model ?? st.model;
    const session = ctx.sessions.sessionOf(st.caller, st.facts?.clientSessionId, st.time);
    // Sessions shared through the store are named once the store answers: the record waits for it (the answer has gone already).
    if (typeof session === "string") record(ctx, st, end, usage, cost, provider, model, session);
    else session.then((id) => record(ctx, st, end, usage, cost, provider, model, id), (err: unknown) => ctx.warn(err));
  } catch (err) {
    ctx.warn(err);
  }
}

/** record appends the call's log record (per retention), hands it to the observers and sends the usage event. Never throws. */
function record(ctx: GatewayContext, st: CallState, end: number, usage: Usage | undefined, cost: number | undefined, provider: string, model: string, sessionId: string): void {
  try {
    const storing = ctx.store !== undefined && ctx.retention.mode !== "none";
    if (storing || ctx.observe !== undefined) {
      const c = st.caller;
      const rec: LogRecord = {
        id: st.id,
        time: st.time,
        sessionId,
        caller: { node: c.node, user: c.user, tags: c.tags, addr: c.addr, via: c.via },
        operation: st.ep.operation,
        provider,
        model,
        stream: st.stream,
        status: st.status,
        outcome: st.outcome,
        overheadMs: st.tUpstream > 0 ? st.tUpstream - st.t0 : end - st.t0,
        durationMs: end - st.t0,
      };
      if (st.reason !== undefined) rec.reason = ctx.scrub.text(st.reason);
      if (st.ruleId !== undefined) rec.ruleId = st.ruleId;
      if (usage !== undefined) rec.usage = usage;
      if (cost !== undefined) rec.costUsd = cost;
      if (st.tFirstByte > 0 && st.stream) rec.ttftMs = st.tFirstByte - st.t0;
      if (st.answer !== undefined) rec.response = st.answer;
      if (storing) {
        if (ctx.retention.mode === "full") {
          if (st.requestHeaders !== undefined) rec.requestHeaders = st.requestHeaders;
          if (st.requestBody !== undefined) rec.requestBody = ctx.scrub.text(bounded(st.requestBody));
          if (st.responseParts !== undefined && st.responseParts.length > 0) rec.responseBody = ctx.scrub.text(bounded(joinParts(st.responseParts)));
        }
        ctx.store!.appendLog(rec);
      }
      // Metrics, spans, alerts, the access line: whatever retention keeps.
      ctx.observe?.(rec, st.facts);
    }
    if (ctx.hooks !== undefined && st.facts !== undefined) {
      const c = st.caller;
      ctx.hooks.usage({
        id: st.id,
        time: st.time,
        caller: { node: c.node, user: c.user, tags: c.tags },
        provider,
        model,
        operation: st.ep.operation,
        outcome: st.outcome,
        ...(usage !== undefined ? { usage } : {}),
        ...(cost !== undefined ? { costUsd: cost } : {}),
        sessionId,
      });
    }
  } catch (err) {
    ctx.warn(err);
  }
}

function joinParts(parts: Array<Buffer | string>): Buffer {
  return Buffer.concat(parts.map((p) => (typeof p === "string" ? Buffer.from(p) : p)));
}

function bounded(b: Buffer): string {
  return b.length <= MAX_LOGGED_BODY ? b.toString("utf8") : `${b.subarray(0, MAX_LOGGED_BODY).toString("utf8")}…[${b.length - MAX_LOGGED_BODY} more bytes not logged]`;
}
