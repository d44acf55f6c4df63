// The gateway's observability end to end, through its loopback listener
// (a configured admin principal; the tailnet's part — who may read metrics
// and exports — is obs-tailnet.test.ts): Prometheus metrics after known
// requests, GenAI spans captured with the SDK's in-memory exporter, JSON
// log lines that parse and hold no key, alerts received by a local webhook,
// the retention job, and exports as CSV and JSON lines.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import Anthropic from "@anthropic-ai/sdk";
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { SpanKind, SpanStatusCode } from "@opentelemetry/api";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startLlmSim, type LlmSim } from "../../bench/lib/llm-sim.mjs";
import { startGateway, type GatewayHandle, type LogRecord } from "../../src/gateway/index.js";
import { CLIENT_KEY, PROVIDER_KEY, PROVIDERS } from "./gateway-tailnet.js";
import { record } from "./fixtures-records.js";
import { hookServer, type HookServer } from "./hook-server.js";

let dir: string;
let sim: LlmSim;
let echo: http.Server;
let alerts: HookServer;
let gw: GatewayHandle;
const exporter = new InMemorySpanExporter();
const tracerProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
/** Every JSON log line the gateway wrote. */
const logText: string[] = [];

const BUCKET_CAPACITY = 600; // tokens

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "mg-gwobs-"));
  writeFileSync(
    join(dir, "policy.hujson"),
    JSON.stringify({
      version: 3,
      rules: [{ id: "local", src: ["tag:local"], llm: { model: ["openai/gpt-4o*", "anthropic/*", "echo/*"] } }],
      gateway: { roles: [{ src: ["tag:local"], role: "admin", quotas: ["small"] }] },
    }),
  );
  sim = await startLlmSim({ key: PROVIDER_KEY, outputTokens: 12, chunks: 3 });
  // An upstream that refuses the key it is sent, echoing it (as providers do).
  echo = http.createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      res.writeHead(401, { "content-type": "application/json" });
      res.end(JSON.stringify({ error: { message: `Incorrect API key provided: ${req.headers.authorization}`, type: "invalid_request_error" } }));
    });
  });
  await new Promise<void>((r) => echo.listen(0, "127.0.0.1", r));
  alerts = await hookServer(() => ({ raw: "ok" }), "/alerts");
  gw = await startGateway({
    config: {
      policy: join(dir, "policy.hujson"),
      dataDir: join(dir, "data"),
      loopback: { listen: "127.0.0.1:0", principal: "tag:local" },
      providers: {
        ...PROVIDERS(sim.url),
        echo: { baseUrl: `http://127.0.0.1:${(echo.address() as { port: number }).port}/v1`, format: "openai", key: { env: "SIM_PROVIDER_KEY" }, models: ["echo-*"] },
      },
      quotas: { small: { unit: "tokens", capacity: BUCKET_CAPACITY, refill: "1/month", per: "global" } },
      // A guardrail that cannot be reached, skipped (fail open) on Anthropic calls: a hook failure each.
      hooks: { pre: [{ name: "guardrail", url: "http://127.0.0.1:9/guard", failure: "open", models: ["anthropic/*"] }] },
      retention: { mode: "full", maxAge: "1h", pruneEvery: "1s" },
      telemetry: { traces: true },
      log: { level: "info", access: true },
      alerts: {
        webhooks: [{ name: "ops", url: `${alerts.url}/alerts`, format: "slack" }],
        rules: [
          { name: "denials", kind: "denials", count: 2 },
          { name: "budget", kind: "bucket", percent: 50 },
          { name: "upstream", kind: "upstream_errors", rate: 0.5, minRequests: 3, providers: ["openai"] },
        ],
      },
    },
    env: { SIM_PROVIDER_KEY: PROVIDER_KEY },
    telemetry: {
      tracerProvider,
      log: new Writable({
        write(chunk, _enc, cb) {
          logText.push(String(chunk));
          cb();
        },
      }),
    },
    onWarning: () => {},
  });
});
afterAll(async () => {
  await gw?.close();
  await sim?.close();
  await alerts?.close();
  echo?.close();
  rmSync(dir, { recursive: true, force: true });
});

