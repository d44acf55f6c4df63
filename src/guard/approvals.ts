/**
 * Approvals: an approve rule holds the call and asks a human, through a
 * callback or a webhook. Whatever goes wrong — no answer before the
 * deadline, a webhook error, a malformed answer — means deny.
 *
 * The request leaves the process (a webhook, a chat message), so it
 * carries the call redacted like an audit event: no header values, query
 * values, MCP argument values or bodies unless `reveal` names them — and
 * never credentials (SECRET_HEADERS), which `reveal` may not name.
 */

import { randomUUID } from "node:crypto";
import { summarizeTarget, type TargetSummary } from "../policy/event.js";
import { formatTarget, type Reveal } from "../policy/request.js";
import type { Decision, Principal, Target } from "../policy/types.js";
import { internalRequest } from "./internal.js";
import type { ApprovalAnswer, ApprovalOptions, ApprovalRequest } from "./types.js";

export const DEFAULT_APPROVAL_TIMEOUT_MS = 60_000;

/**
 * Headers that carry credentials. installGuard refuses them in
 * `reveal.headers`; an approval request drops them even if they get there.
 */
export const SECRET_HEADERS: readonly string[] = ["authorization", "proxy-authorization", "x-api-key", "cookie", "set-cookie"];

export interface ApprovalResult {
  approved: boolean;
  reason?: string;
  by?: string;
}

/**
 * requestApproval asks the configured approver; it rejects on timeout or
 * failure (the caller denies), and as soon as `cancel` aborts (the call's
 * client gave up: the AI gateway's MCP endpoint), when the approver's
 * signal is aborted too.
 */
export async function requestApproval(opts: ApprovalOptions, principal: Principal, target: Target, d: Decision, reveal?: Reveal, cancel?: AbortSignal): Promise<ApprovalResult> {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_APPROVAL_TIMEOUT_MS;
  const now = Date.now();
  // The approver sees the call redacted like an audit line: the request may leave the process (webhook).
  const req: ApprovalRequest = {
    id: randomUUID(),
    principal: { ...principal, tags: [...principal.tags] },
    request: formatTarget(target, reveal ? { reveal } : undefined),
    target: withoutSecrets(summarizeTarget(target, reveal)),
    ...(d.ruleId !== undefined ? { ruleId: d.ruleId } : {}),
    reason: d.reason,
    requestedAt: new Date(now).toISOString(),
    deadline: new Date(now + timeoutMs).toISOString(),
  };
  const ac = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      ac.abort();
      reject(new Error(`no answer within ${timeoutMs} ms`));
    }, timeoutMs);
    // A held call keeps the process alive through its own socket or promise; the timer need not.
    timer.unref();
  });
  let onCancel: (() => void) | undefined;
  const cancelled = new Promise<never>((_, reject) => {
    if (cancel === undefined) return;
    onCancel = () => {
      ac.abort();
      reject(new Error("the call was cancelled by its client while it waited"));
    };
    if (cancel.aborted) onCancel();
    else cancel.addEventListener("abort", onCancel, { once: true });
  });
  try {
    const answer = opts.callback ? Promise.resolve(opts.callback(req, ac.signal)) : askWebhook(opts, req, ac.signal);
    return normalize(await Promise.race([answer, timeout, cancelled]));
  } finally {
    clearTimeout(timer);
    if (onCancel !== undefined) cancel!.removeEventListener("abort", onCancel);
  }
}

function withoutSecrets(s: TargetSummary): TargetSummary {
  if (s.kind !== "http" || s.headers === undefined) return s;
  const headers = Object.fromEntries(Object.entries(s.headers).filter(([k]) => !SECRET_HEADERS.includes(k.toLowerCase())));
  const { headers: _all, ...rest } = s;
  return Object.keys(headers).length ? { ...rest, headers } : rest;
}

async function askWebhook(opts: ApprovalOptions, req: ApprovalRequest, signal: AbortSignal): Promise<ApprovalAnswer> {
  const res = await internalRequest(opts.webhook!, {
    method: "POST",
    headers: { "content-type": "application/json", ...opts.headers },
    body: JSON.stringify(req),
    signal,
    maxBytes: 64 * 1024,
  });
  if (res.status < 200 || res.status > 299) throw new Error(`the approval webhook answered HTTP ${res.status}`);
  try {
    return JSON.parse(res.body.toString("utf8")) as ApprovalAnswer;
  } catch {
    throw new Error("the approval webhook's answer is not JSON");
  }
}

function normalize(a: ApprovalAnswer): ApprovalResult {
  if (a === true || a === false) return { approved: a };
  if (a && typeof a === "object" && typeof a.approved === "boolean") {
    const r: ApprovalResult = { approved: a.approved };
    if (typeof a.reason === "string") r.reason = a.reason;
    if (typeof a.by === "string") r.by = a.by;
    return r;
  }
  throw new Error('the approver\'s answer is not true/false or {"approved": boolean}');
}
