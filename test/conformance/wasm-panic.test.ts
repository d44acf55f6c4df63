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
import { ErrorCode } from "../../src/index.js";
import { containedPanicCases, nextWarning, rejection, type TestHooks } from "../integration/panic-cases.js";

const dir = join(packageRoot(), "build", "wasm-testhooks");

let backend: WasmBackend;

beforeAll(async () => {
  if (!existsSync(join(dir, "meshguard.wasm"))) throw new Error(`${dir}/meshguard.wasm is missing: run \`node test/build.mjs --tests\``);
  backend = await WasmBackend.load(dir, {});
});

describe("a panic in the wasm core", () => {
  it("the test methods are in the test build and not in the published module", () => {
    expect(readFileSync(join(dir, "meshguard.wasm")).includes("panicUnrecoveredTest")).toBe(true);
    expect(readFileSync(join(packageRoot(), "wasm", "meshguard.wasm")).includes("panicUnrecoveredTest")).toBe(false);
  });

  containedPanicCases(() => backend, () => backend.call("handles"), "the core");

  it("nothing recovers kills the Go runtime, not the host: every call then fails with an error naming the exit", async () => {
    const warned = nextWarning("MESHGUARD_CORE_EXITED");
    await (backend as unknown as TestHooks).call("panicUnrecoveredTest");
    // Said even with no call in flight.
    expect((await warned).message).toMatch(/the wasm core stopped/);
    // The warning comes once every call in flight has been failed: the next call fails at once.
    const err = await rejection(backend.call("handles"));
    expect(err.code).toBe(ErrorCode.INTERNAL);
    expect(err.message).toMatch(/^the wasm core stopped: its Go runtime exited with code 2 \(an unrecovered panic\)/);
    expect(err.hint).toMatch(/every node on this core is closed/);
    // Later calls fail the same way, at once; this process is still here to see it.
    const again = await rejection(backend.call("handles"));
    expect(again.message).toBe(err.message);
  });
});
