/**
 * docs/policy.schema.json (editor completion for policy files) is generated
 * from the zod schema; this test fails when it is stale. Regenerate with:
 *   MESHGUARD_UPDATE_SCHEMA=1 vitest run --config test/vitest.config.ts test/policy/schema.test.ts
 */

import { readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { expect, test } from "vitest";
import { policyJsonSchemaText as generate } from "./json-schema.js";

const FILE = fileURLToPath(new URL("../../docs/policy.schema.json", import.meta.url));

test("docs/policy.schema.json is generated from the zod schema and up to date", () => {
  const want = generate();
  if (process.env.MESHGUARD_UPDATE_SCHEMA === "1") writeFileSync(FILE, want);
  let have = "";
  try {
    have = readFileSync(FILE, "utf8");
  } catch {
    /* missing: reported below */
  }
  expect(have, "docs/policy.schema.json is stale: regenerate it with MESHGUARD_UPDATE_SCHEMA=1 (see the top of this test)").toBe(want);
});

test("the JSON schema describes the rule fields", () => {
  const s = JSON.parse(generate());
  const text = JSON.stringify(s);
  for (const key of ["rules", "tests", "gateway", "roles", "quotas", "src", "http", "tcp", "mcp", "llm", "dns", "udp", "token", "audience", "actions", "locations", "maxTtl", "rrtype", "server", "when", "maxBodyBytes", "perMinute", "timeZone"]) expect(text).toContain(`"${key}"`);
});
