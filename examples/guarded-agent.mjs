#!/usr/bin/env node
// A guarded agent: one call puts policy around every outbound call of the
// process. The policy allows GET /v2/transactions on the "billing" service
// and nothing else; the denied calls never reach it (its hit counter shows).
//
// Run: node test/netns.mjs node examples/guarded-agent.mjs   (after npm run build)
import http from "node:http";
import { installGuard } from "../dist/guard/index.js";
import { loadPolicy } from "../dist/policy/index.js";

// A stand-in for a tool service, on loopback, counting requests it receives.
let hits = 0;
const billing = http.createServer((req, res) => {
  hits++;
  res.end(JSON.stringify({ path: req.url }));
});
await new Promise((r) => billing.listen(0, "127.0.0.1", r));
const port = billing.address().port;

const policy = loadPolicy(`{
  // meshguard's part of a tailnet policy file (HuJSON: comments, trailing commas)
  "meshguard": {
    "version": 1,
    "rules": [
      { "id": "billing-read", "src": ["tag:research-agent"],
        "http": { "host": ["127.0.0.1"], "port": [${port}], "method": ["GET"], "path": ["/v2/transactions/**"] } },
    ],
    "tests": [
      { "as": "tag:research-agent", "request": "GET http://127.0.0.1:${port}/v2/transactions/7", "expect": "allow" },
      { "as": "tag:research-agent", "request": "DELETE http://127.0.0.1:${port}/v2/transactions/7", "expect": "deny" },
    ],
  },
}`);

const guard = installGuard({ policy, identity: { tags: ["tag:research-agent"] } });
await guard.ready;
guard.on("decision", (d) =>
  console.log(`  decision: ${d.outcome.padEnd(5)} ${d.request} (${d.ruleId ?? "default deny"}) in ${d.latencyUs.toFixed(1)} µs`),
);

const base = `http://127.0.0.1:${port}`;
for (const [method, path] of [["GET", "/v2/transactions/7"], ["DELETE", "/v2/transactions/7"], ["GET", "/admin/users"]]) {
  try {
    const res = await fetch(base + path, { method });
    console.log(`${method} ${path}: ${res.status} ${await res.text()}`);
  } catch (err) {
    console.log(`${method} ${path}: refused — ${err.code}: ${err.reason ?? err.message}`);
  }
}
guard.uninstall();
billing.close();
console.log(`the billing service saw ${hits} request(s)`);
if (hits !== 1) process.exitCode = 1;
