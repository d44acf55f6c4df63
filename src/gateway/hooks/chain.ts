/**
 * The guardrail chains: `pre` hooks before the upstream call, `post` hooks
 * on a non-streamed answer. Hooks run one after another in config order;
 * each sees the body as the hooks before it left it, and the first block
 * ends the chain.
 *
 * A hook that fails (timeout, unreachable, non-2xx, malformed answer) is
 * reported through onError either way; then `failure: "closed"` blocks the
 * request — 503 when the hook could not be reached in time, 502 when it
 * answered something unusable — and `failure: "open"` skips it.
 */

import { anyOf, flatGlob, type Matcher } from "../../policy/glob.js";
import type { CallFacts, HookRequest, PostHookResult, PreHookResult } from "../types.js";
import { parsePostAnswer, parsePreAnswer } from "./answers.js";
import { callHook, HookFailedError, type FetchFn, type HookTarget } from "./call.js";
import { resolveHeaders, type HookDef } from "./config.js";

export const WIRE_VERSION = 1;

/** A pre or post hook ready to call. */
export interface ChainHook extends HookTarget {
  failure: "open" | "closed";
  /** Whether the hook runs for a request's provider/model (its `models` globs). */
  applies(facts: CallFacts): boolean;
}

export function compileChainHook(phase: "pre" | "post", index: number, def: HookDef): ChainHook {
  const models: Matcher | undefined = def.models ? anyOf(def.models.map(flatGlob)) : undefined;
  return {
    name: def.name,
    phase,
    url: def.url,
    headers: resolveHeaders(`hooks.${phase}[${index}]`, def.headers),
    timeoutMs: def.timeout,
    failure: def.failure,
    applies: models ? (f) => models(`${f.provider}/${f.model}`) : () => true,
  };
}

/**
 * Request headers a hook never sees, whatever the caller of the runner
 * passes: the client's credentials (dropped by the gateway anyway) and the
 * provider key (injected only on the upstream request).
 */
const CREDENTIAL_HEADERS = new Set(["authorization", "proxy-authorization", "x-api-key", "x-goog-api-key", "api-key", "cookie"]);

function publicHeaders(h: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(h)) if (!CREDENTIAL_HEADERS.has(k.toLowerCase())) out[k] = v;
  return out;
}

/** The part of the wire payload that describes the request (see docs/gateway-hooks.md). */
function requestPart(req: HookRequest, body: unknown) {
  return { id: req.id, caller: { node: req.caller.node, user: req.caller.user, tags: req.caller.tags, role: req.caller.role }, facts: req.facts, headers: publicHeaders(req.headers), body };
}

export type OnError = (err: HookFailedError) => void;

type Block = { action: "block"; status: number; message: string; hook: string };

/** failed reports a hook failure and says what it means for the request: a block (closed) or nothing (open). */
function failed(h: ChainHook, err: unknown, onError: OnError): Block | undefined {
  const e = err instanceof HookFailedError ? err : new HookFailedError(h.name, h.phase, "malformed", `${h.phase} hook "${h.name}" failed: ${String(err)}`, { cause: err });
  try {
    onError(e);
  } catch {
    // A throwing reporter must not change the request's fate.
  }
  if (h.failure === "open") return undefined;
  const status = e.failure === "timeout" || e.failure === "unreachable" ? 503 : 502;
  return { action: "block", status, message: `${e.message} (failure: closed)`, hook: h.name };
}

function headersFor(h: ChainHook, id: string): Record<string, string> {
  return { "x-meshguard-hook": h.name, "x-meshguard-phase": h.phase, "x-meshguard-request-id": id };
}

const ALLOW: PreHookResult = Object.freeze({ action: "allow" });
const RECORD: PostHookResult = Object.freeze({ action: "record" });

export async function runPre(hooks: ChainHook[], fetchFn: FetchFn, onError: OnError, req: HookRequest): Promise<PreHookResult> {
  let body = req.body;
  let modified = false;
  for (const h of hooks) {
    if (!h.applies(req.facts)) continue;
    const payload = JSON.stringify({ version: WIRE_VERSION, phase: "pre", hook: h.name, request: requestPart(req, body) });
    let r: PreHookResult;
    try {
      r = parsePreAnswer(h.name, await callHook(fetchFn, h, payload, headersFor(h, req.id)));
    } catch (err) {
      const b = failed(h, err, onError);
      if (b) return b;
      continue;
    }
    if (r.action === "block") return r;
    if (r.action === "modify") {
      body = r.body;
      modified = true;
    }
  }
  return modified ? { action: "modify", body } : ALLOW;
}

export async function runPost(hooks: ChainHook[], fetchFn: FetchFn, onError: OnError, req: HookRequest, response: { status: number; body: unknown }): Promise<PostHookResult> {
  let body = response.body;
  let redacted = false;
  const request = requestPart(req, req.body);
  for (const h of hooks) {
    if (!h.applies(req.facts)) continue;
    const payload = JSON.stringify({ version: WIRE_VERSION, phase: "post", hook: h.name, request, response: { status: response.status, body } });
    let r: PostHookResult;
    try {
      r = parsePostAnswer(h.name, await callHook(fetchFn, h, payload, headersFor(h, req.id)));
    } catch (err) {
      const b = failed(h, err, onError);
      if (b) return b;
      continue;
    }
    if (r.action === "block") return r;
    if (r.action === "redact") {
      body = r.body;
      redacted = true;
    }
  }
  return redacted ? { action: "redact", body } : RECORD;
}
