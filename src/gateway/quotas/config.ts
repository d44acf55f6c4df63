/**
 * The `quotas` section of the gateway config: named token buckets. A bucket
 * holds dollars or tokens, starts full (`capacity`), refills continuously at
 * `refill` up to capacity, and has one instance per user, node, tag or group
 * of the caller (or one shared instance, `global`). A bucket may name an
 * `overdraft` bucket: what it cannot cover of a request spills there (a
 * chain). Which buckets apply to whom is the policy's business
 * (`gateway.roles[].quotas`, ../access.ts), not this file's.
 */

import { z } from "zod";

/** A bucket name: no "/" or ":" (they separate the parts of an instance key, "daily/user:alice@example.com"). */
export const BUCKET_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

/** Seconds per refill period. A month is 30 days: a rate, not a calendar. */
export const PERIOD_SECONDS = { second: 1, minute: 60, hour: 3600, day: 86_400, week: 604_800, month: 2_592_000 } as const;
export type RefillPeriod = keyof typeof PERIOD_SECONDS;

const REFILL_RE = /^\s*\$?(\d+(?:\.\d+)?|\.\d+)\s*\/\s*(second|minute|hour|day|week|month)\s*$/;

/**
 * refillPerMs reads a refill rate ("5/day", "100000/hour", "0.5/minute";
 * a leading "$" is allowed for dollar buckets) as units per millisecond, or
 * undefined when it is not one.
 */
export function refillPerMs(refill: string): number | undefined {
  const m = REFILL_RE.exec(refill);
  if (!m) return undefined;
  const amount = Number(m[1]);
  if (!Number.isFinite(amount)) return undefined;
  return amount / (PERIOD_SECONDS[m[2] as RefillPeriod] * 1000);
}

export const BucketSchema = z
  .object({
    unit: z.enum(["usd", "tokens", "calls"], { errorMap: () => ({ message: 'must be "usd" (dollars at the model\'s price), "tokens" or "calls" (one per request: LLM and MCP calls alike)' }) }),
    capacity: z.number({ invalid_type_error: "must be a number" }).positive("must be more than 0 (the most the bucket holds; it starts full)").finite(),
    refill: z
      .string()
      .refine((s) => refillPerMs(s) !== undefined, 'must be AMOUNT/PERIOD, e.g. "5/day", "100000/hour" or "0.5/minute" (PERIOD: second, minute, hour, day, week or month = 30 days)')
      .describe('how fast the bucket refills, up to capacity: "5/day", "100000/hour", "0.5/minute"'),
    per: z
      .enum(["user", "node", "tag", "group", "global"], {
        errorMap: () => ({ message: 'must be "user", "node", "tag", "group" or "global"' }),
      })
      .default("user")
      .describe('one instance per accountable user (default), per node, per tag, per group, or one shared instance ("global")'),
    overdraft: z
      .string()
      .optional()
      .describe("the bucket that covers what this one cannot (same unit); a chain must not loop"),
  })
  .strict("valid keys of a bucket are: unit, capacity, refill, per, overdraft");

/** A record from bucket name to bucket; overdraft names must exist, have the same unit and not loop. */
export const QuotasConfigSchema = z
  .record(z.string().regex(BUCKET_NAME_RE, 'a bucket name uses letters, digits and _ . - (no "/" or ":"), e.g. "daily"'), BucketSchema)
  .superRefine((buckets, ctx) => {
    for (const [name, b] of Object.entries(buckets)) {
      if (b.overdraft === undefined) continue;
      const next = buckets[b.overdraft];
      if (!Object.hasOwn(buckets, b.overdraft) || next === undefined) {
        const known = Object.keys(buckets).filter((n) => n !== name);
        ctx.addIssue({
          code: "custom",
          path: [name, "overdraft"],
          message: `no bucket is named "${b.overdraft}"${known.length ? `: the buckets are ${known.map((n) => `"${n}"`).join(", ")}` : ": define it under quotas"}`,
        });
        continue;
      }
      if (next.unit !== b.unit) {
        ctx.addIssue({ code: "custom", path: [name, "overdraft"], message: `"${name}" counts ${b.unit} but its overdraft "${b.overdraft}" counts ${next.unit}: a chain spills one unit` });
      }
    }
    // A loop would make a chain endless; report each loop once, at its first bucket in file order.
    const reported = new Set<string>();
    for (const start of Object.keys(buckets)) {
      const seen: string[] = [];
      let cur: string | undefined = start;
      while (cur !== undefined && Object.hasOwn(buckets, cur) && !seen.includes(cur)) {
        seen.push(cur);
        cur = buckets[cur]!.overdraft;
      }
      if (cur === start && !reported.has(start)) {
        seen.forEach((n) => reported.add(n));
        ctx.addIssue({ code: "custom", path: [start, "overdraft"], message: `overdraft chain loops: ${[...seen, start].join(" → ")}; end it at a bucket without overdraft` });
      }
    }
  });

/**
 * BucketRefsSchema is an upstream's `quotas` (an HTTP connector's, an MCP
 * server's): a bucket name or a list of them, each the head of a chain that
 * every call of that upstream is charged to, besides the caller's own
 * chains. The gateway config checks that each is defined and counts calls.
 */
export const BucketRefsSchema = z
  .union([z.string(), z.array(z.string()).min(1, 'name at least one bucket, or leave "quotas" out')], {
    errorMap: () => ({ message: 'must be a bucket name or a list of them, e.g. "github-calls" or ["github-calls", "all-connectors"]' }),
  })
  .transform((v) => (typeof v === "string" ? [v] : [...new Set(v)]))
  .describe("buckets (defined under the gateway config's quotas, unit calls) every call of this upstream is charged to");

export type BucketConfig = z.output<typeof BucketSchema>;
export type QuotasConfig = z.output<typeof QuotasConfigSchema>;
export type QuotasConfigInput = z.input<typeof QuotasConfigSchema>;
