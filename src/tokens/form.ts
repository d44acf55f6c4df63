/**
 * Reading a token request: the `application/x-www-form-urlencoded` body of
 * `POST <iss>/token`, validated once here into a TokenRequest, or refused
 * with an OAuth error that names the parameter.
 *
 * Parameters: grant_type (client_credentials, or token exchange with
 * subject_token and subject_token_type), audience, the actions as
 * authorization_details (a JSON array, RFC 9396) and/or scope (space-
 * separated scope strings, ../policy/token-actions.ts), ttl (seconds), task.
 * A parameter given twice is refused (RFC 6749 §3.2); unknown ones are
 * ignored (§3.2 too).
 */

import { z } from "zod";
import { normalizeAudience, parseAction, parseScope, type TokenAction } from "../policy/index.js";
import { refuse, type OAuthRefusal } from "./oauth.js";
import { GRANT_CLIENT_CREDENTIALS, GRANT_TOKEN_EXCHANGE, HTTP_DETAIL_TYPE, TOKEN_TYPE_ACCESS, TOKEN_TYPE_JWT } from "./types.js";

/** The most (method, location) pairs one request may name: a token is for one task's few calls. */
export const MAX_PAIRS = 64;
const TASK_RE = /^[\x21-\x7e]{1,128}$/;

export interface TokenRequest {
  grantType: typeof GRANT_CLIENT_CREDENTIALS | typeof GRANT_TOKEN_EXCHANGE;
  /** Canonical; undefined only for an exchange that keeps the subject token's audience. */
  audience?: string;
  /** The requested actions; empty only for an exchange that keeps the subject token's actions. */
  actions: TokenAction[];
  ttlS?: number;
  task?: string;
  subjectToken?: string;
}

const DetailSchema = z
  .object({
    type: z.literal(HTTP_DETAIL_TYPE, { errorMap: () => ({ message: `type must be "${HTTP_DETAIL_TYPE}" (the only authorization details type this issuer knows)` }) }),
    actions: z.array(z.string()).min(1, 'list at least one method in "actions" (or "*")'),
    locations: z.array(z.string()).min(1, 'list at least one URL glob in "locations"'),
  })
  .strict();

const DetailsSchema = z.array(DetailSchema).min(1, "authorization_details is an empty array").max(32, "at most 32 authorization details");

/** parseTokenForm reads the form; every problem is an OAuth refusal naming the parameter. */
export function parseTokenForm(body: string): TokenRequest | OAuthRefusal {
  const form = new URLSearchParams(body);
  const seen = new Set<string>();
  for (const k of form.keys()) {
    if (seen.has(k)) return refuse("invalid_request", `the parameter "${k}" is given more than once`);
    seen.add(k);
  }
  const grant = form.get("grant_type");
  if (grant === null) return refuse("invalid_request", `grant_type is missing: use "${GRANT_CLIENT_CREDENTIALS}" (a new token) or "${GRANT_TOKEN_EXCHANGE}" (narrow a token you hold)`);
  if (grant !== GRANT_CLIENT_CREDENTIALS && grant !== GRANT_TOKEN_EXCHANGE) {
    return refuse("unsupported_grant_type", `grant_type "${grant}" is not supported: use "${GRANT_CLIENT_CREDENTIALS}" or "${GRANT_TOKEN_EXCHANGE}"`);
  }
  const req: TokenRequest = { grantType: grant, actions: [] };

  const aud = form.get("audience");
  if (aud !== null) {
    const n = normalizeAudience(aud);
    if (typeof n !== "string") return refuse("invalid_target", `audience: ${n.error}`);
    req.audience = n;
  } else if (grant === GRANT_CLIENT_CREDENTIALS) {
    return refuse("invalid_target", 'audience is missing: name the service the token is for, e.g. audience=http://billing');
  }

  const details = form.get("authorization_details");
  if (details !== null) {
    let json: unknown;
    try {
      json = JSON.parse(details);
    } catch (err) {
      return refuse("invalid_authorization_details", `authorization_details is not JSON: ${(err as Error).message}`);
    }
    const r = DetailsSchema.safeParse(json);
    if (!r.success) {
      const i = r.error.issues[0]!;
      const where = `authorization_details${i.path.map((k) => (typeof k === "number" ? `[${k}]` : `.${k}`)).join("")}`;
      return refuse("invalid_authorization_details", `${where}: ${i.code === "unrecognized_keys" ? `unknown field ${i.keys.join(", ")} (known: type, actions, locations)` : i.message}`);
    }
    for (const [j, d] of r.data.entries()) {
      const a = parseAction(d.actions, d.locations);
      if (typeof a === "string") return refuse("invalid_authorization_details", `authorization_details[${j}]: ${a}`);
      req.actions.push(a);
    }
  }
  const scope = form.get("scope");
  if (scope !== null) {
    const words = scope.split(" ").filter(Boolean);
    if (!words.length) return refuse("invalid_scope", "scope is empty");
    for (const w of words) {
      const a = parseScope(w);
      if (typeof a === "string") return refuse("invalid_scope", a);
      req.actions.push(a);
    }
  }
  if (!req.actions.length && grant === GRANT_CLIENT_CREDENTIALS) {
    return refuse("invalid_request", 'name the actions the token is for: authorization_details=[{"type":"meshguard.dev/http","actions":["GET"],"locations":["https://billing/v2/*"]}] or scope=http:GET:billing/v2/*');
  }
  const pairs = req.actions.reduce((n, a) => n + a.methods.length * a.locations.length, 0);
  if (pairs > MAX_PAIRS) return refuse("invalid_request", `the request names ${pairs} (method, location) pairs; at most ${MAX_PAIRS}: ask for what the task needs`);

  const ttl = form.get("ttl");
  if (ttl !== null) {
    if (!/^\d{1,9}$/.test(ttl) || Number(ttl) === 0) return refuse("invalid_request", `ttl must be a positive whole number of seconds, got "${ttl}"`);
    req.ttlS = Number(ttl);
  }
  const task = form.get("task");
  if (task !== null) {
    if (!TASK_RE.test(task)) return refuse("invalid_request", "task must be 1-128 printable ASCII characters without spaces");
    req.task = task;
  }

  if (grant === GRANT_TOKEN_EXCHANGE) {
    const st = form.get("subject_token");
    const stt = form.get("subject_token_type");
    if (st === null || st === "") return refuse("invalid_request", "subject_token is missing: pass the token to narrow");
    if (stt === null) return refuse("invalid_request", `subject_token_type is missing: use "${TOKEN_TYPE_JWT}"`);
    if (stt !== TOKEN_TYPE_JWT && stt !== TOKEN_TYPE_ACCESS) return refuse("unsupported_token_type", `subject_token_type "${stt}" is not supported: use "${TOKEN_TYPE_JWT}" or "${TOKEN_TYPE_ACCESS}"`);
    if (form.get("actor_token") !== null) return refuse("invalid_request", "actor_token is not supported: a token is bound to the node that asks for it");
    const rtt = form.get("requested_token_type");
    if (rtt !== null && rtt !== TOKEN_TYPE_ACCESS && rtt !== TOKEN_TYPE_JWT) return refuse("invalid_request", `requested_token_type "${rtt}" is not supported: this issuer issues access tokens`);
    req.subjectToken = st;
  }
  return req;
}
