/**
 * `meshguard policy apply FILE --control CONFIG`: push the tailnet part of a
 * combined policy file (everything but its `meshguard` key, comments kept)
 * to a headscale control server.
 *
 * `meshguard policy apply FILE --db URL|VAR`: apply its `sql` rules to a
 * PostgreSQL database — roles, grants, row security (meshguard/database,
 * applyDatabasePolicy; docs/database.md).
 *
 * The file is checked first — meshguard's part must load and its tests
 * pass — so a broken file never reaches the control server. headscale runs
 * the tailnet policy's own `tests` and refuses a policy that fails them;
 * that refusal is reported as is.
 */

import { setHeadscalePolicy, type HeadscaleServer, type LocalControl } from "../control/index.js";
import { ErrorCode, MeshguardError } from "../index.js";
import { applyDatabasePolicy, type DatabaseApplyResult } from "../database/index.js";
import { loadPolicy } from "../policy/index.js";
import type { Command, Context } from "./command.js";

/** Where to apply: a LocalControl started in this process, or a running headscale named by its config file. */
export type ApplyTarget = LocalControl | HeadscaleServer;

/**
 * applyTailnetPolicy checks a combined policy file and pushes its tailnet
 * part; resolves with the text sent. Throws MeshguardError: the meshguard
 * part is invalid (MESHGUARD_POLICY_INVALID / _TESTS_FAILED), there is no
 * tailnet part (MESHGUARD_INVALID_OPTIONS), or headscale refused it.
 */
export async function applyTailnetPolicy(text: string, target: ApplyTarget, opts: { file?: string } = {}): Promise<string> {
  const part = tailnetPartOf(text, opts.file);
  if ("setPolicy" in target) await target.setPolicy(part);
  else await setHeadscalePolicy(part, target);
  return part;
}

/** tailnetPartOf loads the file (meshguard part valid, tests passing) and returns its tailnet part. */
function tailnetPartOf(text: string, file: string | undefined): string {
  const part = loadPolicy(text, file !== undefined ? { file } : {}).tailnetPart();
  if (part === undefined) {
    throw new MeshguardError(ErrorCode.INVALID_OPTIONS, `${file ?? "the policy"} has no tailnet part (it is a meshguard-only file)`, {
      hint: 'put the meshguard rules under a "meshguard" key beside the tailnet policy (groups, tagOwners, grants)',
    });
  }
  return part;
}

