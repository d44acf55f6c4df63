/**
 * The client credentials grant of the `oauth2` kind (RFC 6749 §4.4): one
 * token for every caller of a connector, kept in memory.
 */

import { parseDuration } from "../store/duration.js";
import { clientOf, UNKNOWN_TTL_MS, type CcConfig, type Runtime } from "./oauth-config.js";
import { refreshAt, requestToken, SingleFlight, type GrantedToken, type OAuthClient } from "./oauth-token.js";
import { CredentialUnavailableError, type CredentialContext, type CredentialSource, type InjectedCredential } from "./types.js";

/** What a token source holds for one subject between requests. */
interface Held {
  token: GrantedToken;
  grantedAt: number;
}


/**
 * ClientCredentialsSource holds one client-credentials token. A token in its
 * renewal window is still handed out while one renewal runs in the
 * background; a missing or expired one makes callers wait for the (single)
 * request.
 */
export class ClientCredentialsSource implements CredentialSource {
  readonly type = "oauth2";
  readonly #client: OAuthClient;
  readonly #cfg: CcConfig;
  readonly #rt: Runtime;
  readonly #flight = new SingleFlight<Held>();
  #held: Held | undefined;

  constructor(connector: string, cfg: CcConfig, secret: string, rt: Runtime) {
    this.#cfg = cfg;
    this.#rt = rt;
    this.#client = clientOf(connector, cfg, secret, rt);
  }

  /** accessToken returns a valid token, fetching or renewing it when due. */
  async accessToken(): Promise<string> {
    const now = this.#rt.now();
    const h = this.#held;
    if (h !== undefined && (h.token.expiresAt === undefined || now < h.token.expiresAt)) {
      if (now >= refreshAt(h.grantedAt, h.token.expiresAt, parseDuration(this.#cfg.refreshBefore)!, UNKNOWN_TTL_MS)) {
        // Renewal failures here are not the caller's: the token in hand is still good; the next call tries again.
        this.#renew().catch(() => undefined);
      }
      return h.token.accessToken;
    }
    return (await this.#renew()).token.accessToken;
  }

  #renew(): Promise<Held> {
    return this.#flight.run("", async () => {
      const params: Record<string, string> = { grant_type: "client_credentials", ...(this.#cfg.params ?? {}) };
      if (this.#cfg.scopes.length > 0) params.scope = this.#cfg.scopes.join(" ");
      const grantedAt = this.#rt.now();
      const held = { token: await requestToken(this.#client, params, grantedAt), grantedAt };
      this.#held = held;
      return held;
    });
  }

  /** invalidate forgets the token (the upstream answered 401 to it): the next call fetches a new one. */
  invalidate(): void {
    this.#held = undefined;
  }

  /** rejected forgets the token the upstream refused (not a newer one another call already fetched). */
  rejected(_ctx: CredentialContext, injected: InjectedCredential): void {
    if (this.#held !== undefined && injected.secrets.includes(this.#held.token.accessToken)) this.#held = undefined;
  }

  async resolve(_ctx: CredentialContext): Promise<InjectedCredential> {
    let token: string;
    try {
      token = await this.accessToken();
    } catch (err) {
      throw new CredentialUnavailableError(`connector ${JSON.stringify(this.#client.connector)} could not get an OAuth token: ${(err as Error).message.split("\n")[0]}`, 502, { cause: err });
    }
    return { headers: { authorization: `Bearer ${token}` }, secrets: [token] };
  }

  secrets(): readonly string[] {
    return [this.#client.clientSecret ?? ""].filter((s) => s !== "");
  }
}

