/**
 * OAuth error responses (RFC 6749 §5.2): the one shape every refusal of the
 * issuer's endpoints takes, with the HTTP status each error code goes with.
 * `error_description` says why in words a person can act on: the rule, the
 * action, or the parameter that is missing.
 */

import type { OAuthErrorCode, OAuthErrorResponse } from "./types.js";

/** A refusal on its way to the client. */
export class OAuthRefusal {
  readonly status: number;
  readonly error: OAuthErrorCode;
  readonly description: string;

  constructor(
    status: number,
    error: OAuthErrorCode,
    description: string,
  ) {
    this.status = status;
    this.error = error;
    this.description = description;
  }

  body(): OAuthErrorResponse {
    return { error: this.error, error_description: this.description };
  }
}

const STATUS: Record<OAuthErrorCode, number> = {
  invalid_request: 400,
  invalid_client: 401,
  invalid_grant: 400,
  unauthorized_client: 400,
  unsupported_grant_type: 400,
  invalid_scope: 400,
  invalid_authorization_details: 400,
  invalid_target: 400,
  access_denied: 403,
  unsupported_token_type: 400,
  server_error: 500,
};

/** refuse builds a refusal with the status of its code. */
export function refuse(error: OAuthErrorCode, description: string): OAuthRefusal {
  return new OAuthRefusal(STATUS[error], error, description);
}
