/**
 * Whois answers remembered per connection, for the issuer (who asks for a
 * token) and the verifier (whom a token must be bound to): the look-up
 * (~0.3-0.6 ms, a call into the Go core) was most of an issue's time, and an
 * agent sends its requests over keep-alive connections.
 *
 * Invariants: an answer belongs to one socket object and dies with it (a
 * WeakMap keyed on the socket, the entry dropped on "close"); never keyed by
 * address, since a tailnet address and port are reused by another node's
 * later connection. A failed look-up is not remembered. An answer older
 * than WHOIS_MAX_AGE_MS is asked again, so a node retagged in the tailnet
 * policy is known by its new tags within that time even on a long-lived
 * connection.
 */

import type net from "node:net";

/** How long one connection's whois answer is trusted (ms). */
export const WHOIS_MAX_AGE_MS = 10_000;

interface Entry<W> {
  at: number;
  answer: Promise<W>;
}

/** WhoisCache answers `lookup(socket)` once per connection (and per WHOIS_MAX_AGE_MS). */
export class WhoisCache<W> {
  private readonly bySocket = new WeakMap<net.Socket, Entry<W>>();
  /** Sockets with a "close" listener already: one each, however often the look-up is repeated. */
  private readonly watched = new WeakSet<net.Socket>();
  private readonly lookup: (socket: net.Socket) => Promise<W>;
  private readonly now: () => number;

  /** `lookup` is whois (and whatever the side makes of its answer); `now` is epoch milliseconds. */
  constructor(
    lookup: (socket: net.Socket) => Promise<W>,
    now: () => number = Date.now,
  ) {
    this.lookup = lookup;
    this.now = now;
  }

  /** of resolves the caller behind the socket; rejects as the look-up does. */
  of(socket: net.Socket): Promise<W> {
    const t = this.now();
    const hit = this.bySocket.get(socket);
    if (hit !== undefined && t - hit.at < WHOIS_MAX_AGE_MS) return hit.answer;
    const answer = this.lookup(socket);
    const entry: Entry<W> = { at: t, answer };
    if (!this.watched.has(socket)) {
      this.watched.add(socket);
      socket.once("close", () => this.bySocket.delete(socket));
    }
    this.bySocket.set(socket, entry);
    answer.catch(() => {
      if (this.bySocket.get(socket) === entry) this.bySocket.delete(socket);
    });
    return answer;
  }
}
