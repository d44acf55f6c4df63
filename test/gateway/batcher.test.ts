// The LogBatcher both store engines write their logs through
// (src/gateway/store/batcher.ts): what it promises about losing nothing,
// checked against a writer that fails when told to. Both engines' own
// behaviour through it (close writes what is pending, a locked database
// retried, a lost connection) is in store-conformance.ts, store.test.ts
// and pg-store.test.ts.
import { afterEach, expect, it } from "vitest";
import { ErrorCode, isMeshguardError, type MeshguardError } from "../../src/errors.js";
import { LogBatcher } from "../../src/gateway/store/batcher.js";
import { prepareSecrets, type LogRow } from "../../src/gateway/store/record.js";
import type { Retention } from "../../src/gateway/types.js";
import { record } from "./fixtures-records.js";

/** A writer standing for an engine: keeps what it wrote, fails while `failing`, can be held mid-write. */
function writer() {
  const w = {
    written: [] as LogRow[],
    batches: 0,
    failing: false,
    hold: undefined as Promise<void> | undefined,
    async write(rows: LogRow[]) {
      w.batches++;
      if (w.hold) await w.hold;
      if (w.failing) throw new Error("disk full");
      w.written.push(...rows);
    },
  };
  return w;
}

const opened: LogBatcher[] = [];
afterEach(async () => {
  await Promise.all(opened.splice(0).map((b) => b.close()));
});

function batcher(w: ReturnType<typeof writer>, o: { intervalMs?: number; maxPending?: number; maxBatch?: number; batchSize?: number; retention?: Retention; secrets?: string[] } = {}) {
  const errors: MeshguardError[] = [];
  const b = new LogBatcher({
    intervalMs: o.intervalMs ?? 60_000,
    retention: o.retention ?? { mode: "full" },
    secrets: prepareSecrets(o.secrets ?? []),
    write: (rows) => w.write(rows),
    onError: (e) => errors.push(e),
    ...(o.maxPending !== undefined ? { maxPending: o.maxPending } : {}),
    ...(o.maxBatch !== undefined ? { maxBatch: o.maxBatch } : {}),
    ...(o.batchSize !== undefined ? { batchSize: o.batchSize } : {}),
  });
  opened.push(b);
  return { b, errors };
}

const ids = (rows: LogRow[]) => rows.map((r) => r.id);
const recs = (n: number, t = 1_700_000_000_000) => Array.from({ length: n }, (_, i) => record("ann@example.com", t + i));

it("append only queues; the timer writes one batch per interval, in append order", async () => {
  const w = writer();
  const { b } = batcher(w, { intervalMs: 20 });
  const rs = recs(5);
  for (const r of rs) b.append(r);
  expect(w.written).toHaveLength(0);
  expect(b.pending).toBe(5);
  await expect.poll(() => w.written.length).toBe(5);
  expect(ids(w.written)).toEqual(rs.map((r) => r.id));
  expect(w.batches).toBe(1);
});

it("batchSize rows waiting make a batch go out before the interval, once the answer's turn of the loop is over", async () => {
  const w = writer();
  const { b } = batcher(w, { batchSize: 4 });
  const rs = recs(9);
  for (const r of rs.slice(0, 3)) b.append(r);
  await new Promise((r) => setImmediate(r));
  expect(w.batches).toBe(0);
  b.append(rs[3]!);
  // Not inside append (the request path): after this turn of the loop.
  expect(w.batches).toBe(0);
  await expect.poll(() => w.written.length).toBe(4);
  for (const r of rs.slice(4, 8)) b.append(r);
  await expect.poll(() => w.written.length).toBe(8);
  b.append(rs[8]!);
  // The ninth waits for the interval (a minute here), or a flush.
  expect(b.pending).toBe(1);
  await b.flush();
  expect(ids(w.written)).toEqual(rs.map((r) => r.id));
  expect(w.batches).toBe(3);
});

it("batches hold at most maxBatch records (one transaction each), still in order", async () => {
  const w = writer();
  const { b } = batcher(w, { maxBatch: 3 });
  const rs = recs(8);
  for (const r of rs) b.append(r);
  await b.flush();
  expect(w.batches).toBe(3);
  expect(ids(w.written)).toEqual(rs.map((r) => r.id));
});

it("a failed write keeps its records: flush rejects, a retry is scheduled, and the next write has them first, in order", async () => {
  const w = writer();
  const { b, errors } = batcher(w, { intervalMs: 10 });
  const first = recs(3);
  for (const r of first) b.append(r);
  w.failing = true;
  await expect(b.flush()).rejects.toThrow(/disk full/);
  expect(b.pending).toBe(3);
  const later = recs(2, 1_800_000_000_000);
  for (const r of later) b.append(r);
  // The timer's retries fail too, reported, and keep everything.
  await expect.poll(() => errors.length, { timeout: 5000 }).toBeGreaterThan(0);
  expect(isMeshguardError(errors[0]) && errors[0].code).toBe(ErrorCode.STORE_FAILED);
  expect(errors[0]!.message).toMatch(/kept and retried/);
  expect(b.pending).toBe(5);
  // Retries wait at least a second: a failing disk is not hammered every interval.
  const tries = w.batches;
  await new Promise((r) => setTimeout(r, 300));
  expect(w.batches - tries).toBeLessThanOrEqual(1);
  w.failing = false;
  await expect.poll(() => w.written.length, { timeout: 5000 }).toBe(5);
  expect(ids(w.written)).toEqual([...first, ...later].map((r) => r.id));
  expect(b.pending).toBe(0);
});

