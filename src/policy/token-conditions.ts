/**
 * The conditions of a token rule (format version 4): the audience, and the
 * requested action against the rule's actions. An allow rule matches a
 * requested (method, location) it CONTAINS; a deny rule matches one it
 * OVERLAPS (a token must never grant a URL a deny rule names). A location
 * that cannot be read, or globs too complex to decide, answer UNKNOWN, which
 * the engine turns into a deny (fails closed).
 */

import { NO, UNKNOWN, YES, type Condition } from "./conditions.js";
import { parseLocation, type Location } from "./location.js";
import { actionContains, actionOverlaps, audienceMatcher, type TokenAction } from "./token-actions.js";
import type { TokenTarget } from "./types.js";

/** The condition name of a token rule's actions (explain, unknown-fact decisions). */
export const ACTIONS_WHAT = "token.actions";

export function audienceCondition(patterns: readonly string[]): Condition<TokenTarget> | undefined {
  if (patterns.includes("*")) return undefined;
  const m = audienceMatcher(patterns);
  return { what: "audience", test: (t) => (m(t.audience) ? YES : NO), why: (t) => `audience ${t.audience} ${m(t.audience) ? "matches" : "does not match"} ${patterns.join(", ")}` };
}

/** The last location parsed (a token request asks every rule about the same location). */
let lastText: string | undefined;
let lastLoc: Location | string = "";

function locationOf(t: TokenTarget): Location | undefined {
  if (t.location !== lastText) {
    lastLoc = typeof t.location === "string" ? parseLocation(t.location) : "not a string";
    lastText = t.location;
  }
  return typeof lastLoc === "string" ? undefined : lastLoc;
}

export function actionsCondition(actions: readonly TokenAction[], effect: "allow" | "deny" | "approve"): Condition<TokenTarget> {
  const deny = effect === "deny";
  const text = actions.map((a) => `${a.methods.join(",")} ${a.locations.map((l) => l.text).join(" ")}`).join("; ");
  const answer = (t: TokenTarget) => {
    const loc = locationOf(t);
    if (!loc) return undefined;
    return deny ? actionOverlaps(actions, t.method, loc) : actionContains(actions, t.method, loc);
  };
  return {
    what: ACTIONS_WHAT,
    test: (t) => {
      const a = answer(t)?.answer;
      return a === undefined ? UNKNOWN : a ? YES : NO;
    },
    why: (t) => {
      const a = answer(t);
      const req = `${t.method} ${t.location}`;
      if (a === undefined) return `the location ${JSON.stringify(t.location)} cannot be read: fails closed`;
      if (a.answer === undefined) return `${req} against ${text}: too complex to decide, fails closed`;
      if (deny) return a.answer ? `${req} overlaps ${text} (both cover ${a.witness ?? "some URL"})` : `${req} does not overlap ${text}`;
      return a.answer ? `${req} is contained in ${text}` : `${req} is not contained in ${text}${a.witness ? ` (it covers ${a.witness}, which the rule does not)` : ""}`;
    },
  };
}
