/**
 * The OAuth 2.0 token endpoint as a connector's client sees it (RFC 6749
 * §4.1.3, §4.4, §6): one form-encoded POST, client authentication by HTTP
 * Basic (`client_secret_basic`, the default), in the body
 * (`client_secret_post`) or none (a public client), and a JSON answer.
 *
 * Errors name the connector, the endpoint, the HTTP status and the OAuth
 * `error` / `error_description` — never the request or the answer's body,
 * which hold secrets. SingleFlight makes concurrent callers of one key share
 * one request: the "one refresh at a time" of every token source here.
 */

import { ErrorCode, MeshguardError } from "../../errors.js";

export type ClientAuthMethod = "client_secret_basic" | "client_secret_post" | "none";

/** The OAuth client a connector is registered as. */
export interface OAuthClient {
  /** The connector's name, for errors. */
  connector: string;
  tokenUrl: string;
  clientId: string;
  clientSecret?: string | undefined;
  authMethod: ClientAuthMethod;
  /** Milliseconds a token request may take (default 15 000). */
  timeoutMs?: number | undefined;
  fetch?: typeof fetch | undefined;
}

/** What a token endpoint granted; `expiresAt` in the clock of the caller (epoch ms), undefined when the server did not say. */
export interface GrantedToken {
  accessToken: string;
  refreshToken?: string | undefined;
  expiresAt?: number | undefined;
  scope?: string | undefined;
}

/** OAuthError is MESHGUARD_CONNECTOR_OAUTH_FAILED; `oauthError` is the server's `error` code ("invalid_grant", ...), or undefined when it gave none (unreachable, not JSON). */
export class OAuthError extends MeshguardError {
  readonly oauthError: string | undefined;
  readonly status: number | undefined;

  constructor(
    message: string,
    oauthError: string | undefined,
    status: number | undefined,
    opts: { hint?: string; cause?: unknown } = {},
  ) {
    super(ErrorCode.CONNECTOR_OAUTH_FAILED, message, opts);
    this.oauthError = oauthError;
    this.status = status;
    this.name = "OAuthError";
  }
}

const MAX_ANSWER = 1 << 20;

/** endpointName is a URL without its query and fragment, for messages. */
function endpointName(url: string): string {
  try {
    const u = new URL(url);
    return `${u.origin}${u.pathname}`;
  } catch {
    return "(an invalid URL)";
  }
}

/** printable keeps a server-given text short and on one line, and removes any secret of the request from it. */
function printable(text: unknown, secrets: readonly string[]): string | undefined {
  if (typeof text !== "string" || text === "") return undefined;
  let t = text.replace(/[\u0000-\u001f\u007f]+/g, " ").slice(0, 300);
  for (const s of secrets) if (s.length >= 4) t = t.split(s).join("[redacted]");
  return t;
}

/**
 * requestToken posts `params` (grant_type and the grant's own fields) to the
 * client's token endpoint and returns what it granted. `now` is the clock
 * `expiresAt` is computed with.
 */
export async function requestToken(client: OAuthClient, params: Record<string, string>, now: number): Promise<GrantedToken> {
  const secrets = [client.clientSecret ?? "", ...Object.values(params)].filter((s) => s.length >= 8);
  const where = `the token endpoint ${endpointName(client.tokenUrl)} of connector ${JSON.stringify(client.connector)}`;
  const { res, text } = await postForm(client, client.tokenUrl, params, where, secrets);
  if (text.length > MAX_ANSWER) throw new OAuthError(`${where} answered more than ${MAX_ANSWER} bytes`, undefined, res.status);
  let json: Record<string, unknown> | undefined;
  try {
    const v: unknown = JSON.parse(text);
    if (typeof v === "object" && v !== null && !Array.isArray(v)) json = v as Record<string, unknown>;
  } catch {
    json = undefined;
  }
  if (!res.ok) {
    const code = typeof json?.error === "string" ? json.error : undefined;
    const desc = printable(json?.error_description, secrets);
    throw new OAuthError(`${where} refused the ${params.grant_type} request: HTTP ${res.status}${code ? ` ${code}` : ""}${desc ? ` (${desc})` : ""}`, code, res.status, {
      hint: code === "invalid_client" ? "check the connector's clientId and clientSecret (and authMethod)" : code === "invalid_scope" ? "check the connector's scopes" : "see the authorization server's documentation of this error",
    });
  }
  if (json === undefined) throw new OAuthError(`${where} answered HTTP ${res.status} with a body that is not a JSON object`, undefined, res.status);
  const access = json.access_token;
  if (typeof access !== "string" || access === "") throw new OAuthError(`${where} answered without an access_token`, undefined, res.status);
  const type = json.token_type;
  if (typeof type === "string" && type.toLowerCase() !== "bearer") {
    throw new OAuthError(`${where} granted a token of type ${JSON.stringify(printable(type, secrets))}; connectors send bearer tokens only`, undefined, res.status);
  }
  const exp = typeof json.expires_in === "number" ? json.expires_in : typeof json.expires_in === "string" ? Number(json.expires_in) : undefined;
  return {
    accessToken: access,
    refreshToken: typeof json.refresh_token === "string" && json.refresh_token !== "" ? json.refresh_token : undefined,
    expiresAt: exp !== undefined && Number.isFinite(exp) && exp > 0 ? now + exp * 1000 : undefined,
    scope: typeof json.scope === "string" ? json.scope : undefined,
  };
}

