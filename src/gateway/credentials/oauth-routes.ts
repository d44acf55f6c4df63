/**
 * The gateway's routes for per-user OAuth connectors, under /meshguard/v1
 * (the admin API's router: the caller is identified by the tailnet, and
 * every route decides what that caller may do):
 *
 * | route | who |
 * |---|---|
 * | GET  /connectors                          | anyone: every connector and its credential's kind (never a secret); for a user, the tags they own (delegation candidates) |
 * | GET  /connectors/:name/oauth/start        | a user: the consent page (a button) |
 * | POST /connectors/:name/oauth/start        | a user: 303 to the provider's authorization page |
 * | GET  /connectors/:name/oauth/callback     | the same identity that started: stores the tokens |
 * | GET  /connectors/:name/oauth/tokens       | a user sees their own row, an admin every row (never a token) |
 * | DELETE /connectors/:name/oauth/tokens/:user | that user, or an admin: revokes |
 * | GET  /connectors/:name/oauth/delegations  | a user their own, an admin all |
 * | POST /connectors/:name/oauth/delegations  | a user who owns the tag (the gateway's policy, tagOwners): {"tag": "tag:x"} lets agents with the tag use their token |
 * | DELETE /connectors/:name/oauth/delegations/:tag | the user who granted it, or an admin |
 * | POST /connectors/:name/oauth/reseal       | an admin: re-seals every row with the newest key |
 *
 * A tagged node is never taken for its owner here: it has no user, so it
 * may use only the routes an admin may (when it is one).
 *
 * The console's Connections page (../console/ui/pages/connections.js) is a
 * client of exactly these routes.
 */

import { normalizeUser } from "../../policy/identity.js";
import { apiError } from "../api-query.js";
import type { AdminRequest, AdminResponse, AdminRoute, Caller } from "../types.js";
import type { ConnectorSummary } from "../connectors/http.js";
import { oauthPath, OAuthRouteError, TAG_RE, UserOAuthSource } from "./oauth-user.js";
import type { CredentialSource } from "./types.js";

/** Lookup finds a connector's credential source by the connector's name. */
export type CredentialLookup = (connector: string) => CredentialSource | undefined;

/** The identity part of the gateway's policy: who owns each tag, and the groups (../../distribution/reload.ts identityOf). */
export interface TagIdentity {
  tagOwners: Record<string, string[]>;
  groups: Record<string, string[]>;
}

export interface OAuthRouteOptions {
  /**
   * The gateway policy's tag owners and groups, read per request (a reload
   * applies at once); undefined: no policy, and every delegation is refused.
   * Only a tag's owners may delegate their token to it.
   */
  identity: () => TagIdentity | undefined;
  /** Every connector without secrets, for GET /connectors (absent: that route answers an empty list). */
  connectors?: () => ConnectorSummary[];
}

/** ownersOf is the users who own `tag` (groups and owning tags expanded, normalized); undefined when the policy names no owner for it. */
export function ownersOf(id: TagIdentity, tag: string): Set<string> | undefined {
  if (!Object.hasOwn(id.tagOwners, tag)) return undefined;
  const out = new Set<string>();
  const seen = new Set<string>([tag]);
  const expand = (o: string) => {
    if (o.startsWith("group:") || o.startsWith("tag:")) {
      if (seen.has(o)) return;
      seen.add(o);
      for (const m of (o.startsWith("group:") ? id.groups[o] : id.tagOwners[o]) ?? []) expand(m);
    } else out.add(normalizeUser(o));
  };
  for (const o of id.tagOwners[tag] ?? []) expand(o);
  return out;
}

/** ownedTags is every tag the policy gives `user` (sorted). */
export function ownedTags(id: TagIdentity | undefined, user: string): string[] {
  if (id === undefined) return [];
  const u = normalizeUser(user);
  return Object.keys(id.tagOwners)
    .filter((t) => ownersOf(id, t)?.has(u))
    .sort();
}

