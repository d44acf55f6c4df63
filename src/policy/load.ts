/**
 * loadPolicy: text in, a compiled Policy out — or a MeshguardError saying
 * everything that is wrong. Parse (HuJSON), validate (shape, then meaning),
 * compile (matchers, indexes), then run the file's `tests` on a fresh
 * evaluator; a policy whose tests fail is rejected with the failing cases.
 */

import { createHash } from "node:crypto";
import { applyEdits, modify } from "jsonc-parser";

import { ErrorCode, MeshguardError } from "../errors.js";
import { compile, ruleId, type CompiledRules } from "./compile.js";
import { parseDuration } from "./duration.js";
import { Evaluator, systemClock, type Explanation } from "./engine.js";
import { compileGatewayRoles, type GatewayRoles } from "./gateway.js";
import { PolicyInvalidError, PolicyTestsFailedError, type TestFailure } from "./errors.js";
import { parsePrincipal } from "./identity.js";
import { parseRequest } from "./request.js";
import { MESHGUARD_KEY, type PolicyVersion, type Rule, type TestCase } from "./schema.js";
import { SourceFile } from "./source.js";
import { validate, type PolicyDocument } from "./validate.js";
import type { Decision, DecisionRequest, Principal } from "./types.js";

export interface LoadOptions {
  /** Where the text came from, for messages ("policy.hujson"). */
  file?: string;
  /** The time source for time windows and rates (default: the system clock). */
  clock?: () => Date;
  /** Run the file's `tests` and reject the policy if one fails (default true). */
  runTests?: boolean;
}

/** The result of one test case. */
export interface TestResult {
  index: number;
  as: string | string[];
  request: string;
  expect: string;
  /** The rule the case expects to decide, when it names one. */
  ruleId?: string;
  got: Decision;
  pass: boolean;
  line: number;
  column: number;
}

/** Policy is a loaded, compiled policy. Its methods never throw on a request. */
export class Policy {
  /** The file format version (1; 2 for a file that may hold dns and udp rules; 3 for one with a gateway section; 4 for token rules). */
  readonly version: PolicyVersion;
  /** SHA-256 (hex) of the policy text: the same text gives the same hash. */
  readonly hash: string;
  readonly file?: string;
  private readonly evaluator: Evaluator;
  /** The compiled `gateway` section (format version 3); undefined when the file has none. */
  readonly gateway: GatewayRoles | undefined;
  /**
   * The `maxTtl` of each token rule that has one, in milliseconds, by rule id
   * (format version 4): the token issuer caps a token by the rules that
   * granted its actions (a Decision names its rule, not the rule's limits).
   */
  readonly tokenMaxTtl: ReadonlyMap<string, number>;
  readonly document: PolicyDocument;
  private readonly source: SourceFile;
  readonly compiled: CompiledRules;
  private readonly clock: () => Date;

  /** @internal use loadPolicy. */
  constructor(
    document: PolicyDocument,
    source: SourceFile,
    compiled: CompiledRules,
    clock: () => Date,
    file?: string,
  ) {
    this.document = document;
    this.source = source;
    this.compiled = compiled;
    this.clock = clock;
    this.version = document.part.version;
    this.hash = createHash("sha256").update(source.text).digest("hex");
    if (file !== undefined) this.file = file;
    this.evaluator = new Evaluator(compiled, clock);
    this.gateway = document.part.gateway ? compileGatewayRoles(document.part.gateway, document.groups) : undefined;
    const ttl = new Map<string, number>();
    document.part.rules.forEach((r, i) => {
      const ms = r.token?.maxTtl !== undefined ? parseDuration(r.token.maxTtl) : undefined;
      if (ms !== undefined) ttl.set(ruleId(r, i), ms);
    });
    this.tokenMaxTtl = ttl;
  }

  /** The policy text as loaded (a worker thread's guard loads the same text: ../guard/worker.ts). */
  get text(): string {
    return this.source.text;
  }

  /** The validated rules, in file order. */
  get rules(): readonly Rule[] {
    return this.document.part.rules;
  }

  /** evaluate decides one request. It never throws: an internal error is a deny with the reason. */
  evaluate(req: DecisionRequest): Decision {
    return this.evaluator.evaluate(req);
  }

  /**
   * giveBack returns the rate-limit token a decision of `evaluate` spent (if
   * its rule has `when.rate`), for a call about to be decided again: the
   * gateway decides a call anew after a pre-request hook changed it, and a
   * call counts once. Only for a decision this Policy returned.
   */
  giveBack(principal: Principal, decision: Decision): void {
    this.evaluator.giveBack(principal, decision);
  }

  /** mayAllow: could some rule allow a call to this host and port, whatever else it carries (the guard's screen before connecting; see Evaluator.mayAllow). */
  mayAllow(req: DecisionRequest): boolean {
    return this.evaluator.mayAllow(req);
  }

