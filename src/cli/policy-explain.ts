/** `meshguard policy explain FILE --as WHO REQUEST`: a decision, rule by rule. */

import { ErrorCode } from "../index.js";
import { describePrincipal, loadPolicy, parsePrincipal, parseRequest, type DecisionRequest, type RequestExtras } from "../policy/index.js";
import type { Command, Context } from "./command.js";

async function run(ctx: Context): Promise<number> {
  const [file, line] = ctx.positionals as [string, string];
  const as = ctx.str("as");
  if (!as) throw ctx.usage("--as WHO is required (e.g. --as tag:research-agent)");
  const extras: RequestExtras = {};
  for (const h of ctx.list("header")) {
    const i = h.indexOf(":");
    if (i <= 0) throw ctx.usage(`--header ${JSON.stringify(h)}: expected NAME:VALUE`);
    (extras.headers ??= {})[h.slice(0, i).trim().toLowerCase()] = h.slice(i + 1).trim();
  }
  const bodySize = ctx.str("body-size");
  if (bodySize !== undefined) {
    const n = Number(bodySize);
    if (!/^\d+$/.test(bodySize) || !Number.isSafeInteger(n)) throw ctx.usage("--body-size must be a whole number of bytes");
    extras.bodySize = n;
  }
  const peerTags = ctx.list("peer-tag");
  if (peerTags.length) extras.peerTags = peerTags;
  const at = ctx.str("at");
  const now = at === undefined ? undefined : new Date(at);
  if (now && Number.isNaN(now.getTime())) throw ctx.usage(`--at ${JSON.stringify(at)} is not a time (use ISO 8601, e.g. 2026-03-09T14:00:00Z)`);

  const req: DecisionRequest = { principal: parsePrincipal(as), target: parseRequest(line, extras) };
  if (now) req.now = now;
  const policy = loadPolicy(await ctx.read(file, ErrorCode.POLICY_FILE_UNREADABLE), { file, runTests: false });
  const ex = policy.explain(req);
  ctx.result(ex, () => {
    const d = ex.decision;
    const out = [`${d.effect.toUpperCase()}${d.ruleId ? ` by rule "${d.ruleId}"` : ""}: ${d.reason}`, `  who:     ${describePrincipal(ex.principal)}`, `  request: ${ex.request}`, ``];
    for (const r of ex.rules) {
      const failed = r.checks.filter((c) => c.ok !== true);
      const mark = r.result === "match" ? "MATCH  " : r.result === "unknown" ? "UNKNOWN" : r.result === "rate-limited" ? "LIMITED" : "-      ";
      out.push(`${mark} ${r.ruleId} (${r.effect}, ${r.kind})`);
      for (const c of r.result === "no-match" ? failed : r.checks) out.push(`          ${c.ok === true ? "✓" : c.ok === false ? "✗" : "?"} ${c.what}: ${c.detail}`);
    }
    if (ex.rules.length === 0) out.push("(the policy has no rules: everything is denied)");
    return out.join("\n") + "\n";
  });
  return 0;
}

export const policyExplainCommand: Command = {
  name: "policy explain",
  summary: "show a decision and why each rule did or did not match",
  usage: ["FILE --as WHO [--at TIME] [--header NAME:VALUE] [--body-size N] [--peer-tag tag:x] [--json] REQUEST"],
  description: `Decides REQUEST made by WHO under the policy in FILE ("-" reads standard input)
with the same code the guard runs, and prints the decision, then every rule:
MATCH, UNKNOWN (needs a fact the request lacks: counts as a deny), LIMITED
(rate) or "-" with the checks that failed.

REQUEST is one of:
  "GET https://api.example.com/v2/users/7?page=2"
  "tcp db.internal:5432"   "tls db.internal:5432"   ("... tailnet" for a MeshNode dial)
  'mcp github create_issue {"repo":"acme/app"}'
  "llm openai/gpt-4o 4096"  (the number is max tokens)
WHO is "tag:x", "alice@example.com", "alice@", "node:name", or a comma-separated list.`,
  args: ["FILE", "REQUEST"],
  options: {
    as: { type: "string", arg: "WHO", help: "the caller's identity (required)" },
    at: { type: "string", arg: "TIME", help: "decide as of this ISO 8601 time, e.g. 2026-03-09T14:00:00Z (default: now)" },
    header: { type: "string", arg: "NAME:VALUE", multiple: true, help: "a request header" },
    "body-size": { type: "string", arg: "N", help: "the body size in bytes (default: unknown, as for a stream)" },
    "peer-tag": { type: "string", arg: "tag:x", multiple: true, help: "the target is a tailnet peer with this tag" },
  },
  json: "print the explanation: { decision, principal, request, rules: [{ ruleId, effect, kind, result, checks }] }",
  examples: [
    { cmd: 'policy explain policy.hujson --as tag:research-agent "GET https://api.github.com/admin/users"', about: "why an HTTP call is allowed or denied" },
    { cmd: 'policy explain policy.hujson --as tag:billing-agent --at 2026-03-09T20:00:00Z --body-size 512 "POST https://payments.internal/v2/transactions"', about: "the same call outside office hours, with its body size" },
    { cmd: "policy explain policy.hujson --as alice@ --json \"tcp db.internal:5432\"", about: "a raw TCP connection, as JSON" },
  ],
  exits: {
    0: "explained (whatever the decision)",
    1: "FILE is unreadable or invalid, or REQUEST or WHO cannot be read (MESHGUARD_POLICY_REQUEST_INVALID)",
    2: "usage error (also: --as missing, a bad --at, --header or --body-size)",
  },
  run,
};
