/**
 * The issuer's signing keys (src/tokens/keys.ts): files of mode 0600 in a
 * directory of mode 0700, refused when others can read them, kept across
 * restarts, rotated by kid with overlap on an injectable clock, and never
 * printed.
 */

import { chmodSync, mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { inspect } from "node:util";
import { calculateJwkThumbprint } from "jose";
import { expect, test } from "vitest";
import { KeyStore } from "../../src/tokens/keys.js";
import { isMeshguardError } from "../../src/errors.js";

const MIN = 60_000;
const HOUR = 60 * MIN;

function store(dir: string, clock: { now: number }, over: Partial<Parameters<typeof KeyStore.open>[0]> = {}) {
  return KeyStore.open({ dir, clock: () => clock.now, rotateEveryMs: 24 * HOUR, overlapMs: 5 * MIN, maxTokenTtlMs: HOUR, ...over });
}

const fresh = () => join(mkdtempSync(join(tmpdir(), "mg-keys-")), "keys");

test("the first open makes one key: file mode 0600, directory 0700, kid is the RFC 7638 thumbprint (as jose computes it)", async () => {
  const dir = fresh();
  const s = store(dir, { now: Date.UTC(2026, 0, 1) });
  const k = s.active();
  expect(statSync(dir).mode & 0o777).toBe(0o700);
  const files = readdirSync(dir);
  expect(files).toEqual([`${k.kid}.json`]);
  expect(statSync(join(dir, files[0]!)).mode & 0o777).toBe(0o600);
  expect(k.kid).toBe(await calculateJwkThumbprint(k.jwk, "sha256"));
  expect(s.jwks().keys).toEqual([{ kty: "OKP", crv: "Ed25519", x: k.jwk.x, kid: k.kid, use: "sig", alg: "EdDSA" }]);
});

test("a restart keeps using the same key", () => {
  const dir = fresh();
  const clock = { now: Date.UTC(2026, 0, 1) };
  const kid = store(dir, clock).active().kid;
  clock.now += HOUR;
  expect(store(dir, clock).active().kid).toBe(kid);
});

test("a key file others can read is refused with MESHGUARD_TOKEN_KEYS_INVALID and a chmod hint, not used", () => {
  const dir = fresh();
  const clock = { now: Date.UTC(2026, 0, 1) };
  const kid = store(dir, clock).active().kid;
  chmodSync(join(dir, `${kid}.json`), 0o644);
  let err: unknown;
  try {
    store(dir, clock);
  } catch (e) {
    err = e;
  }
  expect(isMeshguardError(err, "MESHGUARD_TOKEN_KEYS_INVALID")).toBe(true);
  expect((err as Error).message).toMatch(/can be read by others \(mode 0644\)[\s\S]*hint: run: chmod 600/);
});

test("a corrupt or foreign key file is refused, naming the file", () => {
  const dir = fresh();
  const clock = { now: Date.UTC(2026, 0, 1) };
  const kid = store(dir, clock).active().kid;
  const file = join(dir, `${kid}.json`);
  writeFileSync(file, "{not json", { mode: 0o600 });
  expect(() => store(dir, clock)).toThrow(new RegExp(`${file.replace(/[/.]/g, "\\$&")} is not valid JSON`));
  writeFileSync(file, JSON.stringify({ v: 1, kid, activeFrom: 0, privateKey: "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n" }), { mode: 0o600 });
  expect(() => store(dir, clock)).toThrow(/holds no usable Ed25519 private key/);
});

test("key material never appears when a key or the store is printed or serialized", () => {
  const dir = fresh();
  const s = store(dir, { now: Date.UTC(2026, 0, 1) });
  const k = s.active();
  const pem = JSON.parse(readFileSync(join(dir, `${k.kid}.json`), "utf8")).privateKey as string;
  const body = pem.split("\n")[1]!;
  const d = k.privateKey.export({ format: "jwk" }).d!;
  for (const text of [inspect(k, { depth: 5 }), inspect(s, { depth: 5 }), JSON.stringify(k), JSON.stringify(s.jwks())]) {
    expect(text).not.toContain(body);
    expect(text).not.toContain(d);
  }
});

test("rotation with overlap: the successor is published `overlap` before it signs; the old key stays until its last token expired (+ overlap), then its file goes", () => {
  const dir = fresh();
  const t0 = Date.UTC(2026, 0, 1);
  const clock = { now: t0 };
  const s = store(dir, clock, { rotateEveryMs: 10 * MIN, overlapMs: MIN, maxTokenTtlMs: 15 * MIN });
  const k1 = s.active();
  const kids = () => s.jwks().keys.map((k) => k.kid);

  clock.now = t0 + 8 * MIN; // before the pre-publication window
  expect(kids()).toEqual([k1.kid]);

  clock.now = t0 + 9 * MIN; // pre-published, not yet signing
  const [k2] = kids();
  expect(kids()).toEqual([k2, k1.kid]);
  expect(s.active().kid).toBe(k1.kid);

  clock.now = t0 + 10 * MIN; // the successor signs; the old key stays published
  expect(s.active().kid).toBe(k2);
  expect(s.get(k1.kid)?.kid).toBe(k1.kid);

  clock.now = t0 + 10 * MIN + 15 * MIN + MIN - 1; // a token k1 signed at the last moment may still be valid (+ skew margin)
  expect(kids()).toContain(k1.kid);

  clock.now = t0 + 10 * MIN + 15 * MIN + MIN; // every token k1 signed has expired
  expect(kids()).not.toContain(k1.kid);
  expect(readdirSync(dir)).not.toContain(`${k1.kid}.json`);
  expect(s.get(k1.kid)).toBeUndefined();
});

test("rotate() makes a new key active at once; a store closed past its rotation time rotates on open", () => {
  const dir = fresh();
  const t0 = Date.UTC(2026, 0, 1);
  const clock = { now: t0 };
  const s = store(dir, clock, { rotateEveryMs: HOUR, overlapMs: MIN });
  const k1 = s.active().kid;
  const k2 = s.rotate().kid;
  expect(k2).not.toBe(k1);
  expect(s.active().kid).toBe(k2);
  expect(s.jwks().keys.map((k) => k.kid)).toEqual([k2, k1]);

  clock.now = t0 + 5 * HOUR;
  const reopened = store(dir, clock, { rotateEveryMs: HOUR, overlapMs: MIN });
  expect(reopened.active().kid).not.toBe(k2);
  expect(reopened.active().activeFrom).toBe(clock.now);
});

test("rotateEvery 0 never rotates", () => {
  const dir = fresh();
  const clock = { now: Date.UTC(2026, 0, 1) };
  const s = store(dir, clock, { rotateEveryMs: 0 });
  const kid = s.active().kid;
  clock.now += 400 * 24 * HOUR;
  expect(s.active().kid).toBe(kid);
  expect(s.jwks().keys).toHaveLength(1);
});
