/**
 * The one error a verifier throws: a MeshguardError with a stable code plus
 * what the HTTP answer must carry — the status and the `WWW-Authenticate`
 * value of RFC 6750 §3 — so every server adapter answers the same way.
 */

import { ErrorCode, MeshguardError } from "../errors.js";

/** The RFC 6750 `error` value that goes with each verifier code. */
const BEARER_ERROR: Partial<Record<ErrorCode, string>> = {
  [ErrorCode.TOKEN_INVALID]: "invalid_token",
  [ErrorCode.TOKEN_EXPIRED]: "invalid_token",
  [ErrorCode.TOKEN_NOT_YET_VALID]: "invalid_token",
  [ErrorCode.TOKEN_WRONG_AUDIENCE]: "invalid_token",
  [ErrorCode.TOKEN_WRONG_NODE]: "invalid_token",
  [ErrorCode.TOKEN_REVOKED]: "invalid_token",
  [ErrorCode.TOKEN_REUSED]: "invalid_token",
  [ErrorCode.TOKEN_INSUFFICIENT_SCOPE]: "insufficient_scope",
};

const STATUS: Partial<Record<ErrorCode, number>> = {
  [ErrorCode.TOKEN_INSUFFICIENT_SCOPE]: 403,
  [ErrorCode.TOKEN_REVOCATIONS_STALE]: 503,
};

/** TokenVerifyError is what verification throws: `code`, `status` and `wwwAuthenticate` for the answer. */
export class TokenVerifyError extends MeshguardError {
  /** The HTTP status to answer with: 401, 403 (insufficient scope) or 503 (revocations stale). */
  readonly status: number;
  /** The `WWW-Authenticate` header value (RFC 6750 §3); empty for 503. */
  readonly wwwAuthenticate: string;
  /** The RFC 6750 `error` (`invalid_token`, `insufficient_scope`), or undefined for a missing token. */
  readonly bearerError: string | undefined;

  constructor(code: ErrorCode, message: string, realm: string, opts: { hint?: string; cause?: unknown } = {}) {
    super(code, message, opts);
    this.name = "TokenVerifyError";
    this.status = STATUS[code] ?? 401;
    this.bearerError = BEARER_ERROR[code];
    this.wwwAuthenticate = this.status === 503 ? "" : bearerChallenge(realm, this.bearerError, message);
  }

  /** body is the JSON answer: `{ error, error_description, code }` (RFC 6750 style, plus the stable meshguard code). */
  body(): { error: string; error_description: string; code: ErrorCode } {
    return { error: this.bearerError ?? (this.status === 503 ? "temporarily_unavailable" : "invalid_request"), error_description: firstLine(this.message), code: this.code };
  }
}

/** bearerChallenge builds `Bearer realm="…", error="…", error_description="…"` with the quoted-string escapes of RFC 9110 §5.6.4. */
export function bearerChallenge(realm: string, error: string | undefined, description: string): string {
  const q = (s: string) => `"${s.replace(/[^\x20-\x7e]/g, "?").replace(/["\\]/g, "\\$&")}"`;
  let v = `Bearer realm=${q(realm)}`;
  if (error !== undefined) v += `, error=${q(error)}, error_description=${q(firstLine(description))}`;
  return v;
}

function firstLine(s: string): string {
  const i = s.indexOf("\n");
  return i < 0 ? s : s.slice(0, i);
}
