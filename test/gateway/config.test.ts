// The gateway config as a person writes it: HuJSON, every mistake reported
// as file:line:column with the setting's path, relative paths taken from
// the config file, and provider keys that are read at start and named (by
// variable or file) but never shown.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { ErrorCode, isMeshguardError } from "../../src/errors.js";
import { GatewayConfigError, loadGatewayConfig, parseGatewayConfig, startGateway } from "../../src/gateway/index.js";

const dir = mkdtempSync(join(tmpdir(), "mg-gwcfg-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const GOOD = `{
  // one provider is enough
  "policy": "policy.hujson",
  "providers": {
    "openai": {
      "baseUrl": "https://api.openai.com/v1",
      "format": "openai",
      "key": { "env": "OPENAI_API_KEY" },
      "models": ["gpt-4o", "gpt-4o-mini"],
      "prices": { "gpt-4o": { "input": 2.5, "output": 10 } },
    },
  },
}`;

function issues(text: string): string[] {
  try {
    parseGatewayConfig(text, { file: "gw.hujson", baseDir: dir });
  } catch (err) {
    expect(err).toBeInstanceOf(GatewayConfigError);
    expect((err as GatewayConfigError).code).toBe(ErrorCode.GATEWAY_CONFIG_INVALID);
    return (err as GatewayConfigError).issues.map((i) => `${i.line}:${i.column} ${i.path}: ${i.message}`);
  }
  throw new Error("expected the config to be refused");
}

describe("parsing", () => {
  it("a good config: defaults filled in, relative paths from the config's directory", () => {
    const cfg = parseGatewayConfig(GOOD, { file: join(dir, "gw.hujson") });
    expect(cfg.policy).toBe(join(dir, "policy.hujson"));
    expect(cfg.dataDir).toBe(join(dir, "meshguard-gateway"));
    expect(cfg.listen).toBe(80);
    expect(cfg.maxBodyBytes).toBe(32 << 20);
    expect(cfg.providers.openai).toMatchObject({ passthroughKey: false, timeout: 600_000 });
  });

  it("a syntax error points at its line and column", () => {
    expect(issues('{\n  "policy": "p",\n  "providers": { "x": }\n}')).toEqual([expect.stringMatching(/^3:23 : syntax error: expected a value/)]);
  });

  it("every wrong setting is listed with its path, line and column", () => {
    const text = `{
  "policy": "p.hujson",
  "listen": 0,
  "providers": {
    "Open AI": { "baseUrl": "https://x", "format": "openai", "models": ["m"] },
    "a": { "baseUrl": "ftp://x", "format": "bedrock", "models": [] },
    "b": { "baseUrl": "https://user:pw@x", "format": "openai", "key": "sk-inline-key", "models": ["m"] },
    "c": { "baseUrl": "https://x", "format": "openai", "key": { "env": "A", "file": "f" }, "models": ["m"], "colour": 1 },
  },
}`;
    const got = issues(text);
    expect(got).toEqual(
      expect.arrayContaining([
        "3:13 listen: must be a port, 1-65535",
        expect.stringMatching(/^5:16 providers\["Open AI"\]: a provider name is lower-case/),
        "6:23 providers.a.baseUrl: must be an http:// or https:// URL",
        expect.stringMatching(/^6:44 providers\.a\.format: must be "openai", "anthropic" or "gemini"/),
        expect.stringMatching(/^6:65 providers\.a\.models: list at least one model/),
        expect.stringMatching(/^7:23 providers\.b\.baseUrl: must not carry credentials/),
        expect.stringMatching(/^7:71 providers\.b\.key: must be \{ "env": "NAME" \} or \{ "file": "path" \}: a key is never written/),
        expect.stringMatching(/^8:63 providers\.c\.key: must be \{ "env": "NAME" \} or \{ "file": "path" \} \(exactly one\)/),
        '8:109 providers.c: unknown setting "colour"',
      ]),
    );
    // An inline key is refused, and the refusal does not repeat it.
    expect(got.join("\n")).not.toContain("sk-inline-key");
  });

  it("the sections of the other parts are validated by them, with positions", () => {
    const text = `{ "policy": "p", "providers": { "o": { "baseUrl": "https://x/v1", "format": "openai", "models": ["m"] } },
  "quotas": { "daily": { "unit": "eur", "capacity": 5, "refill": "5/day" } },
  "retention": { "mode": "forever" },
}`;
    const got = issues(text);
    expect(got).toEqual(expect.arrayContaining([expect.stringMatching(/^2:34 quotas\.daily\.unit: must be "usd"/), expect.stringMatching(/^3:26 retention\.mode: must be "full"/)]));
  });

  it("a missing file is named", async () => {
    const err = await loadGatewayConfig(join(dir, "nope.hujson")).catch((e) => e);
    expect(err).toBeInstanceOf(GatewayConfigError);
    expect(err.message).toContain("nope.hujson:1:1");
  });
});

describe("start-up refuses what cannot work, before it joins anything", () => {
  const write = (name: string, text: string) => (writeFileSync(join(dir, name), text), join(dir, name));
  write("policy.hujson", '{ "version": 1, "rules": [] }');

  it("a provider key that cannot be read names the variable or file, never a key", async () => {
    const cfg = write("gw.hujson", GOOD);
    const e1 = await startGateway({ config: cfg, env: {} }).catch((e) => e);
    expect(isMeshguardError(e1, ErrorCode.GATEWAY_KEY_UNAVAILABLE)).toBe(true);
    expect(e1.message).toContain("OPENAI_API_KEY, which is not set");
    const e2 = await startGateway({ config: write("gw2.hujson", GOOD.replace('{ "env": "OPENAI_API_KEY" }', '{ "file": "missing.key" }')), env: {} }).catch((e) => e);
    expect(isMeshguardError(e2, ErrorCode.GATEWAY_KEY_UNAVAILABLE)).toBe(true);
    expect(e2.message).toContain(join(dir, "missing.key"));
  });

  it("a broken policy file fails the start with the policy's own error", async () => {
    write("bad-policy.hujson", '{ "version": 1, "rules": [ { "id": "x", "effect": "maybe" } ] }');
    const cfg = write("gw3.hujson", GOOD.replace('"policy.hujson"', '"bad-policy.hujson"'));
    const e = await startGateway({ config: cfg, env: { OPENAI_API_KEY: "sk-test-key-123456" } }).catch((err) => err);
    expect(isMeshguardError(e, ErrorCode.POLICY_INVALID)).toBe(true);
  });

  it("nothing to listen on is an error that says what to add", async () => {
    const e = await startGateway({ config: write("gw4.hujson", GOOD), env: { OPENAI_API_KEY: "sk-test-key-123456" } }).catch((err) => err);
    expect(isMeshguardError(e, ErrorCode.INVALID_OPTIONS)).toBe(true);
    expect(e.message).toMatch(/nothing to listen on/);
  });

  it("a policy naming a quota bucket the config does not define", async () => {
    write("v3.hujson", '{ "version": 3, "rules": [], "gateway": { "roles": [ { "src": ["*"], "role": "user", "quotas": ["daily"] } ] } }');
    const cfg = write("gw5.hujson", GOOD.replace('"policy.hujson"', '"v3.hujson"'));
    const e = await startGateway({ config: cfg, env: { OPENAI_API_KEY: "sk-test-key-123456" }, loopback: { listen: "127.0.0.1:0", principal: "tag:x" } }).catch((err) => err);
    expect(isMeshguardError(e, ErrorCode.GATEWAY_CONFIG_INVALID)).toBe(true);
    expect(e.message).toContain('"daily"');
  });
});
