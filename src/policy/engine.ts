/**
 * Evaluating a request against compiled rules.
 *
 * Precedence (docs/policy.md): among the rules that match the request,
 * 1. a deny rule, or a rule that would match but needs a fact the request
 *    lacks (UNKNOWN: body size, model, max tokens), denies — deny wins;
 * 2. else an approve rule asks for approval — a human check is not silently
 *    overridden by a broad allow;
 * 3. else an allow rule allows;
 * 4. else deny (deny by default).
 * Within a class the first rule in file order decides. A rule with a rate
 * limit decides only while its bucket (per rule, per agent) has a token;
 * otherwise the next matching rule of the class is tried, and if none is
 * left the call is denied for the rate. Only the deciding rule spends a token.
 *
 * evaluate never throws: any internal error is a deny with the error as the
 * reason (fail closed).
 *
 * Deciding by a rule allocates nothing the garbage collector must chase: the
 * Decision is the rule's frozen one (compile.ts), per-call state lives in
 * reused fields, and what depends only on the principal (its normalized
 * names, its rate-limit key) is remembered from the previous call. Only the
 * denials that name the caller (by default, for a rate) build a string.
 */

import { NO, ROWS_WHAT, UNKNOWN, YES, type EvalContext, type Outcome } from "./conditions.js";
import { analyzeSql, formatAccess, type SqlAccess } from "./sql.js";
import { normalizeHost } from "./hosts.js";
import { isIpLiteral } from "./ip.js";
import { describePrincipal, normalizeUser, srcMatches } from "./identity.js";
import { AgentKeyMemo, RateLimiter } from "./rate.js";
import { formatTarget } from "./request.js";
import { normalizeAudience } from "./token-actions.js";
import { hashStep, NameMemo, peerNames, SUFFIX_HASH_MASK, unknownDecision, type CompiledRule, type CompiledRules, type HostTarget, type KindIndex, type PrincipalBucket } from "./compile.js";
import type { Decision, DecisionRequest, Effect, HttpTarget, LlmTarget, Principal, SqlAccessTarget, SqlTarget, Target } from "./types.js";

interface SqlMemo {
  database: string;
  rowFilters: boolean;
  targets: SqlAccessTarget[];
  parts: Array<Readonly<Decision> | undefined>;
  combined: Readonly<Decision> | undefined;
}

/** A statement that only steers the transaction (BEGIN, COMMIT, ROLLBACK, SAVEPOINT) or is empty: nothing for a rule to judge. */
const NO_ACCESS: Readonly<Decision> = Object.freeze({ effect: "allow", reason: "the statement only steers the transaction (or is empty): nothing to judge" });

/** How one rule fared against one request, for explain. */
export interface RuleExplanation {
  ruleId: string;
  effect: Effect;
  kind: string;
  /** "match", "no-match", "unknown" (needs a missing fact: counts as deny), or "rate-limited". */
  result: "match" | "no-match" | "unknown" | "rate-limited";
  /** Whether the index offered this rule for the request (a matching rule always is). */
  candidate: boolean;
  /** For a sql statement: the access this entry judges ("select public.users (id)"); each access lists every sql rule. */
  access?: string;
  /** Every check of the rule in order, with what it found. */
  checks: Array<{ what: string; ok: boolean | "unknown"; detail: string }>;
}

export interface Explanation {
  /** The decision evaluate would return now (explain spends no rate tokens). */
  decision: Readonly<Decision>;
  principal: Principal;
  /** The request as one line (request.ts syntax). */
  request: string;
  rules: RuleExplanation[];
}

/**
 * systemClock is the default time source. The engine recognises it and reads
 * readWallClock() instead of calling it, so a decision creates no Date.
 */
export const systemClock = (): Date => new Date();

/*
 * Times on the hot path are kept in Float64Arrays and passed as such: V8
 * boxes a number that is not a small integer (a new heap object) when it is
 * stored in an object field or a module variable, or passed to or returned
 * from a call that is not inlined — but not when it is stored in a typed array.
 */

/** The last wall-clock reading and the monotonic time it was taken at. */
const anchor = new Float64Array([0, -Infinity]);

/**
 * readWallClock stores Date.now() in into[0], without Date.now()'s cost (a
 * fresh heap number per call; performance.now() costs none). The wall clock
 * is read again every 100 ms of monotonic time, so a step of the system clock
 * is followed within 100 ms; in between, the monotonic clock adds the elapsed
 * time (their rates differ by parts per million).
 */
