// A real OAuth 2.0 authorization server for the connector tests:
// oidc-provider on 127.0.0.1 with its development login and consent pages,
// which `consent` drives over HTTP (a small cookie jar, redirects followed
// by hand). Every request to the token endpoint is counted, and tokens can
// be checked by introspection.
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import Provider from "oidc-provider";

export const CC_CLIENT = { id: "meshguard-cc", secret: "cc-client-5ecret-never-logged-7d1e" };
export const WEB_CLIENT = { id: "meshguard-web", secret: "web-client-5ecret-never-logged-2b9c" };

export interface OAuthServer {
  url: string;
  tokenUrl: string;
  authorizeUrl: string;
  revocationUrl: string;
  /** Requests the token endpoint answered with a token, by grant_type. */
  tokenRequests: { grant: string }[];
  /** Every access and refresh token the server issued (their values): what must appear in no answer of the gateway. */
  issued: string[];
  /** Every POST the token endpoint received (counted on arrival). */
  tokenPosts(): number;
  /** introspect says whether a token is active, as the server sees it. */
  introspect(token: string): Promise<{ active: boolean; sub?: string; client_id?: string }>;
  close(): Promise<void>;
}

/** startOAuthServer starts the server; `redirectUris` are registered for the web client. */
export async function startOAuthServer(opts: { redirectUris: string[]; accessTokenTtlS?: number }): Promise<OAuthServer> {
  const tokenRequests: { grant: string }[] = [];
  const tokenPosts = { n: 0 };
  let handler: ((req: import("node:http").IncomingMessage, res: import("node:http").ServerResponse) => void) | undefined;
  const server: Server = createServer((req, res) => {
    if (req.method === "POST" && req.url === "/token") tokenPosts.n++;
    handler!(req, res);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const ttl = opts.accessTokenTtlS ?? 3600;
  const provider = new Provider(url, {
    clients: [
      { client_id: CC_CLIENT.id, client_secret: CC_CLIENT.secret, grant_types: ["client_credentials"], redirect_uris: [], response_types: [], scope: "api:read api:write" },
      {
        client_id: WEB_CLIENT.id,
        client_secret: WEB_CLIENT.secret,
        grant_types: ["authorization_code", "refresh_token"],
        redirect_uris: opts.redirectUris,
        response_types: ["code"],
        scope: "openid offline_access api:read",
      },
    ],
    scopes: ["openid", "offline_access", "api:read", "api:write"],
    features: {
      clientCredentials: { enabled: true },
      devInteractions: { enabled: true },
      introspection: { enabled: true },
      revocation: { enabled: true },
    },
    pkce: { required: () => true },
    issueRefreshToken: async () => true,
    ttl: { AccessToken: ttl, ClientCredentials: ttl, RefreshToken: 86_400, Grant: 86_400, Session: 3600, Interaction: 600 },
    cookies: { keys: ["oauth-server-cookie-key-for-tests"] },
  });
  provider.on("server_error", (_ctx: unknown, err: Error) => console.error("oidc-provider server_error", err));
  const issued: string[] = [];
  // Opaque tokens: the value is the jti.
  provider.on("access_token.saved", (tok: { jti: string }) => issued.push(tok.jti));
  provider.on("refresh_token.saved", (tok: { jti: string }) => issued.push(tok.jti));
  provider.on("grant.success", (ctx: { oidc: { params?: { grant_type?: string } } }) => tokenRequests.push({ grant: String(ctx.oidc.params?.grant_type ?? "") }));
  handler = provider.callback();
  return {
    url,
    tokenUrl: `${url}/token`,
    authorizeUrl: `${url}/auth`,
    revocationUrl: `${url}/token/revocation`,
    tokenRequests,
    issued,
    tokenPosts: () => tokenPosts.n,
    async introspect(token) {
      const res = await fetch(`${url}/token/introspection`, {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded", authorization: `Basic ${Buffer.from(`${WEB_CLIENT.id}:${WEB_CLIENT.secret}`).toString("base64")}` },
        body: new URLSearchParams({ token }),
      });
      return (await res.json()) as { active: boolean; sub?: string };
    },
    close: () => new Promise<void>((r) => (server.closeAllConnections(), server.close(() => r()))),
  };
}

/** A cookie jar good enough for one origin: names and values, paths ignored. */
class Jar {
  private readonly cookies = new Map<string, string>();
  take(res: Response): void {
    for (const c of res.headers.getSetCookie()) {
      const [pair, ...attrs] = c.split(";");
      const eq = pair!.indexOf("=");
      const name = pair!.slice(0, eq).trim();
      const value = pair!.slice(eq + 1).trim();
      const expired = attrs.some((a) => /^\s*expires=/i.test(a) && Date.parse(a.split("=")[1]!) < Date.now()) || attrs.some((a) => /^\s*max-age=0/i.test(a));
      if (expired || value === "") this.cookies.delete(name);
      else this.cookies.set(name, value);
    }
  }
  header(): string {
    return [...this.cookies].map(([k, v]) => `${k}=${v}`).join("; ");
  }
}

/**
 * consent drives the authorization server from `authorizeUrl` as `login`
 * would in a browser: it signs in, grants consent, and returns the URL the
 * server redirects to (the gateway's callback with `code` and `state`), or
 * with `deny` refuses consent (the callback then carries `error`).
 */
export async function consent(authorizeUrl: string, login: string, redirectPrefix: string, opts: { deny?: boolean } = {}): Promise<string> {
  const jar = new Jar();
  let next = authorizeUrl;
  let form: { action: string; body: URLSearchParams } | undefined;
  for (let hops = 0; hops < 20; hops++) {
    const res = form
      ? await fetch(form.action, { method: "POST", redirect: "manual", headers: { cookie: jar.header(), "content-type": "application/x-www-form-urlencoded" }, body: form.body })
      : await fetch(next, { redirect: "manual", headers: { cookie: jar.header() } });
    form = undefined;
    jar.take(res);
    if (res.status >= 300 && res.status < 400) {
      next = new URL(res.headers.get("location")!, next).toString();
      if (next.startsWith(redirectPrefix)) return next;
      continue;
    }
    const html = await res.text();
    if (res.status !== 200) throw new Error(`the authorization server answered ${res.status}: ${html.slice(0, 300)}`);
    const action = /<form[^>]*action="([^"]+)"/.exec(html)?.[1];
    if (action === undefined) throw new Error(`no form on ${next}: ${html.slice(0, 300)}`);
    const actionUrl = new URL(action.replace(/&amp;/g, "&"), next).toString();
    if (html.includes('name="prompt" value="login"')) form = { action: actionUrl, body: new URLSearchParams({ prompt: "login", login, password: "any" }) };
    else if (html.includes('name="prompt" value="consent"')) {
      form = opts.deny ? { action: `${actionUrl}/abort`, body: new URLSearchParams() } : { action: actionUrl, body: new URLSearchParams({ prompt: "consent" }) };
      if (opts.deny) {
        const r = await fetch(`${actionUrl}/abort`, { redirect: "manual", headers: { cookie: jar.header() } });
        jar.take(r);
        form = undefined;
        next = new URL(r.headers.get("location")!, next).toString();
        if (next.startsWith(redirectPrefix)) return next;
      }
    } else throw new Error(`an unknown page on ${next}: ${html.slice(0, 300)}`);
  }
  throw new Error("too many redirects driving the authorization server");
}

/** webAuth is the `auth` of a per-user connector registered as WEB_CLIENT (secret in WEB_SECRET, keyring in OAUTH_KEYS). */
export function webAuth(srv: OAuthServer, redirectUri: string): Record<string, unknown> {
  return {
    type: "oauth2",
    grant: "authorization_code",
    authorizeUrl: srv.authorizeUrl,
    tokenUrl: srv.tokenUrl,
    revocationUrl: srv.revocationUrl,
    clientId: WEB_CLIENT.id,
    clientSecret: { env: "WEB_SECRET" },
    scopes: ["openid", "offline_access", "api:read"],
    authorizeParams: { prompt: "consent" },
    redirectUri,
    tokenKeys: { env: "OAUTH_KEYS" },
  };
}
