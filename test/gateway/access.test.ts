/**
 * Gateway roles and bucket chains: from the policy's `gateway` section
 * (format version 3), matched like rule `src`, and from the app capability
 * `meshguard.dev/cap/gateway` the tailnet grants. Additive; admin wins.
 */

import { readFileSync } from "node:fs";
import { describe, expect, test } from "vitest";

import { GATEWAY_CAP, resolveAccess } from "../../src/gateway/access.js";
import { loadPolicy, type Principal } from "../../src/policy/index.js";
import { isMeshguardError } from "../../src/errors.js";

const POLICY = `{
  // a combined tailnet policy file: groups come from the tailnet part
  "groups": { "group:ops": ["root@example.com"] },
  "meshguard": {
    "version": 3,
    "groups": { "group:eng": ["Alice@example.com", "bob@"] },
    "rules": [{ "id": "models", "src": ["group:eng"], "llm": { "model": ["openai/*"] } }],
    "gateway": {
      "roles": [
        { "src": ["group:eng"], "quotas": "daily" },
        { "src": ["tag:ci"], "quotas": ["ci-pool", "daily"] },
        { "src": ["group:ops", "build-box"], "role": "admin" },
      ],
    },
    "tests": [{ "as": "alice@example.com", "request": "llm openai/gpt-4o", "expect": "allow", "ruleId": "models" }],
  },
}`;

const who = (principal: Principal) => ({ principal });

describe("the policy's gateway section", () => {
  const policy = loadPolicy(POLICY);

  test("a group member gets the user role and the group's buckets; users match case-insensitively", () => {
    expect(resolveAccess(policy.gateway, who({ tags: [], user: "alice@EXAMPLE.com" }), {})).toEqual({ role: "user", chains: [["daily"]], ignored: [] });
    expect(resolveAccess(policy.gateway, who({ tags: [], user: "bob" }), {}).chains).toEqual([["daily"]]);
  });

  test("grants add up and a bucket named twice applies once; tags match like rule src", () => {
    const a = resolveAccess(policy.gateway, who({ tags: ["tag:ci"], node: "runner-7" }), {});
    expect(a).toEqual({ role: "user", chains: [["ci-pool"], ["daily"]], ignored: [] });
  });

  test("admin wins, by group (from the tailnet part) or by node name (full MagicDNS name matches its first label)", () => {
    expect(resolveAccess(policy.gateway, who({ tags: [], user: "root@example.com" }), {}).role).toBe("admin");
    expect(resolveAccess(policy.gateway, who({ tags: ["tag:ci"], node: "build-box.tail1234.ts.net" }), {})).toMatchObject({ role: "admin", chains: [["ci-pool"], ["daily"]] });
  });

  test("a tagged node is known by its tags, not by a user (as in rules): matched by nothing, it is a user with no buckets", () => {
    expect(resolveAccess(policy.gateway, who({ tags: ["tag:other"], node: "x" }), {})).toEqual({ role: "user", chains: [], ignored: [] });
    expect(resolveAccess(undefined, who({ tags: [], user: "alice@example.com" }), {})).toEqual({ role: "user", chains: [], ignored: [] });
  });

  test("the policy lists the buckets its section names (for the gateway to check against its config)", () => {
    expect(policy.gateway!.buckets).toEqual(["daily", "ci-pool"]);
    expect(policy.version).toBe(3);
  });
});

describe("the app capability meshguard.dev/cap/gateway", () => {
  test("grants roles and buckets, adding to the policy's; admin from either source wins", () => {
    const policy = loadPolicy(POLICY);
    const caps = { [GATEWAY_CAP]: [{ quotas: ["team"] }, { role: "admin" }], "example.com/cap/other": [{ role: "admin" }] };
    expect(resolveAccess(policy.gateway, who({ tags: [], user: "alice@example.com" }), caps)).toEqual({ role: "admin", chains: [["daily"], ["team"]], ignored: [] });
    expect(resolveAccess(undefined, who({ tags: [] }), { "example.com/cap/other": [{ role: "admin" }] }).role).toBe("user");
  });

  test("a malformed entry grants nothing and is reported; the well-formed ones still count", () => {
    const caps = { [GATEWAY_CAP]: [{ role: "root" }, "admin", { quotas: "daily" }, { quotas: ["ok"], note: "extra keys are fine" }] };
    const a = resolveAccess(undefined, who({ tags: [] }), caps);
    expect(a.role).toBe("user");
    expect(a.chains).toEqual([["ok"]]);
    expect(a.ignored).toHaveLength(3);
    expect(a.ignored[0]).toMatch(/meshguard\.dev\/cap\/gateway\[0\]: role/);
    expect(resolveAccess(undefined, who({ tags: [] }), { [GATEWAY_CAP]: { role: "admin" } as never })).toMatchObject({ role: "user", ignored: [expect.stringMatching(/expected a list/)] });
  });
});

