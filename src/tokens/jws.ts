/**
 * Compact JWS (RFC 7515) with Ed25519, the issuer's side: signing tokens and
 * the revocation feed, and reading back a token this issuer signed (the
 * subject token of a token exchange, a token presented for revocation).
 * node:crypto does the signature: one sign is a few tens of microseconds.
 *
 * Reading is strict and refuses before it parses anything large: at most
 * MAX_TOKEN_BYTES, exactly three base64url parts, header alg EdDSA with the
 * expected typ and a kid of a published key. Any other alg — "none", HS256
 * with the public key as secret — is refused by that first check.
 */

import { sign, verify } from "node:crypto";
import type { SigningKey } from "./keys.js";
import { TOKEN_ALG } from "./types.js";

/** The longest compact token read (bytes): far above a real token (~1 KB), far below a memory problem. */
export const MAX_TOKEN_BYTES = 8192;

const B64URL_RE = /^[A-Za-z0-9_-]*$/;

/** signCompact returns header.payload.signature, the header carrying the key's kid. */
export function signCompact(key: SigningKey, typ: string, payload: object): string {
  const header = Buffer.from(JSON.stringify({ alg: TOKEN_ALG, typ, kid: key.kid })).toString("base64url");
  const body = Buffer.from(JSON.stringify(payload)).toString("base64url");
  const input = `${header}.${body}`;
  return `${input}.${sign(null, Buffer.from(input), key.privateKey).toString("base64url")}`;
}

/** The result of reading a compact JWS: its payload, or why it was refused. */
export type ReadResult = { ok: true; kid: string; payload: Record<string, unknown> } | { ok: false; reason: string };

/** readCompact checks a compact JWS against this issuer's keys (signature and header only; claims are the caller's business). */
export function readCompact(token: unknown, typ: string, keyOf: (kid: string) => SigningKey | undefined): ReadResult {
  if (typeof token !== "string" || token.length === 0) return { ok: false, reason: "no token" };
  if (token.length > MAX_TOKEN_BYTES) return { ok: false, reason: `the token is longer than ${MAX_TOKEN_BYTES} bytes` };
  const parts = token.split(".");
  if (parts.length !== 3 || !parts.every((p) => B64URL_RE.test(p))) return { ok: false, reason: "not a compact JWS (three base64url parts)" };
  let header: { alg?: unknown; typ?: unknown; kid?: unknown; crit?: unknown };
  try {
    header = JSON.parse(Buffer.from(parts[0]!, "base64url").toString("utf8")) as typeof header;
  } catch {
    return { ok: false, reason: "the header is not JSON" };
  }
  if (typeof header !== "object" || header === null) return { ok: false, reason: "the header is not an object" };
  if (header.alg !== TOKEN_ALG) return { ok: false, reason: `alg ${JSON.stringify(header.alg)} is refused (only ${TOKEN_ALG})` };
  if (header.typ !== typ) return { ok: false, reason: `typ ${JSON.stringify(header.typ)} is not ${typ}` };
  if (header.crit !== undefined) return { ok: false, reason: "crit headers are not understood" };
  if (typeof header.kid !== "string") return { ok: false, reason: "no kid" };
  const key = keyOf(header.kid);
  if (!key) return { ok: false, reason: `kid ${header.kid} is not a key of this issuer (or has been retired)` };
  const sig = Buffer.from(parts[2]!, "base64url");
  if (sig.length !== 64 || !verify(null, Buffer.from(`${parts[0]}.${parts[1]}`), key.publicKey, sig)) return { ok: false, reason: "the signature does not verify" };
  let payload: unknown;
  try {
    payload = JSON.parse(Buffer.from(parts[1]!, "base64url").toString("utf8"));
  } catch {
    return { ok: false, reason: "the payload is not JSON" };
  }
  if (typeof payload !== "object" || payload === null || Array.isArray(payload)) return { ok: false, reason: "the payload is not an object" };
  return { ok: true, kid: key.kid, payload: payload as Record<string, unknown> };
}
