// The two Ed25519 implementations the verifier can use, and how it picks one
// when it loads. Vectors: RFC 8032 §7.1, TEST 1-3 (public key, message,
// signature, hex).
import { execFileSync } from "node:child_process";
import crypto from "node:crypto";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { DEFAULT_ED25519_BACKEND, prepareKey, type Ed25519Backend } from "../../src/tokens/ed25519.js";

const RFC8032 = [
  ["d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "", "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"],
  ["3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72", "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"],
  ["fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025", "af82", "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a"],
] as const;
const hex = (s: string) => new Uint8Array(Buffer.from(s, "hex"));

describe.each(["node:crypto", "@noble/curves"] as Ed25519Backend[])("Ed25519 with %s", (backend) => {
  it("accepts the RFC 8032 vectors and refuses each with one bit of the signature, message or key changed", async () => {
    for (const [pub, msg, sig] of RFC8032) {
      const key = await prepareKey(hex(pub), backend);
      expect(key(hex(msg), hex(sig))).toBe(true);
      const badSig = hex(sig);
      badSig[5]! ^= 1;
      expect(key(hex(msg), badSig)).toBe(false);
      expect(key(new Uint8Array([...hex(msg), 0]), hex(sig))).toBe(false);
      const otherPub = hex(pub);
      otherPub[0]! ^= 1;
      expect((await prepareKey(otherPub, backend).catch(() => () => false))(hex(msg), hex(sig))).toBe(false);
    }
  });

  it("agrees with node:crypto signing on random keys and messages", async () => {
    for (let i = 0; i < 20; i++) {
      const { publicKey, privateKey } = crypto.generateKeyPairSync("ed25519");
      const raw = Buffer.from(publicKey.export({ format: "jwk" }).x!, "base64url");
      const msg = crypto.randomBytes(i * 37);
      const key = await prepareKey(raw, backend);
      expect(key(msg, crypto.sign(null, msg, privateKey))).toBe(true);
    }
  });

  it("refuses a signature of the wrong length and a key of the wrong length without throwing later", async () => {
    const key = await prepareKey(hex(RFC8032[0][0]), backend);
    expect(key(new Uint8Array(0), hex(RFC8032[0][2]).slice(0, 63))).toBe(false);
    expect(key(new Uint8Array(0), new Uint8Array(64))).toBe(false);
    await expect(prepareKey(new Uint8Array(31), backend)).rejects.toThrow(/32 bytes/);
  });
});

describe("Ed25519 selection at load", () => {
  const module = fileURLToPath(new URL("../../src/tokens/ed25519.ts", import.meta.url));
  /** Loads the module in a fresh Node (type stripping) after `prelude` ran, and checks a vector with the default backend. */
  const probe = (prelude: string) =>
    execFileSync(
      process.execPath,
      [
        "--input-type=module",
        "-e",
        `${prelude}
         const m = await import(${JSON.stringify(module)});
         const h = (s) => new Uint8Array(Buffer.from(s, "hex"));
         const k = await m.prepareKey(h("${RFC8032[1][0]}"));
         console.log(JSON.stringify({ backend: m.DEFAULT_ED25519_BACKEND, ok: k(h("${RFC8032[1][1]}"), h("${RFC8032[1][2]}")) }));`,
      ],
      { encoding: "utf8", env: { ...process.env, NODE_OPTIONS: "" } },
    );

  it("picks node:crypto on Node", () => {
    expect(DEFAULT_ED25519_BACKEND).toBe("node:crypto");
    expect(JSON.parse(probe(""))).toEqual({ backend: "node:crypto", ok: true });
  });

  it("picks @noble/curves where node:crypto cannot be reached (no process.getBuiltinModule), and verifies with it", () => {
    expect(JSON.parse(probe("delete process.getBuiltinModule;"))).toEqual({ backend: "@noble/curves", ok: true });
  });

  it("picks @noble/curves where node:crypto has no working Ed25519", () => {
    const broken = `const real = process.getBuiltinModule;
      process.getBuiltinModule = (id) => id === "node:crypto" ? { ...real(id), verify: () => false } : real(id);`;
    expect(JSON.parse(probe(broken))).toEqual({ backend: "@noble/curves", ok: true });
  });
});
