// docs/getting-started.md shows examples/getting-started/ verbatim
// (test/meta/docs-examples.test.ts); this runs them as the page says, on a
// real local tailnet: the agent's allowed call reaches the service with a
// token bound to its node, the three blocked calls never reach anyone (the DELETE not even the token issuer).
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { expect, it } from "vitest";

it("getting-started: run.mjs prints what docs/getting-started.md shows", () => {
  const r = spawnSync(process.execPath, [fileURLToPath(new URL("../../examples/getting-started/run.mjs", import.meta.url))], { encoding: "utf8", timeout: 90_000 });
  expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(0);
  const out = r.stdout;
  expect(out).toMatch(/^billing: listening on http:\/\/billing$/m);
  // The service saw exactly one request: the allowed GET, from the agent's node, with its tag, capability and token.
  const seen = out.match(/^billing: GET .*$/gm) ?? [];
  expect(seen).toHaveLength(1);
  expect(seen[0]).toMatch(/^billing: GET \/v2\/transactions\/7 from research-agent\.mesh\.internal \(tag:agent\), caps \[\{"read":\["transactions"\]\}\], token \S+ for node \S+$/);
  expect(out).not.toMatch(/^billing: DELETE/m);
  expect(out).toMatch(/^allowed: GET http:\/\/billing\/v2\/transactions\/7 -> 200 \{"id":7,"amount":4200\}$/m);
  expect(out).toMatch(/^blocked by the guard: tcp billing:22 -> MESHGUARD_POLICY_DENIED: no rule allows tag:agent/m);
  expect(out).toMatch(/^blocked by the guard: GET https:\/\/api\.github\.com\/repos\/acme\/app -> MESHGUARD_POLICY_DENIED: no rule allows tag:agent/m);
  // The guard judges before the token layer: the denied DELETE never reaches the issuer (issue 10 regression).
  expect(out).toMatch(/^blocked by the guard: DELETE http:\/\/billing\/v2\/transactions\/7 -> MESHGUARD_POLICY_DENIED: no rule allows tag:agent .*DELETE http:\/\/billing\/v2\/transactions\/7/m);
  expect(out).not.toMatch(/MESHGUARD_TOKEN_REQUEST_FAILED/);
  expect(out).not.toMatch(/NOT blocked/);
}, 120_000);
