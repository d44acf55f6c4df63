/** Shared pieces of the quota tests: callers, request facts, a real SQLite store in a temporary directory. */

import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { openStore } from "../../src/gateway/store/index.js";
import type { Caller, CallFacts, GatewayStore, Usage } from "../../src/gateway/types.js";

export function caller(over: Partial<Caller> = {}): Caller {
  return {
    principal: { tags: over.tags ?? [], ...(over.user ? { user: over.user } : {}), node: over.node ?? "laptop" },
    node: "laptop",
    tags: [],
    user: "alice@example.com",
    owners: [],
    groups: [],
    role: "user",
    addr: "100.64.0.1",
    via: "tailnet",
    caps: {},
    ...over,
  };
}

export function facts(over: Partial<CallFacts> = {}): CallFacts {
  return { operation: "openai.chat", format: "openai", provider: "openai", model: "gpt-4o", stream: false, ...over };
}

export function usage(inputTokens: number, outputTokens: number, over: Partial<Usage> = {}): Usage {
  return { inputTokens, outputTokens, estimated: false, ...over };
}

export function tempDir(): string {
  return mkdtempSync(join(tmpdir(), "meshguard-quota-"));
}

/** A real SQLite store (the gateway's own engine) with its database in `dir`. */
export function sqliteStore(dir = tempDir()): Promise<GatewayStore> {
  return openStore({}, { dataDir: dir, retention: { mode: "metadata" } });
}

/** A price of round numbers: $1 per million input tokens, $2 per million output tokens. */
export const PRICE = { input: 1, output: 2 };