  /** explain evaluates every rule and says why each did or did not match (spends no rate tokens). */
  explain(req: DecisionRequest): Explanation {
    return this.evaluator.explain(req);
  }

  /** runTests runs the file's `tests` on a fresh evaluator (rate state of this policy is untouched). */
  runTests(): TestResult[] {
    const fresh = new Evaluator(this.compiled, this.clock);
    const base = this.document.base;
    return (this.document.part.tests ?? []).map((tc, index) => {
      const got = runCase(fresh, tc);
      const want = tc.ruleId ?? tc.rule;
      const pass = got.effect === tc.expect && (want === undefined || got.ruleId === want);
      const res: TestResult = { index, as: tc.as, request: tc.request, expect: tc.expect, got, pass, ...this.source.locate([...base, "tests", index]) };
      if (want !== undefined) res.ruleId = want;
      return res;
    });
  }

  /** tailnetPart is the file's tailnet policy without meshguard's key (undefined for a meshguard-only file). */
  tailnetPart(): string | undefined {
    return this.document.base.length ? tailnetPart(this.source.text) : undefined;
  }
}

function runCase(ev: Evaluator, tc: TestCase): Decision {
  const extras: Parameters<typeof parseRequest>[1] = {};
  if (tc.headers) extras.headers = tc.headers;
  if (tc.bodySize !== undefined) extras.bodySize = tc.bodySize;
  if (tc.peerTags) extras.peerTags = tc.peerTags;
  const target = parseRequest(tc.request, extras);
  if (target.kind === "sql" && tc.rowFilters === true) target.rowFilters = true;
  const req: DecisionRequest = { principal: parsePrincipal(tc.as), target };
  if (tc.at) req.now = new Date(tc.at);
  return ev.evaluate(req);
}

/** parsePolicy parses and validates without compiling (editors, linters). Throws PolicyInvalidError. */
export function parsePolicy(text: string, opts: Pick<LoadOptions, "file"> = {}): { document: PolicyDocument; source: SourceFile } {
  if (typeof text !== "string") throw new PolicyInvalidError([{ path: "", line: 1, column: 1, message: `the policy must be text, got ${typeof text}` }], opts.file);
  const src = SourceFile.parse(text);
  if (Array.isArray(src)) throw new PolicyInvalidError(src, opts.file);
  const doc = validate(src);
  if (Array.isArray(doc)) throw new PolicyInvalidError(doc, opts.file);
  return { document: doc, source: src };
}

/**
 * loadPolicy parses, validates, compiles and tests a policy. It throws
 * PolicyInvalidError (MESHGUARD_POLICY_INVALID) listing every issue with
 * path, line and column, or PolicyTestsFailedError
 * (MESHGUARD_POLICY_TESTS_FAILED) with the failing cases.
 */
export function loadPolicy(text: string, opts: LoadOptions = {}): Policy {
  let policy: Policy;
  try {
    const { document, source } = parsePolicy(text, opts);
    const compiled = compile(document.part.rules, { groups: document.groups });
    policy = new Policy(document, source, compiled, opts.clock ?? systemClock, opts.file);
  } catch (err) {
    if (err instanceof MeshguardError) throw err;
    // A bug here must still reject the policy (fail closed) and say so plainly.
    throw new MeshguardError(ErrorCode.INTERNAL, `internal error while loading the policy: ${(err as Error)?.message ?? String(err)}`, {
      cause: err,
      hint: "this is a bug in meshguard; please report it with the policy file",
    });
  }
  if (opts.runTests !== false) {
    const failures: TestFailure[] = policy
      .runTests()
      .filter((r) => !r.pass)
      .map((r) => {
        const f: TestFailure = { index: r.index, line: r.line, column: r.column, as: r.as, request: r.request, expect: r.expect, got: r.got };
        if (r.ruleId !== undefined) f.ruleId = r.ruleId;
        return f;
      });
    if (failures.length) throw new PolicyTestsFailedError(failures, opts.file);
  }
  return policy;
}

/**
 * tailnetPart returns the tailnet policy of a combined file without meshguard's
 * key: for text, as HuJSON text with comments and layout kept (ready for the
 * control server); for a parsed object, as a shallow copy. A file without a
 * "meshguard" key is returned unchanged.
 */
export function tailnetPart(doc: string): string;
export function tailnetPart(doc: Record<string, unknown>): Record<string, unknown>;
export function tailnetPart(doc: string | Record<string, unknown>): string | Record<string, unknown> {
  if (typeof doc === "string") {
    const edits = modify(doc, [MESHGUARD_KEY], undefined, { formattingOptions: { insertSpaces: true, tabSize: 2 } });
    return applyEdits(doc, edits);
  }
  const { [MESHGUARD_KEY]: _omit, ...rest } = doc;
  return rest;
}
