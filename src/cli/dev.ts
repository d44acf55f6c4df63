/**
 * `meshguard dev`: a local tailnet for development. Starts headscale on
 * 127.0.0.1 (building it on first use), creates the user `dev`, applies a
 * policy, prints the control URL and two auth keys, and runs until SIGINT or
 * SIGTERM.
 */

import { readFile } from "node:fs/promises";

import { HEADSCALE_VERSION, LocalControl, ensureHeadscale, type ControlUser } from "../control/index.js";
import { ErrorCode, MeshguardError } from "../errors.js";
import { parseCommand } from "./args.js";

const USAGE = `usage: meshguard dev [--policy FILE] [--dir DIR] [--json]

Runs a local tailnet: a headscale ${HEADSCALE_VERSION} control server on 127.0.0.1
with its embedded DERP relay, until interrupted.

  --policy FILE  tailnet policy (HuJSON); default: allow all, with tag:agent and
                 tag:service owned by the user dev
  --dir DIR      keep the tailnet's state in DIR (default: a temp dir removed on exit)
  --json         print one JSON object instead of text (progress stays on stderr)
  -h, --help     show this help
`;

/** DEV_USER owns the untagged key and the default policy's tags. */
const DEV_USER = "dev";
const AGENT_TAG = "tag:agent";
const KEY_EXPIRATION = "24h";

/** DEFAULT_DEV_POLICY is the permissive policy `meshguard dev` applies without --policy. */
export const DEFAULT_DEV_POLICY = `{
  // meshguard dev: permissive policy for local development.
  "tagOwners": {
    "tag:agent": ["${DEV_USER}@"],
    "tag:service": ["${DEV_USER}@"],
  },
  "grants": [
    // every node may reach every other node on any port
    { "src": ["*"], "dst": ["*"], "ip": ["*"] },
  ],
}
`;

export interface DevIO {
  stdout?: NodeJS.WritableStream;
  stderr?: NodeJS.WritableStream;
  /** Stops the tailnet like SIGINT does (for embedding and tests). */
  signal?: AbortSignal;
}

