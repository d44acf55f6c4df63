/**
 * A second gateway process, for the cross-process test: opens the SQLite
 * store in the directory given, makes N concurrent reserves for one caller
 * against the same bucket config, and prints how many passed.
 *   node reserver.mjs <dataDir> <n> <capacityUsd>
 */

import { QuotasConfigSchema } from "../../../src/gateway/quotas/config.js";
import { createQuotaManager } from "../../../src/gateway/quotas/manager.js";
import { openStore } from "../../../src/gateway/store/index.js";

const [dir, n, capacity] = process.argv.slice(2);
const store = await openStore({}, { dataDir: dir!, retention: { mode: "metadata" } });
const qm = createQuotaManager(store, QuotasConfigSchema.parse({ daily: { unit: "usd", capacity: Number(capacity), refill: "1/day" } }), () => [["daily"]], { now: () => 1_700_000_000_000 });
const caller = { principal: { tags: [] }, node: "laptop", tags: [], user: "alice@example.com", owners: [], groups: [], role: "user" as const, addr: "127.0.0.1", via: "loopback" as const, caps: {} };
const facts = { operation: "openai.chat" as const, format: "openai" as const, provider: "openai", model: "gpt-4o", stream: false, maxTokens: 1000 };
const verdicts = await Promise.all(Array.from({ length: Number(n) }, () => qm.reserve(caller, facts, { inputTokens: 1000, maxOutputTokens: 1000 }, { input: 1, output: 2 })));
await store.close();
process.stdout.write(String(verdicts.filter((v) => v.ok).length));
