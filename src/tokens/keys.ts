/**
 * The issuer's Ed25519 signing keys: created, kept on disk, rotated by `kid`
 * with overlap.
 *
 * On disk: one file per key, `<dir>/<kid>.json`, mode 0600, in a directory of
 * mode 0700, written once (to a temporary file, then renamed) and never
 * changed: `{ v, kid, activeFrom, privateKey }` with the PKCS#8 PEM. A key's
 * life is read from the sequence of files, not stored in them:
 *
 *   activeFrom(k)  — k signs from then …
 *   retired(k)     — … until the next key's activeFrom;
 *   published      — in the JWKS from when the file is written (a successor
 *                    is written `overlap` before it becomes active, so a
 *                    verifier that cached the JWKS has seen it before the
 *                    first token it signs arrives) until
 *                    retired(k) + maxTokenTtl + overlap: every token k signed
 *                    has expired by then (overlap covering clock skew);
 *   then the file is deleted.
 *
 * `kid` is the key's RFC 7638 JWK thumbprint (base64url SHA-256), so the
 * same key always has the same id. Invariants: exactly one key is active at
 * any time once the store is open; the active key is in the JWKS; key
 * material is never logged (KeyObjects print no key bytes, and no message
 * here includes a PEM). A key file that group or others may read is refused
 * (MESHGUARD_TOKEN_KEYS_INVALID), not silently used.
 *
 * One issuer process per key directory: two would rotate independently.
 */

import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from "node:crypto";
import { chmodSync, mkdirSync, readdirSync, readFileSync, renameSync, statSync, unlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ErrorCode, MeshguardError } from "../errors.js";
import { TOKEN_ALG, type Ed25519PublicJwk, type Jwks } from "./types.js";

export interface KeyStoreOptions {
  /** The directory holding the key files (created with mode 0700). */
  dir: string;
  /** Milliseconds since the epoch (injectable for tests). */
  clock: () => number;
  /** How long a key signs before its successor takes over; 0 or Infinity: never rotate. */
  rotateEveryMs: number;
  /** How long a successor is published before it signs, and the margin after the last token a key signed expires. */
  overlapMs: number;
  /** The longest lifetime of a token (the issuer's cap): how long a retired key must stay in the JWKS. */
  maxTokenTtlMs: number;
}

/** One key as the store holds it. */
export interface SigningKey {
  readonly kid: string;
  readonly activeFrom: number;
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;
  readonly jwk: Ed25519PublicJwk;
}

interface KeyFile {
  v: 1;
  kid: string;
  activeFrom: number;
  privateKey: string;
}

const FILE_RE = /^[A-Za-z0-9_-]{43}\.json$/;

/** thumbprint is the RFC 7638 thumbprint of an Ed25519 public JWK (members in lexicographic order). */
export function thumbprint(x: string): string {
  return createHash("sha256").update(`{"crv":"Ed25519","kty":"OKP","x":"${x}"}`).digest("base64url");
}

function toSigningKey(privateKey: KeyObject, activeFrom: number): SigningKey {
  const publicKey = createPublicKey(privateKey);
  const { x } = publicKey.export({ format: "jwk" }) as { x: string };
  const kid = thumbprint(x);
  return Object.freeze({ kid, activeFrom, privateKey, publicKey, jwk: Object.freeze({ kty: "OKP", crv: "Ed25519", x, kid, use: "sig", alg: TOKEN_ALG }) as Ed25519PublicJwk });
}

function keysError(message: string, hint: string, cause?: unknown): MeshguardError {
  return new MeshguardError(ErrorCode.TOKEN_KEYS_INVALID, message, cause === undefined ? { hint } : { hint, cause });
}

/** KeyStore holds the keys of one issuer. Every read first applies the rotation schedule (tick). */
export class KeyStore {
  /** Sorted by activeFrom, oldest first. */
  private keys: SigningKey[] = [];
  private readonly opts: KeyStoreOptions;


  private constructor(opts: KeyStoreOptions) {
    this.opts = opts;
  }

  /** open reads the key directory (creating it), checks every file, and makes a key if none is usable. */
  static open(opts: KeyStoreOptions): KeyStore {
    const s = new KeyStore(opts);
    try {
      mkdirSync(opts.dir, { recursive: true, mode: 0o700 });
      const st = statSync(opts.dir);
      if ((st.mode & 0o077) !== 0) chmodSync(opts.dir, 0o700);
    } catch (err) {
      throw keysError(`cannot create the token key directory ${opts.dir}: ${(err as Error).message}`, "give the issuer a state directory it can write (keyDir)", err);
    }
    for (const name of readdirSync(opts.dir)) {
      if (!FILE_RE.test(name)) continue;
      s.keys.push(readKeyFile(join(opts.dir, name)));
    }
    s.keys.sort((a, b) => a.activeFrom - b.activeFrom);
    s.tick();
    return s;
  }

  /** The key that signs now. */
  active(): SigningKey {
    this.tick();
    const now = this.opts.clock();
    let k = this.keys[0]!;
    for (const x of this.keys) if (x.activeFrom <= now) k = x;
    return k;
  }

