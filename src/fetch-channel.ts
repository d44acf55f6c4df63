/**
 * The tailnet fetch channel: how MeshNode.fetch lets a higher layer (the
 * tokens client) add credentials to a request without importing it (layers
 * import downwards only, DESIGN.md decision 12).
 *
 * Before sending, MeshNode.fetch publishes a FetchMessage on the
 * `node:diagnostics_channel` channel "meshguard:tailnet:fetch"; so does a
 * node:http request whose connection is a MeshNode.dial (the node's
 * `httpAgent`, or an Agent or `createConnection` written around dial: see
 * src/tailnet-http.ts, which applies the headers set here to the request).
 * One message shape for both: the url is where the connection goes. Subscribers
 * run synchronously, in the caller's async context (so an AsyncLocalStorage
 * store the caller set, such as a task, is visible to them), and may:
 * - set headers on `message.headers` (the outgoing request's own Headers);
 * - call `message.hold(promise)` to make the fetch wait for it (a token that
 *   must first be obtained): the fetch is sent once every held promise has
 *   resolved, and fails with the reason of the first one that rejects.
 *
 * When: after the guard. The publication is the fetch's (or request's)
 * prepare step, which a judge (the guard) claims and runs only on what it
 * allowed (see DISPATCHER_CHANNEL and HTTP_REQUEST_CHANNEL below): a call
 * the guard denies is never published, so the tokens client never asks
 * for a token for it.
 *
 * Only the first request of a fetch is published. A redirect is followed by
 * fetch itself; the changes made here ride along only as fetch would carry
 * an `Authorization` header the caller set (WHATWG fetch, "HTTP-redirect
 * fetch" step 13): kept while the redirects stay at one origin, dropped for
 * good at the first hop that leaves it. A credential set here never reaches
 * another origin.
 *
 * Nothing is built or published when nobody subscribes, so a process without
 * a tokens client pays nothing. diagnostics_channel names are process-wide:
 * a second copy of meshguard in the process publishes on the same channel.
 *
 * A subscriber must not throw (diagnostics_channel reports a subscriber's
 * exception on `uncaughtException`, not to the fetch): hold a rejected
 * promise instead.
 */

import dc from "node:diagnostics_channel";
import { ErrorCode, MeshguardError } from "./errors.js";

/** FETCH_CHANNEL is the diagnostics_channel name MeshNode.fetch publishes on. */
export const FETCH_CHANNEL = "meshguard:tailnet:fetch";

/** FetchMessage is published once per MeshNode.fetch (and node:http request over a tailnet dial), before the request is sent. */
export interface FetchMessage {
  /** The fetching node: its stable id is what a token issued to it is bound to. */
  readonly node: { readonly hostname: string; readonly id: string };
  /** The absolute URL of the request. */
  readonly url: string;
  /** The request method, upper-case. */
  readonly method: string;
  /** The request's headers; a subscriber may set headers here. */
  readonly headers: Headers;
  /** hold makes the fetch wait for `promise`; a rejection fails the fetch with its reason. */
  hold(promise: PromiseLike<unknown>): void;
}

const channel = dc.channel(FETCH_CHANNEL);

/** fetchHasSubscribers tells MeshNode.fetch whether building a message is worth it. */
export function fetchHasSubscribers(): boolean {
  return channel.hasSubscribers;
}

/**
 * publishFetch publishes a request about to be sent and returns undefined
 * when it may go at once, or a Promise that settles when every hold has.
 */
export function publishFetch(node: { readonly hostname: string; readonly id: string }, url: string, method: string, headers: Headers): undefined | Promise<void> {
  const holds: PromiseLike<unknown>[] = [];
  let sealed = false;
  const message: FetchMessage = Object.freeze({
    node,
    url,
    method,
    headers,
    hold(promise: PromiseLike<unknown>): void {
      if (sealed) throw new MeshguardError(ErrorCode.INTERNAL, `meshguard:tailnet:fetch: hold() after the request to ${url} was sent`, { hint: "call hold(promise) while the message is published" });
      if (promise === null || typeof (promise as { then?: unknown })?.then !== "function") {
        throw new MeshguardError(ErrorCode.INVALID_OPTIONS, "meshguard:tailnet:fetch: hold() takes a promise");
      }
      holds.push(promise);
    },
  });
  channel.publish(message);
  if (holds.length === 0) {
    sealed = true;
    return undefined;
  }
  return Promise.all(holds).then(
    () => {
      sealed = true;
    },
    (err: unknown) => {
      sealed = true;
      throw err;
    },
  );
}

