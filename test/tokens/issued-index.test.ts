/**
 * The issuer's memory of recent tokens (src/tokens/context.ts IssuedIndex),
 * which lets a node revoke its own token by jti: bounded, oldest forgotten
 * first, expired entries pruned, and an insert stays cheap when full (it
 * used Map front-deletes, ~9 µs per insert at 10k entries).
 */

import { expect, test } from "vitest";
import { IssuedIndex } from "../../src/tokens/context.js";

test("bounded: the oldest jti is forgotten first; prune drops the expired ones only", () => {
  const idx = new IssuedIndex(3);
  idx.add("a", "n1", 10);
  idx.add("b", "n1", 20);
  idx.add("c", "n2", 30);
  idx.add("d", "n2", 40);
  expect(idx.get("a")).toBeUndefined();
  expect(idx.get("b")).toEqual({ sub: "n1", exp: 20 });
  expect(idx.size).toBe(3);
  idx.prune(30);
  expect([idx.get("b"), idx.get("c"), idx.get("d")]).toEqual([undefined, undefined, { sub: "n2", exp: 40 }]);
  idx.add("e", "n3", 50);
  expect(idx.get("d")).toBeDefined();
  expect(idx.get("e")).toBeDefined();
});

test("a full index of 100 000 takes 200 000 more inserts in under 3 s (front-deleting a Map took ~10 s)", () => {
  const idx = new IssuedIndex(100_000);
  for (let i = 0; i < 100_000; i++) idx.add(`j${i}`, "n", 1e12);
  const t0 = performance.now();
  for (let i = 100_000; i < 300_000; i++) idx.add(`j${i}`, "n", 1e12);
  expect(performance.now() - t0).toBeLessThan(3000);
  expect(idx.size).toBe(100_000);
  expect(idx.get("j199999")).toBeUndefined();
  expect(idx.get("j200000")).toBeDefined();
});
