/**
 * The per-user OAuth token store (../credentials/token-store.ts) on the
 * gateway's SQL engines: tables `oauth_tokens` and `oauth_delegations`
 * (SQLite migration 3, PostgreSQL migration 4). One implementation serves
 * both: the statements are plain SQL both engines speak, written with `?`
 * placeholders that the engine's `run` renumbers when it needs `$n`.
 *
 * A row holds a sealed value only (AES-256-GCM, ../credentials/keyring.ts);
 * the store never sees a token.
 */
import type { Delegation, OAuthTokenStore, SealedTokenRow } from "../credentials/token-store.js";

/** SqlRun runs one statement with `?` placeholders and returns its rows (none for writes) and how many it changed. */
export type SqlRun = (sql: string, params: (string | number)[]) => Promise<{ rows: Record<string, unknown>[]; changes: number }>;

/** The tables, as SQL both engines accept; `t` prefixes each table name (a PostgreSQL schema). */
export const oauthTablesSql = (t: string) => `
  CREATE TABLE ${t}oauth_tokens (
    connector TEXT NOT NULL,
    subject TEXT NOT NULL,          -- "user:<login>"
    key_id TEXT NOT NULL,           -- the keyring key that sealed the value
    sealed TEXT NOT NULL,           -- AES-256-GCM envelope, never a token
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (connector, subject)
  );
  CREATE TABLE ${t}oauth_delegations (
    connector TEXT NOT NULL,
    tag TEXT NOT NULL,
    login TEXT NOT NULL,            -- the user whose token agents with the tag use
    granted_at BIGINT NOT NULL,
    PRIMARY KEY (connector, tag)
  );
`;

const tokenOf = (r: Record<string, unknown>): SealedTokenRow => ({
  connector: String(r.connector),
  subject: String(r.subject),
  keyId: String(r.key_id),
  sealed: String(r.sealed),
  updatedAt: Number(r.updated_at),
});
const delegationOf = (r: Record<string, unknown>): Delegation => ({ connector: String(r.connector), tag: String(r.tag), user: String(r.login), grantedAt: Number(r.granted_at) });

/** where builds a filter of the fields given (in a fixed order). */
function where(filter: Record<string, string | undefined>): { sql: string; params: string[] } {
  const parts: string[] = [];
  const params: string[] = [];
  for (const [col, v] of Object.entries(filter)) {
    if (v === undefined) continue;
    parts.push(`${col} = ?`);
    params.push(v);
  }
  return { sql: parts.length ? ` WHERE ${parts.join(" AND ")}` : "", params };
}

/** SqlTokenStore is OAuthTokenStore over an engine's `run`; `t` prefixes table names (e.g. `"meshguard".`). */
export class SqlTokenStore implements OAuthTokenStore {
  private readonly run: SqlRun;
  private readonly t: string;

  constructor(
    run: SqlRun,
    t = "",
  ) {
    this.run = run;
    this.t = t;
  }

  async getToken(connector: string, subject: string): Promise<SealedTokenRow | undefined> {
    const { rows } = await this.run(`SELECT connector, subject, key_id, sealed, updated_at FROM ${this.t}oauth_tokens WHERE connector = ? AND subject = ?`, [connector, subject]);
    return rows[0] && tokenOf(rows[0]);
  }

  async putToken(r: SealedTokenRow): Promise<void> {
    await this.run(
      `INSERT INTO ${this.t}oauth_tokens (connector, subject, key_id, sealed, updated_at) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT (connector, subject) DO UPDATE SET key_id = excluded.key_id, sealed = excluded.sealed, updated_at = excluded.updated_at`,
      [r.connector, r.subject, r.keyId, r.sealed, Math.trunc(r.updatedAt)],
    );
  }

  async deleteToken(connector: string, subject: string): Promise<boolean> {
    return (await this.run(`DELETE FROM ${this.t}oauth_tokens WHERE connector = ? AND subject = ?`, [connector, subject])).changes > 0;
  }

  async listTokens(filter: { connector?: string; subject?: string }): Promise<SealedTokenRow[]> {
    const w = where({ connector: filter.connector, subject: filter.subject });
    const { rows } = await this.run(`SELECT connector, subject, key_id, sealed, updated_at FROM ${this.t}oauth_tokens${w.sql} ORDER BY connector, subject`, w.params);
    return rows.map(tokenOf);
  }

  async getDelegation(connector: string, tag: string): Promise<Delegation | undefined> {
    const { rows } = await this.run(`SELECT connector, tag, login, granted_at FROM ${this.t}oauth_delegations WHERE connector = ? AND tag = ?`, [connector, tag]);
    return rows[0] && delegationOf(rows[0]);
  }

  async putDelegation(d: Delegation): Promise<Delegation | undefined> {
    // The row of another user stays: the conflict is returned, nothing is replaced.
    await this.run(
      `INSERT INTO ${this.t}oauth_delegations AS d (connector, tag, login, granted_at) VALUES (?, ?, ?, ?)
       ON CONFLICT (connector, tag) DO UPDATE SET granted_at = excluded.granted_at WHERE d.login = excluded.login`,
      [d.connector, d.tag, d.user, Math.trunc(d.grantedAt)],
    );
    const held = await this.getDelegation(d.connector, d.tag);
    return held !== undefined && held.user !== d.user ? held : undefined;
  }

  async deleteDelegation(connector: string, tag: string, user?: string): Promise<boolean> {
    const w = where({ connector, tag, login: user });
    return (await this.run(`DELETE FROM ${this.t}oauth_delegations${w.sql}`, w.params)).changes > 0;
  }

  async listDelegations(filter: { connector?: string; user?: string }): Promise<Delegation[]> {
    const w = where({ connector: filter.connector, login: filter.user });
    const { rows } = await this.run(`SELECT connector, tag, login, granted_at FROM ${this.t}oauth_delegations${w.sql} ORDER BY connector, tag`, w.params);
    return rows.map(delegationOf);
  }
}
