/**
 * What a gateway (the AI gateway, the database gateway) holds its policy
 * in: the policy file read once at start (a failure stops the start), then
 * kept current by watchPolicyFile (./reload.ts), which swaps policies in
 * through setPolicy and reports on the holder's events.
 */

import { EventEmitter } from "node:events";
import { readFile } from "node:fs/promises";
import { ErrorCode, MeshguardError } from "../errors.js";
import { loadPolicy, type Policy } from "../policy/load.js";
import type { Decision, DecisionRequest } from "../policy/types.js";

/** PolicyHolder is a reload target holding the policy in force. */
export class PolicyHolder extends EventEmitter {
  current: Policy | undefined;
  setPolicy(p: { evaluate(req: DecisionRequest): Decision } | undefined): void {
    this.current = p as Policy | undefined;
  }
}

/** readPolicyFile loads a gateway's policy file; `whose` names the gateway in the error ("the gateway's"). */
export async function readPolicyFile(file: string, whose: string): Promise<Policy> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    throw new MeshguardError(ErrorCode.POLICY_FILE_UNREADABLE, `cannot read ${whose} policy file ${file}: ${(err as Error).message}`, { cause: err, hint: 'the config\'s "policy" names it, relative to the config file' });
  }
  return loadPolicy(text, { file });
}
