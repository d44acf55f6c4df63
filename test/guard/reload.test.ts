// Reload: from a watched file and from a policy server (long poll, signed
// bundles). A bad reload keeps the last good policy and says why.
import { once } from "node:events";
import { mkdtempSync, writeFileSync, renameSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PolicyServer, generateBundleKeys, pollPolicyServer, signBundle, verifyBundle, watchPolicyFile, type ReloadEvent } from "../../src/distribution/index.js";
import { installGuard } from "../../src/guard/index.js";
import { AGENT, allowHttp, countingServer, denied, guard, policyOf, type Counting } from "./helpers.js";

let srv: Counting;
beforeAll(async () => {
  srv = await countingServer();
});
afterAll(() => srv.close());

const policyText = (path: string) => JSON.stringify({ version: 1, rules: [allowHttp("127.0.0.1", { path: [path] })] }, null, 2);
const BROKEN = `{ "version": 1, "rules": [ { "src": ["tag:agent"], "http": { "host": ["127.0.0.1"], "port": ["not a port"] } } ] }`;
const FAILING_TESTS = JSON.stringify({ version: 1, rules: [], tests: [{ as: "tag:agent", request: "GET http://127.0.0.1/a", expect: "allow" }] });

async function until(cond: () => boolean | Promise<boolean>, ms = 5000): Promise<void> {
  const t0 = Date.now();
  while (!(await cond())) {
    if (Date.now() - t0 > ms) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 20));
  }
}
const status = (path: string) => fetch(`${srv.url}${path}`).then((r) => r.status, () => "denied" as const);

