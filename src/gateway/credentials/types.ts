/**
 * The contract between HTTP connectors (../connectors/) and the credential
 * kinds that hold their upstreams' secrets (docs/connectors.md#credentials).
 *
 * A connector's `auth` in the gateway config is `{ "type": KIND, ... }`; the
 * kind's zod schema validates it and its `create` turns it into a
 * CredentialSource once at start. Static kinds (bearer, apiKey, basic) live
 * in ./static.ts; OAuth 2.0 (client credentials, per-user authorization
 * code) in ./oauth*.ts. Every kind is listed once in ./registry.ts — the
 * only file a new kind touches besides its own.
 *
 * Invariants every kind keeps:
 * - a secret never comes from the config text itself: only from an
 *   environment variable or a file (KeySource), or from a token endpoint;
 * - `resolve` throws a CredentialUnavailableError (never returns an empty
 *   credential) when it has nothing to inject: the call is then refused,
 *   not sent without a credential (fail closed);
 * - every secret value a kind holds or has handed out and that may still be
 *   echoed is in `secrets()` or in the `secrets` of the injection, so the
 *   gateway can scrub it from answers, logs and errors.
 */

import type { z } from "zod";
import { ErrorCode, MeshguardError } from "../../errors.js";
import type { KeySource } from "../keys.js";
import type { Caller } from "../types.js";
import type { OAuthTokenStore } from "./token-store.js";

/** CredentialContext is one connector call a credential is asked for. */
export interface CredentialContext {
  /** The connector's configured name. */
  connector: string;
  /** Who is calling (whois or the loopback principal): per-user kinds pick that user's token. */
  caller: Caller;
  /** Aborted when the client goes away: a token fetch should stop. */
  signal?: AbortSignal;
}

/** InjectedCredential is what one upstream request gets. */
export interface InjectedCredential {
  /** Headers to set (replacing any of the same name; the caller's own Authorization is already dropped). */
  headers?: Record<string, string>;
  /** Query parameters to set on the upstream URL (replacing any of the same name). */
  query?: Record<string, string>;
  /** The secret values in this injection (a token, not "Bearer token"): scrubbed from the answer. */
  secrets: readonly string[];
}

/** CredentialSource is one connector's credential, made once at start by its kind. */
export interface CredentialSource {
  /** The kind's name, as in the config's `auth.type`. */
  readonly type: string;
  /** resolve returns what to inject for this call; throws CredentialUnavailableError when there is none. */
  resolve(ctx: CredentialContext): Promise<InjectedCredential>;
  /** Every long-lived secret value this source holds (a static key, a client secret): scrubbed from everything leaving the gateway. */
  secrets(): readonly string[];
  /**
   * rejected says the upstream answered 401 to this injection: a kind that
   * can get a fresh credential (an OAuth token) forgets this one, so the
   * next `resolve` for the same caller fetches or renews it. Static kinds
   * have nothing fresher and leave it out.
   */
  rejected?(ctx: CredentialContext, injected: InjectedCredential): Promise<void> | void;
  /** close stops refresh timers and releases stores. */
  close?(): Promise<void>;
}

/** CredentialEnv is what a kind may use to build its source. */
export interface CredentialEnv {
  /** The connector's configured name (for error messages: "connector github"). */
  connector: string;
  /** The connector's upstream base URL (a kind may derive a token audience from it). */
  baseUrl: string;
  /** Reads a secret from an environment variable or a file (../keys.ts); throws naming the source, never the value. */
  readSecret(src: KeySource, what: string): Promise<string>;
  /** The gateway's data directory (a per-user token store keeps its files here). */
  dataDir: string;
  /** Milliseconds since the epoch; tests inject a clock for expiry and refresh. */
  now(): number;
  /** Prints a warning line (never with a secret in it). */
  warn(message: string): void;
  /** Where per-user tokens are kept (the gateway's store, encrypted values only); absent: kinds that need one keep them in memory and warn. */
  tokenStore?: OAuthTokenStore | undefined;
}

/**
 * CredentialKind is one `auth.type`: its config schema (a zod object with
 * `type: z.literal(name)`, `.strict()`) and the factory of its source.
 */
export interface CredentialKind<C extends { type: string } = { type: string }> {
  readonly schema: z.ZodType<C, z.ZodTypeDef, unknown>;
  create(cfg: C, env: CredentialEnv): Promise<CredentialSource>;
  /** Relative file paths in `cfg` made absolute against the config file's directory. */
  resolvePaths?(cfg: C, abs: (p: string) => string): C;
}

/**
 * CredentialUnavailableError (MESHGUARD_CREDENTIAL_UNAVAILABLE) is what
 * `resolve` throws when it has nothing to inject. The connector answers 401
 * when `status` is 401 (this caller must authorize first: `hint` says where)
 * and 502 otherwise (a token endpoint failed). The message must not contain
 * a secret.
 */
export class CredentialUnavailableError extends MeshguardError {
  readonly status: 401 | 502;

  constructor(
    message: string,
    status: 401 | 502 = 502,
    opts: { hint?: string; cause?: unknown } = {},
  ) {
    super(ErrorCode.CREDENTIAL_UNAVAILABLE, message, opts);
    this.status = status;
    this.name = "CredentialUnavailableError";
  }
}