it("while writes fail, batchSize rows waiting do not make a batch go out: retries keep to at most one a second", async () => {
  const w = writer();
  const { b } = batcher(w, { intervalMs: 10, batchSize: 2 });
  for (const r of recs(2)) b.append(r);
  await expect.poll(() => w.batches).toBe(1);
  w.failing = true;
  for (const r of recs(2, 1_800_000_000_000)) b.append(r);
  await expect.poll(() => w.batches).toBe(2);
  const tries = w.batches;
  for (const r of recs(20, 1_900_000_000_000)) {
    b.append(r);
    await new Promise((res) => setImmediate(res));
  }
  await new Promise((r) => setTimeout(r, 300));
  expect(w.batches - tries).toBeLessThanOrEqual(1);
  expect(b.pending).toBe(22);
  // Once a write succeeds, full batches go out early again.
  w.failing = false;
  await b.flush();
  expect(w.written).toHaveLength(24);
  for (const r of recs(2, 2_000_000_000_000)) b.append(r);
  await expect.poll(() => w.written.length).toBe(26);
});

it("backpressure: while writes fail at most maxPending records are kept; the oldest are dropped, counted and reported", async () => {
  const w = writer();
  w.failing = true;
  const { b, errors } = batcher(w, { maxPending: 10 });
  const rs = recs(15);
  for (const r of rs) b.append(r);
  expect(b.pending).toBe(10);
  expect(b.dropped).toBe(5);
  expect(errors.map((e) => e.message).join("\n")).toMatch(/dropped 1 log record\(s\) \(5 in all\): more than 10 were waiting/);
  // A failed flush puts its batch back without going past the bound either.
  await expect(b.flush()).rejects.toThrow();
  expect(b.pending).toBe(10);
  w.failing = false;
  await b.flush();
  expect(ids(w.written)).toEqual(rs.slice(5).map((r) => r.id));
});

it("close() writes everything pending, waits for a batch already being written, and writes what is appended while it closes", async () => {
  const w = writer();
  const { b } = batcher(w, { intervalMs: 5 });
  const rs = recs(4);
  let release!: () => void;
  w.hold = new Promise((r) => (release = r));
  b.append(rs[0]!);
  // The timer has taken the first record and is writing it (held): nothing is pending.
  await expect.poll(() => w.batches).toBe(1);
  expect(b.pending).toBe(0);
  const closing = b.close();
  b.append(rs[1]!);
  b.append(rs[2]!);
  w.hold = undefined;
  release();
  await closing;
  expect(ids(w.written)).toEqual(rs.slice(0, 3).map((r) => r.id));
  // After close nothing is kept, and flush has nothing to do.
  b.append(rs[3]!);
  expect(b.pending).toBe(0);
  await b.flush();
  expect(w.written).toHaveLength(3);
  expect(b.close()).toBe(closing);
});

it("close() with a store that cannot write reports how many records are lost, and does not reject", async () => {
  const w = writer();
  w.failing = true;
  const { b, errors } = batcher(w);
  for (const r of recs(7)) b.append(r);
  await b.close();
  const lost = errors.find((e) => /closing/.test(e.message))!;
  expect(lost.message).toMatch(/closing: 7 log record\(s\) could not be written and are lost: disk full/);
  expect(lost.code).toBe(ErrorCode.STORE_FAILED);
  expect(b.pending).toBe(0);
});

it("rows are made when a record is appended: retention applied, secrets scrubbed; \"none\" keeps nothing", async () => {
  const w = writer();
  const { b } = batcher(w, { retention: { mode: "metadata" }, secrets: ["sk-secret-123"] });
  const rec = record("ann@example.com", 1_700_000_000_000, { reason: "upstream said sk-secret-123 is wrong" });
  b.append(rec);
  // What is queued is the row: a record changed after its append does not change what is stored.
  rec.reason = "changed later";
  await b.flush();
  expect(w.written).toHaveLength(1);
  expect(w.written[0]!.requestBody).toBeNull();
  expect(JSON.stringify(w.written[0])).not.toContain("sk-secret-123");
  expect(w.written[0]!.meta).not.toContain("changed later");

  const none = writer();
  const n = batcher(none, { retention: { mode: "none" } });
  n.b.append(record("ann@example.com", 1_700_000_000_000));
  expect(n.b.pending).toBe(0);
  await n.b.flush();
  expect(none.batches).toBe(0);
});

it("a record that cannot be made into a row is dropped alone and reported at its append; a failed write does not report it again", async () => {
  const w = writer();
  const { b, errors } = batcher(w);
  const good = recs(2);
  b.append(good[0]!);
  b.append(record("ann@example.com", Number.NaN));
  expect(errors.filter((e) => /could not be stored and was dropped/.test(e.message))).toHaveLength(1);
  b.append(good[1]!);
  w.failing = true;
  await expect(b.flush()).rejects.toThrow();
  expect(b.pending).toBe(2);
  w.failing = false;
  await b.flush();
  expect(ids(w.written)).toEqual(good.map((r) => r.id));
  expect(errors.filter((e) => /could not be stored and was dropped/.test(e.message))).toHaveLength(1);
});
