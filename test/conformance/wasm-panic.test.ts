// A panic inside the wasm core, tested against a real wasm build with the
// core's test-only methods (build/wasm-testhooks/, which test/build.mjs
// builds; the published wasm/meshguard.wasm has none of them). The same as
// test/integration/core-panic.test.ts does for the native addon, plus the
// case only the wasm core can survive: a panic nothing recovers kills the Go
// runtime (natively that ends the process, as Go does for any program), and
// the host process must live on with every call failing clearly.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { packageRoot } from "../../src/backend/load.js";
import { WasmBackend } from "../../src/backend/wasm.js";
import { ErrorCode, MeshguardError } from "../../src/index.js";

const dir = join(packageRoot(), "build", "wasm-testhooks");

/** The test-only methods, which the protocol table (rightly) does not know. */
interface TestHooks {
  call(method: "panicTest" | "panicGoroutineTest" | "panicUnrecoveredTest"): Promise<unknown>;
}

let backend: WasmBackend;

beforeAll(async () => {
  if (!existsSync(join(dir, "meshguard.wasm"))) throw new Error(`${dir}/meshguard.wasm is missing: run \`node test/build.mjs --tests\``);
  backend = await WasmBackend.load(dir, {});
});

async function rejection(p: Promise<unknown>): Promise<MeshguardError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(MeshguardError);
  return err as MeshguardError;
}

describe("a panic in the wasm core", () => {
  it("the test methods are in the test build and not in the published module", () => {
    expect(readFileSync(join(dir, "meshguard.wasm")).includes("panicUnrecoveredTest")).toBe(true);
    expect(readFileSync(join(packageRoot(), "wasm", "meshguard.wasm")).includes("panicUnrecoveredTest")).toBe(false);
  });

  it("inside a call rejects that call with MESHGUARD_CORE_PANIC, and the core answers the next call", async () => {
    const err = await rejection((backend as unknown as TestHooks).call("panicTest"));
    expect(err.code).toBe(ErrorCode.CORE_PANIC);
    expect(err.message).toMatch(/deliberate panic/);
    expect(await backend.call("handles")).toEqual({ nodes: 0, listeners: 0, conns: 0 });
  });

  it("on a core goroutine becomes a MESHGUARD_CORE_PANIC process warning, and the core lives on", async () => {
    const warned = new Promise<Error & { code?: string }>((resolve) => {
      const onWarning = (w: Error & { code?: string }) => {
        if (w.code !== ErrorCode.CORE_PANIC) return;
        process.off("warning", onWarning);
        resolve(w);
      };
      process.on("warning", onWarning);
    });
    await (backend as unknown as TestHooks).call("panicGoroutineTest");
    const w = await warned;
    expect(w.message).toMatch(/panicGoroutineTest: deliberate goroutine panic/);
    expect(await backend.call("handles")).toEqual({ nodes: 0, listeners: 0, conns: 0 });
  });

  it("nothing recovers kills the Go runtime, not the host: every call then fails with an error naming the exit", async () => {
    const warned = new Promise<Error & { code?: string }>((resolve) => {
      const onWarning = (w: Error & { code?: string }) => {
        if (w.code !== "MESHGUARD_CORE_EXITED") return;
        process.off("warning", onWarning);
        resolve(w);
      };
      process.on("warning", onWarning);
    });
    await (backend as unknown as TestHooks).call("panicUnrecoveredTest");
    // Said even with no call in flight.
    expect((await warned).message).toMatch(/the wasm core stopped/);
    const deadline = Date.now() + 20_000;
    let err: unknown;
    for (;;) {
      err = await backend.call("handles").then(
        () => undefined,
        (e: unknown) => e,
      );
      if (err !== undefined || Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(err, "the core still answered 20 s after the unrecovered panic").toBeInstanceOf(MeshguardError);
    expect((err as MeshguardError).code).toBe(ErrorCode.INTERNAL);
    expect((err as MeshguardError).message).toMatch(/^the wasm core stopped: its Go runtime exited with code 2 \(an unrecovered panic\)/);
    expect((err as MeshguardError).hint).toMatch(/every node on this core is closed/);
    // Later calls fail the same way, at once; this process is still here to see it.
    const again = await rejection(backend.call("handles"));
    expect(again.message).toBe((err as MeshguardError).message);
  });
});
