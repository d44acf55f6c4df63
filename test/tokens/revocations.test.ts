/**
 * The revocation log (src/tokens/revocations.ts): ordered, durable across a
 * restart, its sequence never going back (even when every entry has been
 * dropped), cascading to exchanged tokens, and forgetting what no longer
 * matters.
 */

import { mkdtempSync, readFileSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect, test } from "vitest";
import { RevocationLog } from "../../src/tokens/revocations.js";

const fresh = () => join(mkdtempSync(join(tmpdir(), "mg-rev-")), "state", "revocations.jsonl");

test("entries get increasing seq numbers; since(n) returns those after n, in order", () => {
  const clock = { s: 1_000 };
  const log = RevocationLog.open(fresh(), () => clock.s);
  log.revokeJti("a", 2_000);
  log.revokeSubject("node-1", 1_001, 5_000);
  log.revokeJti("b", 2_000);
  expect(log.seq).toBe(3);
  expect(log.since(0)).toEqual([
    { seq: 1, jti: "a" },
    { seq: 2, sub: "node-1", before: 1_001 },
    { seq: 3, jti: "b" },
  ]);
  expect(log.since(2)).toEqual([{ seq: 3, jti: "b" }]);
  expect(log.since(3)).toEqual([]);
  log.close();
});

test("isRevoked: by jti, and by subject for tokens issued before `before` only", () => {
  const log = RevocationLog.open(fresh(), () => 1_000);
  log.revokeJti("a", 2_000);
  log.revokeSubject("node-1", 1_000, 5_000);
  expect(log.isRevoked("a", "node-9", 900)).toBe(true);
  expect(log.isRevoked("x", "node-1", 999)).toBe(true);
  expect(log.isRevoked("x", "node-1", 1_000)).toBe(false);
  expect(log.isRevoked("x", "node-2", 999)).toBe(false);
  log.close();
});

test("a reopened log has the same entries and goes on from the same seq; the file is mode 0600", () => {
  const file = fresh();
  const a = RevocationLog.open(file, () => 1_000);
  a.revokeJti("a", 2_000);
  a.revokeSubject("n", 1_000, 3_000);
  a.close();
  expect(statSync(file).mode & 0o777).toBe(0o600);
  const b = RevocationLog.open(file, () => 1_500);
  expect(b.since(0)).toEqual([
    { seq: 1, jti: "a" },
    { seq: 2, sub: "n", before: 1_000 },
  ]);
  expect(b.revokeJti("c", 2_000)[0]!.seq).toBe(3);
  b.close();
});

test("entries past their `until` are dropped at open, but the seq never goes back", () => {
  const file = fresh();
  const a = RevocationLog.open(file, () => 1_000);
  a.revokeJti("a", 1_100);
  a.revokeJti("b", 1_100);
  a.close();
  const b = RevocationLog.open(file, () => 2_000);
  expect(b.since(0)).toEqual([]);
  expect(b.seq).toBe(2);
  expect(readFileSync(file, "utf8").trim().split("\n")).toEqual(['{"v":1,"seq":2}']);
  expect(b.revokeJti("c", 3_000)).toEqual([{ seq: 3, jti: "c" }]);
  b.close();
});

test("prune forgets what no longer matters while the issuer runs", () => {
  const clock = { s: 1_000 };
  const log = RevocationLog.open(fresh(), () => clock.s);
  log.revokeJti("short", 1_100);
  log.revokeJti("long", 9_000);
  clock.s = 1_200;
  log.prune();
  expect(log.since(0)).toEqual([{ seq: 2, jti: "long" }]);
  expect(log.isRevoked("short", "n", 0)).toBe(false);
  log.close();
});

test("revoking a token revokes the tokens exchanged from it, transitively, also after a restart", () => {
  const file = fresh();
  const a = RevocationLog.open(file, () => 1_000);
  a.derived("parent", "child", 1_500);
  a.derived("child", "grandchild", 1_400);
  a.derived("other", "unrelated", 1_500);
  a.close();
  const b = RevocationLog.open(file, () => 1_100);
  const got = b.revokeJti("parent", 1_800);
  expect(got.map((e) => e.jti).sort()).toEqual(["child", "grandchild", "parent"]);
  expect(b.isRevoked("grandchild", "n", 0)).toBe(true);
  expect(b.isRevoked("unrelated", "n", 0)).toBe(false);
  // Revoking again adds nothing.
  expect(b.revokeJti("parent", 1_800)).toEqual([]);
  b.close();
});

test("a corrupt line is named with its number (MESHGUARD_TOKEN_STATE_FAILED)", async () => {
  const file = fresh();
  const a = RevocationLog.open(file, () => 1_000);
  a.revokeJti("a", 2_000);
  a.close();
  const { appendFileSync } = await import("node:fs");
  appendFileSync(file, "{oops\n");
  expect(() => RevocationLog.open(file, () => 1_000)).toThrow(/corrupt line 3/);
});
