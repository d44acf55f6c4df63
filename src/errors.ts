/**
 * Errors thrown by meshguard. Every error is a `MeshguardError` with a stable
 * `code` (part of the public API), a message a person can act on, an optional
 * `hint` saying how to fix it, and the underlying `cause` when there is one.
 *
 * `instanceof` works across two copies of the package (a nested install, a
 * bundled copy): the check goes through a global symbol, not class identity.
 */

const BRAND = Symbol.for("meshguard.error");

/** Stable error codes. Adding one is fine; renaming one is a breaking change. */
export const ErrorCode = {
  /** An option passed to a public function is invalid. */
  INVALID_OPTIONS: "MESHGUARD_INVALID_OPTIONS",
  /** No backend (native addon, wasm) could be loaded. */
  BACKEND_UNAVAILABLE: "MESHGUARD_BACKEND_UNAVAILABLE",
  /** The control server rejected the node's credentials (wrong/expired auth key). */
  AUTH_FAILED: "MESHGUARD_AUTH_FAILED",
  /** The control server could not be reached. */
  CONTROL_UNREACHABLE: "MESHGUARD_CONTROL_UNREACHABLE",
  /** The local control server (headscale) could not be built, started or used. */
  CONTROL_UNAVAILABLE: "MESHGUARD_CONTROL_UNAVAILABLE",
  /** The control server refused a policy. */
  CONTROL_POLICY_REJECTED: "MESHGUARD_CONTROL_POLICY_REJECTED",
  /** A control-server command failed. */
  CONTROL_COMMAND_FAILED: "MESHGUARD_CONTROL_COMMAND_FAILED",
  /** An operation did not finish in time. */
  TIMEOUT: "MESHGUARD_TIMEOUT",
  /** The dialed name or address is not a peer this node may reach. */
  NO_PEER: "MESHGUARD_NO_PEER",
  /** A tailnet connection could not be established. */
  DIAL_FAILED: "MESHGUARD_DIAL_FAILED",
  /** The tailnet port is already listened on by this node. */
  PORT_IN_USE: "MESHGUARD_PORT_IN_USE",
  /** The node (or listener) was closed. */
  CLOSED: "MESHGUARD_CLOSED",
  /** whois found no tailnet identity for the address. */
  WHOIS_NOT_FOUND: "MESHGUARD_WHOIS_NOT_FOUND",
  /** The Go core panicked; the panic was contained. */
  CORE_PANIC: "MESHGUARD_CORE_PANIC",
  /** An unexpected failure inside the core. */
  INTERNAL: "MESHGUARD_INTERNAL",
  /** The guard refused an outbound call (policy deny, approval refused or timed out, no policy). */
  POLICY_DENIED: "MESHGUARD_POLICY_DENIED",
  /** A policy bundle could not be used: bad signature, wrong key, malformed, or its policy did not load. */
  POLICY_BUNDLE_INVALID: "MESHGUARD_POLICY_BUNDLE_INVALID",
  /** A policy file is not valid (syntax, schema or meaning); every issue is listed with its path, line and column. */
  POLICY_INVALID: "MESHGUARD_POLICY_INVALID",
  /** A policy file's `tests` section has failing cases; the policy is rejected. */
  POLICY_TESTS_FAILED: "MESHGUARD_POLICY_TESTS_FAILED",
  /** A request written as text ("GET https://host/path", "tcp host:port", ...) could not be read. */
  POLICY_REQUEST_INVALID: "MESHGUARD_POLICY_REQUEST_INVALID",
  /** An audit/observation log (JSON lines of decision events) could not be read. */
  AUDIT_LOG_INVALID: "MESHGUARD_AUDIT_LOG_INVALID",
  /** An audit line could not be written to its file (disk full, permissions); a denial is still denied. */
  AUDIT_WRITE_FAILED: "MESHGUARD_AUDIT_WRITE_FAILED",
  /** installGuard was called while a guard (from this or another copy of meshguard) is installed. */
  GUARD_ALREADY_INSTALLED: "MESHGUARD_GUARD_ALREADY_INSTALLED",
  /** A worker thread could not be guarded like the thread starting it, so it was not started. */
  GUARD_WORKER_UNGUARDED: "MESHGUARD_GUARD_WORKER_UNGUARDED",
  /** A plain (unsigned) policy file could not be read (missing, permissions). */
  POLICY_FILE_UNREADABLE: "MESHGUARD_POLICY_FILE_UNREADABLE",
  /** A warning: a policy file is watched without signature keys and this process can rewrite it (the agent could loosen its own policy). */
  POLICY_FILE_UNPROTECTED: "MESHGUARD_POLICY_FILE_UNPROTECTED",
  /** A policy server could not be reached or answered with an error. */
  POLICY_SERVER_UNREACHABLE: "MESHGUARD_POLICY_SERVER_UNREACHABLE",
  /** A Go program (headscale, a benchmark peer) could not be built; every attempt is in `cause`. */
  GO_BUILD_FAILED: "MESHGUARD_GO_BUILD_FAILED",
  /** A command-line invocation was wrong (unknown command or flag, missing argument). */
  USAGE: "MESHGUARD_USAGE",
  /** An AI gateway configuration is not valid; every issue is listed with its path, line and column. */
  GATEWAY_CONFIG_INVALID: "MESHGUARD_GATEWAY_CONFIG_INVALID",
  /** A provider key named by the gateway configuration could not be read (unset environment variable, unreadable or empty file). */
  GATEWAY_KEY_UNAVAILABLE: "MESHGUARD_GATEWAY_KEY_UNAVAILABLE",
  /** The gateway's web console cannot serve its files (they are not installed with the package). */
  GATEWAY_CONSOLE_UNAVAILABLE: "MESHGUARD_GATEWAY_CONSOLE_UNAVAILABLE",
  /** The gateway's store (logs, buckets, reservations) could not be opened, read or written. */
  STORE_FAILED: "MESHGUARD_STORE_FAILED",
  /** The keyring that encrypts connectors' per-user OAuth tokens could not be read or is malformed, or a stored token does not open with it. */
  CONNECTOR_KEYS_INVALID: "MESHGUARD_CONNECTOR_KEYS_INVALID",
  /** An OAuth 2.0 token endpoint refused a connector's token request (its `error` and description are in the message) or could not be reached. */
  CONNECTOR_OAUTH_FAILED: "MESHGUARD_CONNECTOR_OAUTH_FAILED",
  /** A connector has no credential to inject for this call (the caller has not authorized, a token endpoint failed): the call is refused, never sent without one. */
  CREDENTIAL_UNAVAILABLE: "MESHGUARD_CREDENTIAL_UNAVAILABLE",
  /** An OAuth callback's `state` is unknown, expired, already used, or was started by another identity. */
  CONNECTOR_OAUTH_STATE_INVALID: "MESHGUARD_CONNECTOR_OAUTH_STATE_INVALID",
  /** `meshguard policy apply --db` could not apply the policy's sql rules to PostgreSQL (nothing was changed: it runs in one transaction). */
  DATABASE_APPLY_FAILED: "MESHGUARD_DATABASE_APPLY_FAILED",
  /** A gateway webhook (guardrail or usage) timed out, could not be reached, answered non-2xx or malformed, or an event was dropped. */
  HOOK_FAILED: "MESHGUARD_HOOK_FAILED",
  /** A local address could not be listened on (in use, not this machine's, not permitted). */
  LISTEN_FAILED: "MESHGUARD_LISTEN_FAILED",
  /** The token issuer's signing keys could not be read, written or trusted (a key file others can read, a corrupt file). */
  TOKEN_KEYS_INVALID: "MESHGUARD_TOKEN_KEYS_INVALID",
  /** The token issuer's state (the revocation log) could not be read or written. */
  TOKEN_STATE_FAILED: "MESHGUARD_TOKEN_STATE_FAILED",
  /** A protected service got a request without a bearer token (HTTP 401). */
  TOKEN_MISSING: "MESHGUARD_TOKEN_MISSING",
  /** A bearer token is not one this verifier accepts: malformed, oversized, not EdDSA, bad signature, unknown key, wrong issuer (HTTP 401). */
  TOKEN_INVALID: "MESHGUARD_TOKEN_INVALID",
  /** A bearer token has expired, beyond the allowed clock skew (HTTP 401). */
  TOKEN_EXPIRED: "MESHGUARD_TOKEN_EXPIRED",
  /** A bearer token is not valid yet (`nbf`/`iat` in the future beyond the allowed clock skew) (HTTP 401). */
  TOKEN_NOT_YET_VALID: "MESHGUARD_TOKEN_NOT_YET_VALID",
  /** A bearer token was issued for another audience (HTTP 401). */
  TOKEN_WRONG_AUDIENCE: "MESHGUARD_TOKEN_WRONG_AUDIENCE",
  /** A bearer token's actions do not cover this request's method and URL (HTTP 403). */
  TOKEN_INSUFFICIENT_SCOPE: "MESHGUARD_TOKEN_INSUFFICIENT_SCOPE",
  /** A bearer token is bound to another tailnet node than the caller's: a replayed token (HTTP 401). */
  TOKEN_WRONG_NODE: "MESHGUARD_TOKEN_WRONG_NODE",
  /** A bearer token was revoked (by jti, by agent, or its task ended) (HTTP 401). */
  TOKEN_REVOKED: "MESHGUARD_TOKEN_REVOKED",
  /** A one-time token was presented again (HTTP 401). */
  TOKEN_REUSED: "MESHGUARD_TOKEN_REUSED",
  /** The verifier could not refresh the revocation feed within its bound, so it refuses every token (HTTP 503). */
  TOKEN_REVOCATIONS_STALE: "MESHGUARD_TOKEN_REVOCATIONS_STALE",
  /** The token issuer refused a token request or could not be reached; the message carries its OAuth error and reason. */
  TOKEN_REQUEST_FAILED: "MESHGUARD_TOKEN_REQUEST_FAILED",
  /** A task (withTask) has ended or passed its deadline: no token is obtained for it any more. */
  TOKEN_TASK_ENDED: "MESHGUARD_TOKEN_TASK_ENDED",
  /** A node's local control socket could not be opened (unsafe or foreign directory, path too long, another live node on it) or attached to. */
  CONTROL_SOCKET_FAILED: "MESHGUARD_CONTROL_SOCKET_FAILED",
  /** A request on a node's control socket was malformed, too large, of another protocol version, or named an unknown method. */
  CONTROL_SOCKET_BAD_REQUEST: "MESHGUARD_CONTROL_SOCKET_BAD_REQUEST",
  /** No running node was found to attach to (or several, and none was chosen), and none could be brought up briefly. */
  NO_RUNNING_NODE: "MESHGUARD_NO_RUNNING_NODE",
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

export interface MeshguardErrorOptions {
  hint?: string;
  cause?: unknown;
}

/** MeshguardError is the base class of every error meshguard throws. */
export class MeshguardError extends Error {
  readonly code: ErrorCode;
  readonly hint?: string;

  constructor(code: ErrorCode, message: string, opts: MeshguardErrorOptions = {}) {
    super(opts.hint ? `${message}\n  hint: ${opts.hint}` : message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = "MeshguardError";
    this.code = code;
    if (opts.hint !== undefined) this.hint = opts.hint;
    // The brand lists the class names along the prototype chain so that a
    // subclass check also works across copies of the package.
    const names: string[] = [];
    for (let c = new.target as unknown as { name: string } | null; c && c.name; c = Object.getPrototypeOf(c)) names.push(c.name);
    Object.defineProperty(this, BRAND, { value: names });
  }

  static [Symbol.hasInstance](value: unknown): boolean {
    if (typeof value !== "object" || value === null) return false;
    const names = (value as Record<symbol, unknown>)[BRAND];
    return Array.isArray(names) && names.includes(this.name);
  }
}

/** isMeshguardError reports whether `err` is a MeshguardError, optionally with the given code. */
export function isMeshguardError(err: unknown, code?: ErrorCode): err is MeshguardError {
  return err instanceof MeshguardError && (code === undefined || err.code === code);
}
