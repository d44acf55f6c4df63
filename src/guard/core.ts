/**
 * GuardCore: the one place where a Target becomes a verdict. Every
 * interception point calls `check` and acts on what it returns:
 *
 *   undefined           allow — go on, synchronously (the fast path)
 *   PolicyDeniedError   refuse — nothing may reach the network
 *   Promise<void>       held for a human (approve rule); resolves to go on,
 *                       rejects with PolicyDeniedError
 *
 * Fail closed: no evaluator, an evaluator that throws, or a Decision that is
 * not one of allow/deny/approve all deny.
 */

import { EventEmitter } from "node:events";
import { createAuditor, type Auditor, type AuditSink } from "../policy/audit.js";
import { decisionEvent, type ApprovalOutcome } from "../policy/event.js";
import { normalizeHost } from "../policy/hosts.js";
import type { Reveal } from "../policy/request.js";
import type { Decision, Principal, Target } from "../policy/types.js";
import { requestApproval } from "./approvals.js";
import { PolicyDeniedError } from "./errors.js";
import { DEFAULT_LLM_PROVIDERS, hostKey } from "./targets.js";
import type { ApprovalOptions, Evaluator, GuardLayer, GuardMode } from "./types.js";

export type Verdict = undefined | PolicyDeniedError | Promise<void>;

/** How long an HTTP origin stays "in use by allowed requests" for attributing HTTP-client connections to it. */
const ORIGIN_TTL_MS = 60_000;
const MAX_ORIGINS = 4096;

export interface CoreConfig {
  evaluator: Evaluator | undefined;
  principal: Principal;
  mode: GuardMode;
  audit: AuditSink | undefined;
  sampleAllows: number;
  approvals: ApprovalOptions | undefined;
  reveal: Reveal | undefined;
  llmProviders: Record<string, string>;
  maxBodyBytes: number;
  allowIpc: string[];
  allowResolved: ((host: string, ip: string) => boolean) | undefined;
}

export interface CheckOptions {
  /** Do not emit an audit event for an allow (a later layer will decide and record the same call). */
  quietAllow?: boolean;
}

export class GuardCore {
  evaluator: Evaluator | undefined;
  principal: Principal;
  readonly mode: GuardMode;
  readonly audit: Auditor | undefined;
  readonly sampleAllows: number;
  readonly approvals: ApprovalOptions | undefined;
  readonly reveal: Reveal | undefined;
  readonly llmProviders: Map<string, string>;
  readonly maxBodyBytes: number;
  readonly allowIpc: string[];
  readonly allowResolved: ((host: string, ip: string) => boolean) | undefined;
  /** Emits "decision" (DecisionEvent) and "warning" (Error); owned by the GuardHandle. */
  readonly events: EventEmitter;
  /** HTTP origins ("host:port") an allowed request went to recently; see noteOrigin. */
  private readonly origins = new Map<string, number>();

  constructor(cfg: CoreConfig, events: EventEmitter) {
    this.evaluator = cfg.evaluator;
    this.principal = cfg.principal;
    this.mode = cfg.mode;
    this.events = events;
    this.audit = cfg.audit ? createAuditor({ sink: cfg.audit, sampleAllows: cfg.sampleAllows, onError: (err) => this.warn(err) }) : undefined;
    this.sampleAllows = cfg.sampleAllows;
    this.approvals = cfg.approvals;
    this.reveal = cfg.reveal;
    this.llmProviders = new Map(Object.entries({ ...DEFAULT_LLM_PROVIDERS, ...cfg.llmProviders }).map(([k, v]) => [normalizeHost(k), v]));
    this.maxBodyBytes = cfg.maxBodyBytes;
    this.allowIpc = cfg.allowIpc;
    this.allowResolved = cfg.allowResolved;
  }

  /** decide asks the evaluator, turning every failure into a deny. Never throws. */
  decide(target: Target): Decision {
    const ev = this.evaluator;
    if (ev === undefined) return { effect: "deny", reason: "no policy is loaded (the guard fails closed)" };
    let d: Decision;
    try {
      d = ev.evaluate({ principal: this.principal, target });
    } catch (err) {
      return { effect: "deny", reason: `the policy evaluator failed (the guard fails closed): ${(err as Error)?.message ?? String(err)}` };
    }
    if (d === null || typeof d !== "object" || (d.effect !== "allow" && d.effect !== "deny" && d.effect !== "approve")) {
      return { effect: "deny", reason: `the policy evaluator returned no valid decision (the guard fails closed)` };
    }
    return d;
  }

  /** check decides one target and returns the verdict (see the file comment). */
  check(target: Target, layer: GuardLayer, opts?: CheckOptions): Verdict {
    // Timing is only for audit events: skip the clock reads when nobody records.
    const timed = this.audit !== undefined || this.events.listenerCount("decision") > 0;
    const t0 = timed ? performance.now() : 0;
    const d = this.decide(target);
    const latencyUs = timed ? (performance.now() - t0) * 1000 : 0;
    if (d.effect === "allow") {
      if (opts?.quietAllow !== true) this.record(target, d, "allow", latencyUs, layer);
      return undefined;
    }
    if (this.mode === "observe") {
      this.record(target, d, "allow", latencyUs, layer);
      return undefined;
    }
    if (d.effect === "deny") {
      this.record(target, d, "deny", latencyUs, layer);
      return new PolicyDeniedError(target, d.reason, d.ruleId);
    }
    return this.hold(target, d, latencyUs, layer);
  }