const oai = () => new OpenAI({ baseURL: `${gw.loopbackUrl}/v1`, apiKey: CLIENT_KEY, maxRetries: 0 });
const ant = () => new Anthropic({ baseURL: gw.loopbackUrl, apiKey: CLIENT_KEY, maxRetries: 0 });
const msg = [{ role: "user" as const, content: "how many tokens is this?" }];

async function records(): Promise<LogRecord[]> {
  await gw.store!.flush();
  return (await gw.store!.queryLogs({ limit: 1000 })).records;
}

/** One sample of the exposition text: `name{labels} value`, labels in any order. */
function sample(text: string, name: string, labels: Record<string, string>): number | undefined {
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    const m = /^[^{ ]+(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) continue;
    const got = Object.fromEntries([...(m[1] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => got[k] === v) && Object.keys(got).length === Object.keys(labels).length) return Number(m[2]);
  }
  return undefined;
}

async function metricsText(path = "/metrics"): Promise<string> {
  const r = await fetch(`${gw.loopbackUrl}${path}`);
  expect(r.status).toBe(200);
  expect(r.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
  return r.text();
}

async function until(cond: () => boolean | Promise<boolean>, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error("timed out waiting");
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A minimal RFC 4180 reader, written apart from the gateway's writer so the test checks it. */
function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let cell = "";
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') (cell += '"'), i++;
      else if (c === '"') quoted = false;
      else cell += c;
    } else if (c === '"') quoted = true;
    else if (c === ",") row.push(cell), (cell = "");
    else if (c === "\r" && text[i + 1] === "\n") {
      row.push(cell);
      rows.push(row);
      (row = []), (cell = ""), i++;
    } else cell += c;
  }
  return rows;
}

