/**
 * connect: a node for clients that are not nodes. It joins the tailnet as
 * its own node and carries each local connection of each forward to a
 * tailnet service with `node.dial`, so the service sees this node's
 * identity (its tags, its owners) whoever the local client is — a coding
 * CLI, curl, a browser, a Python program.
 *
 * The local listeners are bound before the node joins: a port in use or a
 * bad address fails at once rather than after the join, and connections
 * that arrive while the node is joining wait for it.
 */

import { ErrorCode, MeshguardError } from "../errors.js";
import { MeshNode } from "../node.js";
import { formatHostPort, isLoopback } from "./address.js";
import { Forward, type ForwardInfo } from "./forward.js";
import { resolveConnectOptions, type ConnectOptions } from "./options.js";

/** Connection is a running connect(): its forwards, its node, and close(). */
export interface Connection {
  readonly forwards: ForwardInfo[];
  /** The node the forwarded connections come from (its identity is theirs). */
  readonly node: MeshNode;
  /** How many local connections are open now, over every forward. */
  connections(): number;
  /** Stops the listeners, destroys open connections and closes the node (an ephemeral one leaves the tailnet at once). Idempotent. */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/**
 * connect starts a node and its forwards and resolves once the node is
 * online and every listener is bound. Options are validated first
 * (MESHGUARD_INVALID_OPTIONS naming the field); a listener that cannot be
 * bound is MESHGUARD_LISTEN_FAILED; the node's start errors are
 * MeshNode.start's. On any failure everything already started is closed.
 */
export async function connect(options: ConnectOptions): Promise<Connection> {
  const o = resolveConnectOptions(options);
  let node: MeshNode | undefined;
  let resolveNode!: (n: MeshNode) => void;
  let rejectNode!: (e: unknown) => void;
  const ready = new Promise<MeshNode>((res, rej) => ((resolveNode = res), (rejectNode = rej)));
  ready.catch(() => {}); // connections waiting on a failed start fail with it; the start's caller gets the error
  const dial = async (host: string, port: number) => (await ready).dial(host, port, { allowHalfOpen: true, timeoutMs: o.dialTimeoutMs });
  const forwards = o.forwards.map((spec) => new Forward(spec, dial, o.log));
  try {
    for (const f of forwards) await f.listen();
    for (const { listen, target } of forwards.map((f) => f.info())) {
      if (isLoopback(listen.host)) continue;
      o.log(`warning: ${formatHostPort(listen.host, listen.port)} -> ${target} listens beyond loopback (allowNonLoopback): anyone who can reach that address uses the tailnet as this node`);
    }
    node = await MeshNode.start({
      controlUrl: o.controlUrl,
      hostname: o.hostname,
      ephemeral: o.ephemeral,
      ...(o.authKey !== undefined ? { authKey: o.authKey } : {}),
      ...(o.dir !== undefined ? { dir: o.dir } : {}),
      ...(o.timeoutMs !== undefined ? { timeoutMs: o.timeoutMs } : {}),
      ...(o.onProgress ? { onProgress: o.onProgress } : {}),
      ...(o.signal ? { signal: o.signal } : {}),
    });
    // MeshNode.start misses an abort that comes while it loads the core; an
    // aborted connect must not hand out a running node all the same.
    if (o.signal?.aborted) throw new MeshguardError(ErrorCode.CLOSED, "connect was aborted", { cause: o.signal.reason });
    resolveNode(node);
  } catch (err) {
    rejectNode(err);
    await Promise.all(forwards.map((f) => f.close()));
    await node?.close();
    throw err;
  }
  const n = node;
  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= (async () => {
      await Promise.all(forwards.map((f) => f.close()));
      await n.close();
    })());
  return {
    forwards: forwards.map((f) => f.info()),
    node: n,
    connections: () => forwards.reduce((sum, f) => sum + f.connections, 0),
    close,
    [Symbol.asyncDispose]: close,
  };
}
