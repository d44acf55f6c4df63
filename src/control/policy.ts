/**
 * Setting the tailnet policy of a headscale server that this process did not
 * start (`LocalControl.setPolicy` covers one it did).
 */

import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { ErrorCode, MeshguardError } from "../errors.js";
import { anchorPolicy } from "./anchor.js";
import { ensureHeadscale } from "./build.js";
import { isRefusal, refusalReason } from "./headscale.js";
import { childEnv, lastLines, runCommand } from "./proc.js";

/** HeadscaleServer names a running headscale server by its config file. */
export interface HeadscaleServer {
  /** The server's config file (`meshguard dev` prints it); the CLI finds the server's unix socket there. */
  config: string;
  /** The headscale binary. Default: `ensureHeadscale()`. */
  binary?: string;
}

const TIMEOUT_MS = 30_000;

/**
 * setHeadscalePolicy replaces the tailnet policy of a running headscale
 * server through headscale's own CLI (`headscale -c CONFIG policy set`),
 * which talks to the server over its unix socket: it needs the server's
 * config file and runs on the server's machine. The text is sent as written
 * (HuJSON comments kept) plus the anchor grant (src/control/anchor.ts) that
 * keeps revocations holding on headscale v0.29.2. Exported for `meshguard policy apply`, so the CLI
 * does not drive headscale's CLI itself.
 *
 * Throws MESHGUARD_CONTROL_POLICY_REJECTED with headscale's reason when the
 * server refuses the policy (it also runs the policy's own `tests`), and
 * MESHGUARD_CONTROL_COMMAND_FAILED when the CLI could not run or reach the
 * server.
 */
export async function setHeadscalePolicy(policy: string, server: HeadscaleServer): Promise<void> {
  const binary = server.binary ?? (await ensureHeadscale());
  const dir = await mkdtemp(join(tmpdir(), "mg-policy-"));
  const file = join(dir, "tailnet.hujson");
  try {
    // hujson rejects a `//` comment that ends the input without a newline.
    const text = anchorPolicy(policy);
    await writeFile(file, text.endsWith("\n") ? text : `${text}\n`, { mode: 0o600 });
    // `-o json` silences headscale's logging and makes its errors JSON.
    const r = await runCommand(binary, ["-c", server.config, "policy", "set", "-f", file, "-o", "json"], { env: childEnv(), timeoutMs: TIMEOUT_MS });
    if (r.code === 0 && !r.timedOut) return;
    let reason: string;
    try {
      reason = (JSON.parse(r.stderr) as { error: string }).error;
    } catch {
      reason = r.spawnError?.message ?? (r.timedOut ? `timed out after ${TIMEOUT_MS / 1000} s` : lastLines(r.stderr || r.stdout, 10).join("\n") || `exit ${r.code}`);
    }
    if (isRefusal(reason)) {
      throw new MeshguardError(ErrorCode.CONTROL_POLICY_REJECTED, `headscale did not apply the policy: ${refusalReason(reason)}`, {
        hint: `fix the tailnet part; check it with: ${binary} -c ${server.config} policy check -f FILE`,
      });
    }
    throw new MeshguardError(ErrorCode.CONTROL_COMMAND_FAILED, `headscale did not apply the policy: ${reason}`, {
      hint: `is the server running, and is ${server.config} its config file? (meshguard dev prints it)`,
      cause: r.spawnError ?? new Error(r.stderr.trim() || r.stdout.trim() || reason),
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
