// The TypeScript half of the protocol table test: PROTOCOL_SHAPE (tied to the
// interfaces of protocol.ts by the compiler) against the description the Go
// table is checked against (go/core/testdata/protocol.json, by
// TestProtocolTable). Together they fail whenever the two sides disagree.
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { ErrorCode, MeshguardError } from "../errors.js";
import { errorFromCore } from "./errors.js";
import { CORE_ERROR_CODES, PROTOCOL_SHAPE, PROTOCOL_VERSION, type HandlesResult, type ProtocolShape, type Shape, type StatusResult } from "./protocol.js";

const goTablePath = new URL("../../go/core/testdata/protocol.json", import.meta.url);
const goTable = (): Record<string, unknown> => JSON.parse(readFileSync(goTablePath, "utf8")) as Record<string, unknown>;

/** The TypeScript table as JSON, error codes sorted like Go's. */
function tsTable(): Record<string, unknown> {
  const t = JSON.parse(JSON.stringify(PROTOCOL_SHAPE)) as Record<string, unknown> & { errors: string[] };
  t.errors.sort();
  return t;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

/** diffShapes lists where two descriptions differ, one line per difference, each starting with its path. */
function diffShapes(goSide: unknown, tsSide: unknown, path = ""): string[] {
  if (isObject(goSide) && isObject(tsSide)) {
    const keys = [...new Set([...Object.keys(goSide), ...Object.keys(tsSide)])].sort();
    return keys.flatMap((k) => {
      const p = path ? `${path}.${k}` : k;
      if (!(k in tsSide)) return [`${p}: only in Go (${JSON.stringify(goSide[k])})`];
      if (!(k in goSide)) return [`${p}: only in TypeScript (${JSON.stringify(tsSide[k])})`];
      return diffShapes(goSide[k], tsSide[k], p);
    });
  }
  const g = JSON.stringify(goSide);
  const t = JSON.stringify(tsSide);
  return g === t ? [] : [`${path}: Go says ${g}, TypeScript says ${t}`];
}

describe("protocol table", () => {
  it("the TypeScript table is the Go table (go/core/testdata/protocol.json)", () => {
    const diffs = diffShapes(goTable(), tsTable());
    expect(diffs, "src/backend/protocol.ts and go/core/protocol.go disagree; see the header of go/core/protocol_test.go").toEqual([]);
    expect(PROTOCOL_SHAPE.protocol).toBe(PROTOCOL_VERSION);
  });

  // The proof that the test above can fail: each deliberate change to one
  // side is reported at the place changed.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- the altered copies are plain JSON
  type Alter = (t: any) => unknown;
  it.each<[string, Alter, string]>([
    ["a field renamed", (t) => ((t.methods.dial.result.object.remote = t.methods.dial.result.object.remoteAddr), delete t.methods.dial.result.object.remoteAddr), "methods.dial.result.object.remote"],
    ["a field added", (t) => (t.events.accept.object.extra = "string"), "events.accept.object.extra"],
    ["a field removed", (t) => delete t.methods.up.result.object.onlineMs, "methods.up.result.object.onlineMs"],
    ["a field retyped", (t) => (t.methods.handles.result.object.conns = "string"), "methods.handles.result.object.conns"],
    ["a field made optional", (t) => (t.methods.whois.params.object.addr = { optional: "string" }), "methods.whois.params.object.addr"],
    ["an array made a record", (t) => (t.methods.peers.result = { record: t.methods.peers.result.array }), "methods.peers.result.array"],
    ["a method missing", (t) => delete t.methods.closeListener, "methods.closeListener"],
    ["an event missing", (t) => delete t.events.panic, "events.panic"],
    ["another protocol version", (t) => (t.protocol = 99), "protocol"],
    ["an error code missing", (t) => t.errors.pop(), "errors"],
  ])("the comparison reports %s", (_what, alter, at) => {
    const altered = tsTable();
    alter(altered);
    const diffs = diffShapes(goTable(), altered);
    expect(diffs.some((d) => d.startsWith(`${at}:`)), diffs.join("\n")).toBe(true);
  });
});

describe("PROTOCOL_SHAPE is tied to the interfaces", () => {
  // Each line below is a compile error, which @ts-expect-error turns into a
  // requirement: `tsc --noEmit` fails if Shape<T> ever accepts one of them.
  it("rejects a description that differs from its interface", () => {
    // @ts-expect-error a field renamed
    const renamed: Shape<HandlesResult> = { object: { nodes: "number", listeners: "number", connections: "number" } };
    // @ts-expect-error a field added
    const added: Shape<HandlesResult> = { object: { nodes: "number", listeners: "number", conns: "number", extra: "number" } };
    // @ts-expect-error a field missing
    const missing: Shape<HandlesResult> = { object: { nodes: "number", listeners: "number" } };
    // @ts-expect-error a field retyped
    const retyped: Shape<HandlesResult> = { object: { nodes: "string", listeners: "number", conns: "number" } };
    // @ts-expect-error an optional field (name) described as required
    const required: Shape<StatusResult> = { object: { state: "string", ips: { array: "string" }, health: { array: "string" }, name: "string", id: { optional: "string" } } };
    const { whois: _whois, ...fewerMethods } = PROTOCOL_SHAPE.methods;
    // @ts-expect-error a method missing from the table
    const noWhois: ProtocolShape = { ...PROTOCOL_SHAPE, methods: fewerMethods };
    const right: Shape<HandlesResult> = { object: { nodes: "number", listeners: "number", conns: "number" } };
    expect([renamed, added, missing, retyped, required, noWhois, right]).toHaveLength(7);
  });
});

describe("core error codes", () => {
  it("every core code becomes a MeshguardError with its own ErrorCode", () => {
    const want: Record<(typeof CORE_ERROR_CODES)[number], ErrorCode> = {
      BAD_ARGS: ErrorCode.INVALID_OPTIONS,
      AUTH: ErrorCode.AUTH_FAILED,
      CONTROL_UNREACHABLE: ErrorCode.CONTROL_UNREACHABLE,
      TIMEOUT: ErrorCode.TIMEOUT,
      NO_PEER: ErrorCode.NO_PEER,
      DIAL: ErrorCode.DIAL_FAILED,
      PORT_IN_USE: ErrorCode.PORT_IN_USE,
      CLOSED: ErrorCode.CLOSED,
      WHOIS_NOT_FOUND: ErrorCode.WHOIS_NOT_FOUND,
      PANIC: ErrorCode.CORE_PANIC,
      INTERNAL: ErrorCode.INTERNAL,
      UNKNOWN_METHOD: ErrorCode.INTERNAL,
    };
    for (const code of CORE_ERROR_CODES) {
      const err = errorFromCore({ code, message: "core.Dial: something" }, "dial");
      expect(err).toBeInstanceOf(MeshguardError);
      expect(err.code, code).toBe(want[code]);
      expect(err.message).toMatch(/^dial: core.Dial: something/);
    }
  });

  it("a code the host does not know is INTERNAL, not a crash", () => {
    expect(errorFromCore({ code: "toString", message: "x" }, "dial").code).toBe(ErrorCode.INTERNAL);
    expect(errorFromCore({ code: "NEW_IN_SOME_OTHER_CORE", message: "x" }, "dial").code).toBe(ErrorCode.INTERNAL);
  });
});
