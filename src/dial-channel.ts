/**
 * The tailnet dial channel: how MeshNode.dial lets a higher layer (the
 * guard) judge a dial without importing it (layers import downwards only).
 *
 * Before opening a connection MeshNode.dial publishes a DialMessage on the
 * `node:diagnostics_channel` channel "meshguard:tailnet:dial". Subscribers
 * run synchronously, in subscription order, and may call
 * `message.verdict.deny(error)` or `message.verdict.hold(promise)`.
 *
 * The verdict only moves in the safe direction:
 * - the first deny is final: no later (or earlier) subscriber can clear it or
 *   replace its error, and holds do not delay it;
 * - holds accumulate: the dial waits for every held promise, and any one
 *   rejecting fails the dial with that reason;
 * - nothing marks a dial allowed: a dial goes ahead only when nobody denied
 *   and every hold resolved.
 * The verdict's state lives in a closure that only MeshNode.dial reads, and
 * the message and verdict are frozen, so a subscriber can neither swap the
 * verdict another subscriber sees nor read back a way to allow.
 *
 * diagnostics_channel names are process-wide, so a second copy of meshguard
 * in the same process (a nested install) publishes on the same channel and
 * its dials are judged by the guard the first copy installed.
 *
 * A subscriber must not throw: diagnostics_channel reports a subscriber's
 * exception on `uncaughtException` instead of to the publisher, so the dial
 * would not see it. Catch and call `deny(err)` instead.
 */

import dc from "node:diagnostics_channel";
import type net from "node:net";
import { ErrorCode, MeshguardError } from "./errors.js";

/** DIAL_CHANNEL is the diagnostics_channel name MeshNode.dial publishes on. */
export const DIAL_CHANNEL = "meshguard:tailnet:dial";

/** DialVerdict is what a subscriber may do to a dial: refuse it, or make it wait. */
export interface DialVerdict {
  /** deny refuses the dial with `error` (the first deny wins; later calls are ignored). */
  deny(error: unknown): void;
  /** hold makes the dial wait for `promise`; a rejection fails the dial with its reason. */
  hold(promise: PromiseLike<unknown>): void;
  /** denied tells whether some subscriber has denied the dial. */
  readonly denied: boolean;
}

/** DialMessage is published once per MeshNode.dial, before any connection is made. */
export interface DialMessage {
  /** The dialing node (a MeshNode: its netmap names the peer behind `host`). */
  readonly node: { readonly hostname: string };
  /** The host as passed to dial: a MagicDNS name (short or full) or a tailnet IP. */
  readonly host: string;
  readonly port: number;
  readonly verdict: DialVerdict;
}

const channel = dc.channel(DIAL_CHANNEL);

/**
 * judgeDial publishes a dial and returns undefined when it may go ahead at
 * once, or a Promise that resolves when it may go ahead after the holds. It
 * throws (or the Promise rejects with) the deny's error.
 */
export function judgeDial(node: { readonly hostname: string }, host: string, port: number): undefined | Promise<void> {
  // Nobody listening (no guard installed): nothing to build or publish.
  if (!channel.hasSubscribers) return undefined;
  let denial: { error: Error } | undefined;
  const holds: PromiseLike<unknown>[] = [];
  let sealed = false;
  let onDeny: ((err: Error) => void) | undefined;
  const tooLate = (what: string) =>
    new MeshguardError(ErrorCode.INTERNAL, `meshguard:tailnet:dial: ${what} after the dial to ${host}:${port} was decided`, {
      hint: "a subscriber that needs time must call verdict.hold(promise) while the message is published",
    });
  const verdict: DialVerdict = Object.freeze({
    deny(error: unknown): void {
      if (sealed) throw tooLate("deny()");
      if (denial !== undefined) return;
      denial = { error: asError(error, host, port) };
      onDeny?.(denial.error);
    },
    hold(promise: PromiseLike<unknown>): void {
      if (sealed) throw tooLate("hold()");
      if (promise === null || typeof (promise as { then?: unknown })?.then !== "function") {
        throw new MeshguardError(ErrorCode.INVALID_OPTIONS, "meshguard:tailnet:dial: hold() takes a promise");
      }
      holds.push(promise);
    },
    get denied(): boolean {
      return denial !== undefined;
    },
  });
  const message: DialMessage = Object.freeze({ node, host, port, verdict });
  channel.publish(message);
  if (denial !== undefined) {
    sealed = true;
    throw denial.error;
  }
  if (holds.length === 0) {
    sealed = true;
    return undefined;
  }
  return new Promise<void>((resolve, reject) => {
    const settle = (err: Error | undefined) => {
      if (sealed) return;
      sealed = true;
      if (err !== undefined) reject(err);
      else resolve();
    };
    // A deny during the wait ends it at once; holds that arrive while
    // waiting (from a subscriber's own continuation) are waited for too.
    onDeny = (err) => settle(err);
    const waitAll = async (from: number): Promise<void> => {
      const batch = holds.slice(from);
      await Promise.all(batch);
      if (holds.length > from + batch.length) return waitAll(from + batch.length);
    };
    waitAll(0).then(
      () => settle(denial?.error),
      (err: unknown) => settle(denial?.error ?? asError(err, host, port)),
    );
  });
}

function asError(e: unknown, host: string, port: number): Error {
  if (e instanceof Error) return e;
  return new MeshguardError(ErrorCode.POLICY_DENIED, `the dial to ${host}:${port} was refused: ${String(e)}`);
}

/**
 * CONNECTION_CHANNEL carries each tailnet connection MeshNode.dial opened,
 * once it is open, so that whoever judged the dial (the guard) can keep
 * judging it: when the policy in force stops allowing the peer, the guard
 * closes the connection instead of only refusing new dials.
 */
export const CONNECTION_CHANNEL = "meshguard:tailnet:connection";

/** ConnectionMessage is published once per successful MeshNode.dial. */
export interface ConnectionMessage {
  readonly node: { readonly hostname: string };
  readonly host: string;
  readonly port: number;
  readonly socket: net.Socket;
}

const connections = dc.channel(CONNECTION_CHANNEL);

/** announceConnection publishes an open tailnet connection (nothing is built when nobody listens). */
export function announceConnection(node: { readonly hostname: string }, host: string, port: number, socket: net.Socket): void {
  if (!connections.hasSubscribers) return;
  connections.publish(Object.freeze({ node, host, port, socket }));
}
