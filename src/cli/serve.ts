/**
 * The life of a gateway command (`gateway`, `db-gateway`): start the
 * gateway (joining the local tailnet of `meshguard dev` with --dev), report
 * it ready, run until SIGINT or SIGTERM, close. A signal before it is ready
 * ends the command with STOPPED_EARLY.
 */

import type { Context } from "./command.js";
import { readDevState } from "./dev-state.js";

/** STOPPED_EARLY is the status when a signal stops the gateway before it is ready (128 + SIGINT). */
export const STOPPED_EARLY = 130;

export interface Served {
  close(): Promise<void>;
}

/** serveUntilStopped runs `start` (with the dev tailnet's settings under --dev), then `ready`, and closes on a signal. */
export async function serveUntilStopped<H extends Served>(
  ctx: Context,
  devHostname: string,
  start: (tailnet: { controlUrl: string; authKey: string; hostname: string; ephemeral: true } | undefined) => Promise<H>,
  ready: (h: H) => void,
  stopping: string,
): Promise<number> {
  const stop = ctx.stopper();
  let h: H | undefined;
  try {
    const devState = ctx.flag("dev") ? readDevState() : undefined;
    if (devState) ctx.progress(`joining the local tailnet of meshguard dev (pid ${devState.pid}) at ${devState.controlUrl}`);
    h = await start(devState ? { controlUrl: devState.controlUrl, authKey: devState.authKey, hostname: devHostname, ephemeral: true } : undefined);
    if (stop.reason) return STOPPED_EARLY;
    ready(h);
    ctx.progress(`stopping (${await stop.stopped}): ${stopping}...`);
    await h.close();
    return 0;
  } catch (err) {
    if (stop.reason && !h) return STOPPED_EARLY;
    throw err;
  } finally {
    await h?.close();
  }
}
