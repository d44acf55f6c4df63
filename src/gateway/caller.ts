/**
 * Who is calling. On the tailnet the answer is whois on the connection (the
 * tailnet says which node, its tags, its owners and the app capabilities
 * granted to it); on the loopback listener it is the configured principal.
 * Nothing a client sends (headers, keys) names the caller.
 *
 * whois is asked once per connection: a keep-alive connection's peer does
 * not change. The role and quota chains are derived per request from the
 * policy in force (cheap), so a policy reload applies at once.
 */

import type net from "node:net";
import type { MeshNode, WhoIs } from "../node.js";
import { normalizeUser, parsePrincipal } from "../policy/identity.js";
import type { Policy } from "../policy/load.js";
import type { Principal } from "../policy/types.js";
import { resolveAccess, type Access } from "./access.js";
import type { Caller } from "./types.js";

/** What identification knows before access (role, chains) is decided. */
export type BaseCaller = Omit<Caller, "role">;

/** AccessResolver decides a caller's role and quota chains from the policy in force and its capabilities. */
export type AccessResolver = (caller: BaseCaller, policy: Policy | undefined) => Access;

/** policyAccess is the resolver the gateway runs with: the policy's gateway section plus the caller's `meshguard.dev/cap/gateway` grants. */
export const policyAccess: AccessResolver = (caller, policy) => resolveAccess(policy?.gateway, caller, caller.caps);

/** callerFromWhois builds the caller of a tailnet connection. */
export function callerFromWhois(w: WhoIs, addr: string, policy: Policy | undefined): BaseCaller {
  const short = w.node.name.replace(/\.$/, "").split(".")[0] || w.node.hostname;
  const owners = w.owners.map(accountable);
  const user = w.tagged ? (owners[0] ?? "") : accountable(w.user.login);
  const principal: Principal = { node: short, tags: [...w.node.tags] };
  if (!w.tagged && w.user.login) principal.user = w.user.login;
  return { principal, node: short, tags: principal.tags, user, owners, groups: groupsOf(user, policy), addr, via: "tailnet", caps: w.caps };
}

/**
 * accountable spells a human one way, whichever path named them: headscale
 * reports a user without an e-mail domain as "alice" while tag owners name
 * her "alice@" (the policy's spelling), and both must key the same buckets
 * and logs. A login with a domain is kept as it is.
 */
function accountable(login: string): string {
  return login && !login.includes("@") ? `${login}@` : login;
}

/** callerFromPrincipal builds the loopback listener's caller from its configured principal. */
export function callerFromPrincipal(spec: string | { node?: string | undefined; tags: string[]; user?: string | undefined }, policy: Policy | undefined): BaseCaller {
  const p: Principal = typeof spec === "string" ? parsePrincipal(spec) : { tags: [...spec.tags], ...(spec.node !== undefined ? { node: spec.node } : {}), ...(spec.user !== undefined ? { user: spec.user } : {}) };
  const user = p.user ?? "";
  return { principal: p, node: p.node ?? "loopback", tags: p.tags, user, owners: user ? [user] : [], groups: groupsOf(user, policy), addr: "127.0.0.1", via: "loopback", caps: {} };
}

function groupsOf(user: string, policy: Policy | undefined): string[] {
  if (!user || !policy) return [];
  const u = normalizeUser(user);
  const out: string[] = [];
  for (const [g, members] of Object.entries(policy.document.groups)) if (members.some((m) => normalizeUser(m) === u)) out.push(g);
  return out;
}

/**
 * WhoisCache asks whois once per tailnet connection and keeps the caller
 * it makes of the answer while the policy (which names the caller's groups)
 * is the same.
 */
export class WhoisCache {
  private readonly cache = new WeakMap<net.Socket, { whois: Promise<WhoIs>; policy?: Policy | undefined; caller?: BaseCaller }>();
  private readonly node: MeshNode;

  constructor(node: MeshNode) {
    this.node = node;
  }

  /** caller is who is behind `socket`; a failed whois is not remembered (the next request asks again). */
  caller(socket: net.Socket, policy: Policy | undefined): BaseCaller | Promise<BaseCaller> {
    let e = this.cache.get(socket);
    if (e?.caller !== undefined && e.policy === policy) return e.caller;
    if (e === undefined) {
      e = { whois: this.node.whois(socket) };
      this.cache.set(socket, e);
      e.whois.catch(() => this.cache.delete(socket));
    }
    const entry = e;
    return entry.whois.then((w) => {
      const caller = callerFromWhois(w, socket.remoteAddress ?? "", policy);
      entry.policy = policy;
      entry.caller = caller;
      return caller;
    });
  }
}
