/**
 * How the control socket asks the process's guard about itself. The guard
 * sits above MeshNode (DESIGN.md decision 12), so the socket cannot call
 * it: it publishes an InspectMessage on INSPECT_CHANNEL and the installed
 * guard, of this or any other copy of meshguard in the process (channels
 * are global by name), fills in `answer`. Nobody subscribed: no guard.
 */

import dc from "node:diagnostics_channel";

import type { ExplainParams, ExplainResult, GuardInfo } from "./protocol.js";

/** INSPECT_CHANNEL is the diagnostics_channel name the guard subscribes to. */
export const INSPECT_CHANNEL = "meshguard:inspect";

/** InspectMessage is one question to the guard; the subscriber sets `answer` (a value or a Promise), or leaves it for "not mine". */
export type InspectMessage =
  | { kind: "guard"; node: object; answer?: GuardInfo | Promise<GuardInfo> }
  | { kind: "explain"; node: object; params: ExplainParams; answer?: ExplainResult | Promise<ExplainResult> };

const channel = dc.channel(INSPECT_CHANNEL);

/** askGuard publishes the question and returns the guard's answer, or undefined when no guard answered. */
export function askGuard<M extends InspectMessage>(msg: M): Promise<NonNullable<M["answer"]>> | undefined {
  if (!channel.hasSubscribers) return undefined;
  channel.publish(msg);
  return msg.answer === undefined ? undefined : (Promise.resolve(msg.answer) as Promise<NonNullable<M["answer"]>>);
}
