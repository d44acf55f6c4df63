/**
 * The state file of a running `meshguard dev`: where another process on
 * this machine (`meshguard gateway --dev`) finds the local tailnet's control
 * URL and keys. Written (mode 0600: it holds auth keys of a local tailnet)
 * when the tailnet is ready, removed when dev stops; it names dev's pid, so
 * a file left by a killed dev is recognised as stale.
 *
 * Location: $MESHGUARD_DEV_STATE, else $XDG_STATE_HOME/meshguard/dev.json
 * (default ~/.local/state/meshguard/dev.json).
 */

import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { ErrorCode, MeshguardError } from "../index.js";

export interface DevState {
  pid: number;
  controlUrl: string;
  /** The reusable user key (user "dev"). */
  authKey: string;
  /** The reusable, ephemeral key whose nodes get tag:agent. */
  agentAuthKey: string;
}

export function devStatePath(env: NodeJS.ProcessEnv = process.env): string {
  if (env.MESHGUARD_DEV_STATE) return env.MESHGUARD_DEV_STATE;
  const base = env.XDG_STATE_HOME || join(homedir(), ".local", "state");
  return join(base, "meshguard", "dev.json");
}

export function writeDevState(state: DevState, path = devStatePath()): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  writeFileSync(path, `${JSON.stringify(state, null, 2)}\n`, { mode: 0o600 });
}

/** removeDevState removes the file if it is still this process's. */
export function removeDevState(path = devStatePath()): void {
  try {
    const s = JSON.parse(readFileSync(path, "utf8")) as DevState;
    if (s.pid === process.pid) rmSync(path, { force: true });
  } catch {
    // absent or unreadable: nothing of ours to remove
  }
}

/** readDevState reads the state of the running `meshguard dev`, or says why there is none. */
export function readDevState(path = devStatePath()): DevState {
  const none = (why: string) =>
    new MeshguardError(ErrorCode.CONTROL_UNREACHABLE, `no running \`meshguard dev\` found: ${why}`, { hint: "start `meshguard dev` in another terminal first (it writes its state to " + path + ")" });
  let s: DevState;
  try {
    s = JSON.parse(readFileSync(path, "utf8")) as DevState;
  } catch (err) {
    throw none((err as NodeJS.ErrnoException).code === "ENOENT" ? `${path} does not exist` : `${path} is unreadable`);
  }
  if (typeof s?.controlUrl !== "string" || typeof s.authKey !== "string" || !Number.isInteger(s.pid)) throw none(`${path} is not a dev state file`);
  try {
    process.kill(s.pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ESRCH") throw none(`the dev process ${s.pid} that wrote ${path} has exited`);
  }
  return s;
}
