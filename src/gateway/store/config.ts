/**
 * The `storage` and `retention` sections of the gateway config. Defaults are
 * what the gateway runs with when the section is absent: SQLite in the data
 * directory, full logs kept forever, writes batched every 100 ms (the most a
 * crash can lose).
 */
import { z } from "zod";
import type { Retention } from "../types.js";
import { DURATION_HINT, parseDuration } from "./duration.js";

export { parseDuration } from "./duration.js";

export const StorageConfigSchema = z
  .object({
    engine: z.literal("sqlite").default("sqlite").describe('the store engine; "sqlite" (node:sqlite, one file)'),
    path: z
      .string()
      .min(1, "must not be empty")
      .optional()
      .describe('the database file; default "<dataDir>/gateway.db"; a relative path is taken from the data directory; ":memory:" keeps nothing on disk'),
    flushIntervalMs: z
      .number()
      .positive("must be more than 0")
      .max(10_000, "must be at most 10000 (10 s): a crash loses up to one interval of logs")
      .default(100)
      .describe("how often batched log records are written; a crash loses at most this much"),
  })
  .strict();

/** The storage section after defaults. */
export type StorageConfig = z.output<typeof StorageConfigSchema>;
/** The storage section as written in a config file. */
export type StorageConfigInput = z.input<typeof StorageConfigSchema>;

export const RetentionConfigSchema = z
  .object({
    mode: z
      .enum(["full", "metadata", "none"], { errorMap: () => ({ message: 'must be "full" (bodies and headers), "metadata" (no bodies or headers) or "none" (nothing stored)' }) })
      .default("full"),
    maxAge: z
      .string()
      .refine((s) => parseDuration(s) !== undefined, DURATION_HINT)
      .optional()
      .describe("records older than this are deleted (checked at start and hourly)"),
  })
  .strict();

/** The retention section after defaults. */
export type RetentionConfig = z.output<typeof RetentionConfigSchema>;
export type RetentionConfigInput = z.input<typeof RetentionConfigSchema>;

/** toRetention turns a validated retention section into the store's Retention. */
export function toRetention(cfg: RetentionConfig): Retention {
  const maxAgeMs = cfg.maxAge === undefined ? undefined : parseDuration(cfg.maxAge);
  return maxAgeMs === undefined ? { mode: cfg.mode } : { mode: cfg.mode, maxAgeMs };
}
