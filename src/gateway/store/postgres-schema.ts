/**
 * The PostgreSQL schema of the gateway store and its migrations. Every table
 * lives in one PostgreSQL schema (storage.schema, default "meshguard"), so the
 * gateway can share a database with other applications. `schema_version`
 * holds the version the schema is at; MIGRATIONS[i] brings it from version i
 * to i + 1. Never edit a released migration: add one.
 *
 * Safe when several instances start at once: migrate runs in one
 * transaction holding a transaction-scoped advisory lock, so exactly one
 * instance migrates and the others wait, then find the newest version. DDL
 * is transactional in PostgreSQL, so a crash mid-migration leaves the old
 * version intact.
 *
 * Column types: times of log records are bigint epoch milliseconds (checked
 * to be safe integers before they are stored); token counts, costs, bucket
 * levels and the times the quota manager passes are double precision, the
 * JS number exactly. Bodies are bytea: a body may hold a NUL character,
 * which PostgreSQL's text cannot.
 */
import type { PoolClient } from "pg";
import { ErrorCode, MeshguardError } from "../../errors.js";
import { oauthTablesSql } from "./oauth-tokens.js";

/** ident quotes a schema name for SQL (names are validated by the config to [a-z0-9_]). */
export function ident(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/** The migrations, as functions of the quoted schema name. */
export const MIGRATIONS: readonly ((s: string) => string)[] = [
  // 1: log records, quota buckets, unsettled reservations, gateway instances.
  (s) => `
  CREATE TABLE ${s}.logs (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, -- insertion order: breaks ties of time in the paging cursor
    id text NOT NULL UNIQUE,
    time bigint NOT NULL,
    "user" text NOT NULL,
    node text NOT NULL,
    session_id text NOT NULL,
    input_tokens double precision NOT NULL,
    output_tokens double precision NOT NULL,
    cost_usd double precision NOT NULL,
    meta text NOT NULL,            -- JSON of the record without headers and bodies
    request_headers text,          -- JSON, credentials removed; full retention only
    request_body bytea,            -- UTF-8; full retention only
    response_body bytea
  );
  CREATE INDEX logs_user_time ON ${s}.logs ("user", time, seq);
  CREATE INDEX logs_session ON ${s}.logs (session_id);
  CREATE INDEX logs_time ON ${s}.logs (time, seq);
  -- level NULL: a row created only to be locked (a bucket with no state yet).
  CREATE TABLE ${s}.buckets (
    key text PRIMARY KEY,
    level double precision,
    updated_at double precision
  );
  -- One row per running gateway instance: a reservation whose instance's
  -- heartbeat is older than its timeout (or whose row is gone) belongs to a
  -- request that died with its instance.
  CREATE TABLE ${s}.instances (
    id text PRIMARY KEY,
    host text NOT NULL,
    pid integer NOT NULL,
    started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    heartbeat_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    timeout_ms integer NOT NULL
  );
  CREATE TABLE ${s}.reservations (
    id text PRIMARY KEY,
    instance text NOT NULL,
    time double precision NOT NULL,
    holds text NOT NULL            -- JSON [{ key, amount, chain? }], exactly as given
  );
  CREATE INDEX reservations_instance ON ${s}.reservations (instance);
  `,
  // 2: the model as a column (logs filtered and usage summed by model), filled
  // from the records already stored. A record whose meta holds an escaped NUL
  // keeps '' (json ->> would fail on it, and with it the migration).
  (s) => `
  ALTER TABLE ${s}.logs ADD COLUMN model text NOT NULL DEFAULT '';
  UPDATE ${s}.logs SET model = coalesce(meta::json ->> 'model', '') WHERE strpos(meta, '\\u0000') = 0;
  CREATE INDEX logs_model_time ON ${s}.logs (model, time, seq);
  `,
  // 3: the open session of each caller without a session id of its own,
  // shared by every instance (../sessions.ts). `caller` is a hash of user
  // and node; `last` its latest request (epoch ms).
  (s) => `
  CREATE TABLE ${s}.sessions (
    caller text PRIMARY KEY,
    id text NOT NULL,
    last bigint NOT NULL
  );
  CREATE INDEX sessions_last ON ${s}.sessions (last);
  `,
  // 4: connectors' per-user OAuth tokens (sealed) and users' delegations to tags (./oauth-tokens.ts).
  (s) => oauthTablesSql(`${s}.`),
];

/** migrate brings `schema` to the newest version, creating it (and its tables) when missing. */
export async function migrate(client: PoolClient, schema: string): Promise<void> {
  const s = ident(schema);
  await client.query("BEGIN");
  try {
    // One lock per schema name: instances of other schemas migrate in parallel.
    await client.query("SELECT pg_advisory_xact_lock(hashtext('meshguard.gateway:' || $1))", [schema]);
    const encoding = (await client.query<{ server_encoding: string }>("SHOW server_encoding")).rows[0]?.server_encoding;
    if (encoding !== "UTF8") {
      throw new MeshguardError(ErrorCode.STORE_FAILED, `the PostgreSQL database's encoding is ${encoding}, not UTF8: log records could not be stored faithfully`, {
        hint: "create the database with ENCODING 'UTF8' (createdb -E UTF8 ...)",
      });
    }
    const exists = (await client.query("SELECT 1 FROM pg_namespace WHERE nspname = $1", [schema])).rowCount === 1;
    // Only created when missing: CREATE SCHEMA needs the CREATE privilege on the database even with IF NOT EXISTS.
    if (!exists) await client.query(`CREATE SCHEMA ${s}`);
    const tables = (await client.query<{ name: string }>("SELECT table_name AS name FROM information_schema.tables WHERE table_schema = $1", [schema])).rows.map((r) => r.name);
    if (tables.length > 0 && !tables.includes("schema_version")) {
      throw new MeshguardError(ErrorCode.STORE_FAILED, `the PostgreSQL schema "${schema}" holds other tables (${tables.slice(0, 5).join(", ")}) and is not a meshguard gateway store; refusing to change it`, {
        hint: "set storage.schema to a schema of its own (it is created when missing)",
      });
    }
    if (!tables.includes("schema_version")) {
      await client.query(`CREATE TABLE ${s}.schema_version (version integer NOT NULL)`);
      await client.query(`INSERT INTO ${s}.schema_version VALUES (0)`);
    }
    const version = (await client.query<{ version: number }>(`SELECT version FROM ${s}.schema_version`)).rows[0]?.version ?? 0;
    if (version > MIGRATIONS.length) {
      throw new MeshguardError(ErrorCode.STORE_FAILED, `the PostgreSQL schema "${schema}" is at version ${version}, written by a newer meshguard (this one knows up to ${MIGRATIONS.length})`, {
        hint: "run the newer meshguard on every instance, or point storage.schema at another schema",
      });
    }
    for (let v = version; v < MIGRATIONS.length; v++) await client.query(MIGRATIONS[v]!(s));
    if (version !== MIGRATIONS.length) await client.query(`UPDATE ${s}.schema_version SET version = $1`, [MIGRATIONS.length]);
    await client.query("COMMIT");
  } catch (err) {
    await client.query("ROLLBACK").catch(() => {});
    throw err;
  }
}
