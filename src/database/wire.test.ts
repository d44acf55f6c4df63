import { serialize } from "pg-protocol";
import { describe, expect, test } from "vitest";
import { BackendScanner, errorMessageOf, errorResponse, FrontendFramer, MSG, parseMessage, ProtocolError, readyForQuery, startupParameters } from "./wire.js";

/** Every way of cutting `buf` in two, and in single bytes. */
function splits(buf: Buffer): Buffer[][] {
  const out: Buffer[][] = [[buf], [...buf].map((b) => Buffer.from([b]))];
  for (let i = 1; i < buf.length; i++) out.push([buf.subarray(0, i), buf.subarray(i)]);
  return out;
}

describe("FrontendFramer", () => {
  const stream = Buffer.concat([serialize.parse({ name: "s1", text: "SELECT $1::int" }), serialize.bind({ statement: "s1", values: ["7"] }), serialize.execute({}), serialize.sync(), serialize.query("SELECT 'é'")]);
  test("frames the same messages however the stream is cut", () => {
    for (const chunks of splits(stream)) {
      const f = new FrontendFramer();
      const msgs = chunks.flatMap((c) => f.push(c));
      expect(msgs.map((m) => String.fromCharCode(m.type))).toEqual(["P", "B", "E", "S", "Q"]);
      expect(Buffer.concat(msgs.map((m) => m.raw))).toEqual(stream);
      expect(parseMessage(msgs[0]!.body)).toEqual({ name: "s1", text: "SELECT $1::int" });
    }
  });
  test("a malformed or oversized length is a protocol error", () => {
    expect(() => new FrontendFramer().push(Buffer.from([0x51, 0, 0, 0, 2]))).toThrow(ProtocolError);
    expect(() => new FrontendFramer().push(Buffer.from([0x51, 0x7f, 0, 0, 0]))).toThrow(/larger than the gateway frames/);
  });
});

describe("BackendScanner", () => {
  const dataRow = Buffer.from([0x44, 0, 0, 0, 11, 0, 1, 0, 0, 0, 1, 0x31]);
  const probeError = errorResponse({ severity: "ERROR", code: "42883", message: "function pg_catalog.mg_denied_ab_1() does not exist" });
  const otherError = errorResponse({ severity: "ERROR", code: "22012", message: "division by zero" });
  const denial = errorResponse({ severity: "ERROR", code: "42501", message: "meshguard: denied by policy: x" });
  const stream = Buffer.concat([dataRow, readyForQuery("I"), otherError, dataRow, probeError, readyForQuery("T"), dataRow]);
  const expected = Buffer.concat([dataRow, readyForQuery("I"), otherError, dataRow, denial, readyForQuery("T"), dataRow]);

  test("passes everything through, rewrites only the probe's error, counts ReadyForQuery, however the stream is cut", () => {
    for (const chunks of splits(stream)) {
      let ready = 0;
      const seen: string[] = [];
      const s = new BackendScanner(
        (type) => type === MSG.errorResponse,
        (msg) => {
          const m = errorMessageOf(msg)!;
          seen.push(m);
          return m.includes("mg_denied_ab_1") ? denial : msg;
        },
        () => ready++,
      );
      const out = Buffer.concat(chunks.flatMap((c) => s.push(c)));
      expect(out).toEqual(expected);
      expect(ready).toBe(2);
      expect(seen).toEqual(["division by zero", "function pg_catalog.mg_denied_ab_1() does not exist"]);
    }
  });
  test("without a message to rewrite, whole chunks pass as they are (no copies)", () => {
    const s = new BackendScanner(() => false, (m) => m, () => {});
    const out = s.push(stream);
    expect(out).toHaveLength(1);
    expect(out[0]!.buffer).toBe(stream.buffer);
  });
});

test("startup parameters: read, and a parameter without its terminator is refused", () => {
  const body = Buffer.from("user\0agent\0database\0appdb\0\0", "utf8");
  expect(Object.fromEntries(startupParameters(body))).toEqual({ user: "agent", database: "appdb" });
  expect(() => startupParameters(Buffer.from("user\0agent", "utf8"))).toThrow(/not NUL-terminated/);
});