const esc = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function page(status: number, title: string, body: string): AdminResponse {
  return {
    status,
    html: `<!doctype html><html><head><meta charset="utf-8"><title>${esc(title)}</title><style>body{font:16px system-ui,sans-serif;max-width:36em;margin:3em auto;padding:0 1em}button{font-size:1em;padding:.5em 1.2em}</style></head><body><h1>${esc(title)}</h1>${body}</body></html>`,
  };
}

function sourceOf(lookup: CredentialLookup, name: string): UserOAuthSource {
  const s = lookup(name);
  if (s instanceof UserOAuthSource) return s;
  throw new OAuthRouteError(404, "not_found", s === undefined ? `no connector is named ${JSON.stringify(name)}` : `connector ${JSON.stringify(name)} does not act for users (its credential is not an oauth2 authorization_code grant)`);
}

/** userOf is the caller's own user, for routes a user acts on for themselves; tagged nodes have none. */
function userOf(c: Caller): string | undefined {
  return c.tags.length === 0 && c.user !== "" ? c.user : undefined;
}

function needUser(c: Caller, what: string): string {
  const u = userOf(c);
  if (u === undefined) throw new OAuthRouteError(403, "no_user", `${what} is for users: ${c.tags.length > 0 ? `the tagged node ${c.node} has no user` : "this caller has no user"}`);
  return u;
}

/** scopeOf is whose rows a listing shows: every row for an admin (undefined), else the caller's own. */
function scopeOf(c: Caller): string | undefined {
  return c.role === "admin" ? undefined : needUser(c, "listing OAuth tokens and delegations");
}

const route = (method: AdminRoute["method"], pattern: string, handle: (lookup: CredentialLookup, req: AdminRequest, p: Record<string, string>, opts: OAuthRouteOptions) => Promise<AdminResponse>) => (lookup: CredentialLookup, opts: OAuthRouteOptions): AdminRoute => ({
  method,
  pattern: `/connectors/:name/oauth${pattern}`,
  handle: (req, p) =>
    handle(lookup, req, p, opts).catch((err: unknown) => {
      if (err instanceof OAuthRouteError) return apiError(err.status, err.message.split("\n")[0]!, err.apiCode);
      throw err;
    }),
});