describe("what a run of known requests shows", () => {
  const ids: Record<string, string> = {};

  beforeAll(async () => {
    const a = await oai().chat.completions.create({ model: "gpt-4o-mini", max_tokens: 7, messages: msg }).withResponse();
    ids.chat = a.response.headers.get("x-meshguard-request-id")!;
    await oai().chat.completions.create({ model: "gpt-4o-mini", max_tokens: 7, messages: msg });
    const stream = await ant().messages.create({ model: "claude-haiku-4-5", max_tokens: 20, messages: msg, stream: true });
    for await (const _ of stream) void _;
    await expect(oai().chat.completions.create({ model: "gpt-4.1", max_tokens: 5, messages: msg })).rejects.toMatchObject({ status: 403 });
    await expect(oai().chat.completions.create({ model: "gpt-4o-fail-500", max_tokens: 5, messages: msg })).rejects.toMatchObject({ status: 500 });
    // Larger than the bucket can ever hold: refused for good (403), before the upstream.
    await expect(oai().chat.completions.create({ model: "gpt-4o-mini", max_tokens: 5000, messages: msg })).rejects.toMatchObject({ status: 403 });
    await expect(oai().chat.completions.create({ model: "echo-model", max_tokens: 5, messages: msg })).rejects.toMatchObject({ status: 401 });
  });

  it("metrics: requests by provider, model, operation and outcome; tokens, cost, latency histograms, rejections, denials, upstream errors, hook failures", async () => {
    const recs = await records();
    const text = await metricsText();
    const okChats = recs.filter((r) => r.model === "gpt-4o-mini" && r.outcome === "ok");
    expect(okChats).toHaveLength(2);
    expect(sample(text, "meshguard_gateway_requests_total", { provider: "openai", model: "gpt-4o-mini", operation: "openai.chat", outcome: "ok" })).toBe(2);
    expect(sample(text, "meshguard_gateway_requests_total", { provider: "anthropic", model: "claude-haiku-4-5", operation: "anthropic.messages", outcome: "ok" })).toBe(1);
    expect(sample(text, "meshguard_gateway_requests_total", { provider: "openai", model: "gpt-4.1", operation: "openai.chat", outcome: "denied" })).toBe(1);
    expect(sample(text, "meshguard_gateway_requests_total", { provider: "openai", model: "gpt-4o-mini", operation: "openai.chat", outcome: "quota" })).toBe(1);
    // Tokens and cost are what the records say the requests used.
    const sum = (f: (r: LogRecord) => number) => okChats.reduce((s, r) => s + f(r), 0);
    expect(sum((r) => r.usage!.outputTokens)).toBe(14);
    expect(sample(text, "meshguard_gateway_tokens_total", { provider: "openai", model: "gpt-4o-mini", type: "output" })).toBe(14);
    expect(sample(text, "meshguard_gateway_tokens_total", { provider: "openai", model: "gpt-4o-mini", type: "input" })).toBe(sum((r) => r.usage!.inputTokens));
    expect(sample(text, "meshguard_gateway_cost_usd_total", { provider: "openai", model: "gpt-4o-mini" })).toBeCloseTo(sum((r) => r.costUsd!), 12);
    expect(sum((r) => r.costUsd!)).toBeGreaterThan(0);
    // Histograms: every request's duration; added latency for those that went upstream; TTFT for the stream.
    expect(sample(text, "meshguard_gateway_request_duration_seconds_count", { provider: "openai", operation: "openai.chat" })).toBe(recs.filter((r) => r.provider === "openai").length);
    expect(sample(text, "meshguard_gateway_added_latency_seconds_count", { provider: "openai", operation: "openai.chat" })).toBe(3); // two ok, one upstream 500
    expect(sample(text, "meshguard_gateway_time_to_first_token_seconds_count", { provider: "anthropic", operation: "anthropic.messages" })).toBe(1);
    const overhead = recs.find((r) => r.id === ids.chat)!.overheadMs / 1000;
    const le = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1].find((b) => overhead <= b)!;
    expect(sample(text, "meshguard_gateway_added_latency_seconds_bucket", { provider: "openai", operation: "openai.chat", le: String(le) })).toBeGreaterThanOrEqual(1);
    expect(sample(text, "meshguard_gateway_quota_rejections_total", { provider: "openai", status: "403" })).toBe(1);
    expect(sample(text, "meshguard_gateway_policy_denials_total", { provider: "openai", rule: "" })).toBe(1);
    expect(sample(text, "meshguard_gateway_upstream_errors_total", { provider: "openai", status: "500" })).toBe(1);
    expect(sample(text, "meshguard_gateway_upstream_errors_total", { provider: "echo", status: "401" })).toBe(1);
    expect(sample(text, "meshguard_gateway_hook_failures_total", { hook: "guardrail", phase: "pre", failure: "unreachable" })).toBe(1);
    expect(sample(text, "meshguard_gateway_requests_in_flight", {})).toBe(1); // the scrape itself
    expect(text).toMatch(/^process_cpu_user_seconds_total /m);
    // The admin API serves the same registry.
    expect(sample(await metricsText("/meshguard/v1/metrics"), "meshguard_gateway_requests_total", { provider: "openai", model: "gpt-4o-mini", operation: "openai.chat", outcome: "ok" })).toBe(2);
  });

  it("spans: one per request, GenAI attributes, errors marked", async () => {
    const spans = exporter.getFinishedSpans();
    const recs = await records();
    expect(spans.length).toBe(recs.length);
    const chat = spans.find((s) => s.attributes["meshguard.request.id"] === ids.chat)!;
    const rec = recs.find((r) => r.id === ids.chat)!;
    expect(chat.name).toBe("chat gpt-4o-mini");
    expect(chat.kind).toBe(SpanKind.CLIENT);
    expect(chat.attributes).toMatchObject({
      "gen_ai.operation.name": "chat",
      "gen_ai.provider.name": "openai",
      "gen_ai.system": "openai",
      "gen_ai.request.model": "gpt-4o-mini",
      "gen_ai.request.max_tokens": 7,
      "gen_ai.usage.input_tokens": rec.usage!.inputTokens,
      "gen_ai.usage.output_tokens": 7,
      "meshguard.session.id": rec.sessionId,
      "gen_ai.response.finish_reasons": ["length"],
      "http.response.status_code": 200,
      "meshguard.caller.node": "loopback",
    });
    expect(chat.attributes["error.type"]).toBeUndefined();
    // The gateway's idle-gap session is no conversation id of the client's (the conventions forbid a made-up one).
    expect(chat.attributes["gen_ai.conversation.id"]).toBeUndefined();
    expect(chat.status.code).toBe(SpanStatusCode.UNSET);
    // The span covers the request: its duration is the record's.
    const ms = (t: [number, number]) => t[0] * 1000 + t[1] / 1e6;
    expect(ms(chat.endTime) - ms(chat.startTime)).toBeCloseTo(rec.durationMs, 0);
    const stream = spans.find((s) => s.attributes["gen_ai.provider.name"] === "anthropic")!;
    expect(stream.attributes["gen_ai.response.time_to_first_chunk"]).toBeGreaterThan(0);
    expect(stream.attributes["gen_ai.request.stream"]).toBe(true);
    expect(stream.attributes["gen_ai.response.finish_reasons"]).toEqual(["end_turn"]);
    const denied = spans.find((s) => s.attributes["gen_ai.request.model"] === "gpt-4.1")!;
    expect(denied.attributes["error.type"]).toBe("denied");
    expect(denied.status.code).toBe(SpanStatusCode.ERROR);
    expect(denied.status.message).toMatch(/denied by policy/);
    expect(spans.find((s) => s.attributes["gen_ai.request.model"] === "gpt-4o-fail-500")!.attributes["error.type"]).toBe("500");
  });

  it("JSON log: every line parses (level, time, msg), access lines per request, warnings, no provider key anywhere", async () => {
    await until(() => logText.some((l) => l.includes('"request"')));
    const lines = logText.join("").split("\n").filter(Boolean);
    const parsed = lines.map((l) => JSON.parse(l) as Record<string, any>);
    for (const p of parsed) {
      expect(typeof p.level).toBe("number");
      expect(typeof p.time).toBe("number");
      expect(typeof p.msg).toBe("string");
      expect(p.name).toBe("meshguard-gateway");
    }
    expect(parsed.find((p) => p.msg === "gateway started")).toMatchObject({ level: 30, loopbackUrl: gw.loopbackUrl, providers: ["openai", "anthropic", "gemini", "echo"], metrics: true, alerts: true });
    const access = parsed.filter((p) => p.msg === "request");
    expect(access.length).toBe((await records()).length);
    expect(access.find((p) => p.request === ids.chat)).toMatchObject({ level: 30, model: "gpt-4o-mini", provider: "openai", status: 200, outcome: "ok", outputTokens: 7, node: "loopback", via: "loopback" });
    const refused = access.find((p) => p.provider === "echo")!;
    expect(refused.reason).toContain("[provider key redacted]");
    expect(parsed.some((p) => p.level === 40 && /pre hook "guardrail" could not be reached/.test(p.msg))).toBe(true);
    // Nothing carries a body or a header.
    expect(lines.join("\n")).not.toContain("how many tokens");
    expect(lines.join("\n")).not.toContain(PROVIDER_KEY);
    expect(lines.join("\n")).not.toContain(CLIENT_KEY);
  });

  it("alerts: denials by one identity, a bucket nearly spent, an upstream failing; Slack payloads to the webhook", async () => {
    // One more denial makes two for the loopback identity.
    await expect(oai().chat.completions.create({ model: "gpt-4.1", max_tokens: 5, messages: msg })).rejects.toMatchObject({ status: 403 });
    // One more failure: 2 of openai's 4 upstream calls in the window failed (the 500, this one).
    await expect(oai().chat.completions.create({ model: "gpt-4o-fail-503", max_tokens: 5, messages: msg })).rejects.toMatchObject({ status: 503 });
    // Spend past half the bucket.
    for (let i = 0; i < 20 && !(await gw.store!.listBuckets!()).some((b) => b.level < BUCKET_CAPACITY / 2); i++) {
      await oai().chat.completions.create({ model: "gpt-4o-mini", max_tokens: 12, messages: [{ role: "user", content: "x".repeat(200) }] });
    }
    const texts = () => alerts.received.map((r) => r.body.text as string);
    await until(() => ["*denials*", "*budget*", "*upstream*"].every((rule) => texts().some((t) => t.includes(rule))));
    for (const r of alerts.received) {
      expect(Object.keys(r.body).sort()).toEqual(["blocks", "text"]);
      expect(r.body.blocks[0].type).toBe("section");
    }
    expect(texts().find((t) => t.includes("*denials*"))).toMatch(/node:loopback was denied 2 time\(s\) within 10m/);
    expect(texts().find((t) => t.includes("*budget*"))).toMatch(/quota bucket small\/global is \d+(\.\d)?% spent/);
    expect(texts().find((t) => t.includes("*upstream*"))).toMatch(/provider openai: 2 of 4 upstream calls failed/);
    // Each fired once (cool-down 1h), and was logged and counted.
    for (const rule of ["denials", "budget", "upstream"]) expect(texts().filter((t) => t.includes(`*${rule}*`))).toHaveLength(1);
    expect(sample(await metricsText(), "meshguard_gateway_alerts_fired_total", { rule: "budget" })).toBe(1);
    expect(logText.join("").split("\n").filter(Boolean).map((l) => JSON.parse(l)).filter((p) => p.alert?.rule === "denials")).toHaveLength(1);
  });
});

