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
 * Only the first request of a fetch is published. A redirect is followed by
 * fetch itself, which (WHATWG fetch, "HTTP-redirect fetch" step 13, and
 * undici with it) drops `Authorization` when the redirect leaves the
 * request's origin: a credential set here in `Authorization` never reaches
 * another origin. Credentials belong in that header for this reason.
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
 * Nothing is built or published when nobody subscribes.
 */
export const DISPATCHER_CHANNEL = "meshguard:tailnet:dispatcher";

/** DispatcherMessage is published once per MeshNode.fetch; `dispatcher` is what it sends with. */
export interface DispatcherMessage {
  readonly node: { readonly hostname: string };
  dispatcher: object;
}

const dispatcherChannel = dc.channel(DISPATCHER_CHANNEL);

/** tailnetDispatcher returns the dispatcher a MeshNode.fetch sends with: the node's own, or what a subscriber wrapped it in. */
export function tailnetDispatcher<D extends object>(node: { readonly hostname: string }, own: D): D {
  if (!dispatcherChannel.hasSubscribers) return own;
  const message: DispatcherMessage = { node, dispatcher: own };
  dispatcherChannel.publish(message);
  const d = message.dispatcher;
  return typeof (d as { dispatch?: unknown })?.dispatch === "function" ? (d as D) : own;
}
