/**
 * The SQLite schema and its migrations. `schema_version` holds the version
 * the file is at; MIGRATIONS[i] brings it from version i to i + 1, in one
 * transaction with the version bump, so a crash mid-migration leaves the
 * old version intact. Never edit a released migration: add one.
 *
 * The file is marked with an application id so that a path pointing at some
 * other SQLite database is refused instead of altered.
 */
import type { DatabaseSync } from "node:sqlite";
import { ErrorCode, MeshguardError } from "../../errors.js";
import { oauthTablesSql } from "./oauth-tokens.js";

/** "mgwd": PRAGMA application_id of a meshguard gateway database. */
export const APPLICATION_ID = 0x6d677764;

export const MIGRATIONS: readonly string[] = [
  // 1: log records, quota buckets, unsettled reservations.
  `
  CREATE TABLE logs (
    seq INTEGER PRIMARY KEY,          -- insertion order: breaks ties of time in the paging cursor
    id TEXT NOT NULL UNIQUE,
    time INTEGER NOT NULL,
    user TEXT NOT NULL,
    node TEXT NOT NULL,
    session_id TEXT NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    meta TEXT NOT NULL,               -- JSON of the record without headers and bodies
    request_headers TEXT,             -- JSON, credentials removed; full retention only
    request_body TEXT,
    response_body TEXT
  );
  CREATE INDEX logs_user_time ON logs (user, time);
  CREATE INDEX logs_session ON logs (session_id);
  CREATE INDEX logs_time ON logs (time);
  CREATE TABLE buckets (
    key TEXT PRIMARY KEY,
    level REAL NOT NULL,
    updated_at INTEGER NOT NULL
  ) WITHOUT ROWID;
  CREATE TABLE reservations (
    id TEXT PRIMARY KEY,
    time INTEGER NOT NULL,
    holds TEXT NOT NULL               -- JSON [{ key, amount }]
  ) WITHOUT ROWID;
  `,
  // 2: the model as a column (logs filtered and usage summed by model), filled from the records already stored.
  `
  ALTER TABLE logs ADD COLUMN model TEXT NOT NULL DEFAULT '';
  UPDATE logs SET model = coalesce(json_extract(meta, '$.model'), '');
  CREATE INDEX logs_model_time ON logs (model, time);
  `,
  // 3: connectors' per-user OAuth tokens (sealed) and users' delegations to tags (./oauth-tokens.ts).
  oauthTablesSql(""),
];

/** migrate brings `db` to the newest schema, creating it in an empty file. */
export function migrate(db: DatabaseSync, path: string): void {
  db.exec("BEGIN IMMEDIATE");
  try {
    const appId = (db.prepare("PRAGMA application_id").get() as { application_id: number }).application_id;
    const tables = (db.prepare("SELECT count(*) AS n FROM sqlite_schema").get() as { n: number }).n;
    if (appId !== APPLICATION_ID && (appId !== 0 || tables > 0)) {
      throw new MeshguardError(ErrorCode.STORE_FAILED, `${path} is not a meshguard gateway database (it holds other data); refusing to change it`, {
        hint: "point storage.path at a new file or at a gateway.db the gateway created",
      });
    }
    if (tables === 0) {
      db.exec(`PRAGMA application_id = ${APPLICATION_ID}`);
      db.exec("CREATE TABLE schema_version (version INTEGER NOT NULL)");
      db.exec("INSERT INTO schema_version VALUES (0)");
    }
    const version = (db.prepare("SELECT version FROM schema_version").get() as { version: number }).version;
    if (version > MIGRATIONS.length) {
      throw new MeshguardError(ErrorCode.STORE_FAILED, `${path} is at schema version ${version}, written by a newer meshguard (this one knows up to ${MIGRATIONS.length})`, {
        hint: "run the newer meshguard, or point storage.path at another file",
      });
    }
    for (let v = version; v < MIGRATIONS.length; v++) db.exec(MIGRATIONS[v]!);
    db.prepare("UPDATE schema_version SET version = ?").run(MIGRATIONS.length);
    db.exec("COMMIT");
  } catch (err) {
    db.exec("ROLLBACK");
    throw err;
  }
}