  /**
   * checkAll decides several targets of one call (an LLM call is an HTTP
   * request and a model call): any deny denies, approvals are asked once.
   */
  checkAll(targets: Target[], layer: GuardLayer, opts?: CheckOptions): Verdict {
    let pending: Promise<void>[] | undefined;
    for (const t of targets) {
      const v = this.check(t, layer, opts);
      if (v === undefined) continue;
      if (v instanceof PolicyDeniedError) {
        for (const p of pending ?? []) p.catch(() => {});
        return v;
      }
      (pending ??= []).push(v);
    }
    if (pending === undefined) return undefined;
    return Promise.all(pending).then(() => undefined);
  }

  private hold(target: Target, d: Decision, latencyUs: number, layer: GuardLayer): Promise<void> {
    const approvals = this.approvals;
    if (!approvals || (!approvals.callback && !approvals.webhook)) {
      const reason = `${d.reason}; the rule asks for approval but no approver is configured (installGuard approvals: callback or webhook)`;
      this.record(target, d, "deny", latencyUs, layer);
      return Promise.reject(new PolicyDeniedError(target, reason, d.ruleId));
    }
    const t0 = Date.now();
    return requestApproval(approvals, this.principal, target, d, this.reveal).then(
      (ans) => {
        const approval = { approved: ans.approved, ms: Date.now() - t0, ...(ans.by ? { by: ans.by } : {}), ...(ans.reason ? { reason: ans.reason } : {}) };
        this.record(target, d, ans.approved ? "allow" : "deny", latencyUs, layer, approval);
        if (!ans.approved) throw new PolicyDeniedError(target, `approval refused: ${ans.reason ?? "no reason given"}`, d.ruleId);
      },
      (err: unknown) => {
        const why = (err as Error)?.message ?? String(err);
        this.record(target, d, "deny", latencyUs, layer, { approved: false, ms: Date.now() - t0, reason: why });
        throw new PolicyDeniedError(target, `no approval: ${why}`, d.ruleId, err);
      },
    );
  }

  /**
   * record builds the one DecisionEvent of this decision (only when someone
   * records: the audit sink or a "decision" listener) and hands it to both;
   * the auditor samples allows.
   */
  private record(target: Target, d: Decision, outcome: "allow" | "deny", latencyUs: number, layer: GuardLayer, approval?: ApprovalOutcome): void {
    const auditor = this.audit;
    const listening = this.events.listenerCount("decision") > 0;
    if (auditor === undefined && !listening) return;
    let ev;
    try {
      const hash = (this.evaluator as { hash?: unknown } | undefined)?.hash;
      ev = decisionEvent(this.principal, target, d, {
        layer,
        outcome,
        latencyUs,
        mode: this.mode,
        ...(approval ? { approval } : {}),
        ...(typeof hash === "string" ? { policyHash: hash } : {}),
        ...(this.reveal ? { reveal: this.reveal } : {}),
      });
    } catch (err) {
      this.warn(err);
      return;
    }
    if (auditor !== undefined) auditor.record(ev);
    if (listening) {
      try {
        this.events.emit("decision", ev);
      } catch (err) {
        this.warn(err);
      }
    }
  }

  /**
   * revoke records that the policy in force no longer allows an open
   * connection and returns the error to close it with; in observe mode it
   * only records (undefined: leave it open).
   */
  revoke(target: Target, d: Decision): PolicyDeniedError | undefined {
    const reason = `the policy in force no longer allows this open connection: ${d.reason}`;
    const decision: Decision = d.ruleId !== undefined ? { effect: "deny", ruleId: d.ruleId, reason } : { effect: "deny", reason };
    if (this.mode === "observe") {
      this.record(target, decision, "allow", 0, "dial");
      return undefined;
    }
    this.record(target, decision, "deny", 0, "dial");
    return new PolicyDeniedError(target, reason, d.ruleId);
  }

  warn(err: unknown): void {
    if (this.events.listenerCount("warning") > 0) this.events.emit("warning", err);
  }

  /**
   * noteOrigin records that an allowed HTTP request goes to host:port, so the
   * connection an HTTP client opens for it is not judged as raw TCP. Every
   * request on such a connection is itself checked at the HTTP layer.
   */
  noteOrigin(host: string, port: number): void {
    if (this.origins.size >= MAX_ORIGINS) {
      const now = Date.now();
      for (const [k, exp] of this.origins) if (exp < now) this.origins.delete(k);
      if (this.origins.size >= MAX_ORIGINS) this.origins.clear();
    }
    const key = hostKey(host, port);
    const now = Date.now();
    // Refresh at most every tenth of the TTL: this runs on every allowed request.
    const exp = this.origins.get(key);
    if (exp === undefined || exp - now < ORIGIN_TTL_MS * 0.9) this.origins.set(key, now + ORIGIN_TTL_MS);
  }

  /**
   * dropGrants forgets every grant made under the policy in force: called
   * when the policy is replaced, so that nothing the old policy allowed is
   * used under the new one.
   */
  dropGrants(): void {
    this.origins.clear();
  }

  originAllowed(host: string, port: number): boolean {
    const exp = this.origins.get(hostKey(host, port));
    return exp !== undefined && exp >= Date.now();
  }
}