/** dbConnection reads --db: a postgres:// URL, or the name of the environment variable holding one (kept out of the process list). */
function dbConnection(ctx: Context, value: string, env: NodeJS.ProcessEnv = process.env): string {
  if (/^postgres(ql)?:\/\//.test(value)) return value;
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(value)) throw ctx.usage(`--db takes a postgres:// URL or the name of an environment variable holding one, not ${JSON.stringify(value.replace(/:[^@/]*@/, ":***@"))}`);
  const url = env[value];
  if (url === undefined || url === "") {
    throw new MeshguardError(ErrorCode.DATABASE_APPLY_FAILED, `--db names the environment variable ${value}, which is ${url === undefined ? "not set" : "empty"}`, {
      hint: `set ${value}=postgres://USER:PASSWORD@HOST:5432/DATABASE (a role that may create roles and owns the tables)`,
    });
  }
  if (!/^postgres(ql)?:\/\//.test(url)) throw new MeshguardError(ErrorCode.DATABASE_APPLY_FAILED, `the environment variable ${value} does not hold a postgres:// URL`);
  return url;
}

/** dbText is the human output of a database apply: the SQL for a dry run, else what changed. */
function dbText(r: DatabaseApplyResult, file: string): string {
  const head = `-- ${file} → database ${r.database} (PostgreSQL ${r.serverVersion})\n`;
  const skipped = r.skipped.map((s) => `-- skipped rule ${s.ruleId}: ${s.reason}\n`).join("");
  if (r.dryRun) return head + skipped + (r.changed ? r.statements.map((s) => `${s};\n`).join("") : "-- nothing to change: the database matches the policy\n");
  if (!r.changed) return `database ${r.database} already matches ${file}: nothing changed\n`;
  const counts = new Map<string, number>();
  for (const c of r.changes) counts.set(c.kind, (counts.get(c.kind) ?? 0) + 1);
  return `applied ${file} to database ${r.database}: ${r.statements.length} statements (${[...counts].map(([k, n]) => `${k} ${n}`).join(", ")})\n`;
}

async function run(ctx: Context): Promise<number> {
  const file = ctx.positionals[0]!;
  const control = ctx.str("control");
  const db = ctx.str("db");
  const dryRun = ctx.flag("dry-run");
  if (control === undefined && db === undefined && !dryRun) throw ctx.usage("--control CONFIG or --db URL|VAR is required (or --dry-run)");
  for (const o of ["tag-set", "gateway-role", "gateway-password-env"]) {
    if (db === undefined && (ctx.list(o).length > 0 || ctx.str(o) !== undefined)) throw ctx.usage(`--${o} goes with --db`);
  }
  const text = await ctx.read(file, ErrorCode.POLICY_FILE_UNREADABLE);
  let database: DatabaseApplyResult | undefined;
  if (db !== undefined) {
    const url = dbConnection(ctx, db);
    const pwEnv = ctx.str("gateway-password-env");
    const gatewayPassword = pwEnv === undefined ? undefined : process.env[pwEnv];
    if (pwEnv !== undefined && !gatewayPassword) throw ctx.usage(`--gateway-password-env names ${pwEnv}, which is not set`);
    const gatewayRole = ctx.str("gateway-role");
    const policy = loadPolicy(text, { file });
    ctx.progress(`${dryRun ? "reading" : "applying the sql rules of " + file + " to"} the database (${db.startsWith("postgres") ? "--db URL" : db})...`);
    database = await applyDatabasePolicy(policy, {
      connectionString: url,
      dryRun,
      tagSets: ctx.list("tag-set").map((s) => s.split(",").map((t) => t.trim()).filter(Boolean)),
      ...(gatewayRole !== undefined ? { gatewayRole } : {}),
      ...(gatewayPassword !== undefined ? { gatewayPassword } : {}),
    });
    for (const w of database.warnings) ctx.progress(`warning: ${w}`);
    if (control === undefined) {
      ctx.result({ ok: true, applied: !dryRun && database.changed, database }, dbText(database, file));
      return 0;
    }
  }
  if (dryRun) {
    const part = tailnetPartOf(text, file);
    const sql = database ? dbText(database, file) : "";
    ctx.result({ ok: true, applied: false, tailnet: part, ...(database ? { database } : {}) }, sql + (part.endsWith("\n") ? part : `${part}\n`));
    return 0;
  }
  ctx.progress(`pushing the tailnet part of ${file} to headscale (${control})...`);
  const headscale = ctx.str("headscale");
  await applyTailnetPolicy(text, { config: control!, ...(headscale !== undefined ? { binary: headscale } : {}) }, { file });
  ctx.result({ ok: true, applied: true, control, ...(database ? { database } : {}) }, (database ? dbText(database, file) : "") + `applied the tailnet policy of ${file}\n`);
  return 0;
}

export const policyApplyCommand: Command = {
  name: "policy apply",
  summary: "push the tailnet part of a policy file to headscale; apply its sql rules to PostgreSQL",
  usage: ["FILE --control CONFIG [--headscale BIN] [--dry-run] [--json]", "FILE --db URL|VAR [--tag-set TAGS]... [--gateway-role NAME] [--gateway-password-env VAR] [--dry-run] [--json]"],
  description: `Pushes the tailnet part of FILE (all but its "meshguard" key, comments kept) to a
headscale server, after checking that meshguard's part loads and its tests
pass. headscale's own CLI does the push over the server's unix socket, so the
command needs the server's config file and runs on its machine. Pushing to
Tailscale's hosted control plane is not supported.

With --db, applies FILE's sql rules to a PostgreSQL database, in one
transaction: a role per user and per tag the rules name (and per --tag-set),
the database gateway's login role (NOINHERIT, a member of each), GRANTs on the
tables the rules' globs match now, ENABLE and FORCE ROW LEVEL SECURITY and a
row-security policy per role and command where a rule has rows, and the
meshguard schema. Run again after creating tables, and after changing FILE:
what is no longer granted is revoked, and meshguard's own policies that are
gone are dropped; nothing meshguard did not create is touched. A second run
changes nothing. --dry-run prints the SQL (it reads the catalog, changes
nothing). See docs/database.md.`,
  args: ["FILE"],
  options: {
    control: { type: "string", arg: "CONFIG", help: 'the headscale server\'s config file (meshguard dev prints it: "inspect  headscale -c CONFIG nodes list")' },
    headscale: { type: "string", arg: "BIN", help: "the headscale binary (default: the one meshguard builds)" },
    db: { type: "string", arg: "URL|VAR", help: "apply the sql rules to this PostgreSQL database: a postgres:// URL, or (better: not in the process list) the name of an environment variable holding one; the login must be able to create roles and own the tables" },
    "tag-set": { type: "string", arg: "TAGS", multiple: true, help: 'with --db: also make the role of nodes carrying these tags together ("tag:a,tag:b"), a member of each tag\'s role' },
    "gateway-role": { type: "string", arg: "NAME", help: "with --db: the database gateway's login role (default meshguard_gateway)" },
    "gateway-password-env": { type: "string", arg: "VAR", help: "with --db: the gateway role's password, from this environment variable, set when apply creates the role" },
    "dry-run": { type: "boolean", help: "check FILE and print its tailnet part (with --db: the SQL apply would run); change nothing" },
  },
  json: "print { ok: true, applied, control } (with --dry-run: { ok: true, applied: false, tailnet }); with --db also database: { database, serverVersion, dryRun, changed, statements, changes, warnings, skipped }",
  examples: [
    { cmd: "policy apply policy.hujson --control /tmp/meshguard-dev-x/config.yaml", about: "push to the tailnet `meshguard dev` runs" },
    { cmd: "policy apply policy.hujson --dry-run", about: "check the file and show what would be pushed" },
    { cmd: "policy apply policy.hujson --db DATABASE_URL --dry-run", about: "print the SQL that would make the database (URL in $DATABASE_URL) match the sql rules" },
    { cmd: "policy apply policy.hujson --db DATABASE_URL --tag-set tag:billing,tag:reports", about: "apply the sql rules, with a role for nodes tagged both billing and reports" },
  ],
  exits: {
    0: "applied (or, with --dry-run, checked); with --db also when the database already matched",
    1: "FILE is unreadable, invalid, its tests fail or it has no tailnet part; or headscale refused the policy (MESHGUARD_CONTROL_POLICY_REJECTED) or could not be reached (MESHGUARD_CONTROL_COMMAND_FAILED); or the database apply failed (MESHGUARD_DATABASE_APPLY_FAILED, nothing changed)",
    2: "usage error (also: none of --control, --db, --dry-run)",
  },
  run,
};
