/**
 * Fuzzed policy files never crash the loader: whatever the input, loadPolicy
 * returns a Policy or throws a MeshguardError with a policy code (never a
 * TypeError, a stack overflow, or the INTERNAL code that marks a loader bug).
 */

import { readFileSync } from "node:fs";
import fc from "fast-check";
import { test } from "vitest";

import { ErrorCode, isMeshguardError } from "../../src/errors.js";
import { loadPolicy } from "../../src/policy/index.js";
import { policyDoc } from "./gen.js";

const EXAMPLE = readFileSync(new URL("./fixtures/example.hujson", import.meta.url), "utf8");
const OK_CODES = new Set<string>([ErrorCode.POLICY_INVALID, ErrorCode.POLICY_TESTS_FAILED]);

function survives(text: string): void {
  try {
    const p = loadPolicy(text, { clock: () => new Date("2026-03-09T10:00:00Z") });
    p.evaluate({ principal: { tags: ["tag:research-agent"] }, target: { kind: "http", scheme: "https", host: "api.github.com", port: 443, method: "GET", path: "/", query: "", headers: {} } });
  } catch (err) {
    if (!(isMeshguardError(err) && OK_CODES.has(err.code))) throw new Error(`loader crashed on ${JSON.stringify(text.slice(0, 300))}: ${String(err)}`, { cause: err });
  }
}

const OPTS = { seed: 424242, interruptAfterTimeLimit: 8_000 };

test("random text", () => {
  fc.assert(fc.property(fc.string({ maxLength: 300, unit: "binary" }), survives), { ...OPTS, numRuns: 3000 });
});

test("random JSON values", () => {
  fc.assert(fc.property(fc.jsonValue({ maxDepth: 6 }), (v) => survives(JSON.stringify(v))), { ...OPTS, numRuns: 3000 });
});

test("random edits of a valid policy file (deletions, insertions, swaps of bytes)", () => {
  const edit = fc.record({ at: fc.nat(EXAMPLE.length), len: fc.integer({ min: 0, max: 12 }), insert: fc.string({ maxLength: 6, unit: fc.constantFrom(..."{}[],:\"'/*\\\n 0aZ-@.", "tag:", "true", "null", "1e999", "\u0000", "\u2028") }) });
  fc.assert(
    fc.property(fc.array(edit, { minLength: 1, maxLength: 4 }), (edits) => {
      let text = EXAMPLE;
      for (const e of edits) text = text.slice(0, e.at) + e.insert + text.slice(e.at + e.len);
      survives(text);
    }),
    { ...OPTS, numRuns: 2000 },
  );
});

test("random values spliced into valid policies (wrong types anywhere)", () => {
  const poke = fc.tuple(policyDoc, fc.array(fc.nat(), { minLength: 1, maxLength: 6 }), fc.jsonValue({ maxDepth: 2 }));
  fc.assert(
    fc.property(poke, ([doc, route, value]) => {
      // Walk a random route into the document and replace what is there.
      let node: any = doc;
      for (let i = 0; i < route.length - 1; i++) {
        const keys = node && typeof node === "object" ? Object.keys(node) : [];
        if (!keys.length) break;
        const next = node[keys[route[i]! % keys.length]!];
        if (!next || typeof next !== "object") break;
        node = next;
      }
      const keys = Object.keys(node);
      if (keys.length) node[keys[route.at(-1)! % keys.length]!] = value;
      survives(JSON.stringify(doc));
    }),
    { ...OPTS, numRuns: 2000 },
  );
});

test("pathological inputs", () => {
  for (const text of ["[".repeat(100_000), "{".repeat(50_000), '"' + "a".repeat(1_000_000), "/*", "{/*}", "\uFEFF{}", '{"version":1,"rules":[' + '{"src":["*"],"http":{"host":["a"]}},'.repeat(5000) + "]}"]) {
    survives(text);
  }
});
