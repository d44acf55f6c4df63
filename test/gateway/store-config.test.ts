// The storage and retention sections of the gateway config.
import { expect, it } from "vitest";
import { RetentionConfigSchema, StorageConfigSchema, parseDuration, toRetention } from "../../src/gateway/store/index.js";

it("durations: units ms, s, m, h, d, w and sums of them", () => {
  expect(parseDuration("30d")).toBe(30 * 86_400_000);
  expect(parseDuration("12h")).toBe(12 * 3_600_000);
  expect(parseDuration("1d12h")).toBe(36 * 3_600_000);
  expect(parseDuration("90m")).toBe(90 * 60_000);
  expect(parseDuration("1.5s")).toBe(1500);
  expect(parseDuration("250ms")).toBe(250);
  expect(parseDuration("2w")).toBe(14 * 86_400_000);
});

it.each(["30", "", "0d", "d", "30 days", "-1h", "1h-", "1y"])("%j is not a duration", (s) => {
  expect(parseDuration(s)).toBeUndefined();
});

it("postgres: the URL from an environment variable; schema meshguard, 10 connections, instances gone after 30 s by default", () => {
  expect(StorageConfigSchema.parse({ engine: "postgres", urlEnv: "MESHGUARD_DATABASE_URL" })).toEqual({
    engine: "postgres",
    urlEnv: "MESHGUARD_DATABASE_URL",
    schema: "meshguard",
    poolSize: 10,
    instanceTimeoutMs: 30_000,
    flushIntervalMs: 100,
  });
  expect(StorageConfigSchema.parse({ engine: "postgres", url: "postgresql://gw@db.internal/gateway", synchronousCommit: "off" })).toMatchObject({ url: "postgresql://gw@db.internal/gateway", synchronousCommit: "off" });
});

it("defaults: sqlite, flush every 100 ms; full retention kept forever", () => {
  expect(StorageConfigSchema.parse({})).toEqual({ engine: "sqlite", flushIntervalMs: 100 });
  expect(toRetention(RetentionConfigSchema.parse({}))).toEqual({ mode: "full" });
  expect(toRetention(RetentionConfigSchema.parse({ mode: "metadata", maxAge: "30d" }))).toEqual({ mode: "metadata", maxAgeMs: 30 * 86_400_000 });
});

it.each([
  [StorageConfigSchema, { flushIntervalMs: 20_000 }, /at most 10000/],
  [StorageConfigSchema, { flushIntervalMs: -1 }, /more than 0/],
  [StorageConfigSchema, { engine: "mysql" }, /must be \\"sqlite\\" \(the default\) or \\"postgres\\"/],
  [StorageConfigSchema, { engine: "postgres" }, /needs a connection URL: set urlEnv/],
  [StorageConfigSchema, { engine: "postgres", url: "postgres://h/db", urlEnv: "DB_URL" }, /url or urlEnv, not both/],
  [StorageConfigSchema, { engine: "postgres", urlEnv: "postgres://u:p@h/db" }, /name of an environment variable/],
  [StorageConfigSchema, { engine: "postgres", url: "mysql://h/db" }, /starting with \\"postgres:\/\//],
  [StorageConfigSchema, { engine: "postgres", urlEnv: "DB_URL", path: "gw.db" }, /path/],
  [StorageConfigSchema, { engine: "postgres", urlEnv: "DB_URL", schema: "Gateway-Logs" }, /schema name/],
  [StorageConfigSchema, { engine: "postgres", urlEnv: "DB_URL", poolSize: 0 }, /at least 1/],
  [StorageConfigSchema, { engine: "postgres", urlEnv: "DB_URL", instanceTimeoutMs: 10 }, /at least 1000/],
  [StorageConfigSchema, { engine: "postgres", urlEnv: "DB_URL", synchronousCommit: "maybe" }, /must be ..on.. or ..off.. \(or absent/],
  [StorageConfigSchema, { engine: "sqlite", urlEnv: "DB_URL" }, /urlEnv/],
  [StorageConfigSchema, { flush: 100 }, /flush/],
  [RetentionConfigSchema, { maxAge: "30" }, /must be a duration such as ..30d/],
  [RetentionConfigSchema, { mode: "off" }, /"full".*"metadata".*"none"/],
] as const)("refuses %#: with a message saying what to write", (schema, input, message) => {
  const r = schema.safeParse(input);
  expect(r.success).toBe(false);
  expect(JSON.stringify(r.error?.issues)).toMatch(message);
});
