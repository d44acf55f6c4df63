/**
 * Whois answers remembered per connection: the look-up (~0.4 ms, a call
 * into the Go core) was most of an issue's time, and an agent sends its
 * token requests over one keep-alive connection.
 *
 * Invariants: an answer belongs to one socket object and dies with it (a
 * WeakMap keyed on the socket, the entry dropped on "close"); never keyed by
 * address, since a tailnet address and port are reused by another node's
 * later connection. A failed look-up is not remembered. An answer older
 * than MAX_AGE_MS is asked again, so a node retagged in the tailnet policy
 * is known by its new tags within that time even on a long-lived connection.
 */

import type net from "node:net";
import type { MeshNode } from "../node.js";
import { callerOf, type Caller } from "./caller.js";

/** How long one connection's whois answer is trusted (ms). */
export const CALLER_MAX_AGE_MS = 10_000;

interface Entry {
  at: number;
  caller: Promise<Caller>;
}

/** CallerCache looks up the caller behind a tailnet connection, once per connection (and per CALLER_MAX_AGE_MS). */
export class CallerCache {
  private readonly bySocket = new WeakMap<net.Socket, Entry>();
  /** Sockets with a "close" listener already: one each, however often the look-up is repeated. */
  private readonly watched = new WeakSet<net.Socket>();

  constructor(
    private readonly node: Pick<MeshNode, "whois">,
    private readonly now: () => number = Date.now,
  ) {}

  /** callerOf resolves the socket's caller; rejects as whois does. */
  callerOf(socket: net.Socket): Promise<Caller> {
    const t = this.now();
    const hit = this.bySocket.get(socket);
    if (hit !== undefined && t - hit.at < CALLER_MAX_AGE_MS) return hit.caller;
    const caller = this.node.whois(socket).then(callerOf);
    const entry: Entry = { at: t, caller };
    if (!this.watched.has(socket)) {
      this.watched.add(socket);
      socket.once("close", () => this.bySocket.delete(socket));
    }
    this.bySocket.set(socket, entry);
    caller.catch(() => {
      if (this.bySocket.get(socket) === entry) this.bySocket.delete(socket);
    });
    return caller;
  }
}
