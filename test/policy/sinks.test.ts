// Audit sinks (src/policy/sinks.ts): the file sink writes a denial before
// write() returns, batches allows, survives several writers on one file,
// and reports write errors instead of throwing them.
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { ErrorCode, MeshguardError } from "../../src/errors.js";
import { decisionEvent, jsonLinesSink, parseRequest, readDecisionEvents, type DecisionEvent } from "../../src/policy/index.js";

const fixture = (name: string) => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url));
const tmpFile = () => join(mkdtempSync(join(tmpdir(), "mg-sink-")), "audit.jsonl");
const read = (file: string) => (existsSync(file) ? readDecisionEvents(readFileSync(file, "utf8"), file) : []);
const paths = (file: string) => read(file).map((e) => (e.target.kind === "http" ? e.target.path : "?"));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** An event as the guard builds it; the outcome follows the effect unless given (observe mode lets everything through). */
function event(path: string, effect: DecisionEvent["effect"], extra: { mode?: "enforce" | "observe"; outcome?: "allow" | "deny" } = {}): DecisionEvent {
  const mode = extra.mode ?? "enforce";
  const outcome = extra.outcome ?? (mode === "observe" || effect !== "deny" ? "allow" : "deny");
  return decisionEvent({ node: "agent", tags: ["tag:agent"] }, parseRequest(`GET http://127.0.0.1:1${path}`), { effect, reason: effect }, { layer: "fetch", outcome, mode, latencyUs: 1 });
}

