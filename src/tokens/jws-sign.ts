/**
 * The issuer's side of compact JWS (RFC 7515) with Ed25519: signing tokens
 * and the revocation feed, and checking a token back against this issuer's
 * own keys (the subject token of a token exchange, a token presented for
 * revocation). node:crypto does the signature: one sign is a few tens of
 * microseconds.
 *
 * Reading is jws.ts's splitJws, the same reader the verifier uses (one
 * reader: the issuer cannot accept what a verifier refuses, or the reverse);
 * only the signature check against KeyObjects is the issuer's. This file
 * imports node:crypto statically; jws.ts does not, so the verifier loads
 * where node:crypto is missing.
 */

import { sign, verify } from "node:crypto";
import { decodeJson, JwsRefusal, splitJws } from "./jws.js";
import type { SigningKey } from "./keys.js";
import { TOKEN_ALG } from "./types.js";

/** signCompact returns header.payload.signature, the header carrying the key's kid. */
export function signCompact(key: SigningKey, typ: string, payload: object): string {
  const header = Buffer.from(JSON.stringify({ alg: TOKEN_ALG, typ, kid: key.kid })).toString("base64url");
  const body = Buffer.from(JSON.stringify(payload)).toString("base64url");
  const input = `${header}.${body}`;
  return `${input}.${sign(null, Buffer.from(input), key.privateKey).toString("base64url")}`;
}

/** The result of reading a compact JWS: its payload, or why it was refused. */
export type ReadResult = { ok: true; kid: string; payload: Record<string, unknown> } | { ok: false; reason: string };

/** readCompact checks a compact JWS of `typ` against this issuer's keys (header and signature; claims are the caller's business). */
export function readCompact(token: unknown, typ: string, keyOf: (kid: string) => SigningKey | undefined): ReadResult {
  if (typeof token !== "string" || token.length === 0) return { ok: false, reason: "no token" };
  let jws: ReturnType<typeof splitJws>;
  try {
    jws = splitJws(token, [typ]);
  } catch (err) {
    if (err instanceof JwsRefusal) return { ok: false, reason: err.message };
    throw err;
  }
  const key = keyOf(jws.header.kid);
  if (!key) return { ok: false, reason: `kid ${jws.header.kid} is not a key of this issuer (or has been retired)` };
  if (!verify(null, jws.signingInput, key.publicKey, jws.signature)) return { ok: false, reason: "the token's signature does not verify" };
  // Signed text: its alphabet needs no second look (see splitJws).
  const payload = decodeJson(jws.payloadSegment, true);
  if (payload === undefined) return { ok: false, reason: "the token's payload is not a base64url-encoded JSON object" };
  return { ok: true, kid: key.kid, payload };
}
