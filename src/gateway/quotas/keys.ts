/**
 * Bucket instance keys: "<bucket>/<scope>", where the scope is
 * "user:alice@example.com", "node:research-agent", "tag:ci", "group:eng" or
 * "global". One bucket config has one instance per scope value the callers
 * bring (Aperture's `<user>` template, generalised to nodes, tags, groups).
 */

import type { Caller } from "../types.js";
import type { BucketConfig } from "./config.js";

/** instanceKeys are the keys of bucket `name` for `caller`: one per user/node, one per tag or group, "global" always; none when the caller has no such scope. */
export function instanceKeys(name: string, b: Pick<BucketConfig, "per">, caller: Pick<Caller, "user" | "node" | "tags" | "groups">): string[] {
  switch (b.per) {
    case "global":
      return [`${name}/global`];
    case "user":
      return caller.user ? [`${name}/user:${caller.user.toLowerCase()}`] : [];
    case "node":
      return caller.node ? [`${name}/node:${caller.node.toLowerCase()}`] : [];
    case "tag":
      return [...new Set(caller.tags)].map((t) => `${name}/${t}`);
    case "group":
      return [...new Set(caller.groups)].map((g) => `${name}/${g}`);
  }
}

/** parseKey splits a key into its bucket name and scope kind, or undefined when it has no "/" scope. */
export function parseKey(key: string): { bucket: string; per: BucketConfig["per"]; value: string } | undefined {
  const slash = key.indexOf("/");
  if (slash <= 0) return undefined;
  const bucket = key.slice(0, slash);
  const scope = key.slice(slash + 1);
  if (scope === "global") return { bucket, per: "global", value: "" };
  const colon = scope.indexOf(":");
  if (colon <= 0 || colon === scope.length - 1) return undefined;
  const kind = scope.slice(0, colon);
  const value = scope.slice(colon + 1);
  if (kind === "user" || kind === "node") return { bucket, per: kind, value };
  if (kind === "tag" || kind === "group") return { bucket, per: kind, value: scope };
  return undefined;
}
