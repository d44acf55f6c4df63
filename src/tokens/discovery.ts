/**
 * The issuer's self-description: the discovery document (OIDC-style, as
 * tsidp serves it, so standard libraries find the keys) and the signed
 * revocation feed.
 */

import { nowS, type IssuerContext } from "./context.js";
import { signCompact } from "./jws-sign.js";
import {
  GRANT_CLIENT_CREDENTIALS,
  GRANT_TOKEN_EXCHANGE,
  HTTP_DETAIL_TYPE,
  PATH_JWKS,
  PATH_REVOCATIONS,
  PATH_REVOKE,
  PATH_TOKEN,
  REVOCATIONS_TYP,
  TOKEN_ALG,
  type DiscoveryDocument,
  type RevocationFeedPayload,
} from "./types.js";

/** discoveryDocument describes the issuer at `iss`. Clients authenticate by the tailnet: "none". */
export function discoveryDocument(iss: string): DiscoveryDocument {
  return {
    issuer: iss,
    jwks_uri: `${iss}${PATH_JWKS}`,
    token_endpoint: `${iss}${PATH_TOKEN}`,
    revocation_endpoint: `${iss}${PATH_REVOKE}`,
    meshguard_revocations_uri: `${iss}${PATH_REVOCATIONS}`,
    grant_types_supported: [GRANT_CLIENT_CREDENTIALS, GRANT_TOKEN_EXCHANGE],
    response_types_supported: ["token"],
    subject_types_supported: ["public"],
    id_token_signing_alg_values_supported: [TOKEN_ALG],
    token_endpoint_auth_methods_supported: ["none"],
    revocation_endpoint_auth_methods_supported: ["none"],
    authorization_details_types_supported: [HTTP_DETAIL_TYPE],
  };
}

/** revocationFeed signs the entries after `since` (a `since` beyond the log's seq gets everything: the issuer's state was reset). */
export function revocationFeed(ctx: IssuerContext, since: number): string {
  const seq = ctx.revocations.seq;
  const payload: RevocationFeedPayload = { iss: ctx.iss, iat: nowS(ctx), seq, entries: ctx.revocations.since(since > seq ? 0 : since) };
  return signCompact(ctx.keys.active(), REVOCATIONS_TYP, payload);
}
