/**
 * Signed policy bundles: a policy text with a version, signed with Ed25519
 * (node:crypto), so an agent applies only a policy its operator signed.
 *
 * The signature covers one canonical byte string, never re-serialized JSON:
 *
 *   "meshguard-policy-bundle/v1\n" + version + "\n" + issuedAt + "\n" + sha256(policy) + "\n"
 *
 * `version` is an increasing integer: an agent refuses a bundle older than
 * the one it applied (a replayed, validly signed old policy is a downgrade).
 */

import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from "node:crypto";
import { ErrorCode, MeshguardError } from "../errors.js";

export const BUNDLE_FORMAT = "meshguard-policy-bundle";

/** PolicyBundle is what a policy server serves and a bundle file holds (JSON). */
export interface PolicyBundle {
  format: typeof BUNDLE_FORMAT;
  v: 1;
  /** Increases with every new policy; agents refuse to go back. */
  version: number;
  /** ISO time of signing. */
  issuedAt: string;
  /** SHA-256 (hex) of `policy`. */
  sha256: string;
  /** Which key signed: base64url of the first 16 bytes of SHA-256 over the public key (SPKI DER). */
  keyId: string;
  /** The policy file text (HuJSON), as written. */
  policy: string;
  /** Ed25519 signature (base64) over the canonical string. */
  signature: string;
}

/** A key as PEM text, DER bytes (SPKI / PKCS#8) or a KeyObject. */
export type KeyInput = string | Buffer | KeyObject;

const sha256hex = (s: string) => createHash("sha256").update(s).digest("hex");

function canonical(b: Pick<PolicyBundle, "version" | "issuedAt" | "sha256">): Buffer {
  return Buffer.from(`${BUNDLE_FORMAT}/v1\n${b.version}\n${b.issuedAt}\n${b.sha256}\n`, "utf8");
}

function invalid(message: string, hint?: string, cause?: unknown): MeshguardError {
  return new MeshguardError(ErrorCode.POLICY_BUNDLE_INVALID, message, { ...(hint ? { hint } : {}), ...(cause !== undefined ? { cause } : {}) });
}

export function toPublicKey(k: KeyInput): KeyObject {
  try {
    if (typeof k === "object" && !Buffer.isBuffer(k)) return k.type === "private" ? createPublicKey(k) : k;
    if (Buffer.isBuffer(k)) return createPublicKey({ key: k, format: "der", type: "spki" });
    return createPublicKey(k);
  } catch (err) {
    throw invalid("not an Ed25519 public key (PEM or SPKI DER expected)", "use the public key file `meshguard policy serve --keygen KEY` wrote (KEY.pub)", err);
  }
}

function toPrivateKey(k: KeyInput): KeyObject {
  try {
    if (typeof k === "object" && !Buffer.isBuffer(k)) return k;
    if (Buffer.isBuffer(k)) return createPrivateKey({ key: k, format: "der", type: "pkcs8" });
    return createPrivateKey(k);
  } catch (err) {
    throw invalid("not an Ed25519 private key (PEM or PKCS#8 DER expected)", undefined, err);
  }
}

/** keyId names a public key: base64url of the first 16 bytes of SHA-256 over its SPKI DER. */
export function keyId(k: KeyInput): string {
  const der = toPublicKey(k).export({ format: "der", type: "spki" });
  return createHash("sha256").update(der).digest().subarray(0, 16).toString("base64url");
}

/** generateBundleKeys makes a new Ed25519 key pair, PEM encoded. */
export function generateBundleKeys(): { publicKey: string; privateKey: string } {
  const { publicKey, privateKey } = generateKeyPairSync("ed25519");
  return { publicKey: publicKey.export({ format: "pem", type: "spki" }).toString(), privateKey: privateKey.export({ format: "pem", type: "pkcs8" }).toString() };
}

/** signBundle signs a policy text. The caller checks the policy loads first (a policy server never signs a broken one). */
export function signBundle(policy: string, privateKey: KeyInput, opts: { version: number; issuedAt?: Date }): PolicyBundle {
  if (!Number.isSafeInteger(opts.version) || opts.version < 0) throw new MeshguardError(ErrorCode.INVALID_OPTIONS, `signBundle: version must be a non-negative integer, got ${opts.version}`);
  const key = toPrivateKey(privateKey);
  if (key.asymmetricKeyType !== "ed25519") throw invalid(`signBundle: the key is ${key.asymmetricKeyType}, not ed25519`);
  const b = { version: opts.version, issuedAt: (opts.issuedAt ?? new Date()).toISOString(), sha256: sha256hex(policy) };
  return { format: BUNDLE_FORMAT, v: 1, ...b, keyId: keyId(key), policy, signature: sign(null, canonical(b), key).toString("base64") };
}

/**
 * verifyBundle checks a bundle (JSON text or object) against trusted public
 * keys and returns it. Throws MESHGUARD_POLICY_BUNDLE_INVALID saying what is
 * wrong: malformed, an unknown key, a bad signature, a policy that does not
 * match its hash, or a version older than `minVersion`.
 */
export function verifyBundle(input: string | unknown, trusted: readonly KeyInput[], opts: { minVersion?: number } = {}): PolicyBundle {
  let b: Partial<PolicyBundle>;
  if (typeof input === "string") {
    try {
      b = JSON.parse(input) as Partial<PolicyBundle>;
    } catch (err) {
      throw invalid("the bundle is not JSON", undefined, err);
    }
  } else b = input as Partial<PolicyBundle>;
  if (b === null || typeof b !== "object" || b.format !== BUNDLE_FORMAT || b.v !== 1) throw invalid(`not a policy bundle (expected {"format": "${BUNDLE_FORMAT}", "v": 1, ...})`);
  for (const [k, t] of [["version", "number"], ["issuedAt", "string"], ["sha256", "string"], ["keyId", "string"], ["policy", "string"], ["signature", "string"]] as const) {
    if (typeof b[k] !== t) throw invalid(`the bundle's "${k}" is missing or not a ${t}`);
  }
  if (trusted.length === 0) throw invalid("no trusted public key is configured", "pass publicKeys (the policy server's public key)");
  const keys = trusted.map(toPublicKey);
  const key = keys.find((k) => keyId(k) === b.keyId);
  if (key === undefined) throw invalid(`the bundle is signed by key ${b.keyId}, which is not trusted`, "add the policy server's public key to publicKeys");
  const ok = verify(null, canonical(b as PolicyBundle), key, Buffer.from(b.signature!, "base64"));
  if (!ok) throw invalid("the bundle's signature does not verify (tampered or signed by another key)");
  if (sha256hex(b.policy!) !== b.sha256) throw invalid("the bundle's policy does not match its signed hash (tampered)");
  if (opts.minVersion !== undefined && b.version! < opts.minVersion) throw invalid(`the bundle's version ${b.version} is older than the applied ${opts.minVersion} (a replayed bundle)`);
  return b as PolicyBundle;
}