/** devCommand runs `meshguard dev` and resolves with the exit status. */
export async function devCommand(argv: string[], io: DevIO = {}): Promise<number> {
  const stdout = io.stdout ?? process.stdout;
  const stderr = io.stderr ?? process.stderr;

  const parsed = parseCommand<{ policy?: string; dir?: string }>("dev", argv, { policy: { type: "string" }, dir: { type: "string" } }, USAGE, { stdout, stderr }, false);
  if (typeof parsed === "number") return parsed;
  const { values } = parsed;
  const json = values.json === true;
  const progress = (msg: string): void => void stderr.write(`meshguard dev: ${msg}\n`);

  // Handle the signals from the start: an unhandled SIGINT would end the
  // process without its 'exit' hooks, leaving headscale running.
  let stopReason: string | undefined;
  let wake: () => void = () => {};
  const stopped = new Promise<void>((resolve) => {
    wake = resolve;
  });
  const onSignal = (sig: string): void => {
    stopReason ??= sig;
    wake();
  };
  const onSigint = (): void => onSignal("SIGINT");
  const onSigterm = (): void => onSignal("SIGTERM");
  const onAbort = (): void => onSignal("abort");
  process.on("SIGINT", onSigint);
  process.on("SIGTERM", onSigterm);
  io.signal?.addEventListener("abort", onAbort, { once: true });
  if (io.signal?.aborted) onAbort();

  let control: LocalControl | undefined;
  try {
    const policy = values.policy ? await readPolicy(values.policy) : DEFAULT_DEV_POLICY;
    if (!policy.includes(`"${AGENT_TAG}"`)) {
      // headscale tags a node from its key without consulting tagOwners, but a
      // rule can only name a tag that tagOwners defines.
      progress(`warning: the policy does not mention ${AGENT_TAG}; nodes joining with the agent key get that tag, but no rule can grant it anything`);
    }
    const binary = await ensureHeadscale({ onProgress: (ev) => progress(ev.message) });
    if (stopReason) return 130;
    control = await LocalControl.start({ binary, onProgress: (ev) => progress(ev.message), ...(values.dir ? { dir: values.dir } : {}) });
    const user = await devUser(control);
    await control.setPolicy(policy); // after the user exists, so "dev@" resolves
    const authKey = await control.createAuthKey({ user: user.id, reusable: true, expiration: KEY_EXPIRATION });
    const agentAuthKey = await control.createAuthKey({ tags: [AGENT_TAG], reusable: true, ephemeral: true, expiration: KEY_EXPIRATION });

    const info = {
      controlUrl: control.url,
      user,
      authKey,
      agentAuthKey,
      agentTags: [AGENT_TAG],
      keyExpiration: KEY_EXPIRATION,
      dir: control.dir,
      persistent: values.dir !== undefined,
      configPath: control.configPath,
      headscale: { version: HEADSCALE_VERSION, binary, pid: control.pid },
    };
    if (json) {
      stdout.write(JSON.stringify(info) + "\n");
    } else {
      stdout.write(
        [
          `local tailnet ready (headscale ${HEADSCALE_VERSION}, pid ${control.pid})`,
          ``,
          `  control URL  ${info.controlUrl}`,
          `  user         ${user.name} (id ${user.id})`,
          `  user key     ${authKey}`,
          `               reusable, expires in ${KEY_EXPIRATION}`,
          `  agent key    ${agentAuthKey}`,
          `               reusable, ephemeral, ${AGENT_TAG}, expires in ${KEY_EXPIRATION}`,
          `  state        ${control.dir}${info.persistent ? "" : " (removed on exit)"}`,
          `  inspect      ${binary} -c ${control.configPath} nodes list`,
          ``,
          `Press Ctrl-C to stop.`,
          ``,
        ].join("\n"),
      );
    }

    const crashed = await Promise.race([stopped.then(() => undefined), control.waitForExit()]);
    if (crashed && !crashed.expected) {
      stderr.write(
        `meshguard dev: headscale exited unexpectedly (${crashed.signal ?? `code ${crashed.code}`}); its last output:\n` +
          control
            .recentOutput()
            .slice(-20)
            .map((l) => `  ${l}\n`)
            .join(""),
      );
      return 1;
    }
    progress(`stopping (${stopReason})...`);
    await control.close();
    return 0;
  } catch (err) {
    if (stopReason && !control) return 130;
    reportError(err, json, stdout, stderr);
    return 1;
  } finally {
    await control?.close();
    process.off("SIGINT", onSigint);
    process.off("SIGTERM", onSigterm);
    io.signal?.removeEventListener("abort", onAbort);
  }
}

async function readPolicy(path: string): Promise<string> {
  try {
    return await readFile(path, "utf8");
  } catch (err) {
    throw new MeshguardError(ErrorCode.INVALID_OPTIONS, `cannot read the policy file ${path}: ${(err as Error).message}`, { cause: err });
  }
}

/** devUser returns the user `dev`, creating it unless a kept --dir already has it. */
async function devUser(control: LocalControl): Promise<ControlUser> {
  const existing = (await control.listUsers()).find((u) => u.name === DEV_USER);
  return existing ?? (await control.createUser(DEV_USER, { displayName: "meshguard dev" }));
}

function reportError(err: unknown, json: boolean, stdout: NodeJS.WritableStream, stderr: NodeJS.WritableStream): void {
  const e = err instanceof MeshguardError ? err : undefined;
  if (json) {
    const message = e ? e.message.split("\n  hint: ")[0] : String((err as Error)?.message ?? err);
    stdout.write(JSON.stringify({ error: { code: e?.code ?? ErrorCode.INTERNAL, message, ...(e?.hint ? { hint: e.hint } : {}) } }) + "\n");
  } else {
    stderr.write(`meshguard dev: ${e ? e.message : ((err as Error)?.stack ?? String(err))}\n`);
  }
}
