/**
 * Ed25519 signature checks with prepared keys, from node:crypto where it has
 * Ed25519 and from @noble/curves where it does not (edge runtimes).
 *
 * Selection happens once, when this module loads: node:crypto is reached
 * through `process.getBuiltinModule` (no static `node:` import, so the module
 * loads on runtimes without it) and must verify the RFC 8032 §7.1 TEST 1
 * vector; anything else (no process, no Ed25519, a wrong answer) selects
 * @noble/curves, loaded on first use. Both check RFC 8032 strictly
 * (OpenSSL's rules; noble with `zip215: false`), so a signature one accepts
 * the other accepts too.
 */

import type { KeyObject } from "node:crypto";

/** The implementations a verifier can use. */
export type Ed25519Backend = "node:crypto" | "@noble/curves";

/** A public key ready to check signatures: `(signedBytes, signature) → valid`. */
export type PreparedKey = (data: Uint8Array, signature: Uint8Array) => boolean;

type NodeCrypto = typeof import("node:crypto");

// RFC 8032 §7.1 TEST 1: the empty message under this key.
const VECTOR_PUBLIC = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
const VECTOR_SIGNATURE = "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b";

function hex(s: string): Uint8Array {
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.slice(i * 2, i * 2 + 2), 16);
  return out;
}

function base64url(bytes: Uint8Array): string {
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** nodeCrypto returns node:crypto when this runtime has it with a working Ed25519, else undefined. */
function probeNodeCrypto(): NodeCrypto | undefined {
  try {
    const get = (globalThis as { process?: { getBuiltinModule?: (id: string) => unknown } }).process?.getBuiltinModule;
    const c = typeof get === "function" ? (get("node:crypto") as NodeCrypto | undefined) : undefined;
    if (!c || typeof c.verify !== "function") return undefined;
    const key = c.createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x: base64url(hex(VECTOR_PUBLIC)) }, format: "jwk" });
    return c.verify(null, new Uint8Array(0), key, hex(VECTOR_SIGNATURE)) ? c : undefined;
  } catch {
    return undefined;
  }
}

const nodeCrypto = probeNodeCrypto();

/** DEFAULT_ED25519_BACKEND is what this runtime selected when the module loaded. */
export const DEFAULT_ED25519_BACKEND: Ed25519Backend = nodeCrypto ? "node:crypto" : "@noble/curves";

let noble: Promise<typeof import("@noble/curves/ed25519.js")> | undefined;

/**
 * prepareKey turns a raw 32-byte Ed25519 public key into a PreparedKey for
 * the backend (the default: the one selected at load). node:crypto keys are
 * KeyObjects made once here, never per signature.
 */
export async function prepareKey(raw: Uint8Array, backend: Ed25519Backend = DEFAULT_ED25519_BACKEND): Promise<PreparedKey> {
  if (raw.length !== 32) throw new RangeError(`an Ed25519 public key is 32 bytes, got ${raw.length}`);
  if (backend === "node:crypto") {
    const c = nodeCrypto;
    if (!c) throw new Error("node:crypto has no Ed25519 on this runtime");
    const key: KeyObject = c.createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x: base64url(raw) }, format: "jwk" });
    return (data, signature) => signature.length === 64 && c.verify(null, data, key, signature);
  }
  noble ??= import("@noble/curves/ed25519.js");
  const { ed25519 } = await noble;
  const pub = Uint8Array.from(raw);
  return (data, signature) => {
    if (signature.length !== 64) return false;
    try {
      return ed25519.verify(signature, data, pub, { zip215: false });
    } catch {
      return false; // a malformed point or signature is a failed check, not an exception
    }
  };
}
