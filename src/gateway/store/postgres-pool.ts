/**
 * Connecting to PostgreSQL: the connection URL (from the config or, better,
 * an environment variable), the pool every part of the store shares, and
 * how its failures are classified.
 *
 * Invariant: the URL's password never appears in an error this module
 * returns (messages are scrubbed, and a URL that does not parse is reported
 * without the URL).
 */
import pg from "pg";
import type { DatabaseError, PoolClient } from "pg";
import { ErrorCode, MeshguardError } from "../../errors.js";
import { scrubber } from "../redact.js";
import type { PostgresStorageConfig } from "./config.js";

/** The PostgreSQL OID of bigint. Ours (log times, row numbers, counts) are all below 2^53. */
const INT8_OID = 20;

/** How long a connection may sit inside a transaction with nothing sent: fn is synchronous, so only a client stuck by a network fault does; PostgreSQL then ends it and its row locks go. */
const IDLE_IN_TRANSACTION_MS = 15_000;
/** How long to wait for a connection (a new one, or a free one of the pool) before failing the operation. */
const CONNECT_TIMEOUT_MS = 10_000;

export interface PgTarget {
  url: string;
  /** The URL without its password, for messages. */
  shown: string;
  /** Removes the password from a text. */
  scrub(text: string): string;
}

/** resolveTarget reads the connection URL the config names; a missing variable or a URL that does not parse is STORE_FAILED saying what to set. */
export function resolveTarget(cfg: Pick<PostgresStorageConfig, "url" | "urlEnv">, env: NodeJS.ProcessEnv = process.env): PgTarget {
  const url = cfg.url ?? (cfg.urlEnv === undefined ? undefined : env[cfg.urlEnv]);
  if (url === undefined || url === "") {
    throw new MeshguardError(ErrorCode.STORE_FAILED, `storage.urlEnv names the environment variable ${cfg.urlEnv}, which is ${url === undefined ? "not set" : "empty"}`, {
      hint: `set ${cfg.urlEnv}=postgres://USER:PASSWORD@HOST:5432/DATABASE in the gateway's environment`,
    });
  }
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    // The URL itself is not quoted: it may hold a password.
    throw new MeshguardError(ErrorCode.STORE_FAILED, `the PostgreSQL connection URL${cfg.urlEnv ? ` in ${cfg.urlEnv}` : ""} is not a URL`, {
      hint: "write it as postgres://USER:PASSWORD@HOST:5432/DATABASE (percent-encode special characters of the password)",
    });
  }
  if (!/^postgres(ql)?:$/.test(parsed.protocol)) {
    throw new MeshguardError(ErrorCode.STORE_FAILED, `the PostgreSQL connection URL${cfg.urlEnv ? ` in ${cfg.urlEnv}` : ""} must start with postgres:// or postgresql://, not ${parsed.protocol}//`);
  }
  const password = decodeURIComponent(parsed.password);
  const secrets = [password, parsed.password].filter((s) => s.length > 0);
  const scrub = scrubber(secrets);
  if (parsed.password) parsed.password = "***";
  return { url, shown: parsed.toString(), scrub };
}

/**
 * createPool opens the store's pool (connections are made on demand);
 * `onIdleError` hears of a pooled connection that failed while idle (a
 * restarted server). `synchronousCommit` overrides the server's setting for
 * these connections only.
 */
export function createPool(target: PgTarget, size: number, synchronousCommit: "on" | "off" | undefined, onIdleError: (err: Error) => void): pg.Pool {
  const pool = new pg.Pool({
    connectionString: target.url,
    max: size,
    application_name: "meshguard-gateway",
    idle_in_transaction_session_timeout: IDLE_IN_TRANSACTION_MS,
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
    keepAlive: true,
    ...(synchronousCommit ? { options: `-c synchronous_commit=${synchronousCommit}` } : {}),
    types: { getTypeParser: ((oid: number, format?: "text" | "binary") => (oid === INT8_OID ? Number : pg.types.getTypeParser(oid, format))) as typeof pg.types.getTypeParser },
  });
  // Without a listener an idle connection's error would crash the process.
  pool.on("error", onIdleError);
  return pool;
}

/** SQLSTATEs after which the transaction surely did not commit and may simply run again. */
const RETRYABLE = new Set(["40001", "40P01"]); // serialization_failure, deadlock_detected

function sqlState(err: unknown): string | undefined {
  const code = (err as Partial<DatabaseError> | undefined)?.code;
  return typeof code === "string" && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
}

/** isRetryable: the server rolled the transaction back because of other transactions (a deadlock, a serialization failure). */
export function isRetryable(err: unknown): boolean {
  const code = sqlState(err);
  return code !== undefined && RETRYABLE.has(code);
}

/**
 * isConnectionFailure: the connection broke or the server is going away
 * (the statement may or may not have run), as opposed to the server
 * refusing a statement (bad data, a constraint).
 */
export function isConnectionFailure(err: unknown): boolean {
  const code = sqlState(err);
  if (code !== undefined) return code.startsWith("08") || code.startsWith("57P") || code === "53300";
  return err instanceof Error; // a socket error, "Connection terminated", a connect timeout
}

/** pgError wraps a failure as STORE_FAILED naming what failed, with the URL's password removed from every message. */
export function pgError(err: unknown, what: string, target: PgTarget): MeshguardError {
  if (err instanceof MeshguardError) return err;
  const detail = target.scrub(err instanceof Error ? err.message : String(err));
  const code = sqlState(err);
  return new MeshguardError(ErrorCode.STORE_FAILED, `${what} (PostgreSQL ${target.shown}): ${detail}${code ? ` [${code}]` : ""}`, { cause: err });
}

/** Swallows a checked-out client's 'error' event: the query in flight rejects with the same error, which is where it is handled. */
const quiet = (): void => {};

/**
 * checkout takes a client from the pool for several statements (a
 * transaction). A checked-out client's connection that breaks emits 'error'
 * — the pool listens only to idle clients — and an 'error' nobody listens to
 * would end the process: checkout listens until release.
 */
export async function checkout(pool: pg.Pool): Promise<PoolClient> {
  const client = await pool.connect();
  client.on("error", quiet);
  return client;
}

/** release returns a checked-out client to the pool, or destroys it (`destroy`, or a `failure` that broke the connection: a broken connection must not be reused). */
export function release(client: PoolClient, failure?: unknown, destroy = false): void {
  client.off("error", quiet);
  client.release(destroy || (failure !== undefined && isConnectionFailure(failure)));
}
