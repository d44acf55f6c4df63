/**
 * The gateway store: `openStore` picks the engine the storage config names
 * (SQLite, one file, one gateway process; or PostgreSQL, shared by several
 * gateway instances) and returns a GatewayStore (src/gateway/types.ts). The
 * store applies the retention settings (what is kept, and for how long) and
 * removes the configured secrets from every record it stores, whatever its
 * caller did.
 */
import { mkdirSync } from "node:fs";
import { isAbsolute, join, resolve } from "node:path";
import { parseWith } from "../../config.js";
import type { MeshguardError } from "../../errors.js";
import type { GatewayStore, Retention } from "../types.js";
import { StorageConfigSchema, type StorageConfigInput } from "./config.js";
import type { OnPruned } from "./retention.js";
import { SqliteStore } from "./sqlite.js";

export { RetentionConfigSchema, StorageConfigSchema, parseDuration, toRetention } from "./config.js";
export type { PostgresStorageConfig, RetentionConfig, RetentionConfigInput, StorageConfig, StorageConfigInput } from "./config.js";

export interface OpenStoreOptions {
  /** Where the gateway keeps its files; the SQLite database defaults to `<dataDir>/gateway.db`. Unused by PostgreSQL. */
  dataDir: string;
  retention: Retention;
  /** Provider keys (and any other secret): never stored, wherever they occur in a record. */
  secrets?: readonly string[];
  /** Told about failures off the request path (a log batch that could not be written, a failed prune); default: a process warning, at most one a minute. */
  onError?: (err: MeshguardError) => void;
  /** Where `storage.urlEnv` is looked up; default process.env. */
  env?: NodeJS.ProcessEnv;
  /** How often records past retention.maxAge are deleted (default hourly; also once at open). */
  pruneEveryMs?: number;
  /** Told how many records each prune run deleted. */
  onPruned?: OnPruned;
}

/** openStore opens the store `cfg` describes (validating it), creating the database when it does not exist. */
export async function openStore(cfg: StorageConfigInput, opts: OpenStoreOptions): Promise<GatewayStore> {
  const c = parseWith(StorageConfigSchema, cfg ?? {}, "gateway storage config");
  const onError = opts.onError ?? throttledWarning();
  const secrets = opts.secrets ?? [];
  if (c.engine === "postgres") {
    // Loaded only when used: a SQLite gateway never loads the PostgreSQL driver.
    const { PostgresStore } = await import("./postgres.js");
    const { resolveTarget } = await import("./postgres-pool.js");
    return await PostgresStore.open({
      target: resolveTarget(c, opts.env),
      schema: c.schema,
      poolSize: c.poolSize,
      synchronousCommit: c.synchronousCommit,
      instanceTimeoutMs: c.instanceTimeoutMs,
      retention: opts.retention,
      flushIntervalMs: c.flushIntervalMs,
      secrets,
      onError,
      ...pruning(opts),
    });
  }
  const path = c.path === ":memory:" ? c.path : c.path === undefined ? join(opts.dataDir, "gateway.db") : isAbsolute(c.path) ? c.path : resolve(opts.dataDir, c.path);
  if (path !== ":memory:") mkdirSync(resolve(path, ".."), { recursive: true });
  return await SqliteStore.open({ path, retention: opts.retention, flushIntervalMs: c.flushIntervalMs, secrets, onError, ...pruning(opts) });
}

function pruning(opts: OpenStoreOptions): { pruneEveryMs?: number; onPruned?: OnPruned } {
  return { ...(opts.pruneEveryMs === undefined ? {} : { pruneEveryMs: opts.pruneEveryMs }), ...(opts.onPruned === undefined ? {} : { onPruned: opts.onPruned }) };
}

/** The default onError: a process warning, at most one a minute (a full disk fails every flush); the count of those held back is in the next. */
function throttledWarning(): (err: MeshguardError) => void {
  let last = -Infinity;
  let held = 0;
  return (err) => {
    const now = Date.now();
    if (now - last < 60_000) {
      held++;
      return;
    }
    last = now;
    process.emitWarning(held > 0 ? `${err.message} (and ${held} more store warning(s) in the last minute)` : err.message, { code: err.code });
    held = 0;
  };
}
