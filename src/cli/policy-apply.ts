/**
 * `meshguard policy apply FILE --control CONFIG`: push the tailnet part of a
 * combined policy file (everything but its `meshguard` key, comments kept)
 * to a headscale control server.
 *
 * The file is checked first — meshguard's part must load and its tests
 * pass — so a broken file never reaches the control server. headscale runs
 * the tailnet policy's own `tests` and refuses a policy that fails them;
 * that refusal is reported as is.
 */

import { setHeadscalePolicy, type HeadscaleServer, type LocalControl } from "../control/index.js";
import { ErrorCode, MeshguardError } from "../index.js";
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

async function run(ctx: Context): Promise<number> {
  const file = ctx.positionals[0]!;
  const control = ctx.str("control");
  const dryRun = ctx.flag("dry-run");
  if (control === undefined && !dryRun) throw ctx.usage("--control CONFIG is required (or --dry-run)");
  const text = await ctx.read(file, ErrorCode.POLICY_FILE_UNREADABLE);
  if (dryRun) {
    const part = tailnetPartOf(text, file);
    ctx.result({ ok: true, applied: false, tailnet: part }, part.endsWith("\n") ? part : `${part}\n`);
    return 0;
  }
  ctx.progress(`pushing the tailnet part of ${file} to headscale (${control})...`);
  const headscale = ctx.str("headscale");
  await applyTailnetPolicy(text, { config: control!, ...(headscale !== undefined ? { binary: headscale } : {}) }, { file });
  ctx.result({ ok: true, applied: true, control }, `applied the tailnet policy of ${file}\n`);
  return 0;
}

export const policyApplyCommand: Command = {
  name: "policy apply",
  summary: "push the tailnet part of a policy file to headscale",
  usage: ["FILE --control CONFIG [--headscale BIN] [--dry-run] [--json]"],
  description: `Pushes the tailnet part of FILE (all but its "meshguard" key, comments kept) to a
headscale server, after checking that meshguard's part loads and its tests
pass. headscale's own CLI does the push over the server's unix socket, so the
command needs the server's config file and runs on its machine. Pushing to
Tailscale's hosted control plane is not supported.`,
  args: ["FILE"],
  options: {
    control: { type: "string", arg: "CONFIG", help: 'the headscale server\'s config file (meshguard dev prints it: "inspect  headscale -c CONFIG nodes list")' },
    headscale: { type: "string", arg: "BIN", help: "the headscale binary (default: the one meshguard builds)" },
    "dry-run": { type: "boolean", help: "check FILE and print its tailnet part; push nothing" },
  },
  json: "print { ok: true, applied, control } (with --dry-run: { ok: true, applied: false, tailnet })",
  examples: [
    { cmd: "policy apply policy.hujson --control /tmp/meshguard-dev-x/config.yaml", about: "push to the tailnet `meshguard dev` runs" },
    { cmd: "policy apply policy.hujson --dry-run", about: "check the file and show what would be pushed" },
  ],
  exits: {
    0: "applied (or, with --dry-run, checked)",
    1: "FILE is unreadable, invalid, its tests fail or it has no tailnet part; or headscale refused the policy (MESHGUARD_CONTROL_POLICY_REJECTED) or could not be reached (MESHGUARD_CONTROL_COMMAND_FAILED)",
    2: "usage error (also: neither --control nor --dry-run)",
  },
  run,
};
