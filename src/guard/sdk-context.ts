/**
 * An SDK call the guard already decided at the SDK layer (sdk.ts) goes on
 * to fetch; the dispatcher must not decide it again (a second approval
 * prompt, a second audit event, a second rate-limit token). The SDK layer
 * runs the fetch inside this context naming the one request it decided and
 * the policy that decided it; the dispatcher skips exactly that request,
 * once, and only while that policy is still in force (a grant made under a
 * policy that setPolicy replaced is not used). Redirect hops and any other
 * request in the same async context are checked as usual.
 */

import { AsyncLocalStorage } from "node:async_hooks";
import { current } from "./state.js";
import { splitPathQuery } from "./targets.js";

interface Decided {
  scheme: string;
  host: string;
  port: number;
  method: string;
  path: string;
  /** The evaluator that decided (compared by identity with the one in force). */
  policy: unknown;
  used: boolean;
}

const als = new AsyncLocalStorage<Decided>();

export function runDecided<T>(d: Omit<Decided, "used" | "policy">, policy: unknown, fn: () => T): T {
  return als.run({ ...d, policy, used: false }, fn);
}

export function skipHttpCheck(scheme: string, host: string, port: number, method: string, rawPath: string): boolean {
  const d = als.getStore();
  if (d === undefined || d.used) return false;
  if (d.scheme !== scheme || d.host !== host || d.port !== port || d.method !== method || d.path !== splitPathQuery(rawPath)[0]) return false;
  d.used = true;
  const core = current();
  return core !== undefined && core.evaluator === d.policy;
}
