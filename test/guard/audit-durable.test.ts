// Durable audit through the guard: a denial's line is in the audit file
// before the caller sees the rejection, so a process killed right after its
// denials loses none of them; a failing audit file never turns a denial
// into anything else.
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorCode, MeshguardError } from "../../src/errors.js";
import { jsonLinesSink } from "../../src/guard/index.js";
import { readDecisionEvents } from "../../src/policy/index.js";
import { allowHttp, countingServer, denied, guard, type Counting } from "./helpers.js";

const fixture = (name: string) => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url));
const tmp = () => mkdtempSync(join(tmpdir(), "mg-audit-"));

let srv: Counting;
beforeAll(async () => {
  srv = await countingServer();
});
afterAll(() => srv.close());

describe("durable audit file", () => {
  it("SIGKILL right after 200 denials loses no line: the allows before them and every denial are in the file, in order, and parse", () => {
    const file = join(tmp(), "audit.jsonl");
    const n = 200;
    // The fixture runs the built library (dist/): `node test/build.mjs` first.
    const r = spawnSync(process.execPath, [fixture("deny-then-kill.mjs"), file, String(n)], { encoding: "utf8", timeout: 60_000 });
    expect(r.stderr).toBe("");
    expect(r.signal).toBe("SIGKILL");
    expect(JSON.parse(r.stdout)).toEqual({ denied: n });
    const events = readDecisionEvents(readFileSync(file, "utf8"), file);
    const want = ["allow /ok/0", "allow /ok/1", "allow /ok/2"];
    for (let i = 0; i < n; i++) want.push(`deny /no/${i}`);
    expect(events.map((e) => `${e.effect} ${e.target.kind === "http" ? e.target.path : "?"}`)).toEqual(want);
  });

  it.skipIf(!existsSync("/dev/full"))("a full disk (ENOSPC) is reported to onError as MESHGUARD_AUDIT_WRITE_FAILED; the call is still denied", async () => {
    const errors: unknown[] = [];
    const hits = srv.hits;
    guard({ rules: [allowHttp("127.0.0.1", { path: ["/ok"] })], audit: jsonLinesSink("/dev/full", { onError: (e) => errors.push(e) }) });
    await denied(fetch(`${srv.url}/no`));
    expect(srv.hits).toBe(hits);
    // Reported before the rejection reached us: the write was synchronous.
    expect(errors).toHaveLength(1);
    expect(errors[0]).toBeInstanceOf(MeshguardError);
    expect((errors[0] as MeshguardError).code).toBe(ErrorCode.AUDIT_WRITE_FAILED);
    expect(((errors[0] as MeshguardError).cause as NodeJS.ErrnoException).code).toBe("ENOSPC");
  });
});
