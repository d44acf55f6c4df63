// The behaviour every GatewayStore engine must have. store.test.ts runs it
// for SQLite; issue 9 runs it for PostgreSQL. `open` opens the SAME database
// each time it is called (so a test can close and reopen it); tests share it
// and keep apart by using users and bucket keys of their own.
import { randomUUID } from "node:crypto";
import { afterEach, describe, expect, it } from "vitest";
import { ErrorCode, isMeshguardError } from "../../src/errors.js";
import type { BucketState, GatewayStore, LogRecord, Retention } from "../../src/gateway/types.js";
import { record, uniqueUser } from "./fixtures-records.js";
import { tokenStoreConformance } from "./token-store-conformance.js";

export interface ConformanceOpenOptions {
  retention?: Retention;
  secrets?: string[];
}

/** A time every test's records are after, so prune(before) of the prune test touches only its own. */
const NOW = Date.UTC(2026, 0, 15, 12);

export function storeConformance(name: string, open: (o?: ConformanceOpenOptions) => Promise<GatewayStore>): void {
  describe(`store conformance: ${name}`, () => {
    const opened: GatewayStore[] = [];
    async function store(o?: ConformanceOpenOptions): Promise<GatewayStore> {
      const s = await open(o);
      opened.push(s);
      return s;
    }
    afterEach(async () => {
      await Promise.all(opened.splice(0).map((s) => s.close()));
    });

    describe("logs", () => {
      it("a flushed record reads back exactly as appended, by id and by query", async () => {
        const s = await store();
        const u = uniqueUser();
        const rec = record(u, NOW);
        s.appendLog(rec);
        await s.flush();
        expect(await s.getLog(rec.id)).toEqual(rec);
        expect((await s.queryLogs({ user: u })).records).toEqual([rec]);
        expect(await s.getLog(randomUUID())).toBeUndefined();
      });

      it("appendLog returns before anything is written; flush makes it readable", async () => {
        const s = await store();
        const u = uniqueUser();
        const t0 = performance.now();
        for (let i = 0; i < 1000; i++) s.appendLog(record(u, NOW + i));
        const appendMs = performance.now() - t0;
        expect(appendMs).toBeLessThan(200);
        await s.flush();
        const page = await s.queryLogs({ user: u, limit: 1000 });
        expect(page.records).toHaveLength(1000);
      });

      it("a record written in the background without flush() appears within a few flush intervals", async () => {
        const s = await store();
        const u = uniqueUser();
        const rec = record(u, NOW);
        s.appendLog(rec);
        const deadline = Date.now() + 3000;
        while (!(await s.getLog(rec.id)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
        expect(await s.getLog(rec.id)).toEqual(rec);
      });

      it("queries filter by user, node, session and a [since, until) time range, newest first", async () => {
        const s = await store();
        const [a, b] = [uniqueUser(), uniqueUser()];
        const recs: LogRecord[] = [];
        for (let i = 0; i < 6; i++) {
          const user = i % 2 === 0 ? a : b;
          recs.push(record(user, NOW + i * 1000, { sessionId: i < 3 ? "s-one" : "s-two", caller: { node: i < 4 ? "laptop" : "ci", user, tags: [], addr: "100.64.0.9", via: "tailnet" } }));
        }
        // Appended out of time order: the order read back is by time, not by arrival.
        for (const r of [...recs].reverse()) s.appendLog(r);
        await s.flush();
        const ids = async (q: Parameters<GatewayStore["queryLogs"]>[0]) => (await s.queryLogs(q)).records.map((r) => recs.indexOf(recs.find((x) => x.id === r.id)!));
        expect(await ids({ user: a })).toEqual([4, 2, 0]);
        expect(await ids({ user: b })).toEqual([5, 3, 1]);
        expect(await ids({ user: a, node: "laptop" })).toEqual([2, 0]);
        expect(await ids({ user: b, sessionId: "s-two" })).toEqual([5, 3]);
        expect(await ids({ user: a, since: NOW + 2000 })).toEqual([4, 2]);
        expect(await ids({ user: a, until: NOW + 4000 })).toEqual([2, 0]);
        expect(await ids({ user: b, since: NOW + 1000, until: NOW + 5000 })).toEqual([3, 1]);
        expect(await ids({ user: uniqueUser() })).toEqual([]);
      });

      it("pages newest first with a cursor: no record twice, none skipped, ties of time included", async () => {
        const s = await store();
        const u = uniqueUser();
        // 250 records over 25 distinct times: every page boundary falls inside a tie.
        const recs = Array.from({ length: 250 }, (_, i) => record(u, NOW + Math.floor(i / 10)));
        for (const r of recs) s.appendLog(r);
        await s.flush();
        const pages: LogRecord[][] = [];
        let before: string | undefined;
        do {
          const page = await s.queryLogs({ user: u, limit: 100, ...(before ? { before } : {}) });
          pages.push(page.records);
          before = page.next;
        } while (before);
        expect(pages.map((p) => p.length)).toEqual([100, 100, 50]);
        const all = pages.flat();
        expect(new Set(all.map((r) => r.id)).size).toBe(250);
        expect(new Set(all.map((r) => r.id))).toEqual(new Set(recs.map((r) => r.id)));
        const times = all.map((r) => r.time);
        expect(times).toEqual([...times].sort((x, y) => y - x));
      });

      it("a page exactly filling the limit has no next cursor when nothing follows", async () => {
        const s = await store();
        const u = uniqueUser();
        for (let i = 0; i < 3; i++) s.appendLog(record(u, NOW + i));
        await s.flush();
        const p = await s.queryLogs({ user: u, limit: 3 });
        expect(p.records).toHaveLength(3);
        expect(p.next).toBeUndefined();
      });

      it("limit defaults to 100 and is capped at 1000", async () => {
        const s = await store();
        const u = uniqueUser();
        for (let i = 0; i < 1001; i++) s.appendLog(record(u, NOW + i));
        await s.flush();
        expect((await s.queryLogs({ user: u })).records).toHaveLength(100);
        expect((await s.queryLogs({ user: u, limit: 5000 })).records).toHaveLength(1000);
      });

      it("a cursor that is not one is INVALID_OPTIONS, not a first page", async () => {
        const s = await store();
        const err = await s.queryLogs({ before: "not-a-cursor" }).catch((e: unknown) => e);
        expect(isMeshguardError(err, ErrorCode.INVALID_OPTIONS)).toBe(true);
      });

      it("sessions add up their records: count, tokens, cost, first and last time; most recent first", async () => {
        const s = await store();
        const u = uniqueUser();
        const usage = (i: number, o: number) => ({ inputTokens: i, outputTokens: o, estimated: false });
        s.appendLog(record(u, NOW + 10, { sessionId: "old", usage: usage(10, 1), costUsd: 0.5 }));
        s.appendLog(record(u, NOW + 20, { sessionId: "old", usage: usage(20, 2), costUsd: 0.25 }));
        s.appendLog(record(u, NOW + 30, { sessionId: "new", usage: usage(5, 5), costUsd: 1 }));
        // A denied request: no usage, no cost, still a request of the session.
        const { usage: _u, costUsd: _c, ...denied } = record(u, NOW + 40, { sessionId: "new", outcome: "denied", status: 403 });
        s.appendLog(denied);
        s.appendLog(record(uniqueUser(), NOW + 50, { sessionId: "someone-else" }));
        await s.flush();
        const sessions = await s.sessions({ user: u });
        const node = record(u, 0).caller.node;
        expect(sessions).toEqual([
          { id: "new", user: u, node, firstTime: NOW + 30, lastTime: NOW + 40, requests: 2, inputTokens: 5, outputTokens: 5, costUsd: 1 },
          { id: "old", user: u, node, firstTime: NOW + 10, lastTime: NOW + 20, requests: 2, inputTokens: 30, outputTokens: 3, costUsd: 0.75 },
        ]);
        expect(await s.sessions({ user: u, since: NOW + 25 })).toHaveLength(1);
        expect(await s.sessions({ user: u, limit: 1 })).toHaveLength(1);
      });

      it("queries filter by model (the name as logged)", async () => {
        const s = await store();
        const u = uniqueUser();
        const recs = ["gpt-4o", "claude-haiku-4-5", "gpt-4o"].map((model, i) => record(u, NOW + i, { model }));
        for (const r of recs) s.appendLog(r);
        await s.flush();
        expect((await s.queryLogs({ user: u, model: "gpt-4o" })).records.map((r) => r.id)).toEqual([recs[2]!.id, recs[0]!.id]);
        expect((await s.queryLogs({ user: u, model: "claude-haiku-4-5" })).records.map((r) => r.id)).toEqual([recs[1]!.id]);
        expect((await s.queryLogs({ user: u, model: "gpt-4" })).records).toEqual([]);
      });

      it("usage sums requests, tokens and cost per UTC hour or day and per user or model, in [since, until)", async () => {
        const s = await store();
        // Optional in the contract, but every engine of meshguard's has it.
        expect(s.usage).toBeTypeOf("function");
        const [a, b] = [uniqueUser(), uniqueUser()];
        // A day of its own (no other test writes there), starting at 00:00 UTC.
        const D = Date.UTC(2027, 5, 1);
        const H = 3_600_000;
        const usage = (i: number, o: number) => ({ inputTokens: i, outputTokens: o, estimated: false });
        const put = (user: string, t: number, model: string, i: number, o: number, cost: number) => s.appendLog(record(user, t, { model, usage: usage(i, o), costUsd: cost }));
        put(a, D + 5, "gpt-4o", 10, 1, 0.5);
        put(a, D + H - 1, "claude-haiku-4-5", 20, 2, 0.25); // the last millisecond of hour 0
        put(b, D + 30 * 60_000, "gpt-4o", 40, 4, 1);
        put(a, D + H, "gpt-4o", 1, 1, 0.125); // the first of hour 1
        put(a, D + 25 * H, "claude-haiku-4-5", 3, 3, 2); // the next day
        put(a, D - 1, "gpt-4o", 1000, 1000, 100); // before since: left out
        put(a, D + 48 * H, "gpt-4o", 1000, 1000, 100); // at until: left out
        await s.flush();
        const range = { since: D, until: D + 48 * H };
        const row = (start: number, key: string, requests: number, inputTokens: number, outputTokens: number, costUsd: number) => ({ start, key, requests, inputTokens, outputTokens, costUsd });
        expect(await s.usage!({ ...range, bucket: "hour", by: "user", user: a })).toEqual([
          row(D, a, 2, 30, 3, 0.75),
          row(D + H, a, 1, 1, 1, 0.125),
          row(D + 25 * H, a, 1, 3, 3, 2),
        ]);
        expect(await s.usage!({ ...range, bucket: "hour", by: "model", user: a })).toEqual([
          row(D, "claude-haiku-4-5", 1, 20, 2, 0.25),
          row(D, "gpt-4o", 1, 10, 1, 0.5),
          row(D + H, "gpt-4o", 1, 1, 1, 0.125),
          row(D + 25 * H, "claude-haiku-4-5", 1, 3, 3, 2),
        ]);
        // Every user (no user filter), by day: a's and b's records of the first day, ordered by key.
        const byDay = await s.usage!({ ...range, bucket: "day", by: "user" });
        expect(byDay).toEqual([row(D, a, 3, 31, 4, 0.875), row(D, b, 1, 40, 4, 1), row(D + 24 * H, a, 1, 3, 3, 2)].sort((x, y) => x.start - y.start || (x.key < y.key ? -1 : 1)));
        expect(await s.usage!({ ...range, bucket: "day", by: "model" })).toEqual([
          row(D, "claude-haiku-4-5", 1, 20, 2, 0.25),
          row(D, "gpt-4o", 3, 51, 6, 1.625),
          row(D + 24 * H, "claude-haiku-4-5", 1, 3, 3, 2),
        ]);
        expect(await s.usage!({ since: D + 2 * H, until: D + 3 * H, bucket: "hour", by: "user" })).toEqual([]);
      });

      it("prune deletes records older than the cutoff and says how many", async () => {
        const s = await store();
        const u = uniqueUser();
        // Times before every other test's, so this prune touches only these.
        for (let i = 0; i < 30; i++) s.appendLog(record(u, 1_000 + i));
        await s.flush();
        expect(await s.prune(1_020)).toBe(20);
        const left = (await s.queryLogs({ user: u })).records.map((r) => r.time);
        expect(left).toEqual(Array.from({ length: 10 }, (_, i) => 1_029 - i));
        expect(await s.prune(1_020)).toBe(0);
      });

      it("close() writes what is pending; a reopened store reads it", async () => {
        const u = uniqueUser();
        const s1 = await open();
        const recs = Array.from({ length: 50 }, (_, i) => record(u, NOW + i));
        for (const r of recs) s1.appendLog(r);
        await s1.close();
        await s1.close(); // idempotent
        const s2 = await store();
        expect((await s2.queryLogs({ user: u })).records).toHaveLength(50);
      });

      it("appendLog never throws, even for a record no engine could store; the others of its batch are kept", async () => {
        const s = await store();
        const u = uniqueUser();
        const good = record(u, NOW);
        const circular = record(u, NOW + 1) as LogRecord & { self?: unknown };
        circular.self = circular;
        expect(() => s.appendLog(circular)).not.toThrow();
        expect(() => s.appendLog({ ...record(u, NOW + 2), time: Number.NaN })).not.toThrow();
        s.appendLog(good);
        await s.flush();
        expect((await s.queryLogs({ user: u })).records.map((r) => r.id)).toEqual([good.id]);
      });
    });

    describe("retention and credentials", () => {
      it('"metadata" keeps everything but headers and bodies', async () => {
        const s = await store({ retention: { mode: "metadata" } });
        const u = uniqueUser();
        const rec = record(u, NOW);
        s.appendLog(rec);
        await s.flush();
        const { requestHeaders: _h, requestBody: _q, responseBody: _a, ...meta } = rec;
        expect(await s.getLog(rec.id)).toEqual(meta);
      });

      it('"none" stores no record, but bucket state still', async () => {
        const s = await store({ retention: { mode: "none" } });
        const u = uniqueUser();
        const rec = record(u, NOW);
        s.appendLog(rec);
        await s.flush();
        expect(await s.getLog(rec.id)).toBeUndefined();
        expect((await s.queryLogs({ user: u })).records).toEqual([]);
        const key = `k-${randomUUID()}`;
        await s.bucketTx([key], () => ({ states: [{ key, level: 3, updatedAt: NOW }], result: undefined }));
        expect(await s.bucketTx([key], (m) => ({ states: [], result: m.get(key)?.level }))).toBe(3);
      });

      it("credential headers and configured secrets never come back from the store, in any field", async () => {
        const secret = `sk-ant-api03-${randomUUID()}`;
        const s = await store({ secrets: [secret] });
        const u = uniqueUser();
        const rec = record(u, NOW, {
          reason: `upstream said: invalid key ${secret}`,
          requestHeaders: { authorization: "Bearer client-key-1", "x-api-key": secret, "x-goog-api-key": "g-1", cookie: "sid=1", "x-echo": `k=${secret}`, accept: "*/*" },
          requestBody: JSON.stringify({ note: `my key is ${secret}` }),
          responseBody: `error: ${secret}`,
        });
        s.appendLog(rec);
        await s.flush();
        const back = await s.getLog(rec.id);
        const text = JSON.stringify(back);
        expect(text).not.toContain(secret);
        expect(text).not.toContain("client-key-1");
        expect(back?.requestHeaders).toEqual({ accept: "*/*" });
        expect(back?.reason).toBe("upstream said: invalid key [REDACTED]");
        expect(back?.responseBody).toBe("error: [REDACTED]");
      });

      it("a secret holding JSON's escape characters is removed too, and the record still reads back", async () => {
        const odd = `pa"ss\\word-${randomUUID()}`;
        const s = await store({ secrets: [odd] });
        const rec = record(uniqueUser(), NOW, { reason: `echoed ${odd}!`, model: odd });
        s.appendLog(rec);
        await s.flush();
        const back = await s.getLog(rec.id);
        expect(back?.reason).toBe("echoed [REDACTED]!");
        expect(back?.model).toBe("[REDACTED]");
        expect(JSON.stringify(back)).not.toContain(JSON.stringify(odd).slice(1, -1));
      });
    });

    tokenStoreConformance(name, async () => {
      const s = await open();
      const tokens = s.oauthTokens;
      if (tokens === undefined) throw new Error(`the ${name} store keeps no OAuth tokens`);
      const more: GatewayStore[] = [];
      return {
        tokens,
        reopen: async () => {
          await s.close();
          const again = await open();
          more.push(again);
          return again.oauthTokens!;
        },
        close: async () => {
          await s.close().catch(() => undefined);
          await Promise.all(more.map((m) => m.close()));
        },
      };
    });

    describe("buckets and reservations", () => {
      const state = (key: string, level: number): BucketState => ({ key, level, updatedAt: NOW });

      it("fn sees the stored states of the keys it asked for (missing ones absent) and its states are stored", async () => {
        const s = await store();
        const [k1, k2] = [`k-${randomUUID()}`, `k-${randomUUID()}`];
        const seen = await s.bucketTx([k1, k2], (m) => ({ states: [state(k1, 10)], result: [...m.keys()] }));
        expect(seen).toEqual([]);
        const again = await s.bucketTx([k1, k2], (m) => ({ states: [], result: Object.fromEntries(m) }));
        expect(again).toEqual({ [k1]: state(k1, 10) });
      });

      it("200 concurrent transactions never overspend a bucket: exactly the capacity is granted", async () => {
        const s = await store();
        const key = `k-${randomUUID()}`;
        await s.bucketTx([key], () => ({ states: [state(key, 150)], result: undefined }));
        const results = await Promise.all(
          Array.from({ length: 200 }, (_, i) =>
            s.bucketTx([key], (m) => {
              const level = m.get(key)!.level;
              if (level < 1) return { states: [], result: false };
              const res = { id: `r-${key}-${i}`, holds: [{ key, amount: 1 }], time: NOW + i };
              return { states: [{ key, level: level - 1, updatedAt: NOW + i }], add: res, result: true };
            }),
          ),
        );
        expect(results.filter(Boolean)).toHaveLength(150);
        expect(await s.bucketTx([key], (m) => ({ states: [], result: m.get(key)!.level }))).toBe(0);
        const mine = (await s.reservations()).filter((r) => r.holds[0]!.key === key);
        expect(mine).toHaveLength(150);
      });

      it("a transaction whose fn throws changes nothing and rejects with fn's error", async () => {
        const s = await store();
        const key = `k-${randomUUID()}`;
        await s.bucketTx([key], () => ({ states: [state(key, 5)], result: undefined }));
        const boom = new Error("fn failed");
        await expect(
          s.bucketTx([key], () => {
            throw boom;
          }),
        ).rejects.toBe(boom);
        expect(await s.bucketTx([key], (m) => ({ states: [], result: m.get(key)!.level }))).toBe(5);
        // And the store still works afterwards (no transaction left open).
        await s.bucketTx([key], () => ({ states: [state(key, 4)], result: undefined }));
        expect(await s.bucketTx([key], (m) => ({ states: [], result: m.get(key)!.level }))).toBe(4);
      });

      it("a reservation added is listed until a later transaction removes it", async () => {
        const s = await store();
        const key = `k-${randomUUID()}`;
        const res = { id: `r-${randomUUID()}`, holds: [{ key, amount: 2.5 }, { key: `${key}-overdraft`, amount: 0.5 }], time: NOW };
        await s.bucketTx([key], () => ({ states: [state(key, 7.5)], add: res, result: undefined }));
        expect((await s.reservations()).find((r) => r.id === res.id)).toEqual(res);
        await s.bucketTx([key], () => ({ states: [state(key, 8)], remove: res.id, result: undefined }));
        expect((await s.reservations()).find((r) => r.id === res.id)).toBeUndefined();
      });

      it("listBuckets (when the engine has it) lists every stored state", async () => {
        const s = await store();
        if (!s.listBuckets) return;
        const keys = [`k-${randomUUID()}`, `k-${randomUUID()}`];
        await s.bucketTx(keys, () => ({ states: keys.map((k, i) => state(k, i + 0.5)), result: undefined }));
        const listed = (await s.listBuckets()).filter((b) => keys.includes(b.key));
        expect(listed.sort((a, b) => a.key.localeCompare(b.key))).toEqual(keys.map((k, i) => state(k, i + 0.5)).sort((a, b) => a.key.localeCompare(b.key)));
      });

      it("a reservation's holds are kept as given, extra fields (a chain number) included", async () => {
        const s = await store();
        const key = `k-${randomUUID()}`;
        const res = { id: `r-${randomUUID()}`, holds: [{ key, amount: 1, chain: 0 }, { key: `${key}-2`, amount: 2, chain: 1 }], time: NOW };
        await s.bucketTx([key], () => ({ states: [], add: res, result: undefined }));
        expect((await s.reservations()).find((r) => r.id === res.id)).toEqual(res);
      });

      it("bucket states and unsettled reservations survive close and reopen", async () => {
        const key = `k-${randomUUID()}`;
        const res = { id: `r-${randomUUID()}`, holds: [{ key, amount: 1.25 }], time: NOW };
        const s1 = await open();
        await s1.bucketTx([key], () => ({ states: [state(key, 3.75)], add: res, result: undefined }));
        await s1.close();
        const s2 = await store();
        expect((await s2.reservations()).find((r) => r.id === res.id)).toEqual(res);
        expect(await s2.bucketTx([key], (m) => ({ states: [], result: m.get(key) }))).toEqual(state(key, 3.75));
      });
    });

    it("after close, reads reject with CLOSED and appends are ignored", async () => {
      const s = await open();
      await s.close();
      expect(() => s.appendLog(record(uniqueUser(), NOW))).not.toThrow();
      const err = await s.queryLogs({}).catch((e: unknown) => e);
      expect(isMeshguardError(err, ErrorCode.CLOSED)).toBe(true);
    });
  });
}
