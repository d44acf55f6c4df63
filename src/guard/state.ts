/**
 * The one guard of this process. Interception points read `current()` on
 * every call; patches stay in place but do nothing when it is undefined.
 * Kept on a global symbol so that two copies of meshguard in one process
 * (a nested install) share one guard instead of stacking patches.
 */

import type { GuardCore } from "./core.js";

const KEY = Symbol.for("meshguard.guard.state");

interface State {
  core: GuardCore | undefined;
  /** The HTTP client connection undici is about to open (set by its beforeConnect channel, read by the connect patch). */
  undiciConnect: { host: string; port: number } | undefined;
}

const g = globalThis as unknown as Record<symbol, State | undefined>;
const state: State = (g[KEY] ??= { core: undefined, undiciConnect: undefined });

export function current(): GuardCore | undefined {
  return state.core;
}

export function setCurrent(core: GuardCore | undefined): void {
  state.core = core;
}

export const shared = state;
