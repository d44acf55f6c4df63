/**
 * One webhook call: a JSON POST with a deadline that covers connecting,
 * the answer's headers and its whole body (a hook that sends headers and
 * then stalls times out like one that never answers).
 *
 * Every way a call can fail becomes a HookFailedError whose `failure` says
 * which (timeout, unreachable, status, malformed); its message names the
 * hook but never its URL or answer body, since a fail-closed hook's message
 * is what the client is told.
 */

import { ErrorCode, MeshguardError } from "../../errors.js";

/** "alert": an alert webhook (src/gateway/obs/alerts), delivered by the usage hooks' queue. */
export type HookPhase = "pre" | "post" | "usage" | "alert";
export type HookFailure = "timeout" | "unreachable" | "status" | "malformed" | "dropped";

/** HookFailedError is a webhook that could not be used; `hook` names it. */
export class HookFailedError extends MeshguardError {
  readonly hook: string;
  readonly phase: HookPhase;
  readonly failure: HookFailure;
  /** The hook's HTTP status, when it answered one that is not 2xx. */
  readonly status?: number;

  constructor(hook: string, phase: HookPhase, failure: HookFailure, message: string, opts: { status?: number; cause?: unknown } = {}) {
    super(ErrorCode.HOOK_FAILED, message, { cause: opts.cause });
    this.name = "HookFailedError";
    this.hook = hook;
    this.phase = phase;
    this.failure = failure;
    if (opts.status !== undefined) this.status = opts.status;
  }
}

/** A hook answer larger than this is refused (a modified request body with images fits). */
export const MAX_ANSWER_BYTES = 32 * 1024 * 1024;

export interface HookTarget {
  name: string;
  phase: HookPhase;
  url: string;
  /** Configured headers, env:NAME values already resolved, names lowercase. */
  headers: Record<string, string>;
  timeoutMs: number;
  /** false: any 2xx answer will do and its body is not read (a Slack webhook answers "ok", not JSON). */
  answer?: boolean;
}

export type FetchFn = typeof fetch;

/**
 * callHook POSTs `payload` (JSON text) to the hook and resolves with its
 * parsed JSON answer when it answered 2xx, or with `undefined` for a 2xx
 * with an empty body (usage hooks need no answer). `signal` cancels the call
 * from outside (the runner closing); that is reported as a timeout.
 */
export async function callHook(fetchFn: FetchFn, t: HookTarget, payload: string, extraHeaders: Record<string, string>, signal?: AbortSignal): Promise<unknown> {
  const ac = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    ac.abort();
  }, t.timeoutMs);
  const onOuterAbort = () => ac.abort();
  signal?.addEventListener("abort", onOuterAbort, { once: true });
  const fail = (failure: HookFailure, what: string, opts: { status?: number; cause?: unknown } = {}) =>
    new HookFailedError(t.name, t.phase, failure, `${t.phase} hook "${t.name}" ${what}`, opts);
  const timeoutError = (cause?: unknown) => fail("timeout", timedOut ? `did not answer within ${t.timeoutMs} ms` : "was cancelled (the gateway is closing)", { cause });
  try {
    let res: Response;
    try {
      res = await fetchFn(t.url, {
        method: "POST",
        headers: { ...t.headers, ...extraHeaders, "content-type": "application/json", accept: "application/json" },
        body: payload,
        signal: ac.signal,
        // A redirect would carry the hook's credentials elsewhere: it is an answer like any non-2xx.
        redirect: "manual",
      });
    } catch (err) {
      if (ac.signal.aborted) throw timeoutError(err);
      throw fail("unreachable", `could not be reached (${causeCode(err)})`, { cause: err });
    }
    if (res.status < 200 || res.status > 299) {
      await res.body?.cancel().catch(() => {});
      throw fail("status", `answered HTTP ${res.status}`, { status: res.status });
    }
    if (t.answer === false) {
      await res.body?.cancel().catch(() => {});
      return undefined;
    }
    let text: string;
    try {
      text = await readCapped(res);
    } catch (err) {
      if (err instanceof HookFailedError) throw err;
      if (ac.signal.aborted) throw timeoutError(err);
      throw fail("unreachable", `broke off its answer (${causeCode(err)})`, { cause: err });
    }
    if (text.trim() === "") return undefined;
    try {
      return JSON.parse(text);
    } catch (err) {
      throw fail("malformed", "answered something that is not JSON", { cause: err });
    }

    async function readCapped(r: Response): Promise<string> {
      if (!r.body) return "";
      const chunks: Uint8Array[] = [];
      let size = 0;
      const reader = r.body.getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        size += value.byteLength;
        if (size > MAX_ANSWER_BYTES) {
          await reader.cancel().catch(() => {});
          throw fail("malformed", `answered more than ${MAX_ANSWER_BYTES / 1024 / 1024} MiB`);
        }
        chunks.push(value);
      }
      return Buffer.concat(chunks).toString("utf8");
    }
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener("abort", onOuterAbort);
  }
}

/** causeCode digs the system error code (ECONNREFUSED, ...) out of fetch's "fetch failed". */
function causeCode(err: unknown): string {
  for (let e: unknown = err, i = 0; e && i < 5; e = (e as { cause?: unknown }).cause, i++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string" && code !== "") return code;
  }
  return err instanceof Error ? err.message : String(err);
}
