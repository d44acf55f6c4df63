/**
 * Revocation that holds: the guard keeps judging the connections it let
 * open as raw TCP/TLS — tailnet connections of MeshNode.dial, and host
 * connections judged as `tcp` targets (not those carrying HTTP requests,
 * each judged on its own). When the policy in force changes (setPolicy, a
 * reload) every open connection is judged again, and one the new policy no
 * longer allows is closed at once — for the tailnet, the guard does not rely
 * on the control server trimming the peer (which can fail: docs/revocation.md).
 *
 * Re-judging spends no rate tokens (a connection already counted when it was
 * dialed) and asks no human: an approve rule keeps a connection that was
 * approved when it was made; only a deny closes it.
 */

import type net from "node:net";
import type { Decision, TcpTarget } from "../policy/types.js";
import type { GuardCore } from "./core.js";

/** An evaluator that can decide without side effects (a loaded Policy can: explain spends no rate tokens). */
interface Peeking {
  explain?(req: { principal: GuardCore["principal"]; target: TcpTarget }): { decision: Decision };
}

export class ConnectionTracker {
  private readonly open = new Map<net.Socket, TcpTarget>();

  /** add follows one connection until it closes. */
  add(socket: net.Socket, target: TcpTarget): void {
    if (socket.destroyed) return;
    this.open.set(socket, target);
    socket.once("close", () => this.open.delete(socket));
  }

  /** size is the number of connections followed. */
  get size(): number {
    return this.open.size;
  }

  /**
   * recheck judges every followed connection under the policy in force and
   * closes those it denies (in observe mode it only records). Returns how
   * many were closed. Never throws.
   */
  recheck(core: GuardCore): number {
    let closed = 0;
    for (const [socket, target] of this.open) {
      const d = peek(core, target);
      if (d.effect !== "deny") continue;
      const err = core.revoke(target, d);
      if (err === undefined) continue; // observe mode: recorded, left open
      this.open.delete(socket);
      socket.destroy(err);
      closed++;
    }
    return closed;
  }

  clear(): void {
    this.open.clear();
  }
}

function peek(core: GuardCore, target: TcpTarget): Decision {
  const ev = core.evaluator as (Peeking & { evaluate(r: unknown): Decision }) | undefined;
  if (ev === undefined) return { effect: "deny", reason: "no policy is loaded (the guard fails closed)" };
  try {
    const req = { principal: core.principal, target };
    const d = typeof ev.explain === "function" ? ev.explain(req).decision : ev.evaluate(req);
    if (d && (d.effect === "allow" || d.effect === "deny" || d.effect === "approve")) return d;
    return { effect: "deny", reason: "the policy evaluator returned no valid decision (the guard fails closed)" };
  } catch (err) {
    return { effect: "deny", reason: `the policy evaluator failed (the guard fails closed): ${(err as Error)?.message ?? String(err)}` };
  }
}

/** The raw host-network TCP/TLS connections the guard allowed (net.ts follows them). */
export const hostConnections = new ConnectionTracker();
