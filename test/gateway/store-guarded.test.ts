// The store in a guarded process (the gateway guards itself): with a loaded
// policy its worker thread starts under the guard; with a custom evaluator
// the guard refuses workers and the store runs on the main thread instead.
// Either way every record is stored.
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, expect, it } from "vitest";

const FIXTURE = fileURLToPath(new URL("./fixtures/store-guarded.mjs", import.meta.url));
const DIST = fileURLToPath(new URL("../../dist/guard/index.js", import.meta.url));
const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

it.each([
  ["a loaded policy", "a worker thread", "policy", "worker"],
  ["a custom evaluator", "the main thread", "evaluator", "inline"],
])("guarded with %s: the store runs on %s and stores every record", (_policy, _thread, kind, runsOn) => {
  expect(existsSync(DIST), "dist/ is missing: run node test/build.mjs first").toBe(true);
  const dir = mkdtempSync(join(tmpdir(), "mg-store-guarded-"));
  dirs.push(dir);
  const r = spawnSync(process.execPath, [FIXTURE, dir, kind], { encoding: "utf8", timeout: 60_000 });
  expect(r.status, r.stderr).toBe(0);
  expect(JSON.parse(r.stdout)).toEqual({ runsOn, records: 10 });
});
