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
import type { PolicyDeniedError } from "./errors.js";
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

/**
 * An LLM SDK request in flight (one attempt of the client's `makeRequest`,
 * sdk.ts) and the first policy denial made in its async context. The SDK
 * catches a failed fetch and retries it as a connection error; knowing that
 * the attempt failed because the guard refused it, the SDK layer stops the
 * retry and hands the caller the PolicyDeniedError itself — whichever layer
 * below refused (the SDK-layer check, the fetch dispatcher, a tailnet dial),
 * and however many async wrappers sit between the SDK's retry loop and fetch.
 */
export interface SdkAttempt {
  denied: PolicyDeniedError | undefined;
}

const attempts = new AsyncLocalStorage<SdkAttempt>();

export function runAttempt<T>(attempt: SdkAttempt, fn: () => T): T {
  return attempts.run(attempt, fn);
}

/** attemptDenied is the denial of the SDK attempt running in this async context, if any. */
export function attemptDenied(): PolicyDeniedError | undefined {
  return attempts.getStore()?.denied;
}

/** noteDenied records a denial made in an SDK attempt's async context (the first one counts). Cheap when no SDK call is in flight. */
export function noteDenied(err: PolicyDeniedError): void {
  const a = attempts.getStore();
  if (a !== undefined) a.denied ??= err;
}