/** revokeToken tells an RFC 7009 revocation endpoint that `token` is no longer wanted; true when it answered 200. */
export async function revokeToken(client: OAuthClient, url: string, token: string, hint: "access_token" | "refresh_token"): Promise<boolean> {
  const where = `the revocation endpoint ${endpointName(url)} of connector ${JSON.stringify(client.connector)}`;
  const { res } = await postForm(client, url, { token, token_type_hint: hint }, where, [token, client.clientSecret ?? ""]);
  return res.ok;
}

/** postForm sends a form with the client's authentication; the answer's text is read whole. */
async function postForm(client: OAuthClient, url: string, params: Record<string, string>, where: string, secrets: readonly string[]): Promise<{ res: Response; text: string }> {
  const body = new URLSearchParams(params);
  const headers: Record<string, string> = { "content-type": "application/x-www-form-urlencoded", accept: "application/json" };
  if (client.authMethod === "client_secret_basic") {
    // RFC 6749 §2.3.1: each part form-urlencoded before Basic.
    const enc = (s: string) => encodeURIComponent(s).replace(/%20/g, "+");
    headers.authorization = `Basic ${Buffer.from(`${enc(client.clientId)}:${enc(client.clientSecret ?? "")}`).toString("base64")}`;
  } else {
    body.set("client_id", client.clientId);
    if (client.authMethod === "client_secret_post") body.set("client_secret", client.clientSecret ?? "");
  }
  try {
    const res = await (client.fetch ?? fetch)(url, { method: "POST", headers, body, redirect: "error", signal: AbortSignal.timeout(client.timeoutMs ?? 15_000) });
    return { res, text: await res.text() };
  } catch (err) {
    const e = err as Error;
    throw new OAuthError(`${where} could not be reached: ${e.name === "TimeoutError" ? "timed out" : (printable(e.message, secrets) ?? e.name)}`, undefined, undefined, {
      hint: "check the connector's URL and that the gateway's guard allows it",
    });
  }
}

/** SingleFlight runs one task per key at a time; callers of a key while it runs get its promise. */
export class SingleFlight<T> {
  readonly #running = new Map<string, Promise<T>>();

  run(key: string, task: () => Promise<T>): Promise<T> {
    const held = this.#running.get(key);
    if (held !== undefined) return held;
    const p = task().finally(() => this.#running.delete(key));
    this.#running.set(key, p);
    return p;
  }

  /** busy says whether a task of `key` runs. */
  busy(key: string): boolean {
    return this.#running.has(key);
  }
}

/**
 * refreshAt is when a token granted at `grantedAt` that expires at
 * `expiresAt` is renewed: `before` ms ahead of expiry, but never later
 * than half its life (a 60 s token is renewed after 30 s, not at once).
 * A token whose expiry is unknown is renewed after `unknownTtlMs`.
 */
export function refreshAt(grantedAt: number, expiresAt: number | undefined, before: number, unknownTtlMs: number): number {
  if (expiresAt === undefined) return grantedAt + unknownTtlMs;
  return Math.max(expiresAt - before, grantedAt + (expiresAt - grantedAt) / 2);
}
