/**
 * Compact JWS (RFC 7515 §7.1) read by hand: the one reader of the issuer
 * (jws-sign.ts, with its own keys) and the verifier (its measured hot path).
 *
 * jose's `compactVerify` does the same with a key lookup, a header
 * validation pass and WebCrypto's async `subtle.verify`; measured in
 * bench/tokens.mjs it costs several times a bare node:crypto Ed25519 verify,
 * and the target is 1.1×. So the parts are split here with indexOf, the
 * header segment (identical for every token of one key) is validated once
 * and remembered, and everything is refused before any crypto when it is
 * not exactly `alg: "EdDSA"` with the expected `typ`.
 *
 * Invariants: a token over MAX_TOKEN_LENGTH characters, with other than
 * three segments, a header or signature outside the base64url alphabet, or
 * a signature that is not exactly 64 bytes is refused before any signature
 * check (the payload's text is covered by the signature, so it is decoded
 * only once that holds); `alg` is compared before the key is looked up, so `none`,
 * HS256 (an HMAC "keyed" with the public key) or RS256 never reach a
 * signature check.
 */

import { BoundedCache } from "./bounded-cache.js";
import { TOKEN_ALG } from "./types.js";

/** Tokens longer than this (characters, i.e. bytes: base64url is ASCII) are refused unread: 8 KiB. */
export const MAX_TOKEN_LENGTH = 8192;

/** The only header members a meshguard JWS has; `crit` (extensions we do not know) is refused. */
export interface JwsHeader {
  alg: typeof TOKEN_ALG;
  typ: string;
  kid: string;
}

/** A compact JWS split and decoded, not yet checked against any key. */
export interface SplitJws {
  header: JwsHeader;
  /** The signed bytes: ASCII of `header.payload`. */
  signingInput: Uint8Array;
  signature: Uint8Array;
  /** The payload segment, still encoded (decoded only after the signature holds). */
  payloadSegment: string;
}

/** Refusal carries why a token was refused; the verifier turns it into a TokenVerifyError. */
export class JwsRefusal extends Error {
  constructor(message: string) {
    super(message);
    this.name = "JwsRefusal";
  }
}

const B64URL = /^[A-Za-z0-9_-]+$/;
const NodeBuffer = (globalThis as { Buffer?: typeof Buffer }).Buffer;

/** decodeSegment decodes base64url (no padding); undefined when it is not canonical base64url. */
export function decodeSegment(seg: string, checked = false): Uint8Array | undefined {
  if (seg.length % 4 === 1 || (!checked && !B64URL.test(seg))) return undefined;
  if (NodeBuffer) return NodeBuffer.from(seg, "base64url");
  const bin = atob(seg.replace(/-/g, "+").replace(/_/g, "/"));
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

const textDecoder = new TextDecoder("utf-8", { fatal: true });

/** decodeJson decodes a base64url segment holding a JSON object; undefined when it is anything else. `checked`: the alphabet was already checked. */
export function decodeJson(seg: string, checked = false): Record<string, unknown> | undefined {
  const bytes = decodeSegment(seg, checked);
  if (bytes === undefined) return undefined;
  let value: unknown;
  try {
    // toString() without arguments is Buffer's UTF-8 fast path (no encoding look-up).
    value = JSON.parse(NodeBuffer && bytes instanceof NodeBuffer ? bytes.toString() : textDecoder.decode(bytes));
  } catch {
    return undefined;
  }
  return typeof value === "object" && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
}

/** Validated headers by segment text, one cache per expected typ: tokens of one key share one header segment. */
const headerCaches = new Map<string, BoundedCache<string, JwsHeader>>();

/**
 * The header validated last, for `typ`: the tokens a verifier sees are
 * nearly all of the issuer's current key, so one comparison in place
 * (startsWith: no substring, no hashing) finds it.
 */
let lastHeader: { seg: string; typ: string; header: JwsHeader } | undefined;

function readHeader(seg: string, typs: readonly string[]): JwsHeader {
  const header = readHeaderUncached(seg, typs);
  lastHeader = { seg, typ: typs[0]!, header };
  return header;
}

function readHeaderUncached(seg: string, typs: readonly string[]): JwsHeader {
  let headerCache = headerCaches.get(typs[0]!);
  if (headerCache === undefined) headerCaches.set(typs[0]!, (headerCache = new BoundedCache(64)));
  const cached = headerCache.get(seg);
  if (cached !== undefined) return cached;
  const h = decodeJson(seg);
  if (h === undefined) throw new JwsRefusal("the token's header is not base64url-encoded JSON");
  if (h.alg !== TOKEN_ALG) throw new JwsRefusal(`the token's algorithm is ${JSON.stringify(h.alg ?? null)}; only ${TOKEN_ALG} (Ed25519) is accepted`);
  if ("crit" in h) throw new JwsRefusal("the token's header has crit: extensions this verifier does not understand");
  if (typeof h.typ !== "string" || !typs.includes(h.typ.toLowerCase().replace(/^application\//, ""))) {
    throw new JwsRefusal(`the token's typ is ${JSON.stringify(h.typ ?? null)}, expected "${typs[0]}"`);
  }
  if (typeof h.kid !== "string" || h.kid === "" || h.kid.length > 256) throw new JwsRefusal("the token's header has no key id (kid)");
  const header: JwsHeader = { alg: TOKEN_ALG, typ: h.typ, kid: h.kid };
  headerCache.set(seg, header);
  return header;
}

/**
 * splitJws splits a compact JWS and checks its header, refusing (JwsRefusal)
 * anything that is not an EdDSA JWS of one of `typs` (lower-case, without
 * "application/").
 */
export function splitJws(token: string, typs: readonly string[]): SplitJws {
  if (token.length > MAX_TOKEN_LENGTH) throw new JwsRefusal(`the token is ${token.length} bytes; at most ${MAX_TOKEN_LENGTH} are accepted`);
  const a = token.indexOf(".");
  const b = a < 0 ? -1 : token.indexOf(".", a + 1);
  if (a <= 0 || b < 0 || token.indexOf(".", b + 1) >= 0) throw new JwsRefusal("the token is not a compact JWS (header.payload.signature)");
  const last = lastHeader;
  const header = last !== undefined && last.typ === typs[0] && last.seg.length === a && token.startsWith(last.seg) ? last.header : readHeader(token.slice(0, a), typs);
  // A 64-byte signature is exactly 86 base64url characters.
  if (token.length - b - 1 !== 86) throw new JwsRefusal("the token's signature is not an Ed25519 signature (64 bytes)");
  const signature = decodeSegment(token.slice(b + 1));
  const payloadSegment = token.slice(a + 1, b);
  // The payload's alphabet is not checked here: the signature covers its exact text, so a payload
  // the issuer did not write fails the signature check anyway (decodeJson checks it when asked to).
  if (signature === undefined || payloadSegment === "") throw new JwsRefusal("the token is not base64url-encoded");
  // UTF-8, not latin1: the same bytes for the base64url text a signer wrote, and measured ~1.4 µs
  // faster on a substring (Node's latin1 path copies it first). A character outside ASCII becomes
  // bytes ≥ 0x80, which no base64url text holds, so such a token fails the signature check; latin1
  // would have truncated U+0141 to "A" and let another text stand for the signed one.
  const input = token.slice(0, b);
  const signingInput = NodeBuffer ? NodeBuffer.from(input) : new TextEncoder().encode(input);
  return { header, signingInput, signature, payloadSegment };
}
