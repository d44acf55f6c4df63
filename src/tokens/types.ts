/**
 * The wire contract of session-scoped tokens (issue 10): what the issuer
 * emits and every verifier checks. Issuer and verifier import only these
 * shapes and constants from each other, so either side can be rewritten
 * (or reimplemented in another language) against this file alone.
 *
 * Units: every time on the wire is epoch SECONDS (JWT NumericDate, RFC 7519
 * §2); `expires_in` is seconds.
 */

/** The only signature algorithm: Ed25519 (RFC 8037). Anything else is refused. */
export const TOKEN_ALG = "EdDSA" as const;
/** `typ` of an access token (RFC 9068). */
export const TOKEN_TYP = "at+jwt" as const;
/** `typ` of the signed revocation feed. */
export const REVOCATIONS_TYP = "meshguard-revocations+jwt" as const;

/** The `cnf` member binding a token to the caller's stable tailnet node id (never an IP: addresses are reused). */
export const CNF_NODE = "meshguard.dev/node" as const;
/** The `type` of an RFC 9396 authorization detail naming HTTP actions. */
export const HTTP_DETAIL_TYPE = "meshguard.dev/http" as const;

/** Grant types the token endpoint accepts. */
export const GRANT_CLIENT_CREDENTIALS = "client_credentials" as const;
export const GRANT_TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange" as const;
/** `subject_token_type` values accepted for a token exchange (RFC 8693 §3). */
export const TOKEN_TYPE_JWT = "urn:ietf:params:oauth:token-type:jwt" as const;
export const TOKEN_TYPE_ACCESS = "urn:ietf:params:oauth:token-type:access_token" as const;

/** Paths under the issuer URL (`iss`). */
export const PATH_DISCOVERY = "/.well-known/openid-configuration" as const;
export const PATH_JWKS = "/.well-known/jwks.json" as const;
export const PATH_TOKEN = "/token" as const;
export const PATH_REVOKE = "/revoke" as const;
export const PATH_REVOCATIONS = "/revocations" as const;

/** Lifetime of a token when the request names none: 15 minutes. */
export const DEFAULT_TOKEN_TTL_SECONDS = 900;

/**
 * One RFC 9396 authorization detail: HTTP methods on URL globs.
 *
 * `actions`: upper-case methods ("GET", "POST", ...) or "*" for any.
 * `locations`: `scheme://host[:port]/path-glob`, where `*` matches within one
 * path segment (no "/") and `**` matches across segments (any characters,
 * "/" included). Host and port are exact (lower-case host; the default port
 * of the scheme may be left out).
 */
export interface HttpAuthorizationDetail {
  type: typeof HTTP_DETAIL_TYPE;
  actions: string[];
  locations: string[];
}

/** The protected header of an access token. */
export interface AccessTokenHeader {
  alg: typeof TOKEN_ALG;
  typ: typeof TOKEN_TYP;
  kid: string;
}

/** The payload of an access token. */
export interface AccessTokenClaims {
  /** The issuer's URL on the tailnet, e.g. "http://tokens" (no trailing slash). */
  iss: string;
  /** The caller's STABLE node id (whois `node.id`). */
  sub: string;
  /** One audience: a service origin ("http://billing") or a name. */
  aud: string;
  iat: number;
  nbf: number;
  exp: number;
  /** 128 random bits, base64url. */
  jti: string;
  /** Proof-of-possession binding: the verifier compares it with the caller's whois node id. */
  cnf: { [CNF_NODE]: string };
  /** The node's name (MagicDNS short name) at issue time: informational. */
  node: string;
  tags: string[];
  owners: string[];
  authorization_details: HttpAuthorizationDetail[];
  /** The task the token was obtained for, when the request named one. */
  task?: string;
  /** Present on a token obtained by token exchange (RFC 8693 §4.1): the node that held the subject token. */
  act?: { sub: string };
}

/** A successful token endpoint response (RFC 6749 §5.1, RFC 8693 §2.2.1, RFC 9396 §7). */
export interface TokenResponse {
  access_token: string;
  token_type: "Bearer";
  expires_in: number;
  /** Set on a token-exchange response. */
  issued_token_type?: typeof TOKEN_TYPE_ACCESS;
  authorization_details: HttpAuthorizationDetail[];
}

/** OAuth error codes the issuer answers with (RFC 6749 §5.2, RFC 8693 §2.2.2, RFC 9396 §5, RFC 8707). */
export type OAuthErrorCode =
  | "invalid_request"
  | "invalid_client"
  | "invalid_grant"
  | "unauthorized_client"
  | "unsupported_grant_type"
  | "invalid_scope"
  | "invalid_authorization_details"
  | "invalid_target"
  | "access_denied"
  | "unsupported_token_type"
  | "server_error";

/** A refusal: `error_description` says why, naming the rule or what is missing. */
export interface OAuthErrorResponse {
  error: OAuthErrorCode;
  error_description: string;
}

/** The discovery document at `<iss>/.well-known/openid-configuration`. */
export interface DiscoveryDocument {
  issuer: string;
  jwks_uri: string;
  token_endpoint: string;
  revocation_endpoint: string;
  meshguard_revocations_uri: string;
  grant_types_supported: string[];
  response_types_supported: string[];
  subject_types_supported: string[];
  id_token_signing_alg_values_supported: string[];
  token_endpoint_auth_methods_supported: string[];
  revocation_endpoint_auth_methods_supported: string[];
  authorization_details_types_supported: string[];
  scopes_supported?: string[];
}

/** An Ed25519 public key as a JWK (RFC 8037). */
export interface Ed25519PublicJwk {
  kty: "OKP";
  crv: "Ed25519";
  /** The public key, base64url. */
  x: string;
  kid: string;
  use: "sig";
  alg: typeof TOKEN_ALG;
}

/** The JWKS at `<iss>/.well-known/jwks.json`. */
export interface Jwks {
  keys: Ed25519PublicJwk[];
}

/** Revocation of one token. */
export interface RevokeJtiEntry {
  seq: number;
  jti: string;
}

/** Revocation of every token of an agent (`sub`) issued before `before` (epoch seconds, compared with `iat`). */
export interface RevokeSubjectEntry {
  seq: number;
  sub: string;
  before: number;
}

export type RevocationEntry = RevokeJtiEntry | RevokeSubjectEntry;

/**
 * The payload of the revocation feed: `GET <iss>/revocations?since=<seq>`
 * answers a compact JWS (header typ {@link REVOCATIONS_TYP}, signed with the
 * token keys) whose payload is this. `entries` are those with seq > since,
 * in increasing seq order; `seq` is the highest seq the issuer has assigned
 * (a verifier passes it as the next `since`). A verifier must also apply
 * entries it cannot use yet (a jti it has not seen) since the token may
 * arrive later.
 */
export interface RevocationFeedPayload {
  iss: string;
  iat: number;
  seq: number;
  entries: RevocationEntry[];
}
