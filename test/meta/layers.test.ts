/**
 * Layers import downwards only (DESIGN.md decision 12):
 *
 *   cli → gateway / tokens / connect → distribution → guard → policy engine, MeshNode, control → backend
 *       → dial-channel, config, progress, errors
 *
 * This test reads every import of src/ and fails on one that goes upwards or
 * sideways, and on a CLI import of another folder's internals (the CLI uses
 * the public entry points, as a user of the package would).
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { expect, test } from "vitest";

const SRC = fileURLToPath(new URL("../../src/", import.meta.url));

/** The unit of a file: its top folder under src/, or the file name for top-level files. */
function unitOf(file: string): string {
  const rel = relative(SRC, file).replace(/\\/g, "/");
  const slash = rel.indexOf("/");
  return slash < 0 ? rel.replace(/\.ts$/, "") : rel.slice(0, slash);
}

/** What each unit may import (besides itself). Public entry points are named "unit/index". */
const ALLOWED: Record<string, string[]> = {
  errors: [],
  progress: [],
  config: ["errors", "progress", "state-store"],
  // The message MeshNode.dial publishes and the guard subscribes to: below both.
  "dial-channel": ["errors"],
  // The messages MeshNode.fetch publishes: the tokens client adds credentials, the guard wraps its dispatcher.
  "fetch-channel": ["errors"],
  // node:http over a tailnet dial published on the fetch channel: part of MeshNode, below it.
  "tailnet-http": ["errors", "fetch-channel"],
  // The mark of the library's own worker threads: set by the backend, read by the guard.
  "own-thread": [],
  // The pluggable node state (StateStore): part of MeshNode, below it.
  "state-store": ["errors"],
  backend: ["errors", "config", "own-thread"],
  // The control socket: below MeshNode (it takes the node as an argument), asking the guard through its channel.
  inspect: ["errors", "config", "backend"],
  node: ["errors", "config", "backend", "progress", "dial-channel", "fetch-channel", "inspect", "tailnet-http", "state-store"],
  index: ["node", "errors", "config", "backend", "state-store"],
  policy: ["errors"],
  // backend: the platform table (backend/platform.ts), where a platform package may ship headscale.
  control: ["errors", "progress", "backend"],
  guard: ["errors", "config", "policy", "dial-channel", "fetch-channel", "inspect", "own-thread"],
  // meshguard/serverless: a node per warm function instance (docs/wasm.md).
  serverless: ["errors", "config", "node", "state-store", "index"],
  distribution: ["errors", "config", "policy", "guard", "node"],
  testing: ["errors", "backend", "node"],
  tokens: ["errors", "config", "policy", "guard", "distribution", "node", "index"],
  gateway: ["errors", "config", "policy", "guard", "distribution", "node", "tokens", "control", "index"],
  // The database gateway and `policy apply --db`: beside the AI gateway.
  database: ["errors", "config", "policy", "guard", "distribution", "node", "control", "index"],
  // meshguard connect: a node and local listeners; it needs no policy (the tailnet and the service decide).
  connect: ["errors", "config", "progress", "node", "index"],
  // The CLI: public entry points only.
  cli: ["index", "errors", "policy/index", "guard/index", "distribution/index", "control/index", "gateway/index", "tokens/index", "testing/index", "connect/index", "inspect/index", "database/index"],
};

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    if (statSync(p).isDirectory()) return files(p);
    return p.endsWith(".ts") && !p.endsWith(".test.ts") ? [p] : [];
  });
}

/** Every relative import/export-from/dynamic import of a file, resolved to a path under src/. */
function importsOf(file: string): string[] {
  const text = readFileSync(file, "utf8");
  const out: string[] = [];
  const re = /(?:^|\n)\s*(?:import|export)\b[^'"\n;]*?(?:from\s*)?["'](\.[^"']+)["']|import\(\s*["'](\.[^"']+)["']\s*\)/g;
  for (const m of text.matchAll(re)) out.push(resolve(dirname(file), (m[1] ?? m[2])!.replace(/\.js$/, ".ts")));
  return out;
}

export function violations(): string[] {
  const bad: string[] = [];
  for (const f of files(SRC)) {
    const from = unitOf(f);
    const allowed = ALLOWED[from];
    for (const target of importsOf(f)) {
      const to = unitOf(target);
      if (to === from && from !== "cli") continue;
      if (from === "cli" && to === "cli") continue;
      const entry = relative(SRC, target).replace(/\\/g, "/").replace(/\.ts$/, "");
      const ok = allowed === undefined ? false : from === "cli" ? allowed.includes(entry) || allowed.includes(to === entry ? to : "") : allowed.includes(to);
      if (!ok) bad.push(`src/${relative(SRC, f)} imports src/${entry}.ts (${from} → ${to})`);
    }
  }
  return bad;
}

test("every src/ file belongs to a known layer", () => {
  const unknown = [...new Set(files(SRC).map(unitOf))].filter((u) => !(u in ALLOWED));
  expect(unknown, "add the new folder to ALLOWED with the layers it may use").toEqual([]);
});

test("layers import downwards only, and the CLI uses public entry points", () => {
  expect(violations()).toEqual([]);
});