function readWallClock(into: Float64Array): void {
  const mono = performance.now();
  const since = mono - anchor[1]!;
  if (!(since >= 0 && since < 100)) {
    anchor[0] = Date.now();
    anchor[1] = mono;
  }
  into[0] = anchor[0]! + (mono - anchor[1]!);
}

/** Ctx is reused across calls (reset per request): the hot path allocates as little as possible. */
class Ctx implements EvalContext {
  /** time[0] is the decision time in ms, NaN until readTime. */
  readonly time = new Float64Array([NaN]);
  private min = 0;
  private hasMin = false;
  private q: Map<string, string[]> | undefined;
  private req: DecisionRequest = undefined as unknown as DecisionRequest;
  private readonly clock: () => Date;

  constructor(clock: () => Date) {
    this.clock = clock;
  }
  reset(req: DecisionRequest): this {
    this.req = req;
    this.time[0] = NaN;
    this.hasMin = false;
    this.q = undefined;
    return this;
  }
  /** readTime fills time[0] once per request (it returns nothing: a returned time would be boxed). */
  readTime(): void {
    if (!Number.isNaN(this.time[0]!)) return;
    const at = this.req.now;
    if (at == null && this.clock === systemClock) readWallClock(this.time);
    else {
      const d = at ?? this.clock();
      this.time[0] = d instanceof Date ? d.getTime() : NaN; // getTime boxes: a request's own `now` costs one number
    }
    if (Number.isNaN(this.time[0]!)) throw new TypeError("the decision time is not a valid Date");
  }
  now(): number {
    this.readTime();
    return this.time[0]!;
  }
  minute(): number {
    if (!this.hasMin) {
      this.readTime();
      this.min = Math.floor(this.time[0]! / 60_000);
      this.hasMin = true;
    }
    return this.min;
  }
  query(t: HttpTarget): Map<string, string[]> {
    if (!this.q) {
      this.q = new Map();
      for (const [k, v] of new URLSearchParams(t.query ?? "")) {
        const l = this.q.get(k);
        if (l) l.push(v);
        else this.q.set(k, [v]);
      }
    }
    return this.q;
  }
}

const KINDS = new Set(["http", "tcp", "mcp", "llm", "dns", "udp", "token", "sql"]);

/** The conditions mayAllow can test without the call's content: they depend on where the call goes only. */
const SCREENED = new Set(["port", "scheme", "tls", "tailnet"]);

const MALFORMED: Readonly<Decision> = Object.freeze({
  effect: "deny",
  reason: "malformed decision request (needs principal.tags and a target of kind http, tcp, mcp, llm, dns, udp, token or sql): denied",
});

/**
 * A list of candidate rules in file order, reused across calls: `n` counts
 * the live entries (emptying an array by `length = 0` drops its backing
 * store, and sorting copies it, so neither is done per call).
 */
class RuleList {
  readonly rules: CompiledRule[] = [];
  n = 0;

  /** add inserts r in file order (lists are short: a few rules match one request). */
  add(r: CompiledRule): void {
    const rules = this.rules;
    let i = this.n++;
    while (i > 0 && rules[i - 1]!.index > r.index) {
      rules[i] = rules[i - 1]!;
      i--;
    }
    rules[i] = r;
  }
}

/** Evaluator decides requests with compiled rules; it holds the rate-limit state. */
export class Evaluator {
  private readonly rate = new RateLimiter();
  // Scratch state reused across calls (evaluate is synchronous and not re-entered).
  private readonly approves = new RuleList();
  private readonly allows = new RuleList();
  private denyRule: CompiledRule | undefined;
  private denyUnknown: string | undefined;
  private readonly agentKeys = new AgentKeyMemo();
  private readonly nodeNames = new NameMemo();
  readonly compiled: CompiledRules;
  private readonly clock: () => Date;

  constructor(
    compiled: CompiledRules,
    clock: () => Date = systemClock,
  ) {
    this.compiled = compiled;
    this.clock = clock;
    this.hotCtx = new Ctx(clock);
  }

  /**
   * evaluate decides one request. It never throws. The Decision returned for
   * a rule is shared by every call and frozen: copy it to change it.
   */
  evaluate(req: DecisionRequest): Readonly<Decision> {
    try {
      return this.decide(req, false);
    } catch (err) {
      return { effect: "deny", reason: `internal error while evaluating the policy, so the call is denied (fails closed): ${(err as Error)?.message ?? String(err)}` };
    }
  }

