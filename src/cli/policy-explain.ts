/**
 * `meshguard policy explain FILE --as WHO REQUEST`: a decision, rule by rule.
 * `meshguard policy explain REQUEST`: the same, asked of a running node's
 * guard, with its live policy and identity.
 */

import { ErrorCode } from "../index.js";
import type { ExplainResult } from "../inspect/index.js";
import { describePrincipal, loadPolicy, parsePrincipal, parseRequest, type DecisionRequest, type Explanation, type Principal, type RequestExtras } from "../policy/index.js";
import { ATTACH_OPTIONS, withSession } from "./attach.js";
import type { Command, Context } from "./command.js";

function explanationText(ex: Explanation, head: string[] = []): string {
  const d = ex.decision;
  const out = [`${d.effect.toUpperCase()}${d.ruleId ? ` by rule "${d.ruleId}"` : ""}: ${d.reason}`, ...head, `  who:     ${describePrincipal(ex.principal)}`, `  request: ${ex.request}`, ``];
  let access: string | undefined;
  for (const r of ex.rules) {
    // A statement lists every sql rule once per access it makes.
    if (r.access !== undefined && r.access !== access) {
      access = r.access;
      out.push(`for ${access}:`);
    }
    const failed = r.checks.filter((c) => c.ok !== true);
    const mark = r.result === "match" ? "MATCH  " : r.result === "unknown" ? "UNKNOWN" : r.result === "rate-limited" ? "LIMITED" : "-      ";
    out.push(`${mark} ${r.ruleId} (${r.effect}, ${r.kind})`);
    for (const c of r.result === "no-match" ? failed : r.checks) out.push(`          ${c.ok === true ? "✓" : c.ok === false ? "✗" : "?"} ${c.what}: ${c.detail}`);
  }
  if (ex.rules.length === 0) out.push("(the policy has no rules: everything is denied)");
  return out.join("\n") + "\n";
}

/** explainLive asks the running node's guard: its policy in force, its identity unless --as. */
async function explainLive(ctx: Context, line: string, extras: RequestExtras, as: string | undefined, at: string | undefined): Promise<number> {
  const { result, socket } = await withSession(ctx, { brief: false }, async (s) => ({
    socket: s.socket,
    result: (await s.call("explain", {
      request: line,
      ...(as ? { as } : {}),
      ...(at ? { at } : {}),
      ...(extras.headers ? { headers: extras.headers } : {}),
      ...(extras.bodySize !== undefined ? { bodySize: extras.bodySize } : {}),
      ...(extras.peerTags ? { peerTags: extras.peerTags } : {}),
    })) as ExplainResult & Explanation,
  }));
  const doc = { ...result, socket };
  ctx.result(doc, () => {
    const p = result.policy;
    const pol = p.hash ? `sha256:${p.hash.slice(0, 12)}${p.file ? ` from ${p.file}` : ""}` : "none";
    return explanationText(result, [`  policy:  ${pol}, in force in the node at ${socket} (guard mode ${result.mode})`]);
  });
  return 0;
}

async function run(ctx: Context): Promise<number> {
  const attach = ctx.str("socket") !== undefined || ctx.str("state-dir") !== undefined;
  const live = ctx.positionals.length === 1;
  const [file, line] = (live ? [undefined, ctx.positionals[0]] : ctx.positionals) as [string | undefined, string];
  const as = ctx.str("as");
  if (!as && !live && !attach) throw ctx.usage("--as WHO is required with FILE (e.g. --as tag:research-agent), unless --state-dir or --socket names the node to explain as");
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

  if (live) return explainLive(ctx, line, extras, as, at);

  // FILE's policy; the identity from --as, else that of the node named by --state-dir/--socket.
  const target = parseRequest(line, extras);
  let principal: Principal;
  if (as) principal = parsePrincipal(as);
  else {
    const self = await withSession(ctx, { brief: false }, async (s) => (await s.call("status", { ping: false })).self);
    principal = self.guard?.principal ?? { node: self.hostname, tags: self.tags, ...(self.user ? { user: self.user } : {}) };
  }
  const req: DecisionRequest = { principal, target };
  if (now) req.now = now;
  const policy = loadPolicy(await ctx.read(file!, ErrorCode.POLICY_FILE_UNREADABLE), { file: file!, runTests: false });
  const ex = policy.explain(req);
  ctx.result(ex, () => explanationText(ex));
  return 0;
}

