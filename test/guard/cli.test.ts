// `meshguard policy apply` against a real headscale, and `policy serve --keygen`.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { applyTailnetPolicy } from "../../src/cli/policy-apply.js";
import { runCli, type CliIO } from "../../src/cli/run.js";
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

/** `meshguard policy apply ...` and `meshguard policy serve ...`, in-process. */
const policyApply = { run: (argv: string[], io: CliIO) => runCli(["policy", "apply", ...argv], io) };
const policyServe = { run: (argv: string[], io: CliIO) => runCli(["policy", "serve", ...argv], io) };

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
    // stderr carries the progress line only; stdout the one JSON document.
    expect(t.err()).toBe(`meshguard policy apply: pushing the tailnet part of ${file} to headscale (${control.configPath})...\n`);
    expect(code).toBe(0);
    expect(JSON.parse(t.out())).toEqual({ ok: true, applied: true, control: control.configPath });
    const stored = (await control.getPolicy())!;
    expect(stored).toContain('"grants"');
    expect(stored).toContain("// the tailnet part");
    expect(stored).not.toContain("meshguard");
    // What headscale holds carries the anchor grant (docs/revocation.md): revocations hold.
    const raw = execFileSync(binary, ["-c", control.configPath, "policy", "get"], { encoding: "utf8" });
    expect(raw).toContain('"src": ["100.100.100.100/32"]');
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
    const j = io();
    expect(await policyApply.run([file, "--control", control.configPath, "--headscale", binary, "--json"], j.io)).toBe(1);
    expect(JSON.parse(j.out()).error).toMatchObject({ code: "MESHGUARD_CONTROL_POLICY_REJECTED", message: expect.stringMatching(/^headscale did not apply the policy: .*tag:nobody-owns-this/) });
  });

  it("a server that cannot be reached is MESHGUARD_CONTROL_COMMAND_FAILED, not a refusal", async () => {
    const file = join(dir, "unreachable.hujson");
    writeFileSync(file, combined());
    const t = io();
    expect(await policyApply.run([file, "--control", join(dir, "no-such-config.yaml"), "--headscale", binary, "--json"], t.io)).toBe(1);
    expect(JSON.parse(t.out()).error).toMatchObject({ code: "MESHGUARD_CONTROL_COMMAND_FAILED", message: expect.stringMatching(/^headscale did not apply the policy: /) });
  });

  it("--dry-run checks the file and prints the tailnet part; an unreadable file exits 1", async () => {
    const file = join(dir, "dry.hujson");
    writeFileSync(file, combined());
    const t = io();
    expect(await policyApply.run([file, "--dry-run"], t.io)).toBe(0);
    expect(t.out()).toContain('"grants"');
    expect(t.out()).not.toContain("meshguard");
    const missing = io();
    expect(await policyApply.run([join(dir, "missing.hujson"), "--dry-run", "--json"], missing.io)).toBe(1);
    expect(JSON.parse(missing.out()).error).toMatchObject({ code: "MESHGUARD_POLICY_FILE_UNREADABLE" });
  });

  it("applyTailnetPolicy with a LocalControl uses setPolicy; a meshguard-only file has nothing to apply", async () => {
    const part = await applyTailnetPolicy(combined(), control);
    expect(part).not.toContain("meshguard");
    await expect(applyTailnetPolicy(JSON.stringify({ version: 1, rules: [] }), control)).rejects.toThrow(/no tailnet part/);
  });

  it("usage errors exit 2", async () => {
    const t = io();
    expect(await policyApply.run([], t.io)).toBe(2);
    expect(t.err()).toContain("usage: meshguard policy apply FILE --control CONFIG");
    const noControl = io();
    expect(await policyApply.run(["policy.hujson", "--json"], noControl.io)).toBe(2);
    expect(JSON.parse(noControl.out()).error).toMatchObject({ code: "MESHGUARD_USAGE", message: "--control CONFIG or --db URL|VAR is required (or --dry-run)" });
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
    expect(await policyServe.run(["--keygen", key, "--json"], again.io)).toBe(1);
    expect(again.err()).toMatch(/exists/);
    expect(JSON.parse(again.out()).error).toMatchObject({ code: "MESHGUARD_INVALID_OPTIONS" });
    expect(readFileSync(`${key}.pub`, "utf8")).toBe(pub);
  });

  it("serving needs FILE, --key and --control", async () => {
    const t = io();
    expect(await policyServe.run(["policy.hujson"], t.io)).toBe(2);
    expect(t.err()).toMatch(/expected FILE, --key KEY and --control URL/);
    expect(await policyServe.run(["policy.hujson", "--key", "k", "--control", control.url, "--port", "99999"], io().io)).toBe(2);
  });

  it("stopped before it serves: exit 130, no error", async () => {
    const key = join(dir, "stop.key");
    expect(await policyServe.run(["--keygen", key], io().io)).toBe(0);
    const file = join(dir, "served.hujson");
    writeFileSync(file, JSON.stringify({ version: 1, rules: [] }));
    const t = io();
    expect(await policyServe.run([file, "--key", key, "--control", control.url], { ...t.io, signal: AbortSignal.abort() })).toBe(130);
    expect(t.out()).toBe("");
  });
});
