/**
 * The anchor grant: one grant added to every rule-bearing policy LocalControl
 * stores, so that headscale v0.29.2 never compiles a policy to an empty packet
 * filter. Why (docs/revocation.md has the whole story, with references):
 *
 * - a policy whose `grants`/`acls` resolve to no node at all (`"grants": []`,
 *   or rules naming only tags no node has) compiles to zero filter rules,
 *   which headscale treats as deny-all when it builds full netmaps;
 * - but its incremental updates (a node joins, or reconnects to a restarted
 *   headscale and reports new Hostinfo) filter peers with
 *   `if len(matchers) > 0 { ReduceNodes(...) }` (mapper/builder.go
 *   buildTailPeers): zero matchers there means "no policy, everyone sees
 *   everyone". So a peer just revoked by such a policy is sent back to the
 *   node it was revoked from, and stays until the next policy change.
 *
 * The anchor's source and destination are 100.100.100.100, the Tailscale
 * service address, which headscale never allocates to a node
 * (db/ip.go isTailscaleReservedIP): it compiles to one filter rule that
 * matches no node, so the filter is never empty and grants nothing.
 *
 * The anchor is inserted as a fixed string and removed as the same string,
 * so the text a caller stores comes back byte for byte (`getPolicy`).
 */

import { findNodeAtLocation, parseTree, type ParseError } from "jsonc-parser";

/** ANCHOR_ITEM is inserted right after the `[` of the policy's `grants` array. */
const ANCHOR_ITEM =
  ' /* meshguard: keeps the compiled filter non-empty (headscale v0.29.2 shows revoked peers otherwise), see docs/revocation.md */ { "src": ["100.100.100.100/32"], "dst": ["100.100.100.100/32"], "ip": ["*"] },';
/** ANCHOR_PROP is inserted right after the top-level `{` of an `acls`-only policy. */
const ANCHOR_PROP = ` "grants": [${ANCHOR_ITEM} ],`;

/**
 * anchorPolicy returns `text` with the anchor grant, when the policy has rules
 * (a `grants` array, or an `acls` array and no `grants`). A policy with
 * neither lets every node reach every other in headscale (its filter is
 * "allow all", never empty) and is returned unchanged, as is text that does
 * not parse: headscale will say what is wrong with it. Idempotent.
 *
 * Exported because LocalControl is not the only way a policy reaches a
 * headscale: whatever sets one with headscale's own CLI (`meshguard policy
 * apply --control`, a deploy script) must send this text for revocations to
 * hold on headscale v0.29.2.
 */
export function anchorPolicy(text: string): string {
  if (text.includes(ANCHOR_ITEM)) return text;
  const errors: ParseError[] = [];
  let root;
  try {
    root = parseTree(text, errors, { allowTrailingComma: true, disallowComments: false });
  } catch {
    return text; // nested too deeply for the parser: headscale will refuse it
  }
  if (!root || errors.length > 0 || root.type !== "object") return text;
  const grants = findNodeAtLocation(root, ["grants"]);
  if (grants) {
    if (grants.type !== "array") return text;
    return text.slice(0, grants.offset + 1) + ANCHOR_ITEM + text.slice(grants.offset + 1);
  }
  if (findNodeAtLocation(root, ["acls"])?.type !== "array") return text;
  return text.slice(0, root.offset + 1) + ANCHOR_PROP + text.slice(root.offset + 1);
}

/** unanchorPolicy undoes anchorPolicy: the text as the caller wrote it. */
export function unanchorPolicy(text: string): string {
  if (text.includes(ANCHOR_PROP)) return text.replace(ANCHOR_PROP, "");
  return text.replace(ANCHOR_ITEM, "");
}