describe("reload from a file", () => {
  it("applies the file, follows changes, and keeps the last good policy on a bad one", async () => {
    const dir = mkdtempSync(join(tmpdir(), "mg-reload-"));
    const file = join(dir, "policy.hujson");
    writeFileSync(file, policyText("/a"));
    const g = guard({});
    const reloads: ReloadEvent[] = [];
    const errors: Error[] = [];
    g.on("reload", (e: ReloadEvent) => reloads.push(e));
    g.on("reloadError", (e: Error) => errors.push(e));
    const w = watchPolicyFile(g, file, { debounceMs: 20 });
    await w.ready;
    expect(w.current).toBeDefined();
    expect(await status("/a")).toBe(200);
    expect(await status("/b")).toBe("denied");

    // An editor-style replace (write a new file, rename over the old one).
    writeFileSync(join(dir, "tmp"), policyText("/b"));
    renameSync(join(dir, "tmp"), file);
    await until(() => reloads.length === 2);
    expect(await status("/b")).toBe(200);
    expect(await status("/a")).toBe("denied");

    writeFileSync(file, BROKEN);
    await until(() => errors.length >= 1);
    expect(errors[0]!.message).toMatch(/port/);
    expect((errors[0] as { code?: string }).code).toBe("MESHGUARD_POLICY_INVALID");
    expect(await status("/b")).toBe(200); // last good still in force

    writeFileSync(file, FAILING_TESTS);
    await until(() => errors.some((e) => (e as { code?: string }).code === "MESHGUARD_POLICY_TESTS_FAILED"));
    expect(await status("/b")).toBe(200);
    await w.close();
  });

  it("a plain file this process can write draws one warning: the agent could rewrite its own policy", async () => {
    const dir = mkdtempSync(join(tmpdir(), "mg-reload-"));
    const file = join(dir, "policy.hujson");
    writeFileSync(file, policyText("/a"));
    const g = guard({});
    const warnings: Error[] = [];
    g.on("warning", (e) => warnings.push(e));
    const w = watchPolicyFile(g, file, { debounceMs: 20 });
    await w.ready;
    writeFileSync(file, policyText("/b"));
    await until(async () => (await status("/b")) === 200);
    await w.reload();
    expect(warnings).toHaveLength(1);
    expect((warnings[0] as { code?: string }).code).toBe("MESHGUARD_POLICY_FILE_UNPROTECTED");
    expect(warnings[0]!.message).toContain(file);
    expect(warnings[0]!.message).toMatch(/rewrite its own policy/);
    expect(warnings[0]!.message).toMatch(/publicKeys.*read-only to the agent's user/s);
    await w.close();
  });

  it("a broken file at start means no policy: everything is denied", async () => {
    const dir = mkdtempSync(join(tmpdir(), "mg-reload-"));
    const file = join(dir, "policy.hujson");
    writeFileSync(file, BROKEN);
    const g = guard({});
    const errors: Error[] = [];
    g.on("reloadError", (e) => errors.push(e));
    const w = watchPolicyFile(g, file);
    await w.ready;
    expect(w.current).toBeUndefined();
    expect(errors.map((e) => (e as { code?: string }).code)).toEqual(["MESHGUARD_POLICY_INVALID"]);
    const hits = srv.hits;
    await denied(fetch(`${srv.url}/a`));
    expect(srv.hits).toBe(hits);
    await w.close();
  });
});

describe("signed bundles", () => {
  const keys = generateBundleKeys();
  const other = generateBundleKeys();

  it("verify accepts what sign produced", () => {
    const b = signBundle(policyText("/a"), keys.privateKey, { version: 7 });
    expect(verifyBundle(JSON.stringify(b), [keys.publicKey]).version).toBe(7);
  });

  it("rejects a tampered policy, a forged version, another key, and a replayed older version", () => {
    const b = signBundle(policyText("/a"), keys.privateKey, { version: 7 });
    const code = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        return `${(e as { code?: string }).code}: ${(e as Error).message}`;
      }
      return "accepted";
    };
    expect(code(() => verifyBundle({ ...b, policy: policyText("/admin") }, [keys.publicKey]))).toMatch(/MESHGUARD_POLICY_BUNDLE_INVALID: .*tampered/);
    expect(code(() => verifyBundle({ ...b, version: 8 }, [keys.publicKey]))).toMatch(/signature does not verify/);
    expect(code(() => verifyBundle(b, [other.publicKey]))).toMatch(/not trusted/);
    const forged = signBundle(policyText("/admin"), other.privateKey, { version: 9 });
    expect(code(() => verifyBundle({ ...forged, keyId: b.keyId }, [keys.publicKey]))).toMatch(/signature does not verify/);
    expect(code(() => verifyBundle(b, [keys.publicKey], { minVersion: 8 }))).toMatch(/older than the applied/);
    expect(code(() => verifyBundle("{not json", [keys.publicKey]))).toMatch(/not JSON/);
    expect(code(() => verifyBundle(b, []))).toMatch(/no trusted public key/);
  });

  it("a watched bundle file with a bad signature is refused and the last good policy stays", async () => {
    const dir = mkdtempSync(join(tmpdir(), "mg-bundle-"));
    const file = join(dir, "policy.bundle.json");
    writeFileSync(file, JSON.stringify(signBundle(policyText("/a"), keys.privateKey, { version: 1 })));
    const g = guard({});
    const errors: Error[] = [];
    const warnings: Error[] = [];
    g.on("reloadError", (e: Error) => errors.push(e));
    g.on("warning", (e) => warnings.push(e));
    const w = watchPolicyFile(g, file, { publicKeys: [keys.publicKey], debounceMs: 20 });
    await w.ready;
    expect(w.current).toBeDefined();
    expect(warnings).toEqual([]); // signed: rewriting the file gains the agent nothing
    writeFileSync(file, JSON.stringify(signBundle(policyText("/b"), other.privateKey, { version: 2 })));
    await until(() => errors.length > 0);
    expect((errors[0] as { code?: string }).code).toBe("MESHGUARD_POLICY_BUNDLE_INVALID");
    expect(await status("/a")).toBe(200);
    expect(await status("/b")).toBe("denied");
    await w.close();
  });
});

