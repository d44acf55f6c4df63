/**
 * The `storage` and `retention` sections of the gateway config. Defaults are
 * what the gateway runs with when the section is absent: SQLite in the data
 * directory, full logs kept forever, writes batched every 100 ms (the most a
 * crash can lose).
 *
 * `storage` is one of two shapes, told apart by `engine` (absent means
 * "sqlite", so every config written before PostgreSQL existed still reads
 * the same).
 */
import { z } from "zod";
import type { Retention } from "../types.js";
import { DURATION_HINT, parseDuration } from "./duration.js";

export { parseDuration } from "./duration.js";

const flushIntervalMs = z
  .number()
  .positive("must be more than 0")
  .max(10_000, "must be at most 10000 (10 s): a crash loses up to one interval of logs")
  .default(100)
  .describe("how often batched log records are written; a crash loses at most this much");

const SqliteStorageSchema = z
  .object({
    engine: z.literal("sqlite").default("sqlite").describe('"sqlite" (node:sqlite, one file; the default)'),
    path: z
      .string()
      .min(1, "must not be empty")
      .optional()
      .describe('the database file; default "<dataDir>/gateway.db"; a relative path is taken from the data directory; ":memory:" keeps nothing on disk'),
    flushIntervalMs,
  })
  .strict();

const PostgresStorageSchema = z
  .object({
    engine: z.literal("postgres").describe('"postgres": several gateway instances share one PostgreSQL database'),
    url: z
      .string()
      .regex(/^postgres(ql)?:\/\//, 'must be a connection URL starting with "postgres://" or "postgresql://"')
      .optional()
      .describe("the connection URL; prefer urlEnv, which keeps the password out of the config file"),
    urlEnv: z
      .string()
      .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "must be the name of an environment variable (letters, digits, _), not the URL itself")
      .optional()
      .describe("the environment variable holding the connection URL"),
    schema: z
      .string()
      .regex(/^[a-z_][a-z0-9_]{0,62}$/, "must be a PostgreSQL schema name: lower-case letters, digits and _, starting with a letter or _, at most 63")
      .default("meshguard")
      .describe("the PostgreSQL schema the gateway's tables live in (created when missing)"),
    poolSize: z.number().int("must be a whole number").min(1, "must be at least 1").max(100, "must be at most 100").default(10).describe("connections each gateway instance opens at most"),
    instanceTimeoutMs: z
      .number()
      .int("must be a whole number")
      .min(1_000, "must be at least 1000 (1 s)")
      .max(3_600_000, "must be at most 3600000 (1 h)")
      .default(30_000)
      .describe("an instance whose heartbeat is older than this is gone: another instance may then settle its open quota reservations"),
    synchronousCommit: z
      .enum(["on", "off"], { errorMap: () => ({ message: 'must be "on" or "off" (or absent: the server\'s setting)' }) })
      .optional()
      .describe(
        'PostgreSQL\'s synchronous_commit for the gateway\'s connections; absent: the server\'s (on by default). "off" makes each bucket change several times faster; a crash of PostgreSQL itself (not of a gateway) may then lose its last ~0.6 s of changes',
      ),
    flushIntervalMs,
  })
  .strict();

/** engine first, defaulted, so that an unknown engine is named as such rather than as a mismatch of every shape. */
const EngineSchema = z
  .object({
    engine: z.enum(["sqlite", "postgres"], { errorMap: () => ({ message: 'must be "sqlite" (the default) or "postgres"' }) }).default("sqlite"),
  })
  .passthrough();

/** The storage section after defaults. */
export type StorageConfig = z.output<typeof SqliteStorageSchema> | z.output<typeof PostgresStorageSchema>;
/** The storage section as written in a config file. */
export type StorageConfigInput = z.input<typeof SqliteStorageSchema> | z.input<typeof PostgresStorageSchema>;
export type PostgresStorageConfig = z.output<typeof PostgresStorageSchema>;

export const StorageConfigSchema: z.ZodType<StorageConfig, z.ZodTypeDef, StorageConfigInput> = EngineSchema.pipe(
  z.discriminatedUnion("engine", [SqliteStorageSchema, PostgresStorageSchema]),
).superRefine((c, ctx) => {
  if (c.engine === "postgres" && (c.url === undefined) === (c.urlEnv === undefined)) {
    ctx.addIssue({
      code: z.ZodIssueCode.custom,
      path: [c.url === undefined ? "urlEnv" : "url"],
      message:
        c.url === undefined
          ? 'PostgreSQL needs a connection URL: set urlEnv to the environment variable holding it (e.g. "MESHGUARD_DATABASE_URL"), or url'
          : "give url or urlEnv, not both",
    });
  }
}) as z.ZodType<StorageConfig, z.ZodTypeDef, StorageConfigInput>;

export const RetentionConfigSchema = z
  .object({
    mode: z
      .enum(["full", "metadata", "none"], { errorMap: () => ({ message: 'must be "full" (bodies and headers), "metadata" (no bodies or headers) or "none" (nothing stored)' }) })
      .default("full"),
    maxAge: z
      .string()
      .refine((s) => parseDuration(s) !== undefined, DURATION_HINT)
      .optional()
      .describe("records older than this are deleted (checked at start, then every pruneEvery)"),
    pruneEvery: z
      .string()
      .refine((s) => parseDuration(s) !== undefined, DURATION_HINT)
      .refine((s) => (parseDuration(s) ?? 0) >= 1000, "must be at least 1s")
      .optional()
      .describe('how often the retention job deletes records past maxAge (default "1h")'),
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
