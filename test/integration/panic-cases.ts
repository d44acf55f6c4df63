// The cases of a contained panic in the core, shared by the native addon's
// tests (core-panic.test.ts) and the wasm core's (conformance/wasm-panic.test.ts):
// each backend is a build with the core's test-only methods (go/core/testhooks.go).
import { expect, it } from "vitest";
import type { Backend } from "../../src/backend/protocol.js";
import { ErrorCode, MeshguardError } from "../../src/index.js";

/** The test-only methods, which the protocol table (rightly) does not know. */
export interface TestHooks {
  call(method: "panicTest" | "panicGoroutineTest" | "panicUnrecoveredTest"): Promise<unknown>;
}

/** rejection awaits p, expects it to reject with a MeshguardError, and returns that error. */
export async function rejection(p: Promise<unknown>): Promise<MeshguardError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(MeshguardError);
  return err as MeshguardError;
}

/** nextWarning resolves with the next process warning of that code. */
export function nextWarning(code: string): Promise<Error & { code?: string }> {
  return new Promise((resolve) => {
    const onWarning = (w: Error & { code?: string }) => {
      if (w.code !== code) return;
      process.off("warning", onWarning);
      resolve(w);
    };
    process.on("warning", onWarning);
  });
}

/**
 * containedPanicCases defines the two cases every backend must pass: a panic
 * inside a call, and one on a goroutine the core started. handles reads the
 * core's handle tables afterwards (it must still answer).
 */
export function containedPanicCases(backend: () => Backend, handles: () => Promise<unknown>, where: string): void {
  it("inside a call rejects that call with MESHGUARD_CORE_PANIC, and the core answers the next call", async () => {
    const err = await rejection((backend() as unknown as TestHooks).call("panicTest"));
    expect(err.code).toBe(ErrorCode.CORE_PANIC);
    expect(err.message).toMatch(/deliberate panic/);
    expect(await backend().call("handles")).toEqual({ nodes: 0, listeners: 0, conns: 0 });
  });

  it(`on a core goroutine becomes a MESHGUARD_CORE_PANIC process warning, and ${where} lives on`, async () => {
    const warned = nextWarning(ErrorCode.CORE_PANIC);
    await (backend() as unknown as TestHooks).call("panicGoroutineTest");
    const w = await warned;
    expect(w.message).toMatch(/panicGoroutineTest: deliberate goroutine panic/);
    expect(await handles()).toEqual({ nodes: 0, listeners: 0, conns: 0 });
  });
}
