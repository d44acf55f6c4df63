// What every OAuthTokenStore must do (the memory store, and the gateway's
// SQLite and PostgreSQL stores through store-conformance.ts). Rows are
// opaque sealed values to a store; a test's connector name keeps it apart
// from the others sharing a database.
import { randomUUID } from "node:crypto";
import { describe, expect, it } from "vitest";
import type { OAuthTokenStore } from "../../src/gateway/credentials/token-store.js";

export function tokenStoreConformance(name: string, open: () => Promise<{ tokens: OAuthTokenStore; reopen?: () => Promise<OAuthTokenStore>; close(): Promise<void> }>): void {
  describe(`OAuth token store: ${name}`, () => {
    it("keeps each (connector, subject) row apart, replaces on put, lists in order, deletes", async () => {
      const s = await open();
      try {
        const c = `crm-${randomUUID().slice(0, 8)}`;
        const row = (subject: string, sealed: string, t = 1) => ({ connector: c, subject, keyId: "k1", sealed, updatedAt: 1_760_000_000_000 + t });
        await s.tokens.putToken(row("user:bob", "sealed-b"));
        await s.tokens.putToken(row("user:alice", "sealed-a"));
        await s.tokens.putToken({ ...row("user:alice", "sealed-a2", 2), keyId: "k2" });
        await s.tokens.putToken({ ...row("user:alice", "other"), connector: `${c}-x` });
        expect(await s.tokens.getToken(c, "user:alice")).toEqual({ ...row("user:alice", "sealed-a2", 2), keyId: "k2" });
        expect((await s.tokens.listTokens({ connector: c })).map((r) => [r.subject, r.sealed])).toEqual([
          ["user:alice", "sealed-a2"],
          ["user:bob", "sealed-b"],
        ]);
        expect(await s.tokens.listTokens({ connector: c, subject: "user:bob" })).toEqual([row("user:bob", "sealed-b")]);
        expect(await s.tokens.deleteToken(c, "user:bob")).toBe(true);
        expect(await s.tokens.deleteToken(c, "user:bob")).toBe(false);
        expect(await s.tokens.getToken(c, "user:bob")).toBeUndefined();
        if (s.reopen) expect(await (await s.reopen()).getToken(c, "user:alice")).toMatchObject({ sealed: "sealed-a2", keyId: "k2" });
      } finally {
        await s.close();
      }
    });

    it("keeps one user per (connector, tag): another user's delegation is refused, not replaced", async () => {
      const s = await open();
      try {
        const c = `crm-${randomUUID().slice(0, 8)}`;
        const d = (tag: string, user: string, t = 1) => ({ connector: c, tag, user, grantedAt: 1_760_000_000_000 + t });
        expect(await s.tokens.putDelegation(d("tag:ci", "alice"))).toBeUndefined();
        expect(await s.tokens.putDelegation(d("tag:ci", "alice", 5))).toBeUndefined();
        expect(await s.tokens.putDelegation(d("tag:ci", "bob"))).toEqual(d("tag:ci", "alice", 5));
        expect(await s.tokens.getDelegation(c, "tag:ci")).toEqual(d("tag:ci", "alice", 5));
        expect(await s.tokens.putDelegation(d("tag:bots", "bob"))).toBeUndefined();
        expect((await s.tokens.listDelegations({ connector: c })).map((x) => [x.tag, x.user])).toEqual([
          ["tag:bots", "bob"],
          ["tag:ci", "alice"],
        ]);
        expect(await s.tokens.listDelegations({ connector: c, user: "bob" })).toEqual([d("tag:bots", "bob")]);
        expect(await s.tokens.deleteDelegation(c, "tag:ci", "bob")).toBe(false);
        expect(await s.tokens.deleteDelegation(c, "tag:ci", "alice")).toBe(true);
        expect(await s.tokens.deleteDelegation(c, "tag:bots")).toBe(true);
        expect(await s.tokens.listDelegations({ connector: c })).toEqual([]);
      } finally {
        await s.close();
      }
    });
  });
}
