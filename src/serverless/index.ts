/**
 * meshguard/serverless: a tailnet node for a function (AWS Lambda, Google
 * Cloud Functions, Vercel's Node functions, a container that serves
 * invocations). The node comes up on the first invocation of a warm
 * instance, every later invocation reuses it, and it is logged out and
 * closed when the instance shuts down (SIGTERM, or the event loop running
 * out). docs/wasm.md, "Serverless".
 *
 *   import { handler } from "meshguard/serverless";
 *   export const main = handler({ controlUrl, authKey, hostname: "fn" }, async (event, node) => {
 *     const res = await node.fetch("http://tools/search?q=" + event.q);
 *     return { statusCode: res.status, body: await res.text() };
 *   });
 *
 * Defaults differ from MeshNode.start where a function's life differs from
 * a server's: the node is ephemeral (gone from the tailnet when the instance
 * is), its state is in memory (memoryStateStore: no disk a function could
 * keep), and it serves no control socket. Each can be set.
 */

import { z } from "zod";
import { parseWith, resolveStartOptions, type StartOptions } from "../config.js";
import { ErrorCode, MeshguardError } from "../errors.js";
import { MeshNode } from "../node.js";
import { memoryStateStore } from "../state-store.js";

/** HandlerOptions are MeshNode.start's options with the serverless defaults, and the signals that end the instance. */
export type HandlerOptions = StartOptions & {
  /** Signals on which the node is logged out and closed, then the signal's default action runs (when nothing else listens). Default ["SIGTERM"]. */
  closeOn?: NodeJS.Signals[];
};

/** A function-style handler with its node: `node()` brings it up (or returns the warm one), `close()` ends it. */
export type Handler<E, A extends unknown[], R> = ((event: E, ...rest: A) => Promise<Awaited<R>>) & {
  /** node returns this instance's node, starting it on first use. */
  node(): Promise<MeshNode>;
  /** close logs out (ephemeral) and closes the node; the next invocation starts a new one. */
  close(): Promise<void>;
};

const SignalsSchema = z.object({ closeOn: z.array(z.string().regex(/^SIG[A-Z0-9]+$/, 'must be a signal name such as "SIGTERM"')).default(["SIGTERM"]) });

/**
 * handler wraps `fn` so that each invocation gets this instance's node.
 * `opts` may be a function (called at the first invocation: read the
 * environment there). A start that fails rejects that invocation and the
 * next one tries again; concurrent first invocations share one start.
 */
export function handler<E, A extends unknown[], R>(opts: HandlerOptions | (() => HandlerOptions), fn: (event: E, node: MeshNode, ...rest: A) => R): Handler<E, A, R> {
  if (typeof fn !== "function") throw new MeshguardError(ErrorCode.INVALID_OPTIONS, "handler: the second argument must be a function (event, node) => result");
  if (typeof opts !== "function") resolve(opts); // a wrong option fails at load time, not at the first invocation
  let starting: Promise<MeshNode> | undefined;
  let ending: (() => void) | undefined;

  const node = (): Promise<MeshNode> => {
    starting ??= (async () => {
      const { closeOn, start } = resolve(typeof opts === "function" ? opts() : opts);
      const n = await MeshNode.start(start);
      // The instance's life is the platform's: an idle node does not hold it.
      n.unref();
      ending = watchShutdown(closeOn, close);
      return n;
    })().catch((err: unknown) => {
      starting = undefined;
      throw err;
    });
    return starting;
  };

  const close = async (): Promise<void> => {
    const p = starting;
    starting = undefined;
    ending?.();
    ending = undefined;
    const n = await p?.catch(() => undefined);
    await n?.close();
  };

  const run = async (event: E, ...rest: A): Promise<Awaited<R>> => (await fn(event, await node(), ...rest)) as Awaited<R>;
  return Object.assign(run, { node, close });
}

function resolve(o: HandlerOptions): { closeOn: NodeJS.Signals[]; start: StartOptions } {
  if (typeof o !== "object" || o === null) throw new MeshguardError(ErrorCode.INVALID_OPTIONS, "handler: options must be an object (or a function returning one) with MeshNode.start's options");
  const { closeOn, ...rest } = o;
  const signals = parseWith(SignalsSchema, { closeOn }, "handler options").closeOn as NodeJS.Signals[];
  const start: StartOptions = { ephemeral: true, controlSocket: false, ...rest };
  if (start.state === undefined && start.dir === undefined) start.state = memoryStateStore();
  resolveStartOptions(start); // validated here, with MeshNode.start's messages
  return { closeOn: signals, start };
}

/**
 * watchShutdown closes the node on the signals and when the event loop runs
 * out (beforeExit). After a signal, when no other listener handles it, the
 * signal's default action runs again (the process ends as it would have).
 * Returns the function that stops watching.
 */
function watchShutdown(signals: NodeJS.Signals[], close: () => Promise<void>): () => void {
  const onSignal = (sig: NodeJS.Signals) => {
    stop();
    void close()
      .catch((err: unknown) => process.emitWarning(`meshguard handler: closing the node on ${sig} failed: ${(err as Error)?.message ?? String(err)}`, { code: ErrorCode.INTERNAL }))
      .finally(() => {
        if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
      });
  };
  const onBeforeExit = () => {
    stop();
    void close().catch(() => {});
  };
  const stop = () => {
    for (const s of signals) process.off(s, onSignal);
    process.off("beforeExit", onBeforeExit);
  };
  for (const s of signals) process.on(s, onSignal);
  process.on("beforeExit", onBeforeExit);
  return stop;
}
