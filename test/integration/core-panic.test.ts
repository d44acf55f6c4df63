// The core contains its panics, and keeps its error codes across the
// protocol, tested against a real addon: build/meshguard-testhooks.node,
// which test/build.mjs builds with the core's test-only methods
// (go/core/testhooks.go). The published addon has none of them. This file
// runs in its own process (vitest.config: forks), so the test addon is the
// process's one Go runtime.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadBackend, packageRoot } from "../../src/backend/load.js";
import type { Backend } from "../../src/backend/protocol.js";
import { ErrorCode, MeshguardError } from "../../src/index.js";
import { coreHandles } from "../../src/testing/index.js";

const published = join(packageRoot(), "build", "meshguard.node");
const testAddon = join(packageRoot(), "build", "meshguard-testhooks.node");

/** The test-only methods, which the protocol table (rightly) does not know. */
interface TestHooks {
  call(method: "panicTest" | "panicGoroutineTest"): Promise<unknown>;
}

let backend: Backend;

beforeAll(async () => {
  if (!existsSync(testAddon)) throw new Error(`${testAddon} is missing: run \`node test/build.mjs\``);
  backend = await loadBackend({ addonPath: testAddon, knobs: {} });
  // The first load of a process wins; anything else here means another file
  // loaded the published addon into this process first.
  expect((backend as Backend & { path?: string }).path).toBe(testAddon);
});

async function rejection(p: Promise<unknown>): Promise<MeshguardError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(MeshguardError);
  return err as MeshguardError;
}

describe("test-only core methods", () => {
  it("are in the test addon and not in the published one", () => {
    // The method name is in the binary iff the method is compiled in; the
    // test addon's copy shows the check can tell.
    expect(readFileSync(testAddon).includes("panicTest")).toBe(true);
    expect(readFileSync(published).includes("panicTest")).toBe(false);
  });
});

describe("a panic in the core", () => {
  it("inside a call rejects that call with MESHGUARD_CORE_PANIC, and the core answers the next call", async () => {
    const err = await rejection((backend as unknown as TestHooks).call("panicTest"));
    expect(err.code).toBe(ErrorCode.CORE_PANIC);
    expect(err.message).toMatch(/deliberate panic/);
    expect(await backend.call("handles")).toEqual({ nodes: 0, listeners: 0, conns: 0 });
  });

  it("on a core goroutine becomes a MESHGUARD_CORE_PANIC process warning, and the process lives on", async () => {
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
    expect(await coreHandles()).toEqual({ nodes: 0, listeners: 0, conns: 0 });
  });
});

describe("core errors through the protocol", () => {
  it("keep the code of the error the core wrapped", async () => {
    const closed = await rejection(backend.call("dial", { node: 4242, host: "peer", port: 80 }));
    expect(closed.code).toBe(ErrorCode.CLOSED);
    expect(closed.message).toMatch(/^dial: core\.Dial: node 4242 /);
    const bad = await rejection(backend.call("create", { config: { dir: "", hostname: "x", controlUrl: "http://127.0.0.1:1", authKey: "", ephemeral: false, tags: [], verbose: false } }));
    expect(bad.code).toBe(ErrorCode.INVALID_OPTIONS);
    expect(bad.message).toMatch(/core\.Create: dir is required/);
  });
});

afterAll(async () => {
  expect(await coreHandles()).toEqual({ nodes: 0, listeners: 0, conns: 0 });
});
