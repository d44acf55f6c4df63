/**
 * Guardrail and usage webhooks of the gateway (issue 8 item 6): the
 * HookRunner of src/gateway/types.ts over the config's `hooks` section.
 * The wire format — what each hook is sent and may answer — is in
 * docs/gateway-hooks.md.
 *
 * Hook calls are the gateway's own outbound calls: they go through the
 * global fetch (looked up per call, so a guard installed later applies),
 * which the gateway's self-guard lets reach the configured hook URLs
 * (hookUrls).
 */

import type { HookRequest, HookRunner, PostHookResult, PreHookResult, UsageEvent } from "./types.js";
import type { FetchFn, HookFailedError } from "./hooks/call.js";
import { compileChainHook, runPost, runPre, type OnError } from "./hooks/chain.js";
import { parseHooksConfig, type HooksConfig } from "./hooks/config.js";
import { serializeUsage, UsageSink } from "./hooks/usage.js";

export { HookFailedError, type HookFailure, type HookPhase } from "./hooks/call.js";
export { DEFAULT_HOOK_TIMEOUT_MS, HookDefSchema, HooksConfigSchema, hookUrls, parseHooksConfig, UsageHookDefSchema } from "./hooks/config.js";
export type { HookDef, HooksConfig, ResolvedHooksConfig, UsageHookDef } from "./hooks/config.js";

export interface HookRunnerOptions {
  /** The fetch hooks are called with; default the global fetch at call time. */
  fetch?: FetchFn;
  /** Every hook failure (also those a fail-closed hook turns into a block, and lost usage events); default process.emitWarning. */
  onError?: (err: HookFailedError) => void;
}

/** How long close() waits for queued usage events by default. */
const DEFAULT_CLOSE_MS = 5_000;

/**
 * createHookRunner validates `cfg` (MESHGUARD_INVALID_OPTIONS naming each
 * wrong field, or an `env:NAME` header whose variable is not set) and
 * returns the runner.
 */
export function createHookRunner(cfg: HooksConfig, opts: HookRunnerOptions = {}): HookRunner {
  const c = parseHooksConfig(cfg);
  const fetchFn: FetchFn = opts.fetch ?? ((input, init) => globalThis.fetch(input, init));
  const onError: OnError = opts.onError ?? ((err) => process.emitWarning(err));
  const pre = c.pre.map((d, i) => compileChainHook("pre", i, d));
  const post = c.post.map((d, i) => compileChainHook("post", i, d));
  const sinks = c.usage.map((d, i) => new UsageSink(i, d, fetchFn, onError));
  let closed: Promise<void> | undefined;

  return {
    hasPre: pre.length > 0,
    hasPost: post.length > 0,
    pre(req: HookRequest): Promise<PreHookResult> {
      return runPre(pre, fetchFn, onError, req);
    },
    post(req: HookRequest, response: { status: number; body: unknown }): Promise<PostHookResult> {
      return runPost(post, fetchFn, onError, req, response);
    },
    usage(ev: UsageEvent): void {
      if (sinks.length === 0) return;
      const json = serializeUsage(ev);
      for (const s of sinks) s.push(json);
    },
    close(ms = DEFAULT_CLOSE_MS): Promise<void> {
      closed ??= Promise.all(sinks.map((s) => s.close(ms))).then(() => {});
      return closed;
    },
  };
}
