/**
 * `meshguard policy apply FILE --control CONFIG`: push the tailnet part of a
 * combined policy file (everything but its `meshguard` key, comments kept)
 * to a headscale control server.
 *
 * The file is checked first — meshguard's part must load and its tests
 * pass — so a broken file never reaches the control server. headscale is
 * driven through its own CLI over its unix socket
 * (`headscale -c CONFIG policy set -f FILE`), which needs the server's
 * config file (and so runs on the server's machine): `meshguard dev` prints
 * it. headscale runs the tailnet policy's own `tests` and refuses a policy
 * that fails them; that refusal is reported as is.
 */

import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseCommand } from "./args.js";

import { ensureHeadscale, type LocalControl } from "../control/index.js";
import { childEnv, runCommand } from "../control/proc.js";
import { ErrorCode, MeshguardError, isMeshguardError } from "../errors.js";
import { loadPolicy } from "../policy/index.js";
import type { PolicyIO, PolicySubcommand } from "./policy.js";

const USAGE = `usage: meshguard policy apply FILE --control CONFIG [--headscale BIN] [--json]

Pushes the tailnet part of FILE (all but its "meshguard" key) to a headscale
server, after checking that meshguard's part loads and its tests pass.

  --control CONFIG   the headscale server's config file (meshguard dev prints it:
                     "inspect  headscale -c CONFIG nodes list")
  --headscale BIN    the headscale binary (default: the one meshguard builds)
  --dry-run          check and print the tailnet part; push nothing
  --json             one JSON object on standard output
`;

/** Where to apply: a LocalControl started in this process, or a headscale config (and binary) to drive the CLI with. */
export type ApplyTarget = LocalControl | { config: string; binary?: string };

/**
 * applyTailnetPolicy checks a combined policy file and pushes its tailnet
 * part; resolves with the text sent. Throws MeshguardError: the meshguard
 * part is invalid (MESHGUARD_POLICY_INVALID / _TESTS_FAILED), there is no
 * tailnet part (MESHGUARD_INVALID_OPTIONS), or headscale refused it.
 */
export async function applyTailnetPolicy(text: string, target: ApplyTarget, opts: { file?: string } = {}): Promise<string> {
  const policy = loadPolicy(text, opts.file ? { file: opts.file } : {});
  const part = policy.tailnetPart();
  if (part === undefined) {
    throw new MeshguardError(ErrorCode.INVALID_OPTIONS, `${opts.file ?? "the policy"} has no tailnet part (it is a meshguard-only file)`, {
      hint: 'put the meshguard rules under a "meshguard" key beside the tailnet policy (groups, tagOwners, grants)',
    });
  }
  if ("setPolicy" in target) {
    await target.setPolicy(part);
    return part;
  }
  const binary = target.binary ?? (await ensureHeadscale());
  const dir = await mkdtemp(join(tmpdir(), "mg-apply-"));
  const file = join(dir, "tailnet.hujson");
  try {
    // hujson rejects a trailing `//` comment without a final newline.
    await writeFile(file, part.endsWith("\n") ? part : `${part}\n`, { mode: 0o600 });
    const r = await runCommand(binary, ["-c", target.config, "policy", "set", "-f", file, "-o", "json"], { env: childEnv(), timeoutMs: 30_000 });
    if (r.code !== 0 || r.timedOut) {
      let reason = r.spawnError?.message ?? (r.timedOut ? "timed out" : (r.stderr || r.stdout).trim());
      try {
        reason = (JSON.parse(r.stderr) as { error: string }).error;
      } catch {
        // not JSON: keep the raw text
      }
      throw new MeshguardError(ErrorCode.CONTROL_POLICY_REJECTED, `headscale did not apply the policy: ${reason}`, {
        hint: `check the tailnet part with: ${binary} -c ${target.config} policy check -f FILE`,
      });
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  return part;
}

async function policyApplyCommand(argv: string[], io: PolicyIO = {}): Promise<number> {
  const stdout = io.stdout ?? process.stdout;
  const stderr = io.stderr ?? process.stderr;
  const parsed = parseCommand<{ control?: string; headscale?: string; "dry-run"?: boolean }>(
    "policy apply",
    argv,
    { control: { type: "string" }, headscale: { type: "string" }, "dry-run": { type: "boolean" } },
    USAGE,
    { stdout, stderr },
  );
  if (typeof parsed === "number") return parsed;
  const { values, positionals } = parsed;
  const [file] = positionals;
  if (positionals.length !== 1 || file === undefined || (values.control === undefined && !values["dry-run"])) {
    stderr.write(`meshguard policy apply: expected FILE and --control CONFIG\n\n${USAGE}`);
    return 2;
  }
  let text: string;
  try {
    text = io.readText ? await io.readText(file) : await readFile(file, "utf8");
  } catch (err) {
    stderr.write(`meshguard policy apply: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}\n`);
    return 2;
  }
  try {
    if (values["dry-run"]) {
      const part = loadPolicy(text, { file }).tailnetPart();
      if (part === undefined) throw new MeshguardError(ErrorCode.INVALID_OPTIONS, `${file} has no tailnet part`);
      stdout.write(values.json ? JSON.stringify({ ok: true, applied: false, tailnet: part }) + "\n" : part.endsWith("\n") ? part : `${part}\n`);
      return 0;
    }
    if (!values.json) stderr.write(`meshguard policy apply: pushing the tailnet part of ${file} to headscale (${values.control})...\n`);
    await applyTailnetPolicy(text, { config: values.control!, ...(values.headscale ? { binary: values.headscale } : {}) }, { file });
    stdout.write(values.json ? JSON.stringify({ ok: true, applied: true, control: values.control }) + "\n" : `applied the tailnet policy of ${file}\n`);
    return 0;
  } catch (err) {
    if (!isMeshguardError(err)) throw err;
    if (values.json) stdout.write(JSON.stringify({ ok: false, error: { code: err.code, message: err.message } }) + "\n");
    else stderr.write(`meshguard policy apply: ${err.message}\n`);
    return 1;
  }
}

export const policyApply: PolicySubcommand = { summary: "push the tailnet part of a policy file to headscale", run: policyApplyCommand };