describe("format version 3", () => {
  const invalid = (text: string): string => {
    try {
      loadPolicy(text);
    } catch (err) {
      if (isMeshguardError(err, "MESHGUARD_POLICY_INVALID")) return err.message;
      throw err;
    }
    throw new Error("the policy was accepted");
  };

  test("a gateway section in a version-1 or version-2 file is an error that says to use version 3", () => {
    for (const v of [1, 2]) {
      expect(invalid(`{"version":${v},"rules":[],"gateway":{"roles":[]}}`)).toMatch(/"gateway" section needs "version": 3.*change "version" to 3/);
    }
  });

  test("version-1 and version-2 files load as before; the same rules load as version 3", () => {
    const rules = `"rules":[{"src":["*"],"http":{"host":["api.example.com"]}}]`;
    for (const v of [1, 2, 3]) {
      const p = loadPolicy(`{"version":${v},${rules}}`);
      expect(p.version).toBe(v);
      expect(p.gateway).toBeUndefined();
      expect(p.evaluate({ principal: { tags: [] }, target: { kind: "http", scheme: "https", host: "api.example.com", port: 443, method: "GET", path: "/", query: "", headers: {} } }).effect).toBe("allow");
    }
  });

  test("the section's shape is checked: roles, bucket names, keys, each with line and column", () => {
    const msg = invalid(`{
  "version": 3,
  "rules": [],
  "gateway": { "roles": [
    { "src": ["*"], "role": "owner" },
    { "src": ["*"], "quotas": ["a/b"] },
    { "src": [], "budget": 5 }
  ] }
}`);
    expect(msg).toMatch(/:5:\d+ gateway\.roles\[0\]\.role: must be "user" or "admin"/);
    expect(msg).toMatch(/:6:\d+ gateway\.roles\[1\]\.quotas\[0\]: a bucket name uses letters, digits/);
    expect(msg).toMatch(/:7:\d+ gateway\.roles\[2\]\.budget: unknown key "budget"; valid keys here are: src, role, quotas/);
    expect(msg).toMatch(/:7:\d+ gateway\.roles\[2\]\.src: list at least one identity/);
  });

  test("a group the section names must be defined", () => {
    const msg = invalid(`{"version":3,"groups":{"group:eng":["a@"]},"rules":[],
"gateway":{"roles":[{"src":["group:nope"],"quotas":"daily"}]}}`);
    expect(msg).toMatch(/:2:\d+ gateway\.roles\[0\]\.src\[0\]: group "group:nope" is not defined: add it to "groups" \(defined: group:eng\)/);
  });
});

test("the example of docs/policy.md's Gateway access loads and means what the page says", () => {
  const doc = readFileSync(new URL("../../docs/policy.md", import.meta.url), "utf8");
  const section = doc.slice(doc.indexOf("## Gateway access"));
  const example = /```jsonc\n([\s\S]*?)```/.exec(section)![1]!;
  const p = loadPolicy(example);
  expect(resolveAccess(p.gateway, who({ tags: [], user: "bob" }), {})).toMatchObject({ role: "user", chains: [["daily"]] });
  expect(resolveAccess(p.gateway, who({ tags: ["tag:ci"] }), {})).toMatchObject({ role: "user", chains: [["ci-pool"], ["daily"]] });
  expect(resolveAccess(p.gateway, who({ tags: [], user: "root@example.com" }), {})).toMatchObject({ role: "admin", chains: [] });
  const capExample = /```jsonc\n([\s\S]*?)```/.exec(section.slice(section.indexOf("meshguard.dev/cap/gateway")))![1]!;
  const grants = (JSON.parse(capExample.replace(/,(\s*[}\]])/g, "$1")) as { grants: { app: Record<string, unknown[]> }[] }).grants;
  expect(resolveAccess(undefined, who({ tags: [] }), grants[1]!.app)).toMatchObject({ role: "admin" });
  expect(resolveAccess(undefined, who({ tags: [] }), grants[0]!.app)).toMatchObject({ role: "user", chains: [["daily"]] });
});