  /**
   * giveBack undoes the rate-limit token that `decision` (returned by
   * evaluate for this principal) spent, if its rule has a rate: a caller
   * that decides the same call again (the gateway, after a pre-request hook
   * changed it) gives the first token back first, so the call counts once.
   */
  giveBack(principal: Principal, decision: Decision): void {
    if (decision.ruleId === undefined || decision.effect === "deny") return;
    const r = this.compiled.rules.find((x) => x.id === decision.ruleId);
    if (r?.perMinute === undefined || r.effect === "deny") return;
    this.rate.giveBack(r.index, this.agentKeys.of(principal), r.perMinute);
  }

  /** explain evaluates every rule in full and says why each did or did not match. */
  explain(req: DecisionRequest): Explanation {
    const decision = (() => {
      try {
        return this.decide(req, true);
      } catch (err) {
        return { effect: "deny" as const, reason: `internal error while evaluating the policy (fails closed): ${(err as Error)?.message ?? String(err)}` };
      }
    })();
    const out: Explanation = { decision, principal: req?.principal, request: safeFormat(req?.target), rules: [] };
    if (!wellFormed(req)) return out;
    const t0 = normalizeTarget(req.target);
    if (t0.kind !== "sql") {
      this.explainRules(req, t0, out);
      return out;
    }
    // A statement: every sql rule against every access it makes.
    const a = analyzeSql(t0.statement);
    if (!a.ok) return out;
    for (const acc of a.accesses) {
      const at: SqlAccessTarget = { kind: "sql-access", database: t0.database, operation: acc.operation, object: acc.object };
      if (acc.columns) at.columns = acc.columns;
      if (acc.dangerous) at.dangerous = true;
      if (t0.rowFilters === true) at.rowFilters = true;
      this.explainRules(req, at as unknown as Target, out, formatAccess(acc));
    }
    return out;
  }

  /** explainRules adds every rule's checks against one target to out (for a statement, once per access, named by `access`). */
  private explainRules(req: DecisionRequest, t: Target, out: Explanation, access?: string): void {
    const ctx = new Ctx(this.clock).reset(req);
    const candidates = new Set<CompiledRule>();
    this.collect = true;
    this.collected = candidates;
    try {
      this.visitCandidates(req.principal, t);
    } finally {
      this.collect = false;
      this.collected = undefined;
    }
    for (const r of this.compiled.rules) {
      if (access !== undefined && r.kind !== "sql") continue;
      const checks: RuleExplanation["checks"] = [];
      const srcOk = srcMatches(r.src, req.principal);
      checks.push({ what: "src", ok: srcOk, detail: `${describePrincipal(req.principal)} ${srcOk ? "is" : "is not"} in the rule's src` });
      const tk = (t.kind as string) === "sql-access" ? "sql" : t.kind;
      const kindOk = r.kind === tk;
      checks.push({ what: "kind", ok: kindOk, detail: `the request is ${tk}, the rule is about ${r.kind}` });
      let ok: boolean | "unknown" = srcOk && kindOk;
      if (kindOk) {
        if (r.hosts) {
          const h = r.hostMatches(t as HostTarget);
          const what = t.kind === "dns" ? `name ${t.name}` : `host ${(t as HttpTarget).host}`;
          checks.push({ what: t.kind === "dns" ? "name" : "host", ok: h, detail: `${what} ${h ? "matches" : "does not match"} the rule's ${t.kind === "dns" ? "names" : "hosts"}` });
          ok = ok && h;
        }
        for (const c of r.conds) {
          let o: Outcome;
          let detail: string;
          try {
            o = c.test(t, ctx);
            detail = c.why(t, ctx);
          } catch (err) {
            o = UNKNOWN;
            detail = `error: ${(err as Error).message}`;
          }
          checks.push({ what: c.what, ok: o === YES ? true : o === NO ? false : "unknown", detail });
          if (o === NO) ok = false;
          else if (o === UNKNOWN && ok === true) ok = "unknown";
        }
      }
      let result: RuleExplanation["result"] = ok === true ? "match" : ok === "unknown" ? "unknown" : "no-match";
      if (result === "match" && r.perMinute !== undefined && r.effect !== "deny") {
        ctx.readTime();
        const has = this.rate.take(r.index, this.agentKeys.of(req.principal), r.perMinute, ctx.time, true);
        checks.push({ what: "when.rate", ok: has, detail: `${r.perMinute} calls per minute per agent: ${has ? "a call is left" : "limit reached"}` });
        if (!has) result = "rate-limited";
      }
      const ex: RuleExplanation = { ruleId: r.id, effect: r.effect, kind: r.kind, result, candidate: candidates.has(r), checks };
      if (access !== undefined) ex.access = access;
      out.rules.push(ex);
    }
  }

