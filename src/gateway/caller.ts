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
  const user = w.tagged ? (w.owners[0] ?? "") : w.user.login;
  const principal: Principal = { node: short, tags: [...w.node.tags] };
  if (!w.tagged && w.user.login) principal.user = w.user.login;
  return { principal, node: short, tags: principal.tags, user, owners: w.owners, groups: groupsOf(user, policy), addr, via: "tailnet", caps: w.caps };
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

/** WhoisCache asks whois once per tailnet connection. */
export class WhoisCache {
  private readonly cache = new WeakMap<net.Socket, Promise<WhoIs>>();

  constructor(private readonly node: MeshNode) {}

  get(socket: net.Socket): Promise<WhoIs> {
    let p = this.cache.get(socket);
    if (p === undefined) {
      p = this.node.whois(socket);
      this.cache.set(socket, p);
      // A failed whois is not remembered: the next request on the connection asks again.
      p.catch(() => this.cache.delete(socket));
    }
    return p;
  }
}
