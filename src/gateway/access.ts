/**
 * Who is what at the gateway: the role and the quota bucket chains of a
 * caller, from two sources that add up (there is no deny):
 *
 * - the policy's `gateway.roles` (format version 3), matched like rule `src`;
 * - the app capability `meshguard.dev/cap/gateway` that the tailnet policy's
 *   `grants` give the caller (read through whois): a list of objects
 *   `{ "role"?: "user" | "admin", "quotas"?: ["bucket", ...] }`
 *   (docs/policy.md, "Gateway access").
 *
 * Admin wins when any source says admin. A caller nothing matches is a
 * "user" with no buckets; whether it may call a model at all is for the
 * policy's `llm` rules (deny by default), not for this file.
 */

import { z } from "zod";

import type { GatewayRoles } from "../policy/index.js";
import type { Caller, Role } from "./types.js";

/** The app capability the tailnet policy grants gateway roles and buckets with (Aperture's convention, our name). */
export const GATEWAY_CAP = "meshguard.dev/cap/gateway";

const CapEntrySchema = z
  .object({
    role: z.enum(["user", "admin"]).optional(),
    quotas: z.array(z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/)).optional(),
  })
  .passthrough();

export interface Access {
  role: Role;
  /**
   * Bucket chains that apply, each written as its head (`["daily"]`); the
   * quota manager follows each bucket's `overdraft` from the last name. A
   * bucket named by several grants applies once.
   */
  chains: string[][];
  /** Capability entries that were ignored (malformed), for the gateway's log: they grant nothing. */
  ignored: string[];
}

/**
 * resolveAccess combines the policy's gateway section and the caller's
 * capabilities. `caps` is whois's `caps` (values are lists of JSON objects).
 */
export function resolveAccess(gateway: GatewayRoles | undefined, caller: Pick<Caller, "principal">, caps: Caller["caps"]): Access {
  let admin = false;
  const heads: string[] = [];
  const ignored: string[] = [];
  for (const g of gateway?.grants(caller.principal) ?? []) {
    if (g.role === "admin") admin = true;
    heads.push(...g.quotas);
  }
  const entries = Object.hasOwn(caps, GATEWAY_CAP) ? caps[GATEWAY_CAP] : undefined;
  for (const [i, raw] of (Array.isArray(entries) ? entries : []).entries()) {
    const r = CapEntrySchema.safeParse(raw);
    if (!r.success) {
      ignored.push(`${GATEWAY_CAP}[${i}]: ${r.error.issues.map((x) => `${x.path.join(".") || "entry"}: ${x.message}`).join("; ")}`);
      continue;
    }
    if (r.data.role === "admin") admin = true;
    heads.push(...(r.data.quotas ?? []));
  }
  if (entries !== undefined && !Array.isArray(entries)) ignored.push(`${GATEWAY_CAP}: expected a list of objects`);
  return { role: admin ? "admin" : "user", chains: [...new Set(heads)].map((h) => [h]), ignored };
}