export const policyExplainCommand: Command = {
  name: "policy explain",
  summary: "show a decision and why each rule did or did not match",
  usage: [
    "FILE --as WHO [--at TIME] [--header NAME:VALUE] [--body-size N] [--peer-tag tag:x] [--json] REQUEST",
    "[--state-dir DIR | --socket PATH] [--as WHO] [--at TIME] [--header NAME:VALUE] [--body-size N] [--peer-tag tag:x] [--json] REQUEST",
    "FILE (--state-dir DIR | --socket PATH) [--at TIME] [...] [--json] REQUEST",
  ],
  description: `Decides REQUEST made by WHO under the policy in FILE ("-" reads standard input)
with the same code the guard runs, and prints the decision, then every rule:
MATCH, UNKNOWN (needs a fact the request lacks: counts as a deny), LIMITED
(rate) or "-" with the checks that failed.

Without FILE, asks a running node instead (chosen as for \`meshguard status\`;
no node is brought up): its guard explains REQUEST with the policy in force in
that process and the identity the guard decides as (--as overrides it); a
tailnet dial ("tcp db:5432 tailnet") is judged with the peer's tags from the
node's netmap, as the guard judges a real dial. With FILE and --state-dir or
--socket, FILE's policy is asked as that node's identity: what a new policy
would do to a running agent.

REQUEST is one of:
  "GET https://api.example.com/v2/users/7?page=2"
  "tcp db.internal:5432"   "tls db.internal:5432"   ("... tailnet" for a MeshNode dial)
  'mcp github create_issue {"repo":"acme/app"}'
  "llm openai/gpt-4o 4096"  (the number is max tokens)
WHO is "tag:x", "alice@example.com", "alice@", "node:name", or a comma-separated list.`,
  args: ["FILE", "REQUEST"],
  minArgs: 1,
  options: {
    as: { type: "string", arg: "WHO", help: "the caller's identity (required)" },
    at: { type: "string", arg: "TIME", help: "decide as of this ISO 8601 time, e.g. 2026-03-09T14:00:00Z (default: now)" },
    header: { type: "string", arg: "NAME:VALUE", multiple: true, help: "a request header" },
    "body-size": { type: "string", arg: "N", help: "the body size in bytes (default: unknown, as for a stream)" },
    "peer-tag": { type: "string", arg: "tag:x", multiple: true, help: "the target is a tailnet peer with this tag" },
    ...ATTACH_OPTIONS,
  },
  json: "print the explanation: { decision, principal, request, rules: [{ ruleId, effect, kind, result, checks }] }; from a running node also { policy: { hash?, file?, format? }, mode, socket }",
  examples: [
    { cmd: 'policy explain policy.hujson --as tag:research-agent "GET https://api.github.com/admin/users"', about: "why an HTTP call is allowed or denied" },
    { cmd: 'policy explain policy.hujson --as tag:billing-agent --at 2026-03-09T20:00:00Z --body-size 512 "POST https://payments.internal/v2/transactions"', about: "the same call outside office hours, with its body size" },
    { cmd: "policy explain policy.hujson --as alice@ --json \"tcp db.internal:5432\"", about: "a raw TCP connection, as JSON" },
    { cmd: 'policy explain "GET https://api.github.com/repos/acme/app"', about: "ask the running node's guard, with its live policy and identity" },
    { cmd: 'policy explain new-policy.hujson --state-dir ~/.local/state/meshguard/research-agent "tcp db:5432 tailnet"', about: "what a new policy would decide for that running agent" },
  ],
  exits: {
    0: "explained (whatever the decision)",
    1: "FILE is unreadable or invalid, or REQUEST or WHO cannot be read (MESHGUARD_POLICY_REQUEST_INVALID); no running node to ask (MESHGUARD_NO_RUNNING_NODE), or its process has no guard (MESHGUARD_CONTROL_SOCKET_FAILED)",
    2: "usage error (also: --as missing with FILE, a bad --at, --header or --body-size)",
  },
  run,
};
