/**
 * The guard's answers on the control socket (see ../inspect/channel.ts):
 * what guard is installed, and `explain` with the policy in force and the
 * identity the guard decides as — the same evaluator, principal and peer
 * table a real call would meet.
 */

import dc from "node:diagnostics_channel";

import { ErrorCode, MeshguardError } from "../errors.js";
import { INSPECT_CHANNEL, type ExplainResult, type GuardInfo, type InspectMessage } from "../inspect/index.js";
import type { Explanation } from "../policy/engine.js";
import { parsePrincipal } from "../policy/identity.js";
import { parseRequest, type RequestExtras } from "../policy/request.js";
import type { DecisionRequest } from "../policy/types.js";
import { normalizeHost } from "../policy/hosts.js";
import type { GuardCore } from "./core.js";
import { peerTable } from "./peers.js";
import { current } from "./state.js";

/** What a loaded Policy has beyond an Evaluator; a custom evaluator may have none of it. */
interface Described {
  hash?: unknown;
  file?: unknown;
  version?: unknown;
  explain?: (req: DecisionRequest) => Explanation;
}

function policyInfo(core: GuardCore): GuardInfo["policy"] {
  const p = core.evaluator as (Described & object) | undefined;
  if (p === undefined) return null;
  return {
    ...(typeof p.hash === "string" ? { hash: p.hash } : {}),
    ...(typeof p.file === "string" ? { file: p.file } : {}),
    ...(typeof p.version === "number" ? { format: p.version } : {}),
  };
}

function guardInfo(core: GuardCore): GuardInfo {
  const pr = core.principal;
  return { mode: core.mode, principal: { ...(pr.node ? { node: pr.node } : {}), tags: [...pr.tags], ...(pr.user ? { user: pr.user } : {}) }, policy: policyInfo(core) };
}

async function explain(core: GuardCore, node: object, params: Extract<InspectMessage, { kind: "explain" }>["params"]): Promise<ExplainResult> {
  const p = core.evaluator as (Described & object) | undefined;
  if (p !== undefined && typeof p.explain !== "function") {
    throw new MeshguardError(ErrorCode.INVALID_OPTIONS, "the guard's evaluator is not a loaded policy and cannot explain its decisions", { hint: "explain with the policy file instead: meshguard policy explain FILE --as WHO REQUEST" });
  }
  const extras: RequestExtras = {};
  if (params.headers) extras.headers = Object.fromEntries(Object.entries(params.headers).map(([k, v]) => [k.toLowerCase(), v]));
  if (params.bodySize !== undefined) extras.bodySize = params.bodySize;
  if (params.peerTags?.length) extras.peerTags = params.peerTags;
  const target = parseRequest(params.request, extras);
  // A tailnet dial is judged with the peer the netmap names (as dialVerdict does), unless the caller said the tags.
  if (target.kind === "tcp" && target.tailnet && target.peer === undefined && params.peerTags === undefined) {
    const table = await peerTable(node);
    const peer = table?.get(normalizeHost(target.host));
    if (peer !== undefined) target.peer = peer;
  }
  const req: DecisionRequest = { principal: params.as ? parsePrincipal(params.as) : { ...core.principal, tags: [...core.principal.tags] }, target };
  if (params.at !== undefined) {
    const at = new Date(params.at);
    if (Number.isNaN(at.getTime())) throw new MeshguardError(ErrorCode.CONTROL_SOCKET_BAD_REQUEST, `at: ${JSON.stringify(params.at)} is not a time (use ISO 8601)`);
    req.now = at;
  }
  if (p === undefined) {
    // No policy in force: the guard denies every call, and that is the answer.
    return { decision: { effect: "deny", reason: "the guard has no policy in force: every call is denied (load one with installGuard({ policy }), watchPolicyFile or pollPolicyServer)" }, principal: req.principal, request: params.request.trim(), rules: [], policy: {}, mode: core.mode };
  }
  const ex = p.explain!.call(p, req);
  return { ...ex, policy: policyInfo(core) ?? {}, mode: core.mode } as ExplainResult;
}

/** onInspect answers for the guard in force; it never throws (a throw in a subscriber would reach the process). */
function onInspect(msg: unknown): void {
  try {
    const core = current();
    const m = msg as InspectMessage;
    if (core === undefined || typeof m !== "object" || m === null) return;
    if (m.kind === "guard") m.answer = guardInfo(core);
    else if (m.kind === "explain") m.answer = explain(core, m.node, m.params);
  } catch (err) {
    try {
      (msg as { answer?: unknown }).answer = Promise.reject(err);
    } catch {
      // not a message we can answer
    }
  }
}

/** subscribeInspect makes the installed guard answer on the control socket; returns the unsubscribe. */
export function subscribeInspect(): () => void {
  dc.subscribe(INSPECT_CHANNEL, onInspect);
  return () => dc.unsubscribe(INSPECT_CHANNEL, onInspect);
}
