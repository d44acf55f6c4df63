/**
 * The credential of a streamable-HTTP MCP upstream (`mcp.servers.X.auth`,
 * docs/connectors.md#credentials-for-mcp-servers): a `fetch` for the SDK's
 * client transport that injects it into every request the transport makes
 * (initialize, calls, the SSE stream, the closing DELETE). The credential is
 * resolved for the session's caller at each request, so a per-user OAuth
 * server gets the caller's own token (or a tagged agent's delegated one),
 * renewed when due, and a revocation applies to an open session.
 *
 * A 401 from the upstream tells the credential source its injection was
 * refused (an OAuth token is then fetched or renewed) and the request is sent
 * once more; a second 401 goes back to the SDK. The request bodies the
 * transport sends are strings, so sending one again is safe.
 */

import type { CredentialContext, CredentialSource, InjectedCredential } from "../credentials/types.js";
import type { Caller } from "../types.js";

/** How many of a session's latest injected secrets are kept for scrubbing (a per-user token renewed during the session: old and new). */
const KEPT = 4;

/**
 * INJECTOR is where the authed fetch carries its injector, so the fast path
 * (./fast.ts), which sends a call over its own kept-alive connection rather
 * than through the transport's fetch, can inject the same credential (and
 * renew it on a 401) without going through fetch.
 */
export const INJECTOR = Symbol("meshguard.mcp.upstreamAuth");

/** Injector is what the fast path uses of an UpstreamAuth. */
export interface Injector {
  /**
   * sendWith sends one request with the credential for the session's
   * caller now (remembered for scrubbing); when the upstream answers 401
   * and the source can renew (OAuth), the answer is discarded, the source
   * told, and the request sent once more with the new credential — what
   * the authed fetch does for the SDK transport.
   */
  sendWith<R>(signal: AbortSignal | undefined, send: (cred: InjectedCredential) => Promise<R>, statusOf: (r: R) => number, discard: (r: R) => Promise<unknown>): Promise<R>;
}

/** withQuery is `url` with the credential's query parameters set (the same URL when it has none). */
export function withQuery(url: URL, cred: InjectedCredential): URL {
  if (cred.query === undefined) return url;
  const u = new URL(url);
  for (const [k, v] of Object.entries(cred.query)) u.searchParams.set(k, v);
  return u;
}

/** injectorOf is the injector of an authed fetch, or undefined for any other fetch. */
export function injectorOf(f: unknown): Injector | undefined {
  return typeof f === "function" ? (f as { [INJECTOR]?: Injector })[INJECTOR] : undefined;
}

export interface UpstreamAuth {
  /** The transport's fetch. */
  readonly fetch: typeof fetch;
  /** The secret values injected lately (the source's long-lived ones are in the gateway's scrubber already). */
  secrets(): readonly string[];
}

/** upstreamAuth wraps `base` (default: the global fetch) to send `source`'s credential for whoever `caller()` is now. */
export function upstreamAuth(server: string, source: CredentialSource, caller: () => Caller, base: typeof fetch = fetch): UpstreamAuth {
  let recent: string[] = [];
  const remember = (cred: InjectedCredential) => {
    for (const s of cred.secrets) {
      if (s === "" || recent.includes(s)) continue;
      recent = [s, ...recent].slice(0, KEPT);
    }
  };
  const injector: Injector = {
    async sendWith(signal, send, statusOf, discard) {
      const once = async () => {
        const ctx: CredentialContext = { connector: server, caller: caller(), ...(signal ? { signal } : {}) };
        const cred = await source.resolve(ctx);
        remember(cred);
        return { r: await send(cred), ctx, cred };
      };
      const first = await once();
      if (statusOf(first.r) !== 401 || source.rejected === undefined) return first.r;
      await discard(first.r);
      await source.rejected(first.ctx, first.cred);
      return (await once()).r;
    },
  };
  const authed = (input: string | URL | Request, init?: RequestInit): Promise<Response> =>
    injector.sendWith(
      init?.signal ?? undefined,
      (cred) => {
        const url = withQuery(new URL(input instanceof Request ? input.url : input.toString()), cred);
        // The SDK transport builds fresh Headers for every request: set on them (a retry sets the same values again).
        let headers: Headers;
        if (init?.headers instanceof Headers && !(input instanceof Request)) headers = init.headers;
        else {
          headers = new Headers(input instanceof Request ? input.headers : undefined);
          new Headers(init?.headers).forEach((v, k) => headers.set(k, v));
        }
        for (const k in cred.headers) headers.set(k, cred.headers[k]!);
        return base(url, { ...init, headers });
      },
      (r) => r.status,
      (r) => r.body?.cancel().catch(() => {}) ?? Promise.resolve(),
    );
  Object.defineProperty(authed, INJECTOR, { value: injector });
  return { fetch: authed as typeof fetch, secrets: () => recent };
}
