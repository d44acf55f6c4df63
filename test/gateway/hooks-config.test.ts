// The `hooks` config section: defaults, durations, and a message a person
// can act on for each mistake.
import { describe, expect, it } from "vitest";
import { createHookRunner, hookUrls, HooksConfigSchema, parseHooksConfig } from "../../src/gateway/hooks.js";

function issues(cfg: unknown): string {
  try {
    parseHooksConfig(cfg);
  } catch (e) {
    expect(e).toMatchObject({ code: "MESHGUARD_INVALID_OPTIONS" });
    return (e as Error).message;
  }
  throw new Error("expected the config to be refused");
}

describe("hooks config", () => {
  it("fills the defaults: 5 s timeout, fail closed, every model; usage batches of 100, 3 retries", () => {
    const c = parseHooksConfig({ pre: [{ name: "pii", url: "http://127.0.0.1:9000/pii" }], usage: [{ name: "billing", url: "https://billing.internal/usage" }] });
    expect(c.pre[0]).toEqual({ name: "pii", url: "http://127.0.0.1:9000/pii", timeout: 5_000, failure: "closed", headers: {} });
    expect(c.post).toEqual([]);
    expect(c.usage[0]).toEqual({ name: "billing", url: "https://billing.internal/usage", headers: {}, timeout: 5_000, batch: 100, retries: 3, maxQueue: 10_000 });
    expect(parseHooksConfig(undefined)).toEqual({ pre: [], post: [], usage: [] });
  });

  it.each([
    ["250ms", 250],
    ["5s", 5_000],
    ["1.5s", 1_500],
    ["2m", 120_000],
    [800, 800],
  ])("timeout %s is %d ms", (timeout, ms) => {
    expect(parseHooksConfig({ pre: [{ name: "a", url: "http://127.0.0.1/", timeout }] }).pre[0]!.timeout).toBe(ms);
  });

  it("parsing is idempotent: a parsed config parses to itself (the gateway validates, then the runner again)", () => {
    const once = parseHooksConfig({ pre: [{ name: "a", url: "http://127.0.0.1/", timeout: "2s", headers: { authorization: "env:NOT_READ_AT_PARSE" }, models: ["openai/*"] }] });
    expect(HooksConfigSchema.parse(once)).toEqual(once);
  });

  it.each([
    [{ pre: [{ name: "a", url: "ftp://x/" }] }, "hooks.pre.0.url: must be an http:// or https:// URL, got ftp:"],
    [{ pre: [{ name: "a", url: "not a url" }] }, 'hooks.pre.0.url: "not a url" is not a URL'],
    [{ post: [{ name: "a", url: "http://user:pw@127.0.0.1/" }] }, "hooks.post.0.url: must not hold credentials"],
    [{ pre: [{ name: "a", url: "http://127.0.0.1/", timeout: "5 sec" }] }, 'hooks.pre.0.timeout: "5 sec" is not a duration'],
    [{ pre: [{ name: "a", url: "http://127.0.0.1/", timeout: 0 }] }, "hooks.pre.0.timeout: must be between 1 ms and 10 minutes"],
    [{ pre: [{ name: "a", url: "http://127.0.0.1/", failure: "ignore" }] }, 'hooks.pre.0.failure: must be "open" (skip the hook when it fails) or "closed"'],
    [{ pre: [{ name: "a", url: "http://127.0.0.1/" }, { name: "a", url: "http://127.0.0.1/" }] }, 'hooks.pre.1.name: "a" is used by another hook'],
    [{ pre: [{ name: "a b", url: "http://127.0.0.1/" }] }, "hooks.pre.0.name: must be 1-64 of"],
    [{ pre: [{ name: "a", url: "http://127.0.0.1/", headers: { "content-type": "text/plain" } }] }, "hooks.pre.0.headers.content-type: content-type is set by the gateway"],
    [{ pre: [{ name: "a", url: "http://127.0.0.1/", headers: { authorization: "env:1BAD" } }] }, 'hooks.pre.0.headers.authorization: "env:1BAD" must be env:NAME'],
    [{ pre: [{ name: "a", url: "http://127.0.0.1/", models: [] }] }, "hooks.pre.0.models: must list at least one glob"],
    [{ pre: [{ name: "a", url: "http://127.0.0.1/", timout: "1s" }] }, "Unrecognized key(s) in object: 'timout'"],
    [{ usage: [{ name: "a", url: "http://127.0.0.1/", batch: 0 }] }, "hooks.usage.0.batch"],
    [{ guard: [] }, "Unrecognized key(s) in object: 'guard'"],
  ])("refuses %j: %s", (cfg, message) => {
    expect(issues(cfg)).toContain(message);
  });

  it("an env:NAME header whose variable is not set fails when the runner is created, naming it", () => {
    delete process.env.MESHGUARD_TEST_UNSET_TOKEN;
    expect(() => createHookRunner({ post: [{ name: "a", url: "http://127.0.0.1/", headers: { authorization: "env:MESHGUARD_TEST_UNSET_TOKEN" } }] })).toThrow(
      /hooks.post\[0\].headers.authorization: environment variable MESHGUARD_TEST_UNSET_TOKEN is not set/,
    );
  });

  it("hookUrls lists each URL once, for the gateway's self-guard", () => {
    expect(hookUrls({ pre: [{ name: "a", url: "http://127.0.0.1:1/a" }], post: [{ name: "a", url: "http://127.0.0.1:1/a" }], usage: [{ name: "b", url: "https://b.internal/u" }] })).toEqual(["http://127.0.0.1:1/a", "https://b.internal/u"]);
  });
});
