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
 * not one of allow/deny/approve all deny. Nothing here throws to the
 * interception point: a listener or sink that throws becomes a `warning`.
 */

import { EventEmitter } from "node:events";
import { createAuditor, type Auditor, type AuditSink } from "../policy/audit.js";
import { decisionEvent, type ApprovalOutcome } from "../policy/event.js";
import { normalizeHost } from "../policy/hosts.js";
import type { Reveal } from "../policy/request.js";
import type { Decision, Principal, Target } from "../policy/types.js";
import { requestApproval } from "./approvals.js";
import { PolicyDeniedError } from "./errors.js";
import type { Resolver } from "./resolve.js";
import { DEFAULT_LLM_PROVIDERS } from "./targets.js";
import type { GatewayVia } from "./gateways.js";
import type { ApprovalOptions, Evaluator, GuardLayer, GuardMode } from "./types.js";

export type Verdict = undefined | PolicyDeniedError | Promise<void>;

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
  resolver: Resolver | undefined;
}

export interface CheckOptions {
  /** Do not emit an audit event for an allow (a later layer will decide and record the same call). */
  quietAllow?: boolean;
  /**
   * The caller cannot hold the call while an approver answers (a driver that
   * builds its statement and writes it in one synchronous step): an approve
   * decision is a deny, with this said in its reason.
   */
  noHold?: string;
  /** The call went to a registered AI gateway and the target is the gateway's upstream call (./gateways.ts): said in the event and the refusal. */
  via?: GatewayVia;
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
  /** The guard's resolver (GuardOptions.resolver); undefined: the system's. */
  readonly resolver: Resolver | undefined;
  /** Emits "decision" (DecisionEvent) and "warning" (Error); owned by the GuardHandle. */
  readonly events: EventEmitter;

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
    this.resolver = cfg.resolver;
  }

  /**
   * decide asks the evaluator, turning every failure into a deny. Never
   * throws: the decision is read once, into a plain object, so an evaluator
   * answering a Proxy or getters cannot throw later or answer twice.
   */
  decide(target: Target): Decision {
    const ev = this.evaluator;
    if (ev === undefined) return { effect: "deny", reason: "no policy is loaded (the guard fails closed)" };
    try {
      const d = ev.evaluate({ principal: this.principal, target });
      if (d !== null && typeof d === "object") {
        const effect = d.effect;
        if (effect === "allow" || effect === "deny" || effect === "approve") {
          const reason = d.reason;
          const ruleId = d.ruleId;
          const r = typeof reason === "string" ? reason : `${effect} (the evaluator gave no reason)`;
          return typeof ruleId === "string" ? { effect, ruleId, reason: r } : { effect, reason: r };
        }
      }
      this.warn(new Error(INVALID.reason));
      return INVALID;
    } catch (err) {
      const reason = `the policy evaluator failed (the guard fails closed): ${errorText(err)}`;
      this.warn(new Error(reason));
      return { effect: "deny", reason };
    }
  }

  /**
   * mayAllow is the screen before a connection is opened or a name looked
   * up (Evaluator.mayAllow of a loaded Policy): false only when no rule
   * could allow a call to this host and port whatever else it carries.
   * Without the method (a custom evaluator), or when it fails, true: the
   * full evaluation decides. No evaluator: false (everything is denied).
   */
  mayAllow(target: Target): boolean {
    const ev = this.evaluator as (Evaluator & { mayAllow?: unknown }) | undefined;
    if (ev === undefined) return false;
    try {
      if (typeof ev.mayAllow !== "function") return true;
      return (ev.mayAllow as (r: unknown) => unknown)({ principal: this.principal, target }) !== false;
    } catch {
      return true;
    }
  }

  /** screens tells whether the evaluator can screen (mayAllow); without it, names are decided before they are looked up. */
  get screens(): boolean {
    try {
      return typeof (this.evaluator as { mayAllow?: unknown } | undefined)?.mayAllow === "function";
    } catch {
      return false;
    }
  }

  /** check decides one target and returns the verdict (see the file comment). Never throws. */
  check(target: Target, layer: GuardLayer, opts?: CheckOptions): Verdict {
    try {
      // Timing is only for audit events: skip the clock reads when nobody records.
      const timed = this.audit !== undefined || this.events.listenerCount("decision") > 0;
      const t0 = timed ? performance.now() : 0;
      const d = this.decide(target);
      const latencyUs = timed ? (performance.now() - t0) * 1000 : 0;
      const via = opts?.via;
      if (d.effect === "allow") {
        if (opts?.quietAllow !== true) this.record(target, d, "allow", latencyUs, layer, undefined, via);
        return undefined;
      }
      if (this.mode === "observe") {
        this.record(target, d, "allow", latencyUs, layer, undefined, via);
        return undefined;
      }
      if (d.effect === "deny") {
        this.record(target, d, "deny", latencyUs, layer, undefined, via);
        return new PolicyDeniedError(target, viaReason(d.reason, via), d.ruleId);
      }
      if (opts?.noHold !== undefined) {
        const reason = `${d.reason}; ${opts.noHold}`;
        this.record(target, { ...d, effect: "deny", reason }, "deny", latencyUs, layer, undefined, via);
        return new PolicyDeniedError(target, viaReason(reason, via), d.ruleId);
      }
      return this.hold(target, d, latencyUs, layer, via);
    } catch (err) {
      return this.failed(target, err);
    }
  }

  /**
   * failed is the verdict on a call the guard could not judge because of an
   * error of its own: denied (also in observe mode), with a warning.
   */
  failed(target: Target, err: unknown): PolicyDeniedError {
    const e = new PolicyDeniedError(target, `the guard could not judge this call (fails closed): ${errorText(err)}`, undefined, err);
    this.warn(e);
    return e;
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

  private hold(target: Target, d: Decision, latencyUs: number, layer: GuardLayer, via?: GatewayVia): Promise<void> {
    const approvals = this.approvals;
    if (!approvals || (!approvals.callback && !approvals.webhook)) {
      const reason = `${d.reason}; the rule asks for approval but no approver is configured (installGuard approvals: callback or webhook)`;
      this.record(target, d, "deny", latencyUs, layer, undefined, via);
      return Promise.reject(new PolicyDeniedError(target, viaReason(reason, via), d.ruleId));
    }
    const t0 = Date.now();
    const asked = this.evaluator;
    return Promise.resolve()
      .then(() => requestApproval(approvals, this.principal, target, d, this.reveal))
      .then(
      (ans) => {
        const approval = { approved: ans.approved, ms: Date.now() - t0, ...(ans.by ? { by: ans.by } : {}), ...(ans.reason ? { reason: ans.reason } : {}) };
        if (ans.approved && this.evaluator !== asked) {
          // The policy changed while a human was deciding: an approval
          // grants nothing the policy now in force denies.
          const now = this.decide(target); // never throws: a failure is a deny
          if (now.effect === "deny" && this.mode !== "observe") {
            const reason = `approved, but the policy changed while the approval was pending and now denies it: ${now.reason}`;
            this.record(target, { ...now, reason }, "deny", latencyUs, layer, approval, via);
            throw new PolicyDeniedError(target, reason, now.ruleId);
          }
        }
        this.record(target, d, ans.approved ? "allow" : "deny", latencyUs, layer, approval, via);
        if (!ans.approved) throw new PolicyDeniedError(target, `approval refused: ${ans.reason ?? "no reason given"}`, d.ruleId);
      },
      (err: unknown) => {
        const why = errorText(err);
        this.record(target, d, "deny", latencyUs, layer, { approved: false, ms: Date.now() - t0, reason: why }, via);
        throw new PolicyDeniedError(target, `no approval: ${why}`, d.ruleId, err);
      },
    );
  }

  /**
   * record builds the one DecisionEvent of this decision (only when someone
   * records: the audit sink or a "decision" listener) and hands it to both;
   * the auditor samples allows.
   */
  private record(target: Target, d: Decision, outcome: "allow" | "deny", latencyUs: number, layer: GuardLayer, approval?: ApprovalOutcome, via?: GatewayVia): void {
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
        ...(via ? { via } : {}),
        ...(typeof hash === "string" ? { policyHash: hash } : {}),
        ...(this.reveal ? { reveal: this.reveal } : {}),
      });
    } catch (err) {
      this.warn(err);
      return;
    }
    if (auditor !== undefined) {
      try {
        auditor.record(ev);
      } catch (err) {
        this.warn(err);
      }
    }
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
    const t = target as { tailnet?: boolean; tls?: boolean };
    const layer: GuardLayer = t.tailnet === true ? "dial" : t.tls === true ? "tls" : "net";
    if (this.mode === "observe") {
      this.record(target, decision, "allow", 0, layer);
      return undefined;
    }
    this.record(target, decision, "deny", 0, layer);
    return new PolicyDeniedError(target, reason, d.ruleId);
  }

  /** recordRefusal records a refusal the guard makes itself (no rule decided it): see refuseVia. */
  recordRefusal(err: PolicyDeniedError, layer: GuardLayer, via?: GatewayVia): void {
    this.record(err.target, { effect: "deny", reason: err.reason }, this.mode === "observe" ? "allow" : "deny", 0, layer, undefined, via);
  }

  /** warn emits a `warning`; a listener that throws is ignored (the guard never throws to the call it judges). */
  warn(err: unknown): void {
    try {
      if (this.events.listenerCount("warning") > 0) this.events.emit("warning", err instanceof Error ? err : new Error(errorText(err)));
    } catch {
      // a throwing warning listener must not take the call or the process down
    }
  }
}

const INVALID: Readonly<Decision> = Object.freeze({ effect: "deny", reason: "the policy evaluator returned no valid decision (the guard fails closed)" });

/** viaReason says in a refusal that the call was judged as the gateway's upstream call. */
function viaReason(reason: string, via: GatewayVia | undefined): string {
  if (via === undefined) return reason;
  return `${reason} (judged as the call the AI gateway ${via.gateway} makes${via.connector !== undefined ? ` through its connector ${via.connector}` : ""})`;
}

/**
 * refuseVia records a call to a registered gateway that the guard refuses
 * before asking the policy (an unknown connector, a path the gateway
 * refuses, a tool name that names no server): a deny event (an allow in
 * observe mode, when the call goes on) and the refusal, or undefined in
 * observe mode.
 */
export function refuseVia(core: GuardCore, err: PolicyDeniedError, layer: GuardLayer, via: GatewayVia): PolicyDeniedError | undefined {
  core.recordRefusal(err, layer, via);
  return core.mode === "observe" ? undefined : err;
}

/** errorText is an error's message, read without trusting it (it may be anything that was thrown). */
export function errorText(err: unknown): string {
  try {
    if (err instanceof Error) return String(err.message);
    return String(err);
  } catch {
    return "(unprintable error)";
  }
}
