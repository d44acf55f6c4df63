// The anchor grant (anchor.ts): added exactly where headscale needs it, and
// removed without a trace, so getPolicy returns what setPolicy was given.
import { parse } from "jsonc-parser";
import { describe, expect, it } from "vitest";
import { anchorPolicy, unanchorPolicy } from "./anchor.js";

const ANCHOR = { src: ["100.100.100.100/32"], dst: ["100.100.100.100/32"], ip: ["*"] };
const value = (text: string) => parse(text, [], { allowTrailingComma: true }) as Record<string, unknown>;

describe("anchorPolicy", () => {
  it.each([
    ["an empty grants list (deny all)", '{ "grants": [] } // deny all'],
    ["grants naming only tags no node has", '{ "tagOwners": { "tag:c": [] }, "grants": [ { "src": ["tag:c"], "dst": ["tag:c"], "ip": ["*"] } ] }'],
    ["HuJSON with comments and trailing commas", '// head\n{\n  // agents\n  "grants": [\n    { "src": ["tag:a"], "dst": ["tag:b"], "ip": ["*"] }, // trailing\n  ],\n}\n'],
  ])("puts the anchor first in the grants of %s, and unanchorPolicy restores the text", (_what, text) => {
    const anchored = anchorPolicy(text);
    expect(anchored).not.toBe(text);
    const grants = value(anchored).grants as unknown[];
    expect(grants[0]).toEqual(ANCHOR);
    expect(grants.slice(1)).toEqual(value(text).grants);
    expect(unanchorPolicy(anchored)).toBe(text);
    expect(anchorPolicy(anchored)).toBe(anchored); // once only
  });

  it("adds a grants list to a policy with acls only", () => {
    const text = '{ "acls": [] }';
    const anchored = anchorPolicy(text);
    expect(value(anchored)).toEqual({ grants: [ANCHOR], acls: [] });
    expect(unanchorPolicy(anchored)).toBe(text);
  });

  it.each([
    ["no rules at all (headscale allows all: adding a rule would deny all)", '{ "tagOwners": { "tag:a": [] } }'],
    ["an empty policy", "{}"],
    ["grants that are not a list", '{ "grants": null, "acls": [] }'],
    ["text that does not parse (headscale reports it)", '{ "grants": [ '],
    ["a top-level value that is not an object", "[]"],
    ["nesting deeper than the parser recurses", "[".repeat(200_000)],
  ])("leaves %s alone", (_what, text) => {
    expect(anchorPolicy(text)).toBe(text);
    expect(unanchorPolicy(text)).toBe(text);
  });
});
