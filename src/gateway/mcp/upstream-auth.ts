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
  /** resolve gets the credential for the session's caller now (remembered for scrubbing). */
  resolve(signal?: AbortSignal): Promise<{ ctx: CredentialContext; cred: InjectedCredential }>;
  /** refused tells the source the upstream answered 401 to `cred`: an OAuth token is renewed at the next resolve. Absent for kinds that cannot renew. */
  refused: ((ctx: CredentialContext, cred: InjectedCredential) => Promise<void>) | undefined;
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
  const resolve = async (signal?: AbortSignal | null) => {
    const ctx: CredentialContext = { connector: server, caller: caller(), ...(signal ? { signal } : {}) };
    const cred = await source.resolve(ctx);
    remember(cred);
    return { ctx, cred };
  };
  const send = async (input: string | URL | Request, init: RequestInit | undefined): Promise<{ res: Response; ctx: CredentialContext; cred: InjectedCredential }> => {
    const { ctx, cred } = await resolve(init?.signal);
    let url: string | URL | Request = input;
    if (cred.query !== undefined) {
      const u = new URL(input instanceof Request ? input.url : input.toString());
      for (const [k, v] of Object.entries(cred.query)) u.searchParams.set(k, v);
      url = u;
    }
    // The SDK transport builds fresh Headers for every request: set on them (a retry sets the same values again).
    let headers: Headers;
    if (init?.headers instanceof Headers && !(input instanceof Request)) headers = init.headers;
    else {
      headers = new Headers(input instanceof Request ? input.headers : undefined);
      new Headers(init?.headers).forEach((v, k) => headers.set(k, v));
    }
    for (const k in cred.headers) headers.set(k, cred.headers[k]!);
    return { res: await base(url instanceof Request ? url.url : url, { ...init, headers }), ctx, cred };
  };
  const authed = async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const first = await send(input, init);
    if (first.res.status !== 401 || source.rejected === undefined) return first.res;
    await first.res.body?.cancel().catch(() => {});
    await source.rejected(first.ctx, first.cred);
    return (await send(input, init)).res;
  };
  const injector: Injector = { resolve, refused: source.rejected === undefined ? undefined : async (ctx, cred) => source.rejected!(ctx, cred) };
  Object.defineProperty(authed, INJECTOR, { value: injector });
  return { fetch: authed as typeof fetch, secrets: () => recent };
}
