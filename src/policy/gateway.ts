/**
 * The policy's `gateway` section (format version 3), compiled: which gateway
 * role and quota buckets each caller gets. `src` is matched exactly as a
 * rule's `src` (./identity.ts: groups expanded, users case-insensitive, node
 * names by full name or first label, a tagged node known by its tags).
 */

import { resolveSrc, srcMatches, type SrcSet } from "./identity.js";
import type { GatewaySection } from "./schema.js";
import type { Principal } from "./types.js";

/** What one matching grant gives: a role and the heads of bucket chains. */
export interface GatewayGrant {
  role: "user" | "admin";
  quotas: string[];
}

/** GatewayRoles answers which grants of the policy match a caller, in file order. */
export interface GatewayRoles {
  grants(p: Principal): GatewayGrant[];
  /** Every bucket name the section refers to (the gateway checks them against its config at start). */
  readonly buckets: readonly string[];
}

/** compileGatewayRoles compiles a validated gateway section against the policy's groups. */
export function compileGatewayRoles(section: GatewaySection, groups: Record<string, string[]>): GatewayRoles {
  const entries: { src: SrcSet; grant: GatewayGrant }[] = section.roles.map((g) => ({
    src: resolveSrc(g.src, groups),
    grant: { role: g.role, quotas: g.quotas === undefined ? [] : typeof g.quotas === "string" ? [g.quotas] : [...g.quotas] },
  }));
  const buckets = [...new Set(entries.flatMap((e) => e.grant.quotas))];
  return {
    grants: (p) => entries.filter((e) => srcMatches(e.src, p)).map((e) => e.grant),
    buckets,
  };
}
