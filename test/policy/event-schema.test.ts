/**
 * docs/decision-event.schema.json (the published shape of a decision event,
 * for consumers of audit logs in any language) is generated from the zod
 * schema; this test fails when it is stale. Regenerate with:
 *   MESHGUARD_UPDATE_SCHEMA=1 vitest run --config test/vitest.config.ts test/policy/event-schema.test.ts
 */

import { readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { expect, test } from "vitest";
import { zodToJsonSchema } from "zod-to-json-schema";

import { DecisionEventSchema } from "../../src/policy/event-schema.js";
import { decisionEvent, parseRequest, readDecisionEvents, type DecisionEvent } from "../../src/policy/index.js";

const FILE = fileURLToPath(new URL("../../docs/decision-event.schema.json", import.meta.url));

function generate(): string {
  const schema = zodToJsonSchema(DecisionEventSchema, { name: "DecisionEvent", $refStrategy: "none", errorMessages: false });
  const doc = { ...schema, title: "meshguard decision event (version 2)", description: "One policy decision, as the guard's `decision` event, an audit line and the gateway's log carry it. See docs/guard.md, \"Decision events\"." };
  return JSON.stringify(doc, null, 2) + "\n";
}

test("docs/decision-event.schema.json is generated from the zod schema and up to date", () => {
  const want = generate();
  if (process.env.MESHGUARD_UPDATE_SCHEMA === "1") writeFileSync(FILE, want);
  let have = "";
  try {
    have = readFileSync(FILE, "utf8");
  } catch {
    /* missing: reported below */
  }
  expect(have, "docs/decision-event.schema.json is stale: regenerate it with MESHGUARD_UPDATE_SCHEMA=1 (see the top of this test)").toBe(want);
});

/** Every field of every target kind set, so a field the schema lacks (or has extra) shows. */
function maximal(): DecisionEvent[] {
  const full = (line: string, extras: Parameters<typeof parseRequest>[1] = {}, reveal = true) =>
    decisionEvent(
      { tags: ["tag:a"], node: "n", user: "u@", ip: "100.64.0.1", owners: ["o@"] },
      (() => {
        const t = parseRequest(line, extras);
        return t.kind === "http" || t.kind === "tcp" || t.kind === "udp" ? { ...t, resolvedIp: "10.0.0.1", peer: { name: "p", tags: ["tag:p"] } } : t;
      })(),
      { effect: "approve", ruleId: "r", reason: "why" },
      {
        layer: "gateway",
        outcome: "allow",
        latencyUs: 1,
        approval: { approved: true, by: "b@", ms: 3, reason: "ok" },
        policyHash: "h",
        requestId: "q",
        via: { gateway: "http://ai-gateway", connector: "github" },
        usage: { inputTokens: 1, outputTokens: 2, cachedTokens: 0, costUsd: 0.1, estimated: true },
        token: { op: "revoke", jti: "j", exp: 2, task: "t", subject: "s", sub: "n", before: 1, revoked: 1 },
        ...(reveal ? { reveal: { query: true, headers: ["x-a"], mcpArgs: true } } : {}),
      },
    );
  return [
    full("GET https://h/p?x=1", { headers: { "x-a": "1" }, bodySize: 3, peerTags: ["tag:p"] }),
    full("GET https://h/p?x=1", { headers: { "x-a": "1" } }, false),
    full('mcp s t {"a":1}', {}, false),
    full("tcp h:1 tailnet", { peerTags: ["tag:p"] }),
    full('mcp s t {"a":1}'),
    full("mcp-resource s file:///a"),
    full('mcp-prompt s p {"a":"x"}'),
    full("llm p/m 5"),
    full("dns n.example TXT @127.0.0.1:5353"),
    full("udp h:53"),
    full("token http://billing GET https://billing/v2/*"),
    full("sql appdb SELECT id FROM public.orders WHERE note = 'x'"),
    // A statement's text is kept only with reveal.sql.
    decisionEvent({ tags: ["tag:a"] }, parseRequest("sql appdb SELECT 1"), { effect: "allow", ruleId: "r", reason: "why" }, { layer: "sql", outcome: "allow", latencyUs: 1, reveal: { sql: true } }),
  ];
}

test("the schema has exactly the interface's fields: a maximal event of each kind parses strictly and uses every schema field", () => {
  const schema = JSON.parse(generate()).definitions.DecisionEvent;
  const seen = new Set<string>();
  const walk = (v: unknown, path: string) => {
    if (v === null || typeof v !== "object" || Array.isArray(v)) return;
    for (const [k, x] of Object.entries(v)) {
      seen.add(`${path}.${k}`);
      if (!["args", "headers"].includes(k)) walk(x, `${path}.${k}`);
    }
  };
  for (const ev of maximal()) {
    expect(DecisionEventSchema.safeParse(ev).success, JSON.stringify(DecisionEventSchema.safeParse(ev).error?.issues)).toBe(true);
    walk(ev, "");
  }
  const declared = new Set<string>();
  const props = (s: { properties?: Record<string, unknown>; anyOf?: unknown[] }, path: string) => {
    for (const alt of s.anyOf ?? []) props(alt as never, path);
    for (const [k, x] of Object.entries(s.properties ?? {})) {
      declared.add(`${path}.${k}`);
      if (!["args", "headers"].includes(k)) props(x as never, `${path}.${k}`);
    }
  };
  props(schema, "");
  expect([...seen].sort()).toEqual([...declared].sort());
});

test("readDecisionEvents validates version-2 lines with the schema and names the wrong field", () => {
  const ev = maximal()[0]!;
  expect(readDecisionEvents(JSON.stringify(ev))).toHaveLength(1);
  expect(() => readDecisionEvents(JSON.stringify({ ...ev, outcome: "maybe" }), "a.jsonl")).toThrow(/a\.jsonl:1: .*outcome/);
  expect(() => readDecisionEvents(JSON.stringify({ ...ev, surprise: 1 }), "a.jsonl")).toThrow(/a\.jsonl:1: .*surprise/);
});
