// The HTTP connectors' pieces that need no tailnet: the config (errors
// with path, line and column), the path checks, the credential kinds and
// the streamed scrubbing of secrets split across chunks.
import { describe, expect, it } from "vitest";
import { parseGatewayConfig } from "../../src/gateway/config.js";
import { pathRefusal } from "../../src/gateway/connectors/http.js";
import { CREDENTIAL_KINDS } from "../../src/gateway/credentials/registry.js";
import { CredentialUnavailableError } from "../../src/gateway/credentials/types.js";
import { readKey } from "../../src/gateway/keys.js";
import { KEY_REDACTED, KeyScrubber, StreamScrub } from "../../src/gateway/scrub.js";
import { isMeshguardError } from "../../src/errors.js";
import type { Caller } from "../../src/gateway/types.js";

const base = (connectors: string) => `{
  "policy": "p.hujson",
  "providers": { "o": { "baseUrl": "https://api.openai.com/v1", "format": "openai", "models": ["*"] } },
  "connectors": ${connectors}
}`;

function configError(connectors: string): string {
  try {
    parseGatewayConfig(base(connectors), { file: "gw.hujson", baseDir: "/etc/mg" });
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error("the config was accepted");
}

describe("connectors config", () => {
  it("accepts the documented kinds and resolves key files against the config's directory", () => {
    const cfg = parseGatewayConfig(
      base(`{ "http": {
        "github": { "baseUrl": "https://api.github.com", "auth": { "type": "bearer", "token": { "env": "GITHUB_TOKEN" } } },
        "crm": { "baseUrl": "https://crm.example.com/api/v2", "auth": { "type": "apiKey", "key": { "file": "keys/crm" }, "header": "X-Api-Key" }, "prefix": "/tools" },
        "jira": { "baseUrl": "https://jira.example.com", "auth": { "type": "basic", "username": "svc", "password": { "env": "JIRA_PW" } } },
      } }`),
      { file: "gw.hujson", baseDir: "/etc/mg" },
    );
    expect(cfg.connectors!.prefix).toBe("/v1/connectors");
    expect(cfg.connectors!.http.crm!.auth).toEqual({ type: "apiKey", key: { file: "/etc/mg/keys/crm" }, header: "X-Api-Key" });
    expect(cfg.connectors!.http.github!.auth).toEqual({ type: "bearer", token: { env: "GITHUB_TOKEN" }, header: "Authorization", scheme: "Bearer" });
  });

  it.each([
    [`{ "http": { "gh": { "baseUrl": "https://x", "auth": { "type": "bearer", "token": "ghp_inline" } } } }`, /gw\.hujson:\d+:\d+: connectors\.http\.gh\.auth\.token: must be \{ "env": "NAME" \} or \{ "file": "path" \}/],
    [`{ "http": { "gh": { "baseUrl": "https://x", "auth": { "type": "oauth9" } } } }`, /connectors\.http\.gh\.auth\.type: unknown credential type "oauth9": use one of "bearer", "apiKey", "basic"/],
    [`{ "http": { "gh": { "baseUrl": "https://x", "auth": { "type": "apiKey", "key": { "env": "K" } } } } }`, /give exactly one of "header": "X-Api-Key" or "query": "api_key"/],
    [`{ "http": { "gh": { "baseUrl": "https://user:pw@x", "auth": { "type": "bearer", "token": { "env": "T" } } } } }`, /connectors\.http\.gh\.baseUrl: must not carry credentials/],
    [`{ "http": { "Bad/Name": { "baseUrl": "https://x", "auth": { "type": "bearer", "token": { "env": "T" } } } } }`, /a connector name is lower-case letters/],
    [`{ "prefix": "/v1/../x", "http": { "gh": { "baseUrl": "https://x", "auth": { "type": "bearer", "token": { "env": "T" } } } } }`, /connectors\.prefix/],
    [`{ "http": { "gh": { "baseUrl": "https://x", "auth": { "type": "bearer", "token": { "env": "T" }, "extra": 1 } } } }`, /unknown setting "extra"/],
  ])("refuses %s with a located message", (text, re) => {
    expect(configError(text)).toMatch(re);
  });
});

describe("path checks", () => {
  it.each(["/../x", "/a/..", "/%2e%2e/x", "/%2E./x", "/.", "/a/%2e", "/a%2Fb", "/a%2fb", "/a%5Cb", "/a\\b"])("refuses %s", (p) => {
    expect(pathRefusal(p)).toBeDefined();
  });
  it.each(["", "/", "/repos/acme/app", "/a..b/c", "/a/.well-known/x", "/a%252e%252e/b", "/%20x"])("passes %s", (p) => {
    expect(pathRefusal(p)).toBeUndefined();
  });
});

describe("static credential kinds", () => {
  const env = (vars: Record<string, string>) => ({ connector: "c", baseUrl: "https://x", readSecret: (s: { env?: string; file?: string }, what: string) => readKey(s, what, vars), dataDir: "/tmp", now: Date.now, warn: () => {} });
  const ctx = { connector: "c", caller: {} as Caller };
  it("inject what they say and list their secrets", async () => {
    const b = await CREDENTIAL_KINDS.bearer!.create({ type: "bearer", token: { env: "T" }, header: "Authorization", scheme: "token" } as never, env({ T: " t0k \n" }));
    expect(await b.resolve(ctx)).toEqual({ headers: { Authorization: "token t0k" }, secrets: ["t0k"] });
    const q = await CREDENTIAL_KINDS.apiKey!.create({ type: "apiKey", key: { env: "K" }, query: "key" } as never, env({ K: "a+b" }));
    expect(await q.resolve(ctx)).toMatchObject({ query: { key: "a+b" } });
    expect(q.secrets()).toEqual(["a+b", "a%2Bb"]);
    const basic = await CREDENTIAL_KINDS.basic!.create({ type: "basic", username: "u", password: { env: "P" } } as never, env({ P: "pw" }));
    expect((await basic.resolve(ctx)).headers).toEqual({ Authorization: `Basic ${Buffer.from("u:pw").toString("base64")}` });
  });
  it("a missing secret fails naming the variable, never a value", async () => {
    const err = await CREDENTIAL_KINDS.bearer!.create({ type: "bearer", token: { env: "NOPE" }, header: "Authorization", scheme: "Bearer" } as never, env({})).catch((e: unknown) => e);
    expect(isMeshguardError(err, "MESHGUARD_GATEWAY_KEY_UNAVAILABLE")).toBe(true);
    expect((err as Error).message).toMatch(/connector c .*NOPE, which is not set/);
  });
  it("CredentialUnavailableError carries its code and status", () => {
    const e = new CredentialUnavailableError("no token for alice yet", 401, { hint: "authorize at /connectors/x" });
    expect(isMeshguardError(e, "MESHGUARD_CREDENTIAL_UNAVAILABLE")).toBe(true);
    expect(e.status).toBe(401);
  });
});

describe("StreamScrub", () => {
  const secrets = ["s3cr3t-value", "tok"];
  // Every way of cutting a text into pieces of 1..n bytes must give the same result as scrubbing it whole.
  it("removes a secret split across any chunk boundary", () => {
    const text = Buffer.from(`a s3cr3t-value b tok c s3cr3t-values3cr3t-value tok`);
    const whole = new KeyScrubber(secrets).bytes(text).toString();
    expect(whole).not.toMatch(/s3cr3t|tok/);
    for (let size = 1; size <= text.length; size++) {
      const s = new StreamScrub(new KeyScrubber(secrets));
      const out: Buffer[] = [];
      for (let i = 0; i < text.length; i += size) out.push(s.push(text.subarray(i, i + size)));
      out.push(s.end());
      expect(Buffer.concat(out).toString(), `chunks of ${size}`).toBe(whole);
    }
  });
  it("passes clean data unchanged, and holds back less than the longest secret", () => {
    const s = new StreamScrub(new KeyScrubber(secrets));
    expect(s.push(Buffer.from("hello world, nothing here")).toString()).toBe("hello world, n"); // 11 bytes held: the longest secret (12) minus one
    expect(s.end().toString()).toBe("othing here");
    expect(KEY_REDACTED).toBe("[provider key redacted]");
  });
});
