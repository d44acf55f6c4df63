/**
 * The hook MeshNode.dial calls before opening a tailnet connection. Kept
 * apart from the rest of the guard so that node.ts loads nothing more than
 * this small file when no guard is installed.
 */

import { AsyncLocalStorage } from "node:async_hooks";

/** A dial check: undefined to go on, a Promise to wait for (approval), or a throw (PolicyDeniedError). */
export type DialGuard = (node: { hostname: string }, host: string, port: number) => undefined | Promise<void>;

// On a global symbol: a MeshNode from a second copy of the package (a nested
// install) is still checked by the guard the first copy installed.
const KEY = Symbol.for("meshguard.guard.dial");
const slot = globalThis as unknown as Record<symbol, { fn: DialGuard | undefined; internal: AsyncLocalStorage<true> } | undefined>;
const hook = (slot[KEY] ??= { fn: undefined, internal: new AsyncLocalStorage<true>() });
const internal = hook.internal;

/** setDialGuard installs (or, with undefined, removes) the check MeshNode.dial runs first. */
export function setDialGuard(fn: DialGuard | undefined): void {
  hook.fn = fn;
}

/** checkDial is what MeshNode.dial calls. */
export function checkDial(node: { hostname: string }, host: string, port: number): undefined | Promise<void> {
  const fn = hook.fn;
  if (fn === undefined || internal.getStore() === true) return undefined;
  return fn(node, host, port);
}

/** withoutDialGuard runs the guard's own tailnet calls (policy server polls) outside the check. */
export function withoutDialGuard<T>(fn: () => T): T {
  return internal.run(true, fn);
}
