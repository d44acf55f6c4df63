// Sessions: a caller's requests sharing a client session id are one
// session; without one, an idle gap (default 30 min) starts a new session.
import { expect, it } from "vitest";
import { DEFAULT_IDLE_GAP_MS, SessionTracker } from "../../src/gateway/sessions.js";

const alice = { user: "alice@example.com", node: "alice-laptop" };
const aliceCi = { user: "alice@example.com", node: "ci-runner" };
const bob = { user: "bob@example.com", node: "bob-laptop" };
const MIN = 60_000;

it("requests of one caller within the idle gap are one session; after a longer pause a new one starts", () => {
  const t = new SessionTracker();
  expect(t.idleGapMs).toBe(DEFAULT_IDLE_GAP_MS);
  expect(DEFAULT_IDLE_GAP_MS).toBe(30 * MIN);
  const s1 = t.assign(alice, undefined, 0);
  expect(t.assign(alice, undefined, 10 * MIN)).toBe(s1);
  // The gap counts from the last request, not the first.
  expect(t.assign(alice, undefined, 39 * MIN)).toBe(s1);
  expect(t.assign(alice, undefined, 69 * MIN)).toBe(s1); // exactly 30 min: still the same
  const s2 = t.assign(alice, undefined, 69 * MIN + 30 * MIN + 1);
  expect(s2).not.toBe(s1);
  expect(t.assign(alice, undefined, 100 * MIN)).toBe(s2);
});

it("different callers (another user, or the same user on another node) never share a session", () => {
  const t = new SessionTracker();
  const a = t.assign(alice, undefined, 0);
  const b = t.assign(bob, undefined, 1);
  const c = t.assign(aliceCi, undefined, 2);
  expect(new Set([a, b, c]).size).toBe(3);
  expect(t.assign(alice, undefined, 3)).toBe(a);
});

it("a client session id groups a caller's requests whatever the pause, and is the same id after a restart", () => {
  const t = new SessionTracker({ idleGapMs: MIN });
  const s = t.assign(alice, "cc-session-1", 0);
  expect(t.assign(alice, "cc-session-1", 5 * 60 * MIN)).toBe(s);
  expect(t.assign(alice, "cc-session-2", 1)).not.toBe(s);
  // A new tracker (a restarted gateway) derives the same id.
  expect(new SessionTracker().assign(alice, "cc-session-1", 99)).toBe(s);
  // Requests without the id are a session of their own.
  expect(t.assign(alice, undefined, 2)).not.toBe(s);
});

it("a client session id sent by another caller does not join someone else's session", () => {
  const t = new SessionTracker();
  const s = t.assign(alice, "shared-id", 0);
  expect(t.assign(bob, "shared-id", 1)).not.toBe(s);
  expect(t.assign(aliceCi, "shared-id", 1)).not.toBe(s);
});

it("a concurrent request reported with an earlier time stays in the open session", () => {
  const t = new SessionTracker({ idleGapMs: 10 });
  const s = t.assign(alice, undefined, 1000);
  expect(t.assign(alice, undefined, 995)).toBe(s);
  expect(t.assign(alice, undefined, 1010)).toBe(s);
});

it("memory stays bounded: sessions idle past the gap are forgotten", () => {
  const t = new SessionTracker({ idleGapMs: MIN });
  for (let i = 0; i < 5000; i++) t.assign({ user: `u${i}@x`, node: "n" }, undefined, i);
  for (let i = 0; i < 1000; i++) t.assign(alice, undefined, 10 * MIN + i);
  expect(t.openSessions).toBeLessThan(100);
});

it("refuses an idle gap that is not a positive number", () => {
  expect(() => new SessionTracker({ idleGapMs: 0 })).toThrow(/idleGapMs/);
  expect(() => new SessionTracker({ idleGapMs: Number.NaN })).toThrow(/idleGapMs/);
});
