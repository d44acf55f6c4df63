/**
 * Who is asking the issuer, from whois of the connection: the tailnet is the
 * client authentication (no secret). The stable node id (not the name, not
 * an address: both are reused) is the token's subject and binding.
 */

import type { WhoIs } from "../node.js";
import type { Principal } from "../policy/index.js";

export interface Caller {
  /** Stable node id: the token's `sub` and `cnf`. */
  id: string;
  /** MagicDNS short name (first label). */
  name: string;
  tags: string[];
  owners: string[];
  /** What the policy is asked about (a tagged node is known by its tags, as in a tailnet policy). */
  principal: Principal;
}

/** callerOf turns a whois answer into the caller the issuer decides for. */
export function callerOf(who: WhoIs): Caller {
  const full = who.node.name.replace(/\.$/, "");
  const name = full.split(".")[0] || who.node.hostname;
  const principal: Principal = { node: full || who.node.hostname, tags: [...who.node.tags] };
  if (!who.tagged && who.user.login) principal.user = who.user.login;
  return { id: who.node.id, name, tags: [...who.node.tags], owners: [...who.owners], principal };
}
