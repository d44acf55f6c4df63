#!/usr/bin/env node
// Runs the SDK examples one after the other (all, or those named):
//   npm run examples:sdk                 builds, then runs all five in a loopback-only network namespace
//   npm run examples:sdk -- openai mcp   only these
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";

const ALL = ["openai", "anthropic", "vercel-ai", "langchain", "mcp"];
const names = process.argv.slice(2).length ? process.argv.slice(2) : ALL;
for (const n of names) {
  if (!ALL.includes(n)) {
    console.error(`unknown example "${n}": one of ${ALL.join(", ")}`);
    process.exit(2);
  }
  console.log(`\n=== examples/sdk/${n}.mjs`);
  const r = spawnSync(process.execPath, [fileURLToPath(new URL(`./${n}.mjs`, import.meta.url))], { stdio: "inherit" });
  if (r.status !== 0) process.exit(r.status ?? 1);
}