/**
 * The tailnet dispatcher channel: MeshNode.fetch sends through its own
 * undici Agent (connections are tailnet dials), so the guard's wrapper of
 * the global dispatcher never sees its requests. Before each fetch,
 * MeshNode.fetch publishes a DispatcherMessage on
 * "meshguard:tailnet:dispatcher"; a subscriber (the guard) may set
 * `message.dispatcher` to one that wraps the node's — its judging
 * dispatcher, which reads an LLM call's body and holds a call for approval
 * as it does for the global fetch. Whatever it sets, every undici request
 * is still judged where it is created (the guard's `undici:request:create`
 * backstop) and every connection on the dial channel.
 *
 * Judged first, credentials after. When someone follows FETCH_CHANNEL (a
 * tokens client), the fetch's publication there is a step of its own, the
 * `prepare` step: it publishes the request, waits for the holds, and
 * returns the dispatch options with what the subscribers set. A judge
 * takes that step with `claimPrepare()` and runs it on each dispatch it
 * allows, after its decision (an approval included) and before handing the
 * dispatch on; a dispatch it denies is never prepared, so a denied call
 * never reaches the token layer (no token is asked for, the issuer never
 * learns of the call). When no subscriber claims it, MeshNode.fetch runs
 * the step itself in front of whatever dispatcher it sends with.
 *
 * Nothing is built or published when nobody subscribes.
 */
export const DISPATCHER_CHANNEL = "meshguard:tailnet:dispatcher";

/** The options of one undici dispatch, as far as the prepare step reads and writes them. */
export interface DispatchOptionsLike {
  origin?: string | URL;
  path: string;
  method: string;
  headers?: unknown;
  [k: string]: unknown;
}

/**
 * DispatchPrepare is the step that adds the tokens client's credentials to
 * one dispatch: it returns the options to send (synchronously when nothing
 * had to be waited for) or a Promise of them; a rejection is the reason the
 * fetch fails with. It never throws.
 */
export type DispatchPrepare = (opts: DispatchOptionsLike) => DispatchOptionsLike | Promise<DispatchOptionsLike>;

/** DispatcherMessage is published once per MeshNode.fetch; `dispatcher` is what it sends with. */
export interface DispatcherMessage {
  readonly node: { readonly hostname: string };
  dispatcher: object;
  /**
   * claimPrepare hands over the fetch's prepare step (undefined when there
   * is none, or another subscriber claimed it). The subscriber that claims
   * it must set `dispatcher` and call the step on each dispatch it lets
   * through, after judging it, sending the options the step returns.
   */
  claimPrepare(): DispatchPrepare | undefined;
}

const dispatcherChannel = dc.channel(DISPATCHER_CHANNEL);

interface Dispatching {
  dispatch(opts: DispatchOptionsLike, handler: DispatchHandler): boolean;
  close(...a: unknown[]): unknown;
  destroy(...a: unknown[]): unknown;
}

/** The two ways an undici handler takes an error (the legacy onError, and onResponseError). */
export interface DispatchHandler {
  onError?(err: Error): void;
  onResponseError?(controller: unknown, err: Error): void;
}

/** failDispatch gives a handler its error on a later microtask (never inside dispatch). Never throws. */
export function failDispatch(handler: DispatchHandler, err: Error): void {
  queueMicrotask(() => {
    try {
      if (typeof handler.onError === "function") handler.onError(err);
      else handler.onResponseError?.({ abort() {}, pause() {}, resume() {}, aborted: true, paused: false }, err);
    } catch {
      // a handler that throws on error must not take the process down
    }
  });
}