describe("retention job and export", () => {
  const now = Date.now();

  it("the retention job deletes records past maxAge every pruneEvery and says so in the JSON log", async () => {
    const old = Array.from({ length: 3 }, (_, i) => record("old@example.com", now - 2 * 3_600_000 - i));
    for (const r of old) gw.store!.appendLog(r);
    await gw.store!.flush();
    await until(async () => (await gw.store!.queryLogs({ user: "old@example.com" })).records.length === 0, 5000);
    await until(() => logText.join("").includes("retention: deleted 3 log record(s)"));
    const line = logText.join("").split("\n").filter(Boolean).map((l) => JSON.parse(l)).find((p) => p.deleted === 3)!;
    expect(line.level).toBe(30);
    expect(Date.parse(line.before)).toBeGreaterThan(now - 3_600_000 - 5000);
    expect(sample(await metricsText(), "meshguard_gateway_log_records_pruned_total", {})).toBeGreaterThanOrEqual(3);
  });

  it("logs as CSV and JSON lines by time range; usage summed per day; formula-looking cells defused", async () => {
    const t = now - 30 * 60_000;
    const inRange = [
      record("erin@example.com", t, { model: "=HYPERLINK(\"http://x\",\"y\")", reason: 'said "no", twice\nthen stopped', costUsd: 0.25 }),
      record("erin@example.com", t + 1000, { costUsd: 0.5 }),
      record("frank@example.com", t + 2000, { usage: undefined, costUsd: undefined, outcome: "denied", status: 403 }),
    ];
    const outside = record("erin@example.com", t + 10_000);
    for (const r of [...inRange, outside]) gw.store!.appendLog(r);
    await gw.store!.flush();
    const range = `since=${t}&until=${new Date(t + 5000).toISOString()}`;

    const csv = await fetch(`${gw.loopbackUrl}/meshguard/v1/export/logs?${range}&format=csv`);
    expect(csv.status).toBe(200);
    expect(csv.headers.get("content-type")).toMatch(/^text\/csv/);
    const rows = parseCsv(await csv.text());
    const head = rows[0]!;
    expect(head.slice(0, 5)).toEqual(["id", "time", "session", "user", "node"]);
    expect(rows).toHaveLength(1 + inRange.length);
    const col = (row: string[], name: string) => row[head.indexOf(name)];
    const byId = new Map(rows.slice(1).map((r) => [col(r, "id"), r]));
    expect([...byId.keys()].sort()).toEqual(inRange.map((r) => r.id).sort());
    const first = byId.get(inRange[0]!.id)!;
    expect(col(first, "model")).toBe("'=HYPERLINK(\"http://x\",\"y\")");
    expect(col(first, "reason")).toBe('said "no", twice\nthen stopped');
    expect(col(first, "time")).toBe(new Date(t).toISOString());
    expect(col(first, "input_tokens")).toBe("100");
    expect(col(first, "cost_usd")).toBe("0.25");
    expect(col(first, "tags")).toBe("tag:agent");
    expect(col(byId.get(inRange[2]!.id)!, "input_tokens")).toBe("");

    const jsonl = await fetch(`${gw.loopbackUrl}/meshguard/v1/export/logs?${range}`);
    expect(jsonl.headers.get("content-type")).toMatch(/^application\/x-ndjson/);
    const lines = (await jsonl.text()).split("\n").filter(Boolean).map((l) => JSON.parse(l) as LogRecord);
    expect(lines.map((r) => r.id)).toEqual([...inRange].reverse().map((r) => r.id)); // newest first
    expect(lines[2]).toEqual(inRange[0]); // the whole record, bodies included

    const usage = await fetch(`${gw.loopbackUrl}/meshguard/v1/export/usage?${range}&format=csv`);
    const urows = parseCsv(await usage.text());
    expect(urows[0]).toEqual(["period", "user", "node", "provider", "model", "requests", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "cost_usd"]);
    const day = new Date(Math.floor(t / 86_400_000) * 86_400_000).toISOString();
    const erin = urows.filter((r) => r[1] === "erin@example.com" && r[4] === "claude-sonnet-4-5");
    expect(erin).toEqual([[day, "erin@example.com", "node-erin", "anthropic", "claude-sonnet-4-5", "1", "100", "20", "5", "1", "0.5"]]);
    const ujson = (await (await fetch(`${gw.loopbackUrl}/meshguard/v1/export/usage?${range}&period=hour&user=frank%40example.com`)).text()).split("\n").filter(Boolean).map((l) => JSON.parse(l));
    expect(ujson).toEqual([{ period: new Date(Math.floor(t / 3_600_000) * 3_600_000).toISOString(), user: "frank@example.com", node: "node-frank", provider: "anthropic", model: "claude-sonnet-4-5", requests: 1, inputTokens: 0, outputTokens: 0, cacheReadTokens: 0, cacheWriteTokens: 0, costUsd: 0 }]);
  });

  it("a bad query is a 400 naming what is wrong", async () => {
    const bad = async (q: string) => {
      const r = await fetch(`${gw.loopbackUrl}/meshguard/v1/export/logs?${q}`);
      expect(r.status).toBe(400);
      return ((await r.json()) as { error: { message: string } }).error.message;
    };
    expect(await bad("format=xml")).toMatch(/format: must be "jsonl"/);
    expect(await bad("since=yesterday")).toMatch(/since: "yesterday" is not a time/);
    expect(await bad("since=2000&until=1000")).toMatch(/since must be before until/);
    expect(await bad("period=day")).toMatch(/unknown query parameter\(s\) period/);
  });
});