  /** The key with this id, while it is published. */
  get(kid: string): SigningKey | undefined {
    this.tick();
    return this.keys.find((k) => k.kid === kid);
  }

  /** The published keys (the JWKS document), newest first. */
  jwks(): Jwks {
    this.tick();
    return { keys: [...this.keys].reverse().map((k) => ({ ...k.jwk })) };
  }

  /** rotate makes a new key active now (the old one stays published until its tokens have expired). */
  rotate(): SigningKey {
    const now = this.opts.clock();
    // Drop a pre-published successor: the new key replaces it (it signed nothing).
    for (const k of this.keys.filter((x) => x.activeFrom > now)) this.remove(k);
    return this.add(now);
  }

  /**
   * tick applies the schedule at the current time: the first key; the
   * successor, `overlap` before the active key's period ends; deletion of
   * keys whose tokens have all expired.
   */
  tick(): void {
    const { clock, rotateEveryMs, overlapMs, maxTokenTtlMs } = this.opts;
    const now = clock();
    if (!this.keys.some((k) => k.activeFrom <= now)) {
      this.add(now);
      return this.tick();
    }
    const rotating = rotateEveryMs > 0 && Number.isFinite(rotateEveryMs);
    const last = this.keys[this.keys.length - 1]!;
    if (rotating && last.activeFrom <= now) {
      const due = last.activeFrom + rotateEveryMs;
      // A store that was closed past the due time rotates at once (no pre-publication is possible then).
      if (now >= due - overlapMs) this.add(Math.max(due, now));
    }
    for (let i = 0; i + 1 < this.keys.length; i++) {
      const retired = this.keys[i + 1]!.activeFrom;
      if (retired <= now && now >= retired + maxTokenTtlMs + overlapMs) {
        this.remove(this.keys[i]!);
        i--;
      }
    }
  }

  private add(activeFrom: number): SigningKey {
    const { privateKey } = generateKeyPairSync("ed25519");
    const key = toSigningKey(privateKey, activeFrom);
    writeKeyFile(this.opts.dir, key);
    this.keys.push(key);
    this.keys.sort((a, b) => a.activeFrom - b.activeFrom);
    return key;
  }

  private remove(k: SigningKey): void {
    this.keys = this.keys.filter((x) => x !== k);
    try {
      unlinkSync(join(this.opts.dir, `${k.kid}.json`));
    } catch {
      // Already gone: nothing to delete.
    }
  }
}

function writeKeyFile(dir: string, key: SigningKey): void {
  const file = join(dir, `${key.kid}.json`);
  const tmp = `${file}.${process.pid}.tmp`;
  const body: KeyFile = { v: 1, kid: key.kid, activeFrom: key.activeFrom, privateKey: key.privateKey.export({ format: "pem", type: "pkcs8" }) as string };
  try {
    writeFileSync(tmp, `${JSON.stringify(body)}\n`, { mode: 0o600, flag: "wx" });
    renameSync(tmp, file);
  } catch (err) {
    try {
      unlinkSync(tmp);
    } catch {
      // never written
    }
    throw keysError(`cannot write the token key file ${file}: ${(err as Error).message}`, "check the key directory's space and permissions", err);
  }
}

function readKeyFile(file: string): SigningKey {
  let mode: number;
  try {
    mode = statSync(file).mode;
  } catch (err) {
    throw keysError(`cannot read the token key file ${file}: ${(err as Error).message}`, "check the key directory's permissions", err);
  }
  if ((mode & 0o077) !== 0) {
    throw keysError(
      `the token key file ${file} can be read by others (mode ${(mode & 0o777).toString(8).padStart(4, "0")}): refusing to sign with a key that may have leaked`,
      `run: chmod 600 ${file} (if others may have read it, delete it instead: the issuer makes a new key)`,
    );
  }
  let parsed: Partial<KeyFile>;
  try {
    parsed = JSON.parse(readFileSync(file, "utf8")) as Partial<KeyFile>;
  } catch (err) {
    throw keysError(`the token key file ${file} is not valid JSON`, "delete it: the issuer makes a new key (tokens it signed stop verifying)", err);
  }
  if (parsed.v !== 1 || typeof parsed.privateKey !== "string" || typeof parsed.activeFrom !== "number" || typeof parsed.kid !== "string") {
    throw keysError(`the token key file ${file} is not a meshguard token key (expected v, kid, activeFrom, privateKey)`, "delete it: the issuer makes a new key");
  }
  let key: SigningKey;
  try {
    const pk = createPrivateKey(parsed.privateKey);
    if (pk.asymmetricKeyType !== "ed25519") throw new Error(`an ${pk.asymmetricKeyType} key`);
    key = toSigningKey(pk, parsed.activeFrom);
  } catch (err) {
    // The cause would carry the parser's message only, never key bytes.
    throw keysError(`the token key file ${file} holds no usable Ed25519 private key: ${(err as Error).message}`, "delete it: the issuer makes a new key", err);
  }
  if (key.kid !== parsed.kid || `${key.kid}.json` !== file.slice(file.lastIndexOf("/") + 1)) {
    throw keysError(`the token key file ${file} names kid ${parsed.kid} but its key's thumbprint is ${key.kid}`, "delete it: the issuer makes a new key");
  }
  return key;
}
