/**
 * The library's own worker threads (the wasm core's, wasm/worker.mjs) are
 * not the agent's: they run only meshguard's code, and every byte they send
 * (control, DERP, the core's HTTP) is the library's own traffic. The backend
 * starts such a thread inside `ownThread`; the guard's Worker constructor
 * (src/guard/worker.ts, through src/guard/internal.ts) asks
 * `isOwnThreadStart` and starts it as it is, without the guard's preload.
 *
 * Below both layers (backend, guard), so neither imports the other. The mark
 * is private to this module (the expected file, set only for
 * the synchronous `new Worker` call), like the guard's internal path: it
 * keeps an agent from starting unguarded workers by accident, not hostile
 * code already in the process.
 */

import { fileURLToPath } from "node:url";

let expected: string | undefined;

/** ownThread runs `start` (which constructs the Worker for `file`) as the library's own thread start. */
export function ownThread<T>(file: string, start: () => T): T {
  const prev = expected;
  expected = file;
  try {
    return start();
  } finally {
    expected = prev;
  }
}

/** isOwnThreadStart is true while the library itself constructs a Worker for exactly this file. */
export function isOwnThreadStart(file: unknown): boolean {
  if (expected === undefined) return false;
  const f = file instanceof URL ? (file.protocol === "file:" ? fileURLToPath(file) : file.href) : String(file);
  return f === expected;
}