describe("jsonLinesSink(file)", () => {
  it("a denial is in the file when write() returns, after the allows buffered before it", async () => {
    const file = tmpFile();
    const sink = jsonLinesSink(file, { flushMs: 60_000 });
    sink.write(event("/a1", "allow"));
    sink.write(event("/a2", "allow"));
    expect(paths(file)).toEqual([]); // allows wait
    sink.write(event("/d", "deny"));
    expect(paths(file)).toEqual(["/a1", "/a2", "/d"]);
    sink.write(event("/p", "approve"));
    expect(paths(file)).toEqual(["/a1", "/a2", "/d", "/p"]);
    await sink.close();
  });

  it("an observed would-be denial (mode observe) and an event whose outcome is deny are written at once", async () => {
    const file = tmpFile();
    const sink = jsonLinesSink(file, { flushMs: 60_000 });
    sink.write(event("/observed", "deny", { mode: "observe" }));
    expect(paths(file)).toEqual(["/observed"]);
    // The unified event (issue 6) carries the guard's outcome next to the policy's effect.
    sink.write(event("/refused", "allow", { outcome: "deny" }) as DecisionEvent);
    expect(paths(file)).toEqual(["/observed", "/refused"]);
    sink.write(event("/fine", "allow", { outcome: "allow" }) as DecisionEvent);
    expect(paths(file)).toEqual(["/observed", "/refused"]);
    await sink.close();
    expect(paths(file)).toEqual(["/observed", "/refused", "/fine"]);
  });

  it("allows are written within flushMs, or at once when the batch passes maxBatchBytes", async () => {
    const file = tmpFile();
    const sink = jsonLinesSink(file, { flushMs: 50 });
    sink.write(event("/a1", "allow"));
    expect(paths(file)).toEqual([]);
    await sleep(400);
    expect(paths(file)).toEqual(["/a1"]);
    await sink.close();

    const big = tmpFile();
    const sized = jsonLinesSink(big, { flushMs: 60_000, maxBatchBytes: 1000 });
    const line = JSON.stringify(event("/b0", "allow")).length + 1;
    const fit = Math.ceil(1000 / line);
    for (let i = 0; i < fit - 1; i++) sized.write(event(`/b${i}`, "allow"));
    expect(read(big)).toHaveLength(0);
    sized.write(event(`/b${fit - 1}`, "allow"));
    expect(read(big)).toHaveLength(fit);
    await sized.close();
  });

  it("flush() writes at once; close() flushes, and a write after close() goes to onError", async () => {
    const file = tmpFile();
    const errors: MeshguardError[] = [];
    const sink = jsonLinesSink(file, { flushMs: 60_000, onError: (e) => errors.push(e) });
    sink.write(event("/a1", "allow"));
    await sink.flush();
    expect(paths(file)).toEqual(["/a1"]);
    sink.write(event("/a2", "allow"));
    await sink.close();
    expect(paths(file)).toEqual(["/a1", "/a2"]);
    await sink.close(); // idempotent
    expect(() => sink.write(event("/late", "deny"))).not.toThrow();
    expect(errors).toHaveLength(1);
    expect(errors[0]!.code).toBe(ErrorCode.AUDIT_WRITE_FAILED);
    expect(paths(file)).toEqual(["/a1", "/a2"]);
  });

  it.skipIf(!existsSync("/dev/full"))("write errors (ENOSPC) go to onError as MESHGUARD_AUDIT_WRITE_FAILED and never throw", async () => {
    const errors: MeshguardError[] = [];
    const sink = jsonLinesSink("/dev/full", { flushMs: 60_000, onError: (e) => errors.push(e) });
    sink.write(event("/a", "allow"));
    expect(errors).toHaveLength(0);
    expect(() => sink.write(event("/d", "deny"))).not.toThrow();
    expect(errors).toHaveLength(1);
    expect(errors[0]).toBeInstanceOf(MeshguardError);
    expect(errors[0]!.code).toBe(ErrorCode.AUDIT_WRITE_FAILED);
    expect(errors[0]!.message).toContain("2 event(s) lost");
    expect((errors[0]!.cause as NodeJS.ErrnoException).code).toBe("ENOSPC");
    await expect(sink.close()).resolves.toBeUndefined();
  });

  it.skipIf(!existsSync("/dev/full"))("without onError, a write error is a process warning with code MESHGUARD_AUDIT_WRITE_FAILED", async () => {
    const warnings: Error[] = [];
    const listener = (w: Error) => warnings.push(w);
    process.on("warning", listener);
    try {
      const sink = jsonLinesSink("/dev/full");
      sink.write(event("/d", "deny"));
      await sleep(20); // warnings are emitted on the next tick
      await sink.close();
    } finally {
      process.off("warning", listener);
    }
    expect(warnings.map((w) => (w as Error & { code?: string }).code)).toContain("MESHGUARD_AUDIT_WRITE_FAILED");
  });

  it("an audit file that cannot be opened fails at once, and bad options are refused", () => {
    const dir = mkdtempSync(join(tmpdir(), "mg-sink-"));
    let err: unknown;
    try {
      jsonLinesSink(join(dir, "missing", "audit.jsonl"));
    } catch (e) {
      err = e;
    }
    expect((err as MeshguardError).code).toBe(ErrorCode.AUDIT_WRITE_FAILED);
    expect(() => jsonLinesSink(join(dir, "a.jsonl"), { flushMs: -1 })).toThrow(/flushMs/);
    expect(() => jsonLinesSink(join(dir, "a.jsonl"), { maxBatchBytes: Number.NaN })).toThrow(/maxBatchBytes/);
  });

  it("fsync: true still writes a denial before write() returns", async () => {
    const file = tmpFile();
    const sink = jsonLinesSink(file, { fsync: true });
    sink.write(event("/d", "deny"));
    expect(paths(file)).toEqual(["/d"]);
    await sink.close();
  });

  // The fixtures run the built library (dist/): `node test/build.mjs` first.
  it.each(["natural", "exit"])("buffered allows are written when the process ends normally (%s), and the timer does not hold it", (how) => {
    const file = tmpFile();
    // flushMs is ten minutes: only an unref'd timer lets the process end
    // before the timeout kills it, and only the exit hook writes the lines.
    const r = spawnSync(process.execPath, [fixture("sink-exit.mjs"), file, how], { encoding: "utf8", timeout: 20_000 });
    expect(r.stderr).toBe("");
    expect(r.signal).toBeNull();
    expect(r.status).toBe(0);
    expect(paths(file)).toEqual(["/ok/0", "/ok/1", "/ok/2"]);
  });

  it("a process and two threads of another append to one file at once, then die by SIGKILL: every line parses, every count adds up", async () => {
    const file = tmpFile();
    const count = 500;
    const startAt = Date.now() + 1500;
    const run = (name: string, threads: number) =>
      new Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>((resolve, reject) => {
        const child = spawn(process.execPath, [fixture("sink-writer.mjs"), file, name, String(count), String(threads), String(startAt)], { stdio: ["ignore", "ignore", "pipe"] });
        let stderr = "";
        child.stderr.on("data", (d: Buffer) => (stderr += d));
        child.on("error", reject);
        child.on("exit", (code, signal) => resolve({ code, signal, stderr }));
      });
    const results = await Promise.all([run("p1", 0), run("p2", 2)]);
    for (const r of results) expect(r).toEqual({ code: null, signal: "SIGKILL", stderr: "" });

    const text = readFileSync(file, "utf8");
    expect(text.endsWith("\n")).toBe(true);
    const events = readDecisionEvents(text, file); // throws on a torn or interleaved line
    const byWriter = new Map<string, string[]>();
    for (const e of events) {
      const who = e.principal.node!;
      if (!byWriter.has(who)) byWriter.set(who, []);
      byWriter.get(who)!.push(`${e.effect} ${(e.target as { path: string }).path}`);
    }
    expect([...byWriter.keys()].sort()).toEqual(["p1", "p2.0", "p2.1"]);
    for (const [who, seen] of byWriter) {
      const want: string[] = [];
      for (let i = 0; i < count; i++) want.push(`allow /${who}/${i}`, `deny /${who}/${i}`);
      expect(seen).toEqual(want);
    }
    expect(statSync(file).size).toBe(Buffer.byteLength(text));
    // The writers did overlap (otherwise this test would prove nothing).
    let switches = 0;
    for (let i = 1; i < events.length; i++) if (events[i]!.principal.node !== events[i - 1]!.principal.node) switches++;
    expect(switches).toBeGreaterThan(3);
  });
});

describe("jsonLinesSink(stream)", () => {
  it("writes JSON lines to a stream it does not own (best effort); close() does not end the stream", async () => {
    const stream = new PassThrough();
    let text = "";
    stream.on("data", (d: Buffer) => (text += d));
    const sink = jsonLinesSink(stream);
    sink.write(event("/a", "allow"));
    sink.write(event("/d", "deny"));
    await sink.close();
    expect(readDecisionEvents(text).map((e) => e.effect)).toEqual(["allow", "deny"]);
    expect(stream.writableEnded).toBe(false);
  });

  it("a stream error goes to onError as MESHGUARD_AUDIT_WRITE_FAILED", () => {
    const stream = new PassThrough();
    const errors: MeshguardError[] = [];
    jsonLinesSink(stream, { onError: (e) => errors.push(e) });
    stream.emit("error", new Error("EPIPE"));
    expect(errors[0]!.code).toBe(ErrorCode.AUDIT_WRITE_FAILED);
  });
});