describe("policy server (long poll)", () => {
  const keys = generateBundleKeys();

  async function start(ps: PolicyServer) {
    const server = http.createServer(ps.handler);
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    return { url, close: () => new Promise<void>((r) => { ps.close(); server.closeAllConnections(); server.close(() => r()); }) };
  }

  it("an agent gets the signed policy, and a change within a long poll", async () => {
    const ps = new PolicyServer({ privateKey: keys.privateKey, policy: policyText("/a") });
    const { url, close } = await start(ps);
    // The poll itself is not subject to the policy (which does not allow the server).
    const g = guard({});
    const c = pollPolicyServer(g, { url, publicKeys: [keys.publicKey], waitSeconds: 20 });
    await c.ready;
    expect(c.current).toBeDefined();
    expect(await status("/a")).toBe(200);
    const t0 = performance.now();
    ps.update(policyText("/b"));
    await once(g, "reload");
    expect(performance.now() - t0).toBeLessThan(2000);
    expect(await status("/b")).toBe(200);
    expect(await status("/a")).toBe("denied");
    await c.close();
    await close();
  });

  it("the server refuses to sign a broken policy and keeps serving the last good one", async () => {
    const ps = new PolicyServer({ privateKey: keys.privateKey, policy: policyText("/a") });
    const v = ps.bundle!.version;
    expect(() => ps.update(BROKEN)).toThrow(/port/);
    expect(() => ps.update(FAILING_TESTS)).toThrow(/failing test/);
    expect(ps.bundle!.version).toBe(v);
    await ps.close();
  });

  it("a bundle signed with an untrusted key is rejected; the agent keeps its policy", async () => {
    const ps = new PolicyServer({ privateKey: keys.privateKey, policy: policyText("/a") });
    const { url, close } = await start(ps);
    const g = guard({});
    const errors: Error[] = [];
    g.on("reloadError", (e: Error) => errors.push(e));
    const c = pollPolicyServer(g, { url, publicKeys: [keys.publicKey], waitSeconds: 20 });
    await c.ready;
    expect(c.current).toBeDefined();
    await c.close();
    // A server with another key (an impostor) serves a permissive policy.
    const impostor = new PolicyServer({ privateKey: generateBundleKeys().privateKey, policy: policyText("/**") });
    const imp = await start(impostor);
    const c2 = pollPolicyServer(g, { url: imp.url, publicKeys: [keys.publicKey], waitSeconds: 1 });
    await until(() => errors.length > 0);
    expect(errors[0]!.message).toMatch(/not trusted/);
    expect(await status("/a")).toBe(200);
    expect(await status("/anything")).toBe("denied");
    await c2.close();
    await imp.close();
    await close();
  });
});

describe("lifecycle: everything that holds a resource closes the same way", () => {
  const keys = generateBundleKeys();

  it("guard, file reloader, policy server and its client: close() is idempotent and `await using` closes them", async () => {
    const dir = mkdtempSync(join(tmpdir(), "mg-life-"));
    const file = join(dir, "policy.hujson");
    writeFileSync(file, policyText("/a"));
    const ps = new PolicyServer({ privateKey: keys.privateKey, policy: policyText("/a") });
    const server = http.createServer(ps.handler);
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    let polls = 0;
    server.on("request", () => polls++);
    const reloads: ReloadEvent[] = [];
    let watcher: ReturnType<typeof watchPolicyFile>;
    let client: ReturnType<typeof pollPolicyServer>;
    {
      await using g = installGuard({ identity: AGENT, intercept: { sdk: false } });
      g.on("reload", (e) => reloads.push(e));
      await using w = watchPolicyFile(g, file, { debounceMs: 20 });
      await using c = pollPolicyServer(g, { url, publicKeys: [keys.publicKey], waitSeconds: 20 });
      watcher = w;
      client = c;
      const ready: [Promise<void>, Promise<void>, Promise<void>] = [g.ready, w.ready, c.ready];
      await Promise.all(ready);
      expect(reloads.length).toBeGreaterThanOrEqual(1);
      expect(await status("/a")).toBe(200);
      expect(await status("/b")).toBe("denied");
      await until(() => polls === 2); // the client is in its long poll
    }
    // Closed in reverse order: the client (its long poll ended), the watcher, the guard.
    expect(await status("/b")).toBe(200); // nothing checks calls any more
    const g2 = installGuard({ identity: AGENT, policy: policyOf([allowHttp("127.0.0.1")]), intercept: { sdk: false } }); // a new guard may be installed
    await Promise.all([g2.close(), g2.close()]);
    g2.uninstall(); // the synonym, idempotent too
    const seen = reloads.length;
    writeFileSync(file, policyText("/b"));
    ps.update(policyText("/b"));
    await new Promise((r) => setTimeout(r, 200));
    expect(reloads.length).toBe(seen); // neither the watcher nor the client applies anything after close
    expect(polls).toBe(2);
    await Promise.all([watcher.close(), client.close(), ps.close(), ps.close()]);
    await new Promise<void>((r) => server.close(() => r()));
  });

  it("events are typed and camelCase; one option per concept", () => {
    const g = guard({});
    // @ts-expect-error "reload-error" is not an event of the guard (it is reloadError)
    g.on("reload-error", () => {});
    // @ts-expect-error evaluator is not an option (policy takes any Evaluator)
    expect(() => installGuard({ identity: AGENT, evaluator: { evaluate: () => ({ effect: "allow", reason: "" }) } })).toThrow(/unknown option\(s\) "evaluator"/);
    g.on("reloadError", (e) => expect(e.code).toBeTypeOf("string"));
    g.removeAllListeners();
  });
});
