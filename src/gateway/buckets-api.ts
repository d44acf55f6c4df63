/**
 * The gateway API's bucket routes (under /meshguard/v1):
 *
 *   GET  /buckets              admin: every instance; user: the caller's own
 *   GET  /buckets/:key         admin: any; user: only their own (else 404, as if absent)
 *   POST /buckets/:key/refill  admin only; body { "amount"?: number > 0 } — absent: to capacity
 *   GET  /quotas               admin only: the configured buckets { quotas: [{ name, unit, capacity, refill, per, overdraft? }] }
 *                              (the console's quota page; a user reads their own instances from /buckets)
 *
 * A user asking for another user's bucket gets 404, not 403: the answer must
 * not tell which users have buckets.
 */

import { z } from "zod";

import type { QuotasConfig } from "./quotas/config.js";
import type { QuotaManagerHandle } from "./quotas/manager.js";
import type { AdminRequest, AdminResponse, AdminRoute } from "./types.js";

const RefillBodySchema = z
  .object({ amount: z.number({ invalid_type_error: "amount must be a number" }).positive("amount must be more than 0").finite().optional() })
  .strict("the body takes only \"amount\"");

const error = (status: number, message: string): AdminResponse => ({ status, body: { error: { message } } });

/** A key arrives percent-encoded when the router left it so; a decoded key always contains "/". */
function keyParam(raw: string | undefined): string {
  const s = raw ?? "";
  if (s.includes("/")) return s;
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/** bucketRoutes serves the quota manager's buckets; the routes get an authenticated caller with its role. */
export function bucketRoutes(
  qm: Pick<QuotaManagerHandle, "list" | "state" | "refill" | "keysOf">,
  config: QuotasConfig = {},
  /** The buckets the HTTP connectors and MCP servers name (their `quotas`): a caller's instances of them are its own too. */
  upstreamChains: string[][] = [],
): AdminRoute[] {
  const keysOf = (c: AdminRequest["caller"]) => qm.keysOf(c, upstreamChains);
  const mine = (req: AdminRequest, key: string) => req.caller.role === "admin" || keysOf(req.caller).includes(key);
  return [
    {
      method: "GET",
      pattern: "/quotas",
      async handle(req) {
        if (req.caller.role !== "admin") return error(403, "the quota overview needs the gateway's admin role (GET /buckets lists your own buckets)");
        const quotas = Object.entries(config).map(([name, b]) => ({ name, unit: b.unit, capacity: b.capacity, refill: b.refill, per: b.per, ...(b.overdraft === undefined ? {} : { overdraft: b.overdraft }) }));
        return { status: 200, body: { quotas } };
      },
    },
    {
      method: "GET",
      pattern: "/buckets",
      async handle(req) {
        if (req.caller.role === "admin") return { status: 200, body: { buckets: await qm.list() } };
        const views = await Promise.all(keysOf(req.caller).map((k) => qm.state(k)));
        return { status: 200, body: { buckets: views.filter((v) => v !== undefined) } };
      },
    },
    {
      method: "GET",
      pattern: "/buckets/:key",
      async handle(req, params) {
        const key = keyParam(params["key"]);
        const v = mine(req, key) ? await qm.state(key) : undefined;
        return v ? { status: 200, body: v } : error(404, `no bucket "${key}"`);
      },
    },
    {
      method: "POST",
      pattern: "/buckets/:key/refill",
      async handle(req, params) {
        if (req.caller.role !== "admin") return error(403, "refilling a bucket needs the gateway's admin role");
        const body = RefillBodySchema.safeParse(req.body ?? {});
        if (!body.success) return error(400, body.error.issues.map((i) => i.message).join("; "));
        const key = keyParam(params["key"]);
        const v = await qm.refill(key, body.data.amount);
        return v ? { status: 200, body: v } : error(404, `no bucket "${key}": a key is "<bucket>/user:<login>", "<bucket>/node:<name>", "<bucket>/tag:<tag>", "<bucket>/group:<group>" or "<bucket>/global" for a configured bucket`);
      },
    },
  ];
}
