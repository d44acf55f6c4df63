/**
 * Where per-user OAuth tokens and delegations are kept. The store only ever
 * sees sealed values (./keyring.ts): a row holds the connector, the subject
 * ("user:alice@example.com"), the id of the key that sealed it and the
 * sealed text — never a token. The gateway's SQLite and PostgreSQL stores
 * implement this beside their logs (tables `oauth_tokens` and
 * `oauth_delegations`); MemoryTokenStore serves a gateway without a store
 * (tokens then last as long as the process) and tests.
 */

/** One user's sealed tokens for one connector. */
export interface SealedTokenRow {
  connector: string;
  /** Whose tokens: "user:<login>". */
  subject: string;
  /** The keyring key that sealed `sealed` (so a rotation can find rows still under an old key). */
  keyId: string;
  sealed: string;
  updatedAt: number;
}

/** A user's grant that agents with `tag` use the user's token of `connector`. One user per connector and tag. */
export interface Delegation {
  connector: string;
  tag: string;
  user: string;
  grantedAt: number;
}

export interface OAuthTokenStore {
  getToken(connector: string, subject: string): Promise<SealedTokenRow | undefined>;
  /** Inserts or replaces the row of (connector, subject). */
  putToken(row: SealedTokenRow): Promise<void>;
  /** Deletes a row; true when there was one. */
  deleteToken(connector: string, subject: string): Promise<boolean>;
  /** Rows matching every filter given, ordered by connector then subject. */
  listTokens(filter: { connector?: string; subject?: string }): Promise<SealedTokenRow[]>;
  getDelegation(connector: string, tag: string): Promise<Delegation | undefined>;
  /** Stores a delegation unless another user holds (connector, tag): then returns that one and stores nothing. */
  putDelegation(d: Delegation): Promise<Delegation | undefined>;
  /** Deletes a delegation; with `user`, only when it is that user's. True when one was deleted. */
  deleteDelegation(connector: string, tag: string, user?: string): Promise<boolean>;
  listDelegations(filter: { connector?: string; user?: string }): Promise<Delegation[]>;
}

const key = (a: string, b: string) => `${a}\u0000${b}`;
/** select copies the rows `keep` keeps, ordered by connector then `second`. */
function select<T extends { connector: string }>(rows: Iterable<T>, keep: (r: T) => boolean, second: (r: T) => string): T[] {
  return [...rows]
    .filter(keep)
    .map((r) => ({ ...r }))
    .sort((a, b) => a.connector.localeCompare(b.connector) || second(a).localeCompare(second(b)));
}

/** MemoryTokenStore keeps rows in the process (lost at exit). */
export class MemoryTokenStore implements OAuthTokenStore {
  readonly #tokens = new Map<string, SealedTokenRow>();
  readonly #delegations = new Map<string, Delegation>();

  async getToken(connector: string, subject: string): Promise<SealedTokenRow | undefined> {
    const r = this.#tokens.get(key(connector, subject));
    return r && { ...r };
  }

  async putToken(row: SealedTokenRow): Promise<void> {
    this.#tokens.set(key(row.connector, row.subject), { ...row });
  }

  async deleteToken(connector: string, subject: string): Promise<boolean> {
    return this.#tokens.delete(key(connector, subject));
  }

  async listTokens(filter: { connector?: string; subject?: string }): Promise<SealedTokenRow[]> {
    return select(this.#tokens.values(), (r) => (filter.connector === undefined || r.connector === filter.connector) && (filter.subject === undefined || r.subject === filter.subject), (r) => r.subject);
  }

  async getDelegation(connector: string, tag: string): Promise<Delegation | undefined> {
    const d = this.#delegations.get(key(connector, tag));
    return d && { ...d };
  }

  async putDelegation(d: Delegation): Promise<Delegation | undefined> {
    const held = this.#delegations.get(key(d.connector, d.tag));
    if (held !== undefined && held.user !== d.user) return { ...held };
    this.#delegations.set(key(d.connector, d.tag), { ...d });
    return undefined;
  }

  async deleteDelegation(connector: string, tag: string, user?: string): Promise<boolean> {
    const held = this.#delegations.get(key(connector, tag));
    if (held === undefined || (user !== undefined && held.user !== user)) return false;
    return this.#delegations.delete(key(connector, tag));
  }

  async listDelegations(filter: { connector?: string; user?: string }): Promise<Delegation[]> {
    return select(this.#delegations.values(), (d) => (filter.connector === undefined || d.connector === filter.connector) && (filter.user === undefined || d.user === filter.user), (d) => d.tag);
  }
}