const ROUTES = [
  route("GET", "/start", async (lookup, req, p) => {
    const src = sourceOf(lookup, p.name!);
    const user = needUser(req.caller, "connecting an account");
    return page(
      200,
      `Connect ${p.name}`,
      `<p>The gateway will send calls to <b>${esc(p.name!)}</b> with <b>your</b> account's token, as <b>${esc(user)}</b>. Agents you own can use it only if you delegate it to their tag.</p><form method="post"><button type="submit">Continue to ${esc(p.name!)}</button></form><p><small>You can revoke it at any time: Disconnect on the console's <a href="/console/#/connections">Connections</a> page, or DELETE /meshguard/v1${esc(oauthPath(src.connector))}/tokens/${esc(encodeURIComponent(user))}</small></p>`,
    );
  }),
  route("POST", "/start", async (lookup, req, p) => {
    const { url } = sourceOf(lookup, p.name!).start(req.caller);
    return { status: 303, headers: { location: url }, html: `<a href="${esc(url)}">continue</a>` };
  }),
  route("GET", "/callback", async (lookup, req, p) => {
    const src = sourceOf(lookup, p.name!);
    try {
      const { user } = await src.finish(req.caller, req.query);
      return page(200, `${p.name} connected`, `<p>Calls to <b>${esc(p.name!)}</b> through the gateway now carry the token of <b>${esc(user)}</b>. You can close this page.</p><p><a href="/console/#/connections">Back to your connections in the console</a></p>`);
    } catch (err) {
      if (!(err instanceof OAuthRouteError)) throw err;
      return page(err.status, `${p.name} not connected`, `<p>${esc(err.message.split("\n")[0]!)}</p><p><a href="/console/#/connections">Back to your connections in the console</a></p>`);
    }
  }),
  route("GET", "/tokens", async (lookup, req, p) => ({ status: 200, body: { tokens: await sourceOf(lookup, p.name!).tokens(scopeOf(req.caller)) } })),
  route("DELETE", "/tokens/:user", async (lookup, req, p) => {
    const src = sourceOf(lookup, p.name!);
    const own = userOf(req.caller);
    if (req.caller.role !== "admin" && (own === undefined || normalizeUser(own) !== normalizeUser(p.user!))) {
      throw new OAuthRouteError(403, "forbidden", "only the user themselves or an admin may revoke a user's tokens");
    }
    const revoked = await src.revoke(p.user!);
    return { status: revoked ? 200 : 404, body: { revoked } };
  }),
  route("GET", "/delegations", async (lookup, req, p) => ({ status: 200, body: { delegations: await sourceOf(lookup, p.name!).delegations(scopeOf(req.caller)) } })),
  route("POST", "/delegations", async (lookup, req, p, opts) => {
    const src = sourceOf(lookup, p.name!);
    const user = needUser(req.caller, "delegating a token");
    const tag = (req.body as { tag?: unknown } | undefined)?.tag;
    if (typeof tag !== "string") throw new OAuthRouteError(400, "bad_request", 'the body must be {"tag": "tag:name"}: the tag whose agents (that you own) may use your token');
    if (!TAG_RE.test(tag)) throw new OAuthRouteError(400, "bad_request", `"tag" must look like tag:name, not ${JSON.stringify(tag).slice(0, 80)}`);
    // Only the tag's owners may hand their token to its agents (the same owners whois names at call time): fail closed when the policy names none.
    const owners = (() => {
      const id = opts.identity();
      return id === undefined ? undefined : ownersOf(id, tag);
    })();
    if (owners === undefined) throw new OAuthRouteError(403, "not_owner", `the gateway's policy names no owner of ${tag}: a token can be delegated only to a tag its owners are listed for (tagOwners in the policy file)`);
    if (!owners.has(normalizeUser(user))) throw new OAuthRouteError(403, "not_owner", `you (${user}) do not own ${tag}: only a tag's owners (tagOwners in the gateway's policy) may delegate their token to its agents`);
    return { status: 201, body: { delegation: await src.delegate(user, tag) } };
  }),
  route("DELETE", "/delegations/:tag", async (lookup, req, p) => {
    const src = sourceOf(lookup, p.name!);
    const by = req.caller.role === "admin" ? undefined : needUser(req.caller, "removing a delegation");
    const removed = await src.undelegate(p.tag!, by);
    return { status: removed ? 200 : 404, body: { removed } };
  }),
  route("POST", "/reseal", async (lookup, req, p) => {
    if (req.caller.role !== "admin") throw new OAuthRouteError(403, "forbidden", "re-sealing tokens is for admins");
    const src = sourceOf(lookup, p.name!);
    return { status: 200, body: { resealed: await src.reseal(), keyId: src.currentKeyId } };
  }),
];

/**
 * oauthRoutes are the routes above for the connectors `lookup` finds; the
 * gateway adds them to its admin API (GatewayContext.adminRoutes).
 */
export function oauthRoutes(lookup: CredentialLookup, opts: OAuthRouteOptions): AdminRoute[] {
  const list: AdminRoute = {
    method: "GET",
    pattern: "/connectors",
    async handle(req) {
      const user = userOf(req.caller);
      return { status: 200, body: { connectors: opts.connectors?.() ?? [], user: user === undefined ? null : normalizeUser(user), delegableTags: user === undefined ? [] : ownedTags(opts.identity(), user) } };
    },
  };
  return [list, ...ROUTES.map((r) => r(lookup, opts))];
}

/** isOAuthNavigation says whether a browser's top-level GET may come from another site: the provider's redirect to the callback, a link to the consent page. */
export function isOAuthNavigation(path: string): boolean {
  return /^\/meshguard\/v1\/connectors\/[^/]+\/oauth\/(start|callback)$/.test(path);
}