  /**
   * mayAllow is the guard's screen before it opens a connection or looks a
   * name up: could some allow or approve rule match a call to this host and
   * port (scheme, tls, tailnet when the target says), whatever the call's
   * other facts (method, path, query, headers, body, time of day, rate)?
   * False when none could, or when a deny rule matches on those alone —
   * then `evaluate` would deny too, so the guard may deny without
   * connecting or resolving. A host that is a name and carries no
   * `resolvedIp` is taken to possibly resolve into every CIDR range of an
   * allow or approve rule (and into none of a deny rule's). It never throws
   * (an internal error answers true: the full evaluation still decides),
   * spends no rate token and records nothing.
   */
  mayAllow(req: DecisionRequest): boolean {
    try {
      if (!wellFormed(req)) return false;
      const t = normalizeTarget(req.target) as Target & { host?: unknown; resolvedIp?: unknown };
      const idx: KindIndex | undefined = this.compiled.index[t.kind];
      // Kinds without hosts (mcp, llm): nothing to screen.
      if (idx === undefined || typeof t.host !== "string") return true;
      const found = this.screened;
      found.clear();
      this.collect = true;
      this.collected = found;
      try {
        this.visitCandidates(req.principal, t);
      } finally {
        this.collect = false;
        this.collected = undefined;
      }
      const unresolvedName = t.resolvedIp === undefined && !isIpLiteral(t.host);
      const ctx = this.hotCtx.reset(req);
      let may = false;
      for (const r of found) {
        const h = r.hostMatches(t as HostTarget);
        if (!h && (r.effect === "deny" || !unresolvedName || !r.hosts?.some((p) => p.kind === "cidr"))) continue;
        let sure = h;
        let no = false;
        for (const c of r.conds) {
          if (!SCREENED.has(c.what)) {
            sure = false;
            continue;
          }
          if (c.test(t, ctx) === NO) {
            no = true;
            break;
          }
        }
        if (no) continue;
        if (r.effect === "deny") {
          if (sure) return false; // deny wins whatever else matches
        } else may = true;
      }
      return may;
    } catch {
      return true;
    } finally {
      this.screened.clear();
    }
  }

  /** The candidates of one mayAllow call (reused: the screen runs on every new connection). */
  private readonly screened = new Set<CompiledRule>();

  /** resetRates forgets all rate-limit state. */
  resetRates(): void {
    this.rate.reset();
  }

  private decide(req: DecisionRequest, peek: boolean): Readonly<Decision> {
    if (!wellFormed(req)) return MALFORMED;
    const t = normalizeTarget(req.target);
    if (t.kind === "sql") return this.decideSql(req, t, peek);
    return this.decideTarget(req, t, peek);
  }

  /**
   * decideSql decides a statement text: each access it makes (./sql.ts) is
   * decided as a target of its own; any deny denies the text (naming the
   * access), else any approve asks for approval, else it is allowed. A text
   * that does not parse is denied.
   */
  private decideSql(req: DecisionRequest, t: SqlTarget, peek: boolean): Readonly<Decision> {
    const a = analyzeSql(t.statement);
    if (!a.ok) return { effect: "deny", reason: `the statement cannot be judged, so it is denied (fails closed): ${a.error}` };
    const accesses = a.accesses;
    if (!accesses.length) return NO_ACCESS;
    const m = this.sqlMemo(a, t);
    const parts = m.parts;
    let approve = -1;
    let same = true;
    for (let i = 0; i < accesses.length; i++) {
      const d = this.decideTarget(req, m.targets[i] as unknown as Target, peek);
      if (d.effect === "deny") {
        m.combined = undefined; // parts is now partly updated: the next full pass combines afresh
        const reason = `${formatAccess(accesses[i]!)}: ${d.reason}`;
        return d.ruleId !== undefined ? { effect: "deny", ruleId: d.ruleId, reason } : { effect: "deny", reason };
      }
      if (d.effect === "approve" && approve < 0) approve = i;
      if (parts[i] !== d) {
        parts[i] = d;
        same = false;
      }
    }
    if (accesses.length === 1) return parts[0]!;
    // Rule decisions are shared frozen objects: the same ones as last time make the same combined decision.
    if (same && m.combined !== undefined) return m.combined;
    const d =
      approve >= 0
        ? { effect: "approve" as const, ruleId: parts[approve]!.ruleId!, reason: `${formatAccess(accesses[approve]!)}: ${parts[approve]!.reason}` }
        : { effect: "allow" as const, ruleId: parts[0]!.ruleId!, reason: `allowed: ${accesses.map((x, i) => `${formatAccess(x)} by "${parts[i]!.ruleId}"`).join("; ")}` };
    m.combined = Object.freeze(d);
    return m.combined;
  }

