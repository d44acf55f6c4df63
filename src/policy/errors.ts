/**
 * The errors the policy engine throws at load time. Evaluation never throws:
 * it returns a deny Decision instead (fail closed).
 */

import { ErrorCode, MeshguardError } from "../errors.js";
import type { PolicyIssue } from "./source.js";
import type { Decision } from "./types.js";

/** PolicyInvalidError rejects a whole policy; `issues` lists every problem found. */
export class PolicyInvalidError extends MeshguardError {
  readonly issues: PolicyIssue[];
  readonly file?: string;

  constructor(issues: PolicyIssue[], file?: string, cause?: unknown) {
    const where = file ?? "policy";
    const lines = issues.map((i) => `  ${where}:${i.line}:${i.column}${i.path ? ` ${i.path}` : ""}: ${i.message}`);
    super(ErrorCode.POLICY_INVALID, `invalid policy (${issues.length} ${issues.length === 1 ? "issue" : "issues"}):\n${lines.join("\n")}`, {
      hint: "fix the listed values; the previous policy (if any) stays in force. docs/policy.md describes the format",
      cause,
    });
    this.name = "PolicyInvalidError";
    this.issues = issues;
    if (file !== undefined) this.file = file;
  }
}

/** A failing case of a policy's `tests` section. */
export interface TestFailure {
  /** Index in `tests`, and where the case is in the file. */
  index: number;
  line: number;
  column: number;
  as: string | string[];
  request: string;
  expect: string;
  /** Expected deciding rule, when the case names one. */
  ruleId?: string;
  /** What the policy decided instead. */
  got: Decision;
}

/** PolicyTestsFailedError rejects a policy whose `tests` do not hold. */
export class PolicyTestsFailedError extends MeshguardError {
  readonly failures: TestFailure[];
  readonly file?: string;

  constructor(failures: TestFailure[], file?: string) {
    const where = file ?? "policy";
    const lines = failures.map(
      (f) =>
        `  ${where}:${f.line}:${f.column} tests[${f.index}]: as ${JSON.stringify(f.as)} ${JSON.stringify(f.request)}: ` +
        `expected ${f.expect}${f.ruleId ? ` by rule "${f.ruleId}"` : ""}, got ${f.got.effect}${f.got.ruleId ? ` by rule "${f.got.ruleId}"` : ""} (${f.got.reason})`,
    );
    super(ErrorCode.POLICY_TESTS_FAILED, `policy rejected: ${failures.length} failing ${failures.length === 1 ? "test" : "tests"}:\n${lines.join("\n")}`, {
      hint: "fix the rules or the expectations; `meshguard policy explain FILE --as WHO REQUEST` shows why each rule did or did not match",
    });
    this.name = "PolicyTestsFailedError";
    this.failures = failures;
    if (file !== undefined) this.file = file;
  }
}

/** requestError is the error for a request written as text that cannot be read. */
export function requestError(text: string, why: string): MeshguardError {
  return new MeshguardError(ErrorCode.POLICY_REQUEST_INVALID, `cannot read request ${JSON.stringify(text)}: ${why}`, {
    hint: 'write "GET https://host/path", "tcp host:port", "tls host:port", "mcp server tool {json args}" or "llm provider/model [maxTokens]"',
  });
}
