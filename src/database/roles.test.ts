import { describe, expect, test } from "vitest";
import { fitIdentifier, ownersSettingValue, quoteIdent, roleForCaller, roleForTag, roleForTagSet, roleForUser } from "./roles.js";

describe("database roles", () => {
  test("one role per user and per tag, normalized", () => {
    expect(roleForUser("Alice@Example.com")).toBe("mg:user:alice@example.com");
    expect(roleForUser("alice@")).toBe("mg:user:alice");
    expect(roleForTag("tag:billing")).toBe("mg:tag:billing");
    expect(roleForTagSet(["tag:b", "tag:a", "tag:b"])).toBe("mg:tags:a+b");
    expect(roleForTagSet(["tag:a"])).toBe("mg:tag:a");
    expect(roleForCaller({ user: "bob", tags: ["tag:x"] })).toBe("mg:tag:x");
    expect(roleForCaller({ user: "bob" })).toBe("mg:user:bob");
    expect(roleForCaller({})).toBeUndefined();
  });
  test("names longer than 63 bytes are cut at a character and hashed, stable and unique", () => {
    const long = "mg:tag:" + "é".repeat(60);
    const a = fitIdentifier(long);
    expect(Buffer.byteLength(a)).toBeLessThanOrEqual(63);
    expect(a).toMatch(/~[0-9a-f]{16}$/);
    expect(fitIdentifier(long)).toBe(a);
    expect(fitIdentifier(long + "x")).not.toBe(a);
    expect(a.startsWith("mg:tag:é")).toBe(true);
  });
  test("quoting", () => {
    expect(quoteIdent('a"b')).toBe('"a""b"');
    expect(() => quoteIdent("a\0")).toThrow(/NUL/);
    expect(ownersSettingValue(['a@x', 'q"uote'])).toBe('{"a@x","q\\"uote"}');
  });
});
