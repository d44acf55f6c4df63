// Bucket transactions are atomic across processes sharing one SQLite file
// (BEGIN IMMEDIATE takes the write lock before the states are read): four
// processes racing for a bucket of 150 units are granted exactly 150.
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, expect, it } from "vitest";
import { openStore } from "../../src/gateway/store/index.js";

const run = promisify(execFile);
const fixture = fileURLToPath(new URL("./fixtures/store-spender.mjs", import.meta.url));
const dir = mkdtempSync(join(tmpdir(), "mg-spend-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

it("4 processes x 100 transactions on a bucket of 150: exactly 150 granted, level 0, 150 reservations", async () => {
  const key = "daily/user:race@example.com";
  const store = await openStore({}, { dataDir: dir, retention: { mode: "none" } });
  await store.bucketTx([key], () => ({ states: [{ key, level: 150, updatedAt: Date.now() }], result: undefined }));
  await store.close();

  const outs = await Promise.all(Array.from({ length: 4 }, () => run(process.execPath, [fixture, dir, key, "100"], { timeout: 60_000 })));
  const results = outs.map((o) => JSON.parse(o.stdout) as { granted: number; refused: number });
  // Not vacuous: more than one process got a share, so they really raced.
  expect(results.filter((r) => r.granted > 0).length).toBeGreaterThan(1);
  expect(results.reduce((a, r) => a + r.granted, 0)).toBe(150);

  const after = await openStore({}, { dataDir: dir, retention: { mode: "none" } });
  expect(await after.bucketTx([key], (m) => ({ states: [], result: m.get(key)?.level }))).toBe(0);
  expect(await after.reservations()).toHaveLength(150);
  await after.close();
}, 90_000);
