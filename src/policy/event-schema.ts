/**
 * The decision event (./event.ts) as a zod schema: what `readDecisionEvents`
 * validates a version-2 log line with, and the source of the published JSON
 * Schema (docs/decision-event.schema.json, checked by a test). A type-level
 * check below keeps it equal to the DecisionEvent interface, so the two
 * cannot drift apart.
 */

import { z } from "zod";
import type { DecisionEvent } from "./event.js";

const PeerSchema = z.object({ name: z.string().optional(), tags: z.array(z.string()).optional() }).strict();

const TargetSummarySchema = z.discriminatedUnion("kind", [
  z
    .object({
      kind: z.literal("http"),
      scheme: z.enum(["http", "https"]),
      host: z.string().min(1),
      port: z.number().int(),
      method: z.string().min(1),
      path: z.string(),
      queryKeys: z.array(z.string()).optional().describe("names of the query parameters (values are not recorded)"),
      query: z.string().optional().describe("the whole query string, only when revealed"),
      headers: z.record(z.string()).optional().describe("values of the headers named in reveal.headers"),
      bodySize: z.number().int().nonnegative().optional(),
      resolvedIp: z.string().optional(),
      peer: PeerSchema.optional(),
    })
    .strict(),
  z
    .object({
      kind: z.literal("tcp"),
      tls: z.boolean(),
      host: z.string().min(1),
      port: z.number().int(),
      tailnet: z.boolean().optional(),
      resolvedIp: z.string().optional(),
      peer: PeerSchema.optional(),
    })
    .strict(),
  z
    .object({
      kind: z.literal("mcp"),
      server: z.string().min(1),
      tool: z.string().describe('the tool called; "" for a resource read or a prompt get'),
      resource: z.string().optional().describe("the URI of a resource read"),
      prompt: z.string().optional().describe("the name of a prompt asked for"),
      argKeys: z.array(z.string()).optional().describe("names of the tool arguments (values are not recorded)"),
      args: z.record(z.unknown()).optional().describe("the arguments, only when revealed"),
    })
    .strict(),
  z.object({ kind: z.literal("llm"), provider: z.string().min(1), model: z.string(), maxTokens: z.number().optional() }).strict(),
  z
    .object({
      kind: z.literal("dns"),
      name: z.string().min(1),
      rrtype: z.string().optional().describe("the record type asked for; absent: an address look-up (A and AAAA)"),
      server: z.string().optional().describe("the DNS server the query goes to; absent: the system's resolver"),
    })
    .strict(),
  z
    .object({
      kind: z.literal("udp"),
      host: z.string().min(1),
      port: z.number().int(),
      resolvedIp: z.string().optional(),
      peer: PeerSchema.optional(),
    })
    .strict(),
  z
    .object({
      kind: z.literal("token"),
      audience: z.string().min(1),
      method: z.string().min(1).describe('upper-case, or "*"'),
      location: z.string().min(1).describe("scheme://host[:port]/path-glob"),
    })
    .strict(),
  z
    .object({
      kind: z.literal("sql"),
      database: z.string(),
      accesses: z.array(z.string()).describe('what the statement does, one access each ("select public.users (id, name)"): names, never literals'),
      length: z.number().int().nonnegative().describe("the statement's length in characters"),
      statement: z.string().optional().describe("the statement text: only with reveal.sql"),
    })
    .strict(),
]);

export const DecisionEventSchema = z
  .object({
    v: z.literal(2),
    id: z.string().min(1),
    time: z.string().datetime({ offset: true }),
    layer: z.enum(["fetch", "http", "net", "tls", "ipc", "dial", "mcp", "llm-sdk", "dns", "udp", "gateway", "tokens", "cli", "sql"]),
    mode: z.enum(["enforce", "observe"]),
    principal: z
      .object({
        node: z.string().optional(),
        tags: z.array(z.string()),
        user: z.string().optional(),
        ip: z.string().optional(),
        owners: z.array(z.string()).optional(),
      })
      .strict(),
    request: z.string().describe("the call as one request line (formatTarget), redacted like target"),
    target: TargetSummarySchema,
    effect: z.enum(["allow", "deny", "approve"]).describe("what the policy said"),
    outcome: z.enum(["allow", "deny"]).describe("what happened to the call"),
    ruleId: z.string().optional(),
    reason: z.string(),
    latencyUs: z.number().nonnegative(),
    approval: z.object({ approved: z.boolean(), by: z.string().optional(), ms: z.number().nonnegative(), reason: z.string().optional() }).strict().optional(),
    policyHash: z.string().optional(),
    requestId: z.string().optional(),
    via: z
      .object({
        gateway: z.string().describe("the AI gateway's origin as registered with the guard"),
        connector: z.string().optional().describe("the HTTP API connector the call went to (absent for MCP calls)"),
      })
      .strict()
      .optional()
      .describe("the call went to a registered AI gateway; `target` is what the gateway will call upstream (the agent-side guard judges it as the gateway does)"),
    usage: z
      .object({
        inputTokens: z.number().nonnegative().optional(),
        outputTokens: z.number().nonnegative().optional(),
        cachedTokens: z.number().nonnegative().optional(),
        costUsd: z.number().nonnegative().optional(),
        estimated: z.boolean().optional(),
      })
      .strict()
      .optional(),
    token: z
      .object({
        op: z.enum(["issue", "exchange", "revoke"]),
        jti: z.string().optional().describe("the token issued, or the one revoked"),
        exp: z.number().int().optional().describe("its expiry, epoch seconds"),
        task: z.string().optional(),
        subject: z.string().optional().describe("an exchange: the jti of the token it narrowed"),
        sub: z.string().optional().describe("a revocation of every token of a node: its stable node id"),
        before: z.number().int().optional().describe("... issued before this time, epoch seconds"),
        revoked: z.number().int().nonnegative().optional().describe("a revocation: the feed entries it added"),
      })
      .strict()
      .optional()
      .describe("what the token issuer did (layer tokens); never the token itself"),
  })
  .strict();

// The schema and the interface describe the same object: each must be
// assignable to the other (types and required fields). A field one side has
// and the other lacks is caught by test/policy/event-schema.test.ts, which
// compares the keys of a maximal event with the schema's.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const sameShape: Same<z.infer<typeof DecisionEventSchema>, DecisionEvent> = true;
void sameShape;