/** dispatchPrepared runs the prepare step on a dispatch, then hands it to `next` (or fails the handler with the step's reason). */
export function dispatchPrepared(prepare: DispatchPrepare, opts: DispatchOptionsLike, handler: DispatchHandler, next: (opts: DispatchOptionsLike) => boolean): boolean {
  const r = prepare(opts);
  if (!(r instanceof Promise)) return next(r);
  r.then(
    (o) => next(o),
    (err: unknown) => failDispatch(handler, err instanceof Error ? err : new Error(String(err))),
  );
  return true;
}

/**
 * tailnetDispatcher returns the dispatcher a MeshNode.fetch sends with: the
 * node's own, or what a subscriber wrapped it in; with the prepare step in
 * front of it when no subscriber claimed the step.
 */
export function tailnetDispatcher<D extends object>(node: { readonly hostname: string }, own: D, prepare?: DispatchPrepare): object {
  let d: object = own;
  let claimed = false;
  if (dispatcherChannel.hasSubscribers) {
    const message: DispatcherMessage = {
      node,
      dispatcher: own,
      claimPrepare() {
        if (claimed || prepare === undefined) return undefined;
        claimed = true;
        return prepare;
      },
    };
    dispatcherChannel.publish(message);
    const m = message.dispatcher;
    if (typeof (m as { dispatch?: unknown })?.dispatch === "function") d = m;
    // Claimed but not replaced: the claim cannot be honoured by the node's own dispatcher.
    else if (claimed) claimed = false;
  }
  if (prepare === undefined || claimed) return d;
  const inner = d as Dispatching;
  return {
    dispatch: (opts: DispatchOptionsLike, handler: DispatchHandler) => dispatchPrepared(prepare, opts, handler, (o) => inner.dispatch(o, handler)),
    close: (...a: unknown[]) => inner.close(...a),
    destroy: (...a: unknown[]) => inner.destroy(...a),
  };
}

/**
 * fetchPrepare is MeshNode.fetch's prepare step for one fetch. The first
 * dispatch is published on FETCH_CHANNEL (url: origin and path, as sent)
 * and gets the header changes its subscribers made. A redirect is a later
 * dispatch of the same fetch: it gets the same changes while it stays at
 * the origin of the hop before it, and none from the first hop that
 * leaves it on — what fetch does with an `Authorization` header the caller
 * set (WHATWG fetch, "HTTP-redirect fetch" step 13), so a credential set
 * here never reaches another origin. `check` runs after the holds (the
 * node may have closed meanwhile) and may throw.
 */
export function fetchPrepare(node: { readonly hostname: string; readonly id: string }, check: () => void): DispatchPrepare {
  let changes: HeaderChanges | undefined;
  let previous: string | undefined;
  let dropped = false;
  return (opts) => {
    try {
      const origin = String(opts.origin ?? "").replace(/\/$/, "");
      if (previous === undefined) {
        previous = origin;
        const before = headersFrom(opts.headers);
        const after = headersFrom(opts.headers);
        const held = publishFetch(node, origin + opts.path, String(opts.method).toUpperCase(), after);
        const finish = (): DispatchOptionsLike => {
          check();
          changes = diffHeaders(before, after);
          return applyChanges(opts, changes);
        };
        if (held === undefined) return finish();
        return held.then(finish);
      }
      if (dropped || origin !== previous) dropped = true;
      previous = origin;
      return dropped || changes === undefined ? opts : applyChanges(opts, changes);
    } catch (err) {
      return Promise.reject(err);
    }
  };
}

/** What FETCH_CHANNEL subscribers set and deleted. */
export interface HeaderChanges {
  readonly set: readonly [string, string][];
  readonly removed: readonly string[];
}

/** diffHeaders is what changed from `before` to `after`. */
export function diffHeaders(before: Headers, after: Headers): HeaderChanges {
  const set: [string, string][] = [];
  const removed: string[] = [];
  after.forEach((v, k) => {
    if (before.get(k) !== v) set.push([k, v]);
  });
  before.forEach((_, k) => {
    if (!after.has(k)) removed.push(k);
  });
  return { set, removed };
}

