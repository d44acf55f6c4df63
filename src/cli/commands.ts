/**
 * The table of `meshguard` commands. Help, usage errors, dispatch and
 * docs/cli.md are all driven by it; one file per command in this folder.
 */

import type { Command } from "./command.js";
import { connectCommand } from "./connect.js";
import { dbGatewayCommand } from "./db-gateway.js";
import { devCommand } from "./dev.js";
import { gatewayCommand } from "./gateway.js";
import { policyApplyCommand } from "./policy-apply.js";
import { policyExplainCommand } from "./policy-explain.js";
import { policyLearnCommand } from "./policy-learn.js";
import { policyServeCommand } from "./policy-serve.js";
import { policyTestCommand } from "./policy-test.js";
import { pingCommand } from "./ping.js";
import { runHardenedCommand } from "./run-hardened.js";
import { statusCommand } from "./status.js";
import { whoisCommand } from "./whois.js";
import { tokensServeCommand } from "./tokens-serve.js";

/** COMMANDS in the order `meshguard --help` lists them. */
export const COMMANDS: readonly Command[] = [devCommand, statusCommand, whoisCommand, pingCommand, connectCommand, policyTestCommand, policyExplainCommand, policyLearnCommand, policyApplyCommand, policyServeCommand, gatewayCommand, dbGatewayCommand, tokensServeCommand, runHardenedCommand];

/** GROUPS: the first word of multi-word commands, with what `meshguard GROUP --help` says about them. */
export const GROUPS: Readonly<Record<string, string>> = {
  policy: "test, explain and learn policies; push them to headscale and serve them to agents",
  tokens: "issue session-scoped tokens bound to the caller's tailnet identity",
};
