// The observability sections of the gateway config (telemetry, log, alerts,
// retention.pruneEvery) as a person writes them: mistakes named with
// file:line:column, alert rules naming buckets or providers that do not
// exist refused at start; and the JSON log's own guarantees: a file
// destination relative to the config, and no provider key in any line
// whatever a message carries.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { afterAll, describe, expect, it } from "vitest";
import { ErrorCode } from "../../src/errors.js";
import { GatewayConfigError, parseGatewayConfig, startGateway } from "../../src/gateway/index.js";
import { createGatewayLog } from "../../src/gateway/obs/log.js";
import { KeyScrubber } from "../../src/gateway/scrub.js";

const dir = mkdtempSync(join(tmpdir(), "mg-gwobscfg-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const KEY = "sk-obs-config-SECRET-key-1234";
const PROVIDER = `"providers": { "openai": { "baseUrl": "http://127.0.0.1:9/v1", "format": "openai", "models": ["gpt-*"] } }`;

function issues(body: string): string[] {
  try {
    parseGatewayConfig(`{\n  "policy": "p.hujson",\n  ${PROVIDER},\n${body}\n}`, { file: "gw.hujson", baseDir: dir });
  } catch (err) {
    expect(err).toBeInstanceOf(GatewayConfigError);
    return (err as GatewayConfigError).issues.map((i) => `${i.line}:${i.column} ${i.path}: ${i.message}`);
  }
  throw new Error("expected the config to be refused");
}

describe("config", () => {
  it("a good config: defaults filled in, the log file relative to the config file", () => {
    const cfg = parseGatewayConfig(
      `{ "policy": "p.hujson", ${PROVIDER}, "telemetry": { "traces": true }, "log": { "destination": "logs/gw.jsonl" }, "retention": { "maxAge": "7d", "pruneEvery": "10m" },
         "alerts": { "webhooks": [{ "name": "ops", "url": "http://127.0.0.1:9/a" }], "rules": [{ "name": "d", "kind": "denials" }] } }`,
      { file: join(dir, "gw.hujson") },
    );
    expect(cfg.telemetry).toEqual({ metrics: true, processMetrics: true, traces: true });
    expect(cfg.log).toEqual({ level: "info", access: false, destination: join(dir, "logs/gw.jsonl") });
    expect(cfg.retention).toEqual({ mode: "full", maxAge: "7d", pruneEvery: "10m" });
    expect(cfg.alerts!.webhooks[0]).toMatchObject({ format: "json", retries: 3, timeout: 5000 });
    expect(cfg.alerts!.rules[0]).toEqual({ name: "d", kind: "denials", count: 5, window: "10m", per: "node", cooldown: "1h" });
  });

  it("every wrong setting is named with its line and column", () => {
    const got = issues(`  "telemetry": { "trace": true },
  "log": { "level": "loud" },
  "retention": { "pruneEvery": "500ms" },
  "alerts": { "webhooks": [{ "name": "ops", "url": "http://127.0.0.1:9/a", "format": "teams" }], "rules": [{ "name": "s", "kind": "usage_spike", "factor": 1 }] },`);
    expect(got.sort((a, b) => Number(a.split(":")[0]) - Number(b.split(":")[0]))).toEqual([
      expect.stringMatching(/^4:\d+ telemetry: unknown setting "trace"/),
      expect.stringMatching(/^5:\d+ log\.level: must be one of trace, debug, info, warn, error, fatal, silent/),
      expect.stringMatching(/^6:\d+ retention\.pruneEvery: must be at least 1s/),
      expect.stringMatching(/^7:\d+ alerts\.webhooks\[0\]\.format: must be "slack"/),
      expect.stringMatching(/^7:\d+ alerts\.rules\[0\]\.factor: must be more than 1/),
    ]);
  });

  it("an alert rule naming a bucket or a provider the config does not have fails the start", async () => {
    writeFileSync(join(dir, "p.hujson"), JSON.stringify({ version: 1, rules: [] }));
    const start = (rules: unknown[]) =>
      startGateway({
        config: {
          policy: join(dir, "p.hujson"),
          dataDir: join(dir, "data"),
          loopback: { listen: "127.0.0.1:0", principal: "tag:x" },
          providers: { openai: { baseUrl: "http://127.0.0.1:9/v1", format: "openai", models: ["gpt-*"] } },
          quotas: { daily: { unit: "tokens", capacity: 10, refill: "10/day" } },
          alerts: { webhooks: [{ name: "ops", url: "http://127.0.0.1:9/a" }], rules: rules as never },
        },
        baseDir: dir,
      });
    await expect(start([{ name: "b", kind: "bucket", buckets: ["daily", "weekly"] }])).rejects.toMatchObject({ code: ErrorCode.GATEWAY_CONFIG_INVALID, message: expect.stringMatching(/alerts\.rules\[0\]\.buckets: "weekly" is not a bucket under "quotas"/) });
    await expect(start([{ name: "u", kind: "upstream_errors", providers: ["anthropic"] }])).rejects.toMatchObject({ message: expect.stringMatching(/"anthropic" is not a configured provider/) });
  });
});

describe("the JSON log", () => {
  it("removes provider keys from every line, messages, fields and error causes alike", () => {
    const out: string[] = [];
    const log = createGatewayLog(undefined, new KeyScrubber([KEY]), new Writable({ write: (c, _e, cb) => (out.push(String(c)), cb()) }));
    log.logger.warn({ err: new Error(`upstream said: bad key ${KEY}`, { cause: new Error(KEY) }), header: `Bearer ${KEY}` }, `refused ${KEY}`);
    log.logger.info("no secret here");
    const text = out.join("");
    expect(text).not.toContain(KEY);
    expect(text.match(/\[provider key redacted\]/g)!.length).toBeGreaterThanOrEqual(3);
    const lines = text.split("\n").filter(Boolean).map((l) => JSON.parse(l));
    expect(lines.map((l) => [l.level, l.msg])).toEqual([
      [40, "refused [provider key redacted]"],
      [30, "no secret here"],
    ]);
  });

  it("writes to the configured file and flushes it on close; silent without a log section or stream", async () => {
    const file = join(dir, "out", "gw.jsonl");
    const log = createGatewayLog({ level: "warn", access: true, destination: file }, new KeyScrubber([]));
    log.logger.info("below the level");
    log.logger.warn({ n: 1 }, "kept");
    await log.close();
    const lines = readFileSync(file, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ level: 40, msg: "kept", n: 1, name: "meshguard-gateway" });
    expect(createGatewayLog(undefined, new KeyScrubber([])).logger.level).toBe("silent");
  });
});
