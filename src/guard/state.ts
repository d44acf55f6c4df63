/**
 * The one guard of this process.
 *
 * The GuardCore in force lives in this module only: interception points
 * read `current()` on every call, and nothing outside the guard's own
 * modules can reach it, swap its evaluator or mark a call as checked.
 *
 * One value is process-wide, on a global symbol: a frozen registry that
 * says whether a guard is installed, so that a second copy of meshguard in
 * the process (a nested install) refuses to install its own patches on top
 * of the first copy's. It holds no guard state, no evaluator and no way to
 * let a call through: `claim` hands the installing copy an unforgeable
 * token, and only that token releases the slot. Whoever defines the
 * registry first (the first copy to load) owns its closure; the property is
 * read-only and not configurable, so it cannot be replaced afterwards.
 */

import type { GuardCore } from "./core.js";

let core: GuardCore | undefined;

export function current(): GuardCore | undefined {
  return core;
}

export function setCurrent(c: GuardCore | undefined): void {
  core = c;
}

/** The process-wide registry of installed guards (at most one). */
interface Registry {
  readonly version: 1;
  /** installed tells whether some copy of meshguard has a guard installed. */
  installed(): boolean;
  /** claim takes the slot: a token to release it with, or undefined when a guard is already installed. */
  claim(): object | undefined;
  /** release frees the slot when `token` is the one claim returned (anything else is ignored). */
  release(token: object): void;
}

const KEY = Symbol.for("meshguard.guard.registry");

function makeRegistry(): Registry {
  let held: object | undefined;
  return Object.freeze({
    version: 1 as const,
    installed: Object.freeze(() => held !== undefined),
    claim: Object.freeze(() => {
      if (held !== undefined) return undefined;
      held = Object.freeze({});
      return held;
    }),
    release: Object.freeze((token: object) => {
      if (token !== undefined && token === held) held = undefined;
    }),
  });
}

/** isRegistry checks a value found on the global symbol (it may have been put there by anything). */
function isRegistry(v: unknown): v is Registry {
  try {
    const r = v as Registry;
    return typeof v === "object" && v !== null && Object.isFrozen(v) && r.version === 1 && typeof r.installed === "function" && typeof r.claim === "function" && typeof r.release === "function";
  } catch {
    return false;
  }
}

function registry(): Registry {
  const g = globalThis as unknown as Record<symbol, unknown>;
  const found = g[KEY];
  if (isRegistry(found)) return found;
  const mine = makeRegistry();
  try {
    Object.defineProperty(globalThis, KEY, { value: mine, writable: false, enumerable: false, configurable: false });
  } catch {
    // Something unusable holds the name and cannot be replaced: this copy keeps its own slot.
  }
  return mine;
}

/** claimProcess takes the process-wide slot for a guard this copy installs; undefined when one is installed already. */
export function claimProcess(): object | undefined {
  return registry().claim();
}

/** releaseProcess frees the slot taken with claimProcess. */
export function releaseProcess(token: object): void {
  registry().release(token);
}

/** guardInstalled tells whether a guard is installed in this process, by this or any other copy of meshguard. */
export function guardInstalled(): boolean {
  return registry().installed();
}
