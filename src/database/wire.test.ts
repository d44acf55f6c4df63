import { describe, expect, test } from "vitest";
import { errorMessageOf, errorResponse, startupParameters } from "./wire.js";

test("startup parameters: read, and a parameter without its terminator is refused", () => {
  const body = Buffer.from("user\0agent\0database\0appdb\0\0", "utf8");
  expect(Object.fromEntries(startupParameters(body))).toEqual({ user: "agent", database: "appdb" });
  expect(() => startupParameters(Buffer.from("user\0agent", "utf8"))).toThrow(/not NUL-terminated/);
});

describe("errorMessageOf", () => {
  test("reads the M field of an ErrorResponse, whatever comes before it", () => {
    const e = errorResponse({ severity: "ERROR", code: "42883", message: "function pg_catalog.mg_denied_ab_1() does not exist", hint: "h" });
    expect(errorMessageOf(e)).toBe("function pg_catalog.mg_denied_ab_1() does not exist");
    expect(errorMessageOf(Buffer.from([0x45, 0, 0, 0, 5, 0]))).toBeUndefined();
  });
});
