/**
 * docs/policy-reference.md is generated from the policy file's JSON Schema
 * (test/meta/policy-reference.ts); this test fails when it is stale, or when
 * a field of the schema has no description. Regenerate with:
 *   MESHGUARD_UPDATE_DOCS=1 vitest run --config test/vitest.config.ts test/meta/policy-reference.test.ts
 */

import { readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { expect, test } from "vitest";

import { policyJsonSchema } from "../policy/json-schema.js";
import { parseDescription, renderPolicyReference } from "./policy-reference.js";

const FILE = fileURLToPath(new URL("../../docs/policy-reference.md", import.meta.url));

test("docs/policy-reference.md is generated from the policy schema and up to date", () => {
  const { text } = renderPolicyReference(policyJsonSchema());
  if (process.env.MESHGUARD_UPDATE_DOCS === "1") writeFileSync(FILE, text);
  let have = "";
  try {
    have = readFileSync(FILE, "utf8");
  } catch {
    /* missing: reported below */
  }
  expect(have, "docs/policy-reference.md is stale: regenerate it with MESHGUARD_UPDATE_DOCS=1 (see the top of this test)").toBe(text);
});

test("every field of the policy schema has a description", () => {
  expect(renderPolicyReference(policyJsonSchema()).undocumented).toEqual([]);
});

test("the reference names every rule kind and condition, with the version that added it", () => {
  const { text } = renderPolicyReference(policyJsonSchema());
  const row = (section: string, field: string) => {
    const body = text.split(`<a id="${section}"></a>`)[1]?.split("<a id=")[0] ?? "";
    return body.split("\n").find((l) => l.startsWith(`| \`${field}\` |`)) ?? "";
  };
  // | field | type | required | default | since | description |
  const since = (section: string, field: string) => row(section, field).split(" | ")[4];
  expect(since("ref-rules", "http")).toBe("1");
  expect(since("ref-rules", "dns")).toBe("2");
  expect(since("ref-rules", "udp")).toBe("2");
  expect(since("ref-rules-dns", "server")).toBe("2"); // inherited from its object
  expect(since("ref-root", "gateway")).toBe("3");
  expect(since("ref-rules", "token")).toBe("4");
  expect(since("ref-rules-token", "maxTtl")).toBe("4");
  expect(row("ref-rules", "effect")).toContain('`"allow"`'); // a zod default
  expect(row("ref-rules-http", "scheme")).toMatch(/\| no \| both \|/); // a "Default:" sentence
  expect(row("ref-rules-http", "host")).toMatch(/\| yes \|/);
  for (const f of ["hours", "weekdays", "timeZone", "headers", "maxBodyBytes", "rate"]) expect(row("ref-rules-when", f), f).not.toBe("");
});

test("descriptions: the version marker and the Default sentence are split off", () => {
  expect(parseDescription("a DNS look-up (format version 2)")).toEqual({ text: "a DNS look-up", since: 2 });
  expect(parseDescription("URL schemes. Default: both.")).toEqual({ text: "URL schemes.", default: "both" });
  expect(parseDescription("Record types (format version 2). Default: any type.")).toEqual({ text: "Record types.", since: 2, default: "any type" });
  expect(parseDescription(undefined)).toEqual({ text: "" });
});
