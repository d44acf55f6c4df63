/**
 * The keyring that encrypts per-user OAuth tokens at rest (AES-256-GCM,
 * node:crypto). Keys are named: every sealed value carries the id of the key
 * that sealed it, so after a rotation old rows still open with the old key
 * while every new write uses the newest one (the last listed).
 *
 * Where the keys are: an environment variable or a file (never the gateway
 * config), one or more `ID:BASE64` entries separated by newlines, spaces or
 * commas, each BASE64 decoding to exactly 32 bytes. `#` starts a comment
 * line. A key file others can read is refused, as the token issuer's is.
 *
 * The associated data binds a sealed value to its row (connector and
 * subject): a value copied into another user's row does not open.
 */

import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { readFile, stat } from "node:fs/promises";
import { ErrorCode, MeshguardError } from "../../errors.js";
import type { KeySource } from "../keys.js";

const PREFIX = "mgk1";
const KEY_ID_RE = /^[A-Za-z0-9_-]{1,32}$/;
const IV_BYTES = 12;
const TAG_BYTES = 16;

function keysError(message: string, hint: string, cause?: unknown): MeshguardError {
  return new MeshguardError(ErrorCode.CONNECTOR_KEYS_INVALID, message, { hint, ...(cause === undefined ? {} : { cause }) });
}

const FORMAT_HINT = 'write one key per line as ID:BASE64 (32 random bytes), e.g. `echo "k1:$(openssl rand -base64 32)"`; the last key listed seals new values';

/** Keyring seals and opens values with named AES-256-GCM keys. */
export class Keyring {
  readonly #keys: Map<string, Buffer>;
  /** The id of the key new values are sealed with. */
  readonly current: string;

  constructor(keys: ReadonlyArray<{ id: string; key: Buffer }>) {
    if (keys.length === 0) throw keysError("the OAuth token keyring holds no key", FORMAT_HINT);
    this.#keys = new Map();
    for (const { id, key } of keys) {
      if (!KEY_ID_RE.test(id)) throw keysError(`the key id ${JSON.stringify(id)} is not 1-32 letters, digits, '_' or '-'`, FORMAT_HINT);
      if (key.length !== 32) throw keysError(`the key ${id} is ${key.length} bytes; AES-256 needs 32`, FORMAT_HINT);
      if (this.#keys.has(id)) throw keysError(`the key id ${id} is listed twice`, "give every key its own id (a new key gets a new id)");
      this.#keys.set(id, Buffer.from(key));
    }
    this.current = keys[keys.length - 1]!.id;
  }

  /** ids lists the key ids, oldest first. */
  get ids(): string[] {
    return [...this.#keys.keys()];
  }

  /** parse reads keyring text (see the file comment); `where` names its source in errors, never a key. */
  static parse(text: string, where: string): Keyring {
    const keys: { id: string; key: Buffer }[] = [];
    for (const line of text.split("\n")) {
      const l = line.trim();
      if (l === "" || l.startsWith("#")) continue;
      for (const entry of l.split(/[\s,]+/)) {
        if (entry === "") continue;
        const colon = entry.indexOf(":");
        if (colon <= 0) throw keysError(`${where}: an entry is not ID:BASE64`, FORMAT_HINT);
        const id = entry.slice(0, colon);
        const b64 = entry.slice(colon + 1);
        if (!/^[A-Za-z0-9+/_-]+={0,2}$/.test(b64)) throw keysError(`${where}: the key ${JSON.stringify(id)} is not base64`, FORMAT_HINT);
        keys.push({ id, key: Buffer.from(b64, b64.includes("-") || b64.includes("_") ? "base64url" : "base64") });
      }
    }
    try {
      return new Keyring(keys);
    } catch (err) {
      if (err instanceof MeshguardError) throw keysError(`${where}: ${err.message.split("\n")[0]}`, FORMAT_HINT);
      throw err;
    }
  }

  /** load reads the keyring from an environment variable or a file (a file others can read is refused). */
  static async load(src: KeySource, env: NodeJS.ProcessEnv = process.env): Promise<Keyring> {
    if (src.env !== undefined) {
      const v = env[src.env];
      if (v === undefined || v.trim() === "") {
        throw keysError(`the OAuth token keys are read from the environment variable ${src.env}, which is ${v === undefined ? "not set" : "empty"}`, `set ${src.env}: ${FORMAT_HINT}`);
      }
      return Keyring.parse(v, `environment variable ${src.env}`);
    }
    const file = src.file!;
    let text: string;
    try {
      const st = await stat(file);
      if (process.platform !== "win32" && (st.mode & 0o077) !== 0) {
        throw keysError(`the OAuth token key file ${file} can be read by others (mode ${(st.mode & 0o777).toString(8).padStart(4, "0")})`, `chmod 600 ${file}`);
      }
      text = await readFile(file, "utf8");
    } catch (err) {
      if (err instanceof MeshguardError) throw err;
      throw keysError(`the OAuth token key file ${file} cannot be read (${(err as NodeJS.ErrnoException).code ?? "error"})`, "check the path (relative to the config file) and that the gateway's user may read it", err);
    }
    return Keyring.parse(text, file);
  }

  /** seal encrypts `plain` with the current key, bound to `context` (the row it is stored in). */
  seal(plain: string, context: string): string {
    const iv = randomBytes(IV_BYTES);
    const c = createCipheriv("aes-256-gcm", this.#keys.get(this.current)!, iv);
    c.setAAD(Buffer.from(context, "utf8"));
    const body = Buffer.concat([c.update(plain, "utf8"), c.final(), c.getAuthTag()]);
    return `${PREFIX}:${this.current}:${iv.toString("base64url")}:${body.toString("base64url")}`;
  }

  /** keyIdOf says which key sealed a value (undefined: not a sealed value). */
  static keyIdOf(sealed: string): string | undefined {
    const parts = sealed.split(":");
    return parts.length === 4 && parts[0] === PREFIX ? parts[1] : undefined;
  }

  /** open decrypts a sealed value; a value sealed for another context, tampered with, or with a key not in the ring throws. */
  open(sealed: string, context: string): string {
    const parts = sealed.split(":");
    if (parts.length !== 4 || parts[0] !== PREFIX) throw keysError("a stored OAuth token is not a sealed value", "the row was not written by meshguard; revoke it and connect again");
    const key = this.#keys.get(parts[1]!);
    if (key === undefined) {
      throw keysError(`a stored OAuth token was sealed with the key ${JSON.stringify(parts[1])}, which is not in the keyring (${this.ids.join(", ")})`, "keep retired keys in the keyring until `POST /meshguard/v1/connectors/oauth/reseal` has re-sealed every row");
    }
    const iv = Buffer.from(parts[2]!, "base64url");
    const body = Buffer.from(parts[3]!, "base64url");
    if (iv.length !== IV_BYTES || body.length < TAG_BYTES) throw keysError("a stored OAuth token is truncated", "revoke it and connect again");
    try {
      const d = createDecipheriv("aes-256-gcm", key, iv);
      d.setAAD(Buffer.from(context, "utf8"));
      d.setAuthTag(body.subarray(body.length - TAG_BYTES));
      return Buffer.concat([d.update(body.subarray(0, body.length - TAG_BYTES)), d.final()]).toString("utf8");
    } catch (err) {
      throw keysError("a stored OAuth token does not open: it was altered, moved to another row, or sealed with another key under the same id", "revoke it and connect again; never reuse a key id for a new key", err);
    }
  }
}
