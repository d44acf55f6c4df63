/**
 * The PostgreSQL roles that stand for tailnet callers, shared by the database
 * gateway (which does `SET ROLE` to them) and `meshguard policy apply --db`
 * (which creates them, grants them and keys row-security policies on them).
 *
 * One role per user and per tag, so a new node of a known tag needs nothing
 * new in the database. A node with several tags uses the role of its tag set,
 * a member of each tag's role; it exists only when `policy apply --db` was
 * told of that set, and the gateway refuses the connection (saying how to
 * create it) when it is missing. Role names are at most 63 bytes (PostgreSQL's
 * NAMEDATALEN - 1): a longer name is cut at a character boundary and ends with
 * `~` and 16 hex digits of the SHA-256 of the whole name, so it stays unique
 * and stable.
 */
import { createHash } from "node:crypto";

/** The longest identifier PostgreSQL keeps whole (NAMEDATALEN - 1 bytes). */
export const PG_MAX_IDENTIFIER_BYTES = 63;

/** The schema holding meshguard.principal() and meshguard.owners(). */
export const MESHGUARD_SCHEMA = "meshguard";

/**
 * The database gateway's login role when none is named: LOGIN, NOINHERIT, no
 * privileges of its own, a member of every caller role so that it can
 * `SET ROLE` to the caller's (`policy apply --db` creates it).
 */
export const DEFAULT_GATEWAY_ROLE = "meshguard_gateway";

/** The session settings the gateway sets and no statement in the session may change. */
export const PRINCIPAL_SETTING = "meshguard.principal";
export const OWNERS_SETTING = "meshguard.owners";

/** A caller as the gateway learns it from whois. */
export interface DbCaller {
  /** The owning user's login, for a user-owned (untagged) node. */
  user?: string;
  /** The node's tags ("tag:billing"), empty or absent for a user-owned node. */
  tags?: readonly string[];
}

/** fitIdentifier keeps a name within 63 bytes, hashing the rest so it stays unique. */
export function fitIdentifier(name: string): string {
  if (Buffer.byteLength(name, "utf8") <= PG_MAX_IDENTIFIER_BYTES) return name;
  const digest = createHash("sha256").update(name, "utf8").digest("hex").slice(0, 16);
  const room = PG_MAX_IDENTIFIER_BYTES - 1 - digest.length;
  let head = "";
  for (const ch of name) {
    if (Buffer.byteLength(head + ch, "utf8") > room) break;
    head += ch;
  }
  return `${head}~${digest}`;
}

/** roleForUser: "mg:user:alice@example.com" (logins compared lower-case, "alice@" is "alice"). */
export function roleForUser(login: string): string {
  const s = login.toLowerCase();
  return fitIdentifier(`mg:user:${s.endsWith("@") ? s.slice(0, -1) : s}`);
}

/** roleForTag: "mg:tag:billing" for "tag:billing". */
export function roleForTag(tag: string): string {
  return fitIdentifier(`mg:tag:${tag.replace(/^tag:/, "")}`);
}

/** roleForTagSet: the role of a node with several tags, a member of each tag's role. */
export function roleForTagSet(tags: readonly string[]): string {
  const names = [...new Set(tags.map((t) => t.replace(/^tag:/, "")))].sort();
  if (names.length === 1) return roleForTag(names[0]!);
  return fitIdentifier(`mg:tags:${names.join("+")}`);
}

/** roleForCaller: the role the gateway sets for a caller; undefined when whois gave neither user nor tags. */
export function roleForCaller(c: DbCaller): string | undefined {
  if (c.tags && c.tags.length > 0) return roleForTagSet(c.tags);
  if (c.user) return roleForUser(c.user);
  return undefined;
}

/** quoteIdent quotes a PostgreSQL identifier ("mg:tag:x" → "\"mg:tag:x\""). */
export function quoteIdent(name: string): string {
  if (name.includes("\0")) throw new Error(`identifier ${JSON.stringify(name)} contains a NUL byte`);
  return `"${name.replace(/"/g, '""')}"`;
}

/** quoteLiteral quotes a PostgreSQL string literal (standard_conforming_strings on). */
export function quoteLiteral(s: string): string {
  if (s.includes("\0")) throw new Error("string literal contains a NUL byte");
  return `'${s.replace(/'/g, "''")}'`;
}

/**
 * The SQL creating meshguard.principal() and meshguard.owners(): read-only
 * views of the settings the gateway sets at the start of each session.
 * principal() is the caller's node name (its full tailnet name); owners() the
 * logins of the users accountable for it (the user of a user-owned node, the
 * tag owners of a tagged one), as a text[]. Both are NULL/empty outside the
 * gateway. Idempotent.
 */
export function meshguardSchemaSql(): string[] {
  const s = quoteIdent(MESHGUARD_SCHEMA);
  return [
    `CREATE SCHEMA IF NOT EXISTS ${s}`,
    `CREATE OR REPLACE FUNCTION ${s}.principal() RETURNS text LANGUAGE sql STABLE PARALLEL SAFE AS $$ SELECT nullif(current_setting('${PRINCIPAL_SETTING}', true), '') $$`,
    `CREATE OR REPLACE FUNCTION ${s}.owners() RETURNS text[] LANGUAGE sql STABLE PARALLEL SAFE AS $$ SELECT coalesce(nullif(current_setting('${OWNERS_SETTING}', true), '')::text[], '{}'::text[]) $$`,
    `GRANT USAGE ON SCHEMA ${s} TO PUBLIC`,
    `GRANT EXECUTE ON FUNCTION ${s}.principal(), ${s}.owners() TO PUBLIC`,
  ];
}

/** ownersSettingValue encodes owners as a PostgreSQL text[] literal for set_config. */
export function ownersSettingValue(owners: readonly string[]): string {
  return `{${owners.map((o) => `"${o.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`).join(",")}}`;
}
