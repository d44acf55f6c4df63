// Log records for the store and logs API tests.
import { randomUUID } from "node:crypto";
import type { LogRecord } from "../../src/gateway/types.js";

let n = 0;

/** A complete record (every optional field set) of `user` at `time`; `over` replaces fields. */
export function record(user: string, time: number, over: Partial<LogRecord> = {}): LogRecord {
  n++;
  return {
    id: randomUUID(),
    time,
    sessionId: `sess-${user}`,
    caller: { node: `node-${user.split("@")[0]}`, user, tags: ["tag:agent"], addr: "100.64.0.7", via: "tailnet" },
    operation: "anthropic.messages",
    provider: "anthropic",
    model: "claude-sonnet-4-5",
    stream: true,
    status: 200,
    outcome: "ok",
    reason: `request ${n}`,
    ruleId: "coders",
    usage: { inputTokens: 100, outputTokens: 20, cacheReadTokens: 5, cacheWriteTokens: 1, estimated: false },
    costUsd: 0.0012,
    overheadMs: 0.21,
    durationMs: 812,
    ttftMs: 95,
    requestHeaders: { "content-type": "application/json", "user-agent": "claude-cli/2.0", "anthropic-version": "2023-06-01" },
    requestBody: JSON.stringify({ model: "claude-sonnet-4-5", max_tokens: 1024, messages: [{ role: "user", content: `hello ${n} — ünïcødé` }] }),
    responseBody: 'event: message_start\ndata: {"type":"message_start"}\n\n',
    ...over,
  };
}

/** A user name no other test uses, so tests can share one database. */
export function uniqueUser(): string {
  return `u-${randomUUID().slice(0, 8)}@example.com`;
}
