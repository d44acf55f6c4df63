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
import { ErrorCode } from "../../src/index.js";
import { coreHandles } from "../../src/testing/index.js";
import { containedPanicCases, rejection } from "./panic-cases.js";

const published = join(packageRoot(), "build", "meshguard.node");
const testAddon = join(packageRoot(), "build", "meshguard-testhooks.node");

let backend: Backend;

beforeAll(async () => {
  if (!existsSync(testAddon)) throw new Error(`${testAddon} is missing: run \`node test/build.mjs\``);
  backend = await loadBackend({ addonPath: testAddon, knobs: {} });
  // The first load of a process wins; anything else here means another file
  // loaded the published addon into this process first.
  expect((backend as Backend & { path?: string }).path).toBe(testAddon);
});

describe("test-only core methods", () => {
  it("are in the test addon and not in the published one", () => {
    // The method name is in the binary iff the method is compiled in; the
    // test addon's copy shows the check can tell.
    expect(readFileSync(testAddon).includes("panicTest")).toBe(true);
    expect(readFileSync(published).includes("panicTest")).toBe(false);
  });
});

describe("a panic in the core", () => {
  containedPanicCases(() => backend, coreHandles, "the process");
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
