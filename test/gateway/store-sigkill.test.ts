// A SIGKILL loses at most the log records of the last flush interval: a
// child process appends records steadily (flushIntervalMs 100) and reports
// each one; it is killed mid-stream; the reopened database holds every
// record reported more than one interval (plus scheduling slack) before
// the kill, each intact, and the file passes SQLite's integrity check.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { fileURLToPath } from "node:url";
import { afterAll, expect, it } from "vitest";
import { openStore } from "../../src/gateway/store/index.js";
import type { LogRecord } from "../../src/gateway/types.js";
// @ts-expect-error -- a plain .mjs fixture, shared with the child process
import { appenderRecord } from "./fixtures/appender-record.mjs";

const FLUSH_MS = 100;
/** Timer lateness and the time a flush takes, on a loaded test machine. */
const SLACK_MS = 60;
const fixture = fileURLToPath(new URL("./fixtures/store-appender.mjs", import.meta.url));
const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

/** Runs the appender for `runMs`, SIGKILLs it, and returns what it reported and when it was killed. */
async function appendThenKill(dataDir: string, runMs: number): Promise<{ reported: Map<number, number>; killedAt: number }> {
  const child = spawn(process.execPath, [fixture, dataDir, String(FLUSH_MS)], { stdio: ["ignore", "pipe", "pipe"] });
  const reported = new Map<number, number>();
  let stderr = "";
  let buf = "";
  let ready!: () => void;
  const isReady = new Promise<void>((r) => (ready = r));
  child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  child.stdout.on("data", (d: Buffer) => {
    buf += d.toString();
    const lines = buf.split("\n");
    buf = lines.pop()!;
    for (const line of lines) {
      if (line === "ready") ready();
      else {
        const [seq, time] = line.split(" ").map(Number);
        reported.set(seq!, time!);
      }
    }
  });
  const exited = new Promise<NodeJS.Signals | null>((r) => child.on("close", (_code, signal) => r(signal)));
  await Promise.race([isReady, exited.then(() => Promise.reject(new Error(`the appender exited early: ${stderr}`)))]);
  await new Promise((r) => setTimeout(r, runMs));
  const killedAt = Date.now();
  child.kill("SIGKILL");
  expect(await exited).toBe("SIGKILL");
  expect(stderr.replace(/.*ExperimentalWarning.*\n?|.*--trace-warnings.*\n?/g, "")).toBe("");
  return { reported, killedAt };
}

it.each([1, 2, 3])("SIGKILL mid-stream (run %i): only records of the last flush interval are missing, none damaged", async () => {
  const dataDir = mkdtempSync(join(tmpdir(), "mg-kill-"));
  dirs.push(dataDir);
  const { reported, killedAt } = await appendThenKill(dataDir, 1200 + Math.floor(Math.random() * 200));

  const raw = new DatabaseSync(join(dataDir, "gateway.db"));
  expect(raw.prepare("PRAGMA integrity_check").all()).toEqual([{ integrity_check: "ok" }]);
  raw.close();

  const store = await openStore({}, { dataDir, retention: { mode: "full" } });
  const stored: LogRecord[] = [];
  let before: string | undefined;
  do {
    const page = await store.queryLogs({ user: "kill@example.com", limit: 1000, ...(before ? { before } : {}) });
    stored.push(...page.records);
    before = page.next;
  } while (before);
  await store.close();

  // Not vacuous: the child ran long enough to write many batches.
  expect(reported.size).toBeGreaterThan(500);
  expect(stored.length).toBeGreaterThan(300);
  // None damaged: each stored record is exactly what was appended.
  for (const rec of stored) {
    const seq = Number(rec.id.slice("rec-".length));
    expect(rec).toEqual(appenderRecord(seq, rec.time));
  }
  // Missing: only reported records appended within the last interval before the kill.
  const have = new Set(stored.map((r) => Number(r.id.slice(4))));
  const missing = [...reported].filter(([seq]) => !have.has(seq));
  const oldestMissingAge = missing.length === 0 ? 0 : killedAt - Math.min(...missing.map(([, t]) => t));
  expect(oldestMissingAge, `${missing.length} missing, the oldest appended ${oldestMissingAge} ms before the kill`).toBeLessThanOrEqual(FLUSH_MS + SLACK_MS);
  // And what is missing is the tail: no hole in the middle.
  const lastStored = Math.max(...have);
  expect(missing.every(([seq]) => seq > lastStored)).toBe(true);
  console.log(`run: ${reported.size} appended, ${missing.length} lost (oldest ${oldestMissingAge} ms before the kill)`);
}, 30_000);