  /** What decideSql keeps per analysed text: the access targets (for the last database asked about) and the last combined decision. */
  private readonly sqlMemos = new WeakMap<object, SqlMemo>();

  private sqlMemo(a: { accesses: readonly SqlAccess[] }, t: SqlTarget): SqlMemo {
    let m = this.sqlMemos.get(a);
    const rows = t.rowFilters === true;
    if (m !== undefined && m.database === t.database && m.rowFilters === rows) return m;
    const targets = a.accesses.map((acc) => {
      const at: SqlAccessTarget = { kind: "sql-access", database: t.database, operation: acc.operation, object: acc.object };
      if (acc.columns) at.columns = acc.columns;
      if (acc.dangerous) at.dangerous = true;
      if (rows) at.rowFilters = true;
      return at;
    });
    m = { database: t.database, rowFilters: rows, targets, parts: new Array(targets.length), combined: undefined };
    this.sqlMemos.set(a, m);
    return m;
  }

  private decideTarget(req: DecisionRequest, t: Target, peek: boolean): Readonly<Decision> {
    this.rowsOnly = undefined;
    this.t = t;
    this.ctx = this.hotCtx.reset(req);
    this.approves.n = 0;
    this.allows.n = 0;
    this.denyRule = undefined;
    this.denyUnknown = undefined;
    this.limited = undefined;
    this.collect = false;
    this.visitCandidates(req.principal, t);
    const denyRule = this.denyRule as CompiledRule | undefined; // set by consider()
    if (denyRule) {
      const what = this.denyUnknown;
      if (what !== undefined && denyRule.effect !== "deny") return denyRule.unknown[what] ?? unknownDecision(denyRule.id, what);
      return denyRule.decision;
    }
    const r = this.pick(this.approves, req.principal, peek) ?? this.pick(this.allows, req.principal, peek);
    if (r) return r.decision;
    const limited = this.limited as CompiledRule | undefined; // set by pick()
    if (limited) return { effect: "deny", ruleId: limited.id, reason: `rule "${limited.id}" allows ${limited.perMinute} calls per minute per agent and ${describePrincipal(req.principal)} has used them: denied` };
    const rowsOnly = this.rowsOnly as CompiledRule | undefined; // set by consider()
    if (rowsOnly)
      return {
        effect: "deny",
        ruleId: rowsOnly.id,
        reason: `only rule "${rowsOnly.id}" would allow it, with a row filter (rows), which only the database gateway enforces: denied in-process (connect through the database gateway, or add a rule without rows)`,
      };
    return { effect: "deny", reason: `no rule allows ${describePrincipal(req.principal)} to ${formatTarget(t)} (deny by default)` };
  }

  // Per-call state of decide/visitCandidates, kept on the instance so the hot
  // path allocates no closures (evaluate is synchronous and not re-entered).
  private t: Target = undefined as unknown as Target;
  private ctx: Ctx = undefined as unknown as Ctx;
  private readonly hotCtx: Ctx;
  private user: string | undefined;
  /** The raw user that `user` was normalized from (normalized again only when it changes). */
  private rawUser: string | undefined;
  private nodes: readonly string[] | undefined;
  private tags: string[] = [];
  /** explain's mode: record candidates instead of deciding. */
  private collect = false;
  private collected: Set<CompiledRule> | undefined;

  /** The first rule that matched but for its row filter (rows), not enforced here (for the denial's reason). */
  private rowsOnly: CompiledRule | undefined;