/** headersFrom reads dispatch headers: a record, a flat [k, v, k, v] array, or an iterable of pairs. */
function headersFrom(h: unknown): Headers {
  const out = new Headers();
  if (h === null || h === undefined) return out;
  if (Array.isArray(h) && (h.length === 0 || !Array.isArray(h[0]))) {
    for (let i = 0; i + 1 < h.length; i += 2) out.append(String(h[i]), String(h[i + 1]));
    return out;
  }
  if (typeof (h as Iterable<unknown>)[Symbol.iterator] === "function") {
    for (const [k, v] of h as Iterable<[unknown, unknown]>) out.append(String(k), String(v));
    return out;
  }
  for (const [k, v] of Object.entries(h as Record<string, unknown>)) {
    if (v === undefined) continue;
    if (Array.isArray(v)) for (const x of v) out.append(k, String(x));
    else out.append(k, String(v));
  }
  return out;
}

/** applyChanges returns the options with the header changes made (the same object when there are none). */
function applyChanges(opts: DispatchOptionsLike, c: HeaderChanges): DispatchOptionsLike {
  if (c.set.length === 0 && c.removed.length === 0) return opts;
  const h = headersFrom(opts.headers);
  for (const k of c.removed) h.delete(k);
  for (const [k, v] of c.set) h.set(k, v);
  const headers: Record<string, string> = {};
  h.forEach((v, k) => {
    headers[k] = v;
  });
  return { ...opts, headers };
}

/**
 * The tailnet HTTP request channel: node:http over a MeshNode.dial has the
 * same prepare step as a fetch (publishing on FETCH_CHANNEL and applying
 * what its subscribers set: src/tailnet-http.ts). Before running it, the
 * request offers the step on "meshguard:tailnet:http-request"; a judge of
 * node:http requests (the guard) that has not yet allowed the request
 * claims it, and runs it once it allows the request (an approval
 * included), holding every byte of it until the step has settled — a
 * request it denies is never prepared. Unclaimed, the step runs at once.
 */
export const HTTP_REQUEST_CHANNEL = "meshguard:tailnet:http-request";

/** RequestPrepare adds the credentials to a node:http request: undefined when done, or a Promise (a rejection fails the request). May throw. */
export type RequestPrepare = () => undefined | Promise<void>;

/** HttpRequestMessage is published once per node:http request over a tailnet dial, before its prepare step runs. */
export interface HttpRequestMessage {
  /** The http.ClientRequest. */
  readonly request: object;
  /** claimPrepare hands over the request's prepare step (undefined once another subscriber claimed it). */
  claimPrepare(): RequestPrepare | undefined;
}

const httpRequestChannel = dc.channel(HTTP_REQUEST_CHANNEL);

/** offerRequestPrepare publishes a request's prepare step; true when a subscriber claimed it (and will run it). */
export function offerRequestPrepare(request: object, prepare: RequestPrepare): boolean {
  if (!httpRequestChannel.hasSubscribers) return false;
  let claimed = false;
  httpRequestChannel.publish(
    Object.freeze({
      request,
      claimPrepare(): RequestPrepare | undefined {
        if (claimed) return undefined;
        claimed = true;
        return prepare;
      },
    }) satisfies HttpRequestMessage,
  );
  return claimed;
}

/**
 * bufferHeldWrite is `_writeRaw` for a node:http request whose bytes are
 * held (until its prepare step settles): what the caller writes is queued
 * exactly as Node queues it before a request has its socket, and goes out
 * when the request is let go. Used by both holders (the guard, and the
 * tailnet dial's own prepare step).
 */
export function bufferHeldWrite(request: object, data: unknown, encoding?: unknown, callback?: unknown): boolean {
  if (typeof encoding === "function") {
    callback = encoding;
    encoding = null;
  }
  const self = request as { socket?: { destroyed?: boolean } | null; outputData: unknown[]; outputSize: number; _onPendingData(n: number): void; writableHighWaterMark: number };
  if (self.socket?.destroyed) return false;
  const len = (data as { length?: number } | null)?.length ?? 0;
  self.outputData.push({ data, encoding, callback });
  self.outputSize += len;
  self._onPendingData(len);
  return self.outputSize < self.writableHighWaterMark;
}
