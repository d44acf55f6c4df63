// `meshguard policy apply` against a real headscale, and `policy serve --keygen`.
import { mkdtempSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { applyTailnetPolicy, policyApply } from "../../src/cli/policy-apply.js";
import { policyServe } from "../../src/cli/policy-serve.js";
import { LocalControl, ensureHeadscale } from "../../src/control/index.js";
import { keyId, signBundle, verifyBundle } from "../../src/distribution/index.js";

function io() {
  const out = new PassThrough();
  const err = new PassThrough();
  let o = "";
  let e = "";
  out.on("data", (d) => (o += d));
  err.on("data", (d) => (e += d));
  return { io: { stdout: out, stderr: err }, out: () => o, err: () => e };
}

const combined = (meshguardTests: object[] = []) => `{
  // the tailnet part: headscale's business
  "tagOwners": { "tag:agent": ["alice@"] },
  "grants": [ { "src": ["tag:agent"], "dst": ["tag:agent"], "ip": ["*"] } ],
  // meshguard's part stays out of headscale
  "meshguard": {
    "version": 1,
    "rules": [ { "id": "api", "src": ["tag:agent"], "http": { "host": ["api.example.com"] } } ],
    "tests": ${JSON.stringify(meshguardTests)},
  },
}
`;

let control: LocalControl;
let binary: string;
const dir = mkdtempSync(join(tmpdir(), "mg-cli-"));

beforeAll(async () => {
  binary = await ensureHeadscale();
  control = await LocalControl.start({ binary });
  await control.createUser("alice");
});
afterAll(() => control?.close());

describe("meshguard policy apply", () => {
  it("pushes the tailnet part (comments kept, meshguard key removed) through headscale's CLI", async () => {
    const file = join(dir, "policy.hujson");
    writeFileSync(file, combined([{ as: "tag:agent", request: "GET https://api.example.com/x", expect: "allow" }]));
    const t = io();
    const code = await policyApply.run([file, "--control", control.configPath, "--headscale", binary, "--json"], t.io);
    expect(t.err()).toBe("");
    expect(code).toBe(0);
    expect(JSON.parse(t.out())).toMatchObject({ ok: true, applied: true });
    const stored = (await control.getPolicy())!;
    expect(stored).toContain('"grants"');
    expect(stored).toContain("// the tailnet part");
    expect(stored).not.toContain("meshguard");
  });

  it("refuses a file whose meshguard tests fail, and pushes nothing", async () => {
    await control.setPolicy({ grants: [] });
    const file = join(dir, "failing.hujson");
    writeFileSync(file, combined([{ as: "tag:agent", request: "GET https://evil.example.net/", expect: "allow" }]));
    const t = io();
    expect(await policyApply.run([file, "--control", control.configPath, "--headscale", binary], t.io)).toBe(1);
    expect(t.err()).toMatch(/failing test/);
    expect(await control.getPolicy()).not.toContain("tag:agent");
  });

  it("reports headscale's refusal of a bad tailnet part", async () => {
    const file = join(dir, "bad-tailnet.hujson");
    writeFileSync(file, combined().replace('"dst": ["tag:agent"]', '"dst": ["tag:nobody-owns-this"]'));
    const t = io();
    expect(await policyApply.run([file, "--control", control.configPath, "--headscale", binary], t.io)).toBe(1);
    expect(t.err()).toMatch(/headscale did not apply the policy/);
  });

  it("applyTailnetPolicy with a LocalControl uses setPolicy; a meshguard-only file has nothing to apply", async () => {
    const part = await applyTailnetPolicy(combined(), control);
    expect(part).not.toContain("meshguard");
    await expect(applyTailnetPolicy(JSON.stringify({ version: 1, rules: [] }), control)).rejects.toThrow(/no tailnet part/);
  });

  it("usage errors exit 2", async () => {
    const t = io();
    expect(await policyApply.run([], t.io)).toBe(2);
    expect(t.err()).toMatch(/--control CONFIG/);
  });
});

describe("meshguard policy serve --keygen", () => {
  it("writes a usable Ed25519 key pair, private key mode 0600, never overwriting", async () => {
    const key = join(dir, "policy.key");
    const t = io();
    expect(await policyServe.run(["--keygen", key, "--json"], t.io)).toBe(0);
    const out = JSON.parse(t.out()) as { keyId: string };
    expect(statSync(key).mode & 0o777).toBe(0o600);
    const pub = readFileSync(`${key}.pub`, "utf8");
    expect(out.keyId).toBe(keyId(pub));
    const b = signBundle('{"version": 1, "rules": []}', readFileSync(key, "utf8"), { version: 1 });
    expect(verifyBundle(b, [pub]).version).toBe(1);
    const again = io();
    expect(await policyServe.run(["--keygen", key], again.io)).toBe(1);
    expect(again.err()).toMatch(/exists/);
  });

  it("serving needs FILE, --key and --control", async () => {
    const t = io();
    expect(await policyServe.run(["policy.hujson"], t.io)).toBe(2);
  });
});