  /** The first rate-limited rule passed over by pick (for the denial's reason). */
  private limited: CompiledRule | undefined;

  /**
   * pick returns the deciding rule of one class: the first in file order
   * whose rate bucket (if any) has a token; rules passed over for their rate
   * are remembered in this.limited.
   */
  private pick(list: RuleList, p: Principal, peek: boolean): CompiledRule | undefined {
    const rules = list.rules;
    for (let i = 0; i < list.n; i++) {
      const r = rules[i]!;
      if (r.perMinute !== undefined) {
        this.ctx.readTime();
        if (!this.rate.take(r.index, this.agentKeys.of(p), r.perMinute, this.ctx.time, peek)) {
          this.limited ??= r;
          continue;
        }
      }
      return r;
    }
    return undefined;
  }

  /** consider checks one candidate rule (src and host already known to match unless hostCheck). */
  private consider(r: CompiledRule, hostCheck: boolean): void {
    if (this.collect) {
      this.collected!.add(r);
      return;
    }
    const t = this.t;
    if (hostCheck && !r.hostMatches(t as HostTarget)) return;
    const conds = r.conds;
    let unknown: string | undefined;
    for (let i = 0; i < conds.length; i++) {
      const o = conds[i]!.test(t, this.ctx);
      if (o === NO) {
        // The row filter is the last condition: everything else matched.
        if (conds[i]!.what === ROWS_WHAT && r.effect !== "deny" && unknown === undefined) this.rowsOnly ??= r;
        return;
      }
      if (o === UNKNOWN) unknown = conds[i]!.what;
    }
    if (unknown !== undefined || r.effect === "deny") {
      if (!this.denyRule || r.index < this.denyRule.index) {
        this.denyRule = r;
        this.denyUnknown = unknown;
      }
    } else if (r.effect === "approve") this.approves.add(r);
    else this.allows.add(r);
  }

  /** srcOk is the who-check used when a small bucket is scanned (the principal was prepared by visitCandidates). */
  private srcOk(r: CompiledRule): boolean {
    const src = r.src;
    if (src.star) return true;
    const tags = this.tags;
    for (let i = 0; i < tags.length; i++) if (src.tags.has(tags[i]!)) return true;
    if (this.user !== undefined && src.users.has(this.user)) return true;
    const nodes = this.nodes;
    if (nodes) for (let i = 0; i < nodes.length; i++) if (src.nodes.has(nodes[i]!)) return true;
    return false;
  }

  private visitList(l: CompiledRule[] | undefined, hostCheck: boolean): void {
    if (l) for (let i = 0; i < l.length; i++) this.consider(l[i]!, hostCheck);
  }

  private visit(b: PrincipalBucket | undefined, hostCheck: boolean): void {
    if (!b) return;
    const small = b.small;
    if (small) {
      for (let i = 0; i < small.length; i++) if (this.srcOk(small[i]!)) this.consider(small[i]!, hostCheck);
      return;
    }
    this.visitList(b.star, hostCheck);
    const tags = this.tags;
    for (let i = 0; i < tags.length; i++) this.visitList(b.byTag.get(tags[i]!), hostCheck);
    if (this.user !== undefined) this.visitList(b.byUser.get(this.user), hostCheck);
    const nodes = this.nodes;
    if (nodes) for (let i = 0; i < nodes.length; i++) this.visitList(b.byNode.get(nodes[i]!), hostCheck);
  }

