/**
 * Query strings of the gateway's own API (`/meshguard/v1/...`), validated
 * with zod so each route refuses what it does not understand: an unknown or
 * repeated parameter, a time that is not one. A typo must not silently
 * widen a query (an admin's `usr=alice` would otherwise list everyone).
 */
import { z } from "zod";
import { ErrorCode } from "../errors.js";
import type { AdminResponse, Caller } from "./types.js";

/** A time: epoch milliseconds or an ISO 8601 time. */
export const Time = z.string().transform((s, ctx) => {
  const t = /^\d+$/.test(s) ? Number(s) : Date.parse(s);
  if (!Number.isSafeInteger(t)) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: `${JSON.stringify(s)} is not a time: give epoch milliseconds or an ISO 8601 time such as 2026-01-31T12:00:00Z` });
    return z.NEVER;
  }
  return t;
});

/** A user, node, model or session name. */
export const Name = z.string().min(1, "must not be empty").max(1000);

/** apiError is an error answer of the gateway's API: `{ error: { message, code? } }`. */
export function apiError(status: number, message: string, code?: string): AdminResponse {
  return { status, body: { error: { message, ...(code === undefined ? {} : { code }) } } };
}

/**
 * parseQuery validates `query` against `schema` (a strict zod object of
 * string fields); the 400 answer naming every problem when it does not hold.
 */
export function parseQuery<S extends z.ZodTypeAny>(query: URLSearchParams, schema: S, keys: readonly string[]): z.output<S> | AdminResponse {
  const raw: Record<string, string> = {};
  for (const [k, v] of query) {
    if (k in raw) return apiError(400, `query parameter ${k} is given twice`, ErrorCode.INVALID_OPTIONS);
    raw[k] = v;
  }
  const r = schema.safeParse(raw);
  if (r.success) return r.data as z.output<S>;
  const lines = r.error.issues.map((i) =>
    i.code === "unrecognized_keys" ? `unknown query parameter(s) ${i.keys.join(", ")} (this route takes ${keys.join(", ") || "none"})` : `${i.path.join(".")}: ${i.message}`,
  );
  return apiError(400, `invalid query: ${lines.join("; ")}`, ErrorCode.INVALID_OPTIONS);
}

/** isAnswer tells a parsed query from the error answer parseQuery returned instead. */
export function isAnswer(v: unknown): v is AdminResponse {
  return typeof v === "object" && v !== null && "status" in v && typeof (v as { status: unknown }).status === "number" && ("body" in v || "stream" in v);
}

/**
 * userFilter is the user a caller's query is limited to, enforcing who sees
 * what: an admin's own choice (`asked`, or everyone), a user's own login
 * whatever they asked; null for a non-admin with no accountable user (a
 * tagged node whose tags have no owner), who has nothing of their own.
 */
export function userFilter(caller: Caller, asked: string | undefined): { user?: string } | null {
  if (caller.role === "admin") return asked === undefined ? {} : { user: asked };
  if (caller.user === "") return null;
  return { user: caller.user };
}

/** What a non-admin with no accountable user is told (403). */
export const NO_USER = "this caller has no accountable user (an untagged owner or a tag owner), so it has no logs of its own; ask an admin";
