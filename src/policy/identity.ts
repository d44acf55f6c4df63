/**
 * Who a rule is for. The vocabulary is the tailnet policy file's: `*`, tags,
 * groups (expanded to their users at compile time), users and node names.
 *
 * Users compare case-insensitively, and `alice@` (a control server's user
 * without a domain) is the same user as a login of just `alice`. A node name
 * matches the principal's full node name or its first label, so `research-agent`
 * matches `research-agent.tailnet.ts.net`. A principal's `user` is set only
 * for user-owned nodes (types.ts), so, as in a tailnet policy, a tagged node
 * is known by its tags, not by the user who owns the tag.
 */

import { requestError } from "./errors.js";
import { GROUP_RE, NODE_RE, TAG_RE, USER_RE } from "./schema.js";
import type { Principal } from "./types.js";

/** normalizeUser maps "Alice@Example.com" to "alice@example.com" and "alice@" to "alice". */
export function normalizeUser(u: string): string {
  const s = u.toLowerCase();
  return s.endsWith("@") ? s.slice(0, -1) : s;
}

/** nodeNames returns the names a principal's node answers to: the full name and its first label. */
export function nodeNames(node: string): string[] {
  const s = node.toLowerCase().replace(/\.$/, "");
  const dot = s.indexOf(".");
  return dot > 0 ? [s, s.slice(0, dot)] : [s];
}

/** A rule's `src`, resolved: groups expanded, names normalized. */
export interface SrcSet {
  star: boolean;
  tags: Set<string>;
  users: Set<string>;
  nodes: Set<string>;
}

/** resolveSrc expands a src list against the file's groups (unknown groups were rejected at validation). */
export function resolveSrc(src: readonly string[], groups: Record<string, string[]>): SrcSet {
  let star = false;
  const tags: string[] = [];
  const users: string[] = [];
  const nodes: string[] = [];
  for (const s of src) {
    if (s === "*") star = true;
    else if (TAG_RE.test(s)) tags.push(s);
    else if (GROUP_RE.test(s)) for (const u of groups[s] ?? []) users.push(normalizeUser(u));
    else if (USER_RE.test(s)) users.push(normalizeUser(s));
    else nodes.push(s.toLowerCase());
  }
  // One shared empty set: 10,000 rules need not allocate 20,000 empty Sets.
  const set = (xs: string[]) => (xs.length ? new Set(xs) : EMPTY);
  return { star, tags: set(tags), users: set(users), nodes: set(nodes) };
}

const EMPTY: Set<string> = new Set();

/** srcMatches is the unindexed check (explain, and rules the index cannot place). */
export function srcMatches(src: SrcSet, p: Principal): boolean {
  if (src.star) return true;
  for (const t of p.tags) if (src.tags.has(t)) return true;
  if (p.user && src.users.has(normalizeUser(p.user))) return true;
  if (p.node) for (const n of nodeNames(p.node)) if (src.nodes.has(n)) return true;
  return false;
}

/**
 * parsePrincipal reads who a test case or the CLI acts as: "tag:x",
 * "alice@example.com", "alice@", "node:name" or a bare node name, or a list
 * combining them (["tag:a", "tag:b", "node:agent-1"]).
 */
export function parsePrincipal(as: string | readonly string[]): Principal {
  const p: Principal = { tags: [] };
  for (const raw of typeof as === "string" ? as.split(",").map((s) => s.trim()).filter(Boolean) : as) {
    if (TAG_RE.test(raw)) p.tags.push(raw);
    else if (raw.startsWith("node:") && NODE_RE.test(raw.slice(5))) p.node = raw.slice(5);
    else if (USER_RE.test(raw)) p.user = raw;
    else if (NODE_RE.test(raw)) p.node = raw;
    else throw requestError(raw, 'an identity is "tag:x", "alice@example.com", "alice@", "node:name" or a node name');
  }
  return p;
}

/** describePrincipal renders a principal for messages: "tag:a,tag:b (node agent-1)". */
export function describePrincipal(p: Principal): string {
  const parts: string[] = [...p.tags];
  if (p.user) parts.push(p.user);
  const who = parts.length ? parts.join(",") : "an untagged, userless node";
  return p.node ? `${who} (node ${p.node})` : who;
}
