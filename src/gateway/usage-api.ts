/**
 * The usage part of the gateway's API (`/meshguard/v1/...`):
 *
 *   GET /usage?since&until&bucket=hour|day&by=user|model[&user=]
 *     { since, until, bucket, by, rows: [{ start, key, requests, inputTokens, outputTokens, costUsd }] }
 *
 * Requests, tokens and cost summed per UTC hour or day and per user or
 * model, from the log records (so with retention "none" there is nothing to
 * sum). Visibility is the logs API's: a user's sums are of their own records
 * only (any `user` asked is replaced), an admin's of everyone's, or of the
 * `user` asked for. Defaults: until now, since 24 hours (bucket=hour) or 30
 * days (bucket=day) before `until`; bucket=day, by=user.
 */
import { z } from "zod";
import { ErrorCode } from "../errors.js";
import { apiError, isAnswer, Name, NO_USER, parseQuery, Time, userFilter } from "./api-query.js";
import { USAGE_BUCKET_MS as BUCKET_MS } from "./store/query.js";
import type { AdminRoute, GatewayStore, UsageQuery } from "./types.js";

const DEFAULT_SPAN = { hour: 24, day: 30 } as const;
/** The most buckets one answer may span: a year of days, or about three months of hours. */
export const MAX_BUCKETS = 2_200;

const UsageParams = z
  .object({
    since: Time.optional(),
    until: Time.optional(),
    bucket: z.enum(["hour", "day"], { errorMap: () => ({ message: 'must be "hour" or "day"' }) }).optional(),
    by: z.enum(["user", "model"], { errorMap: () => ({ message: 'must be "user" or "model"' }) }).optional(),
    user: Name.optional(),
  })
  .strict();
const KEYS = ["since", "until", "bucket", "by", "user"];

/** usageRoutes returns the usage route over `store` (501 when the store cannot sum). */
export function usageRoutes(store: GatewayStore): AdminRoute[] {
  return [
    {
      method: "GET",
      pattern: "/usage",
      async handle(req) {
        const p = parseQuery(req.query, UsageParams, KEYS);
        if (isAnswer(p)) return p;
        const who = userFilter(req.caller, p.user);
        if (who === null) return apiError(403, NO_USER);
        if (!store.usage) return apiError(501, "this gateway's store does not sum usage");
        const bucket = p.bucket ?? "day";
        const until = p.until ?? Date.now();
        const since = p.since ?? until - DEFAULT_SPAN[bucket] * BUCKET_MS[bucket];
        if (since >= until) return apiError(400, `invalid query: since (${new Date(since).toISOString()}) must be before until (${new Date(until).toISOString()})`, ErrorCode.INVALID_OPTIONS);
        const buckets = Math.ceil((until - since) / BUCKET_MS[bucket]);
        if (buckets > MAX_BUCKETS) {
          return apiError(400, `invalid query: ${since}..${until} spans ${buckets} ${bucket}s, at most ${MAX_BUCKETS} per answer: narrow since/until${bucket === "hour" ? " or use bucket=day" : ""}`, ErrorCode.INVALID_OPTIONS);
        }
        const q: UsageQuery = { since, until, bucket, by: p.by ?? "user", ...who };
        return { status: 200, body: { since, until, bucket, by: q.by, rows: await store.usage(q) } };
      },
    },
  ];
}
