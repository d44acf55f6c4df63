/**
 * `meshguard dev`: a local tailnet for development. Starts headscale on
 * 127.0.0.1 (building it on first use), creates the user `dev`, applies a
 * policy, prints the control URL and two auth keys, and runs until SIGINT or
 * SIGTERM.
 */

import { HEADSCALE_VERSION, LocalControl, ensureHeadscale, type ControlUser } from "../control/index.js";
import { ErrorCode, MeshguardError } from "../index.js";
import { tailnetPart } from "../policy/index.js";
import type { Command, Context } from "./command.js";
import { devStatePath, removeDevState, writeDevState } from "./dev-state.js";

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

/** STOPPED_EARLY is the status when a signal stops the tailnet before it is ready (128 + SIGINT, as a shell reports it). */
const STOPPED_EARLY = 130;

async function run(ctx: Context): Promise<number> {
  const dir = ctx.str("dir");
  // Listen for the signals from the start: one during the build or start
  // must still stop headscale.
  const stop = ctx.stopper();
  let control: LocalControl | undefined;
  let stateWritten: string | undefined;
  try {
    const file = ctx.str("policy");
    // One file holds both policies (docs/policy.md): headscale gets the file without its "meshguard" key, as `policy apply` sends it.
    const policy = file !== undefined ? tailnetPart(await ctx.read(file, ErrorCode.POLICY_FILE_UNREADABLE)) : DEFAULT_DEV_POLICY;
    if (!policy.includes(`"${AGENT_TAG}"`)) {
      // headscale tags a node from its key without consulting tagOwners, but a
      // rule can only name a tag that tagOwners defines.
      ctx.progress(`warning: the policy does not mention ${AGENT_TAG}; nodes joining with the agent key get that tag, but no rule can grant it anything`);
    }
    const binary = await ensureHeadscale({ onProgress: (ev) => ctx.progress(ev.message) });
    if (stop.reason) return STOPPED_EARLY;
    control = await LocalControl.start({ binary, onProgress: (ev) => ctx.progress(ev.message), ...(dir !== undefined ? { dir } : {}) });
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
      persistent: dir !== undefined,
      configPath: control.configPath,
      headscale: { version: HEADSCALE_VERSION, binary, pid: control.pid },
    };
    const c = control;
    // Where `meshguard gateway --dev` (or any local tool) finds this tailnet.
    const statePath = devStatePath();
    writeDevState({ pid: process.pid, controlUrl: control.url, authKey, agentAuthKey }, statePath);
    stateWritten = statePath;
    ctx.result({ ...info, statePath }, () =>
      [
        `local tailnet ready (headscale ${HEADSCALE_VERSION}, pid ${c.pid})`,
        ``,
        `  control URL  ${info.controlUrl}`,
        `  user         ${user.name} (id ${user.id})`,
        `  user key     ${authKey}`,
        `               reusable, expires in ${KEY_EXPIRATION}`,
        `  agent key    ${agentAuthKey}`,
        `               reusable, ephemeral, ${AGENT_TAG}, expires in ${KEY_EXPIRATION}`,
        `  state        ${c.dir}${info.persistent ? "" : " (removed on exit)"}`,
        `  inspect      ${binary} -c ${c.configPath} nodes list`,
        `  state file   ${statePath} (read by \`meshguard gateway --dev\`)`,
        ``,
        `Press Ctrl-C to stop.`,
        ``,
      ].join("\n"),
    );

    const crashed = await Promise.race([stop.stopped.then(() => undefined), control.waitForExit()]);
    if (crashed && !crashed.expected) {
      const last = control.recentOutput().slice(-20);
      throw new MeshguardError(ErrorCode.CONTROL_UNAVAILABLE, `headscale exited unexpectedly (${crashed.signal ?? `code ${crashed.code}`}); its last output:\n${last.map((l) => `  ${l}`).join("\n")}`, {
        hint: "run meshguard dev again; with --dir DIR the tailnet's state is kept",
      });
    }
    ctx.progress(`stopping (${stop.reason})...`);
    await control.close();
    return 0;
  } catch (err) {
    // A signal during the start makes the start fail; that is a stop, not an error.
    if (stop.reason && !control) return STOPPED_EARLY;
    throw err;
  } finally {
    if (stateWritten !== undefined) removeDevState(stateWritten);
    await control?.close();
  }
}

/** devUser returns the user `dev`, creating it unless a kept --dir already has it. */
async function devUser(control: LocalControl): Promise<ControlUser> {
  const existing = (await control.listUsers()).find((u) => u.name === DEV_USER);
  return existing ?? (await control.createUser(DEV_USER, { displayName: "meshguard dev" }));
}

export const devCommand: Command = {
  name: "dev",
  summary: "run a local tailnet (headscale on 127.0.0.1) until interrupted",
  usage: ["[--policy FILE] [--dir DIR] [--json]"],
  description: `Runs a local tailnet: a headscale ${HEADSCALE_VERSION} control server on 127.0.0.1 with its
embedded DERP relay (built from source on first use), the user "${DEV_USER}", and
two auth keys: a reusable user key, and a reusable, ephemeral key whose nodes
get ${AGENT_TAG}. Prints the control URL, the keys and the server's config file
(for \`meshguard policy apply --control\`), then runs until SIGINT or SIGTERM and
removes the tailnet (unless --dir keeps it). Progress goes to stderr.
While it runs, its control URL and keys are in a state file (mode 0600;
$MESHGUARD_DEV_STATE, default ~/.local/state/meshguard/dev.json) where
\`meshguard gateway --dev\` finds them.`,
  args: [],
  options: {
    policy: { type: "string", arg: "FILE", help: `tailnet policy (HuJSON; a "meshguard" key in it is left out); default: allow all, with tag:agent and tag:service owned by ${DEV_USER}@` },
    dir: { type: "string", arg: "DIR", help: "keep the tailnet's state in DIR (default: a temporary directory removed on exit)" },
  },
  json: "print one JSON object when the tailnet is ready: controlUrl, user, authKey, agentAuthKey, dir, configPath, headscale, statePath",
  examples: [
    { cmd: "dev", about: "a throw-away tailnet with the permissive default policy" },
    { cmd: "dev --policy tailnet.hujson --dir ./.tailnet --json", about: "a tailnet kept across runs, its keys as JSON for a script" },
  ],
  exits: {
    0: "stopped by SIGINT or SIGTERM after the tailnet was ready",
    1: "headscale could not be built or started, refused the policy, or exited unexpectedly",
    2: "usage error",
    [STOPPED_EARLY]: "stopped by a signal before the tailnet was ready",
  },
  run,
};