  /** visitCandidates considers every indexed rule that names the request's host key and identity. */
  private visitCandidates(p: Principal, t: Target): void {
    const idx: KindIndex = this.compiled.index[(t.kind as string) === "sql-access" ? "sql" : (t.kind as Exclude<Target["kind"], "sql">)];
    this.tags = p.tags;
    if (p.user !== this.rawUser) {
      const user = p.user ? normalizeUser(p.user) : undefined;
      this.user = user;
      this.rawUser = p.user;
    }
    this.nodes = p.node ? this.nodeNames.of(p.node) : undefined;
    if (t.kind === "http" || t.kind === "tcp" || t.kind === "udp" || t.kind === "dns") {
      // A DNS look-up is filed by the name it looks up, as a connection by its host.
      const host = t.kind === "dns" ? t.name : t.host;
      this.visit(idx.exact.get(host), false);
      const peer = t.kind === "dns" ? undefined : t.peer?.name;
      if (peer) {
        const names = peerNames.of(peer);
        for (let i = 0; i < names.length; i++) if (names[i] !== host) this.visit(idx.exact.get(names[i]!), false);
      }
      if (idx.hasSuffixes) {
        // Each parent suffix of the host ("b.c" and "c" of "a.b.c"), found by
        // its hash (compile.ts, suffixHash) without slicing the host.
        const byHash = idx.suffixByHash;
        const len = host.length;
        let h = 0;
        for (let i = len - 1; i > 0; i--) {
          h = hashStep(h, host.charCodeAt(i));
          if (host.charCodeAt(i - 1) !== 46 /* . */) continue;
          for (let s = byHash.get(h & SUFFIX_HASH_MASK); s; s = s.next) if (s.suffix.length === len - i && host.startsWith(s.suffix, i)) this.visit(s.bucket, false);
        }
      }
      this.visit(idx.other, true);
    } else if (t.kind === "mcp") {
      this.visit(idx.exact.get(t.server), false);
      this.visit(idx.other, false);
    } else if (t.kind === "token") {
      this.visit(idx.exact.get(t.audience), false);
      this.visit(idx.other, false);
    } else if ((t.kind as string) === "sql-access") {
      this.visit(idx.other, false);
    } else {
      this.visit(idx.exact.get((t as LlmTarget).provider), false);
      this.visit(idx.other, false);
    }
  }
}

function wellFormed(req: DecisionRequest): boolean {
  return (
    typeof req === "object" &&
    req !== null &&
    typeof req.principal === "object" &&
    req.principal !== null &&
    Array.isArray(req.principal.tags) &&
    typeof req.target === "object" &&
    req.target !== null &&
    KINDS.has(req.target.kind) &&
    (req.target.kind === "http" || req.target.kind === "tcp" || req.target.kind === "udp" ? typeof req.target.host === "string" && typeof req.target.port === "number" : true) &&
    // A DNS target's record type and server must be what they claim: a server that is not a string must not read as "the system's".
    (req.target.kind !== "dns" || (typeof req.target.name === "string" && (req.target.rrtype === undefined || typeof req.target.rrtype === "string") && (req.target.server === undefined || typeof req.target.server === "string"))) &&
    (req.target.kind !== "http" || (typeof req.target.path === "string" && typeof req.target.method === "string")) &&
    (req.target.kind !== "token" || (typeof req.target.audience === "string" && typeof req.target.method === "string" && typeof req.target.location === "string")) &&
    (req.target.kind !== "sql" || (typeof req.target.database === "string" && typeof req.target.statement === "string"))
  );
}

/**
 * normalizeTarget lower-cases the host or looked-up name (a deny rule must
 * not be dodged by "EVIL.com" or "evil.com."), upper-cases the method and a
 * record type, and merges repeated
 * slashes in the path; it copies only when
 * something changes, so a well-formed request costs one regex test.
 */
function normalizeTarget(t: Target): Target {
  if (t.kind === "http") {
    const host = normalizeHost(t.host);
    const method = t.method.toUpperCase(); // V8 returns the same string when nothing changes
    // Servers commonly merge repeated slashes: "//admin" must not dodge a rule about "/admin/**".
    const path = t.path.includes("//") ? t.path.replace(/\/{2,}/g, "/") : t.path;
    return host === t.host && method === t.method && path === t.path ? t : { ...t, host, method, path };
  }
  if (t.kind === "tcp" || t.kind === "udp") {
    const host = normalizeHost(t.host);
    return host === t.host ? t : { ...t, host };
  }
  if (t.kind === "token") {
    // The audience as the index files it, the method upper-case (the location is parsed by the condition).
    const n = normalizeAudience(t.audience);
    const audience = typeof n === "string" ? n : t.audience;
    const method = t.method.toUpperCase();
    return audience === t.audience && method === t.method ? t : { ...t, audience, method };
  }
  if (t.kind === "dns") {
    const name = normalizeHost(t.name);
    const rrtype = typeof t.rrtype === "string" ? t.rrtype.toUpperCase() : t.rrtype;
    return name === t.name && rrtype === t.rrtype ? t : { ...t, name, rrtype };
  }
  return t;
}

function safeFormat(t: Target | undefined): string {
  try {
    return t ? formatTarget(t) : "(no target)";
  } catch {
    return "(unprintable target)";
  }
}

