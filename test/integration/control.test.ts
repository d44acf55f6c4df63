// Integration tests for the local control server against a real headscale.
// Nothing here needs the internet: the binary must already be built
// (`npm run build`); the server listens on 127.0.0.1 only.

import { execFileSync } from "node:child_process";
import { connect } from "node:net";
import { PassThrough } from "node:stream";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { runCli } from "../../src/cli/run.js";
import { ensureHeadscale, HEADSCALE_VERSION, LocalControl } from "../../src/control/index.js";
import { isMeshguardError } from "../../src/errors.js";

function refused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host: "127.0.0.1", port });
    s.once("connect", () => {
      s.destroy();
      resolve(false);
    });
    s.once("error", (err: NodeJS.ErrnoException) => resolve(err.code === "ECONNREFUSED"));
  });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

let binary: string;

/** storedPolicy is the policy text as headscale itself holds it (anchor grant included). */
function storedPolicy(control: LocalControl): string {
  return execFileSync(binary, ["-c", control.configPath, "policy", "get", "-o", "json"], { encoding: "utf8" }).trimEnd();
}
const ANCHOR = "100.100.100.100/32";

beforeAll(async () => {
  binary = await ensureHeadscale({ allowBuild: false });
});

describe("LocalControl", () => {
  let control: LocalControl;
  const progress: object[] = [];

  beforeAll(async () => {
    control = await LocalControl.start({ binary, onProgress: (ev) => progress.push(ev) });
  }, 30_000);

  it("reports its start as the library's one progress event", () => {
    expect(progress.map((ev) => Object.keys(ev).sort().join())).toEqual(["elapsedMs,message,phase", "elapsedMs,message,phase"]);
    expect(progress).toMatchObject([
      { phase: "starting", message: expect.stringContaining(control.url) },
      { phase: "running", message: expect.stringContaining(control.url) },
    ]);
  });

  afterAll(async () => {
    await control?.close();
  });

  it("serves an offline configuration on loopback", async () => {
    expect(control.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const res = await fetch(`${control.url}/health`);
    expect(res.status).toBe(200);
    const config = JSON.parse(await readFile(control.configPath, "utf8"));
    expect(config.disable_check_updates).toBe(true);
    expect(config.logtail.enabled).toBe(false);
    expect(config.derp.urls).toEqual([]);
    expect(config.derp.server.stun_listen_addr).toBe(`127.0.0.1:${control.stunPort}`);
    // The embedded DERP region is advertised on the control port.
    const lines = control.recentOutput().join("\n");
    expect(lines).toContain(`IPv4:127.0.0.1`);
    expect(lines).toContain("metrics server disabled");
  });

  it("creates users and auth keys", async () => {
    const user = await control.createUser("alice", { displayName: "Alice" });
    expect(user).toMatchObject({ name: "alice", displayName: "Alice" });
    expect(user.id).toBeGreaterThan(0);
    expect(await control.listUsers()).toContainEqual(user);

    const tagged = await control.createAuthKey({ tags: ["tag:agent"], ephemeral: true, reusable: true });
    expect(tagged).toMatch(/^hskey-auth-/);
    const byName = await control.createAuthKey({ user: "alice", expiration: "2h" });
    const byId = await control.createAuthKey({ user: user.id, reusable: true });
    expect(new Set([tagged, byName, byId]).size).toBe(3);
    // hashed: false adds a plaintext form to the same key row (headscale's legacy column).
    expect(await control.createAuthKey({ user: "alice", hashed: false })).toMatch(/^[0-9a-f]{48}$/);
  });

  it("refuses auth keys it cannot create, with a clear error", async () => {
    await expect(control.createAuthKey({})).rejects.toMatchObject({ code: "MESHGUARD_INVALID_OPTIONS" });
    await expect(control.createAuthKey({ tags: ["agent"] })).rejects.toMatchObject({ code: "MESHGUARD_INVALID_OPTIONS" });
    await expect(control.createAuthKey({ user: "nobody" })).rejects.toThrow(/no user named "nobody"/);
    await expect(control.createUser("alice")).rejects.toMatchObject({
      code: "MESHGUARD_CONTROL_COMMAND_FAILED",
      message: expect.stringContaining("UNIQUE constraint failed"),
    });
  });

  it("stores a HuJSON policy verbatim and reads it back", async () => {
    expect(await control.getPolicy()).toBeNull();
    const hujson = `{
  // agents may reach services
  "tagOwners": {
    "tag:agent": ["alice@"],
    "tag:service": ["alice@"], // trailing comma next
  },
  "grants": [
    { "src": ["tag:agent"], "dst": ["tag:service"], "ip": ["*"] },
  ],
}`;
    await control.setPolicy(hujson);
    expect(await control.getPolicy()).toBe(hujson);

    // hujson refuses a line comment at the very end unless a newline follows;
    // setPolicy supplies it.
    await control.setPolicy('{ "grants": [] } // deny all');
    expect(await control.getPolicy()).toBe('{ "grants": [] } // deny all');

    const obj = { grants: [{ src: ["*"], dst: ["*"], ip: ["*"] }] };
    await control.setPolicy(obj);
    expect(JSON.parse((await control.getPolicy())!)).toEqual(obj);
  });

  it("rejects a broken policy with headscale's reason and keeps the old one", async () => {
    const before = await control.getPolicy();
    const unknownTag = control.setPolicy({ grants: [{ src: ["tag:nope"], dst: ["*"], ip: ["*"] }] });
    await expect(unknownTag).rejects.toMatchObject({ code: "MESHGUARD_CONTROL_POLICY_REJECTED" });
    await expect(unknownTag).rejects.toThrow(/tag not found: "tag:nope"/);

    const err = await control.setPolicy('{ "grants": [ ').catch((e: unknown) => e);
    expect(isMeshguardError(err, "MESHGUARD_CONTROL_POLICY_REJECTED")).toBe(true);
    expect((err as Error).message).toMatch(/parsing HuJSON/);
    expect(await control.getPolicy()).toBe(before);
  });

  // Pins what headscale v0.29.2 accepts for app capabilities (grants with `app`).
  it("accepts grants with app capabilities, with and without ip", async () => {
    const tagOwners = { "tag:agent-a": ["alice@"], "tag:service": ["alice@"] };
    const app = { "meshguard.dev/cap/test": [{ x: 1 }] };
    await control.setPolicy({ tagOwners, grants: [{ src: ["tag:agent-a"], dst: ["tag:service"], ip: ["*"], app }] });
    await control.setPolicy({ tagOwners, grants: [{ src: ["tag:agent-a"], dst: ["tag:service"], app }] });
    expect(JSON.parse((await control.getPolicy())!).grants[0]).toEqual({ src: ["tag:agent-a"], dst: ["tag:service"], app });
    await control.checkPolicy({ tagOwners, grants: [{ src: ["tag:agent-a"], dst: ["tag:service"], app }] });
    // A capability name must be {domain}/{path}; a URL is refused.
    await expect(control.setPolicy({ grants: [{ src: ["*"], dst: ["*"], app: { "https://x/cap": [{}] } }] })).rejects.toMatchObject({
      code: "MESHGUARD_CONTROL_POLICY_REJECTED",
      message: expect.stringContaining("capability name must have the form {domain}/{path}"),
    });
  });

  // docs/revocation.md: headscale v0.29.2 shows revoked peers again when the
  // filter compiles to nothing, so every policy with rules carries an anchor.
  it("stores policies with rules with the anchor grant, invisible through getPolicy", async () => {
    for (const text of ['{ "grants": [] } // deny all', '{ "acls": [] }', '{ "tagOwners": { "tag:x": ["alice@"] }, "acls": [], "grants": [] }']) {
      await control.setPolicy(text);
      expect(storedPolicy(control)).toContain(ANCHOR);
      expect(await control.getPolicy()).toBe(text);
      await control.checkPolicy(text);
    }
    // No rules: headscale allows all, and one rule would turn that into deny all.
    await control.setPolicy('{ "tagOwners": { "tag:x": ["alice@"] } }');
    expect(storedPolicy(control)).not.toContain(ANCHOR);
  });

  it("lists no nodes before any node joins", async () => {
    expect(await control.listNodes()).toEqual([]);
    await expect(control.deleteNode(4242)).rejects.toThrow(/node not found/);
  });
});

describe("LocalControl lifecycle", () => {
  it("close kills headscale, frees its port and removes its temp dir", async () => {
    const control = await LocalControl.start({ binary });
    const port = Number(new URL(control.url).port);
    expect(alive(control.pid)).toBe(true);
    expect(await refused(port)).toBe(false);

    await Promise.all([control.close(), control.close()]); // idempotent
    await control.close();

    expect(control.running).toBe(false);
    expect(alive(control.pid)).toBe(false);
    expect(await refused(port)).toBe(true);
    expect(existsSync(control.dir)).toBe(false);
    expect(await control.waitForExit()).toMatchObject({ expected: true });
    await expect(control.listNodes()).rejects.toMatchObject({ code: "MESHGUARD_CONTROL_UNAVAILABLE" });
  }, 30_000);

  it("keeps a given dir, so the tailnet survives a restart", async () => {
    // Deliberately long: the unix socket must move to a short path.
    const dir = join(await mkdtemp(join(tmpdir(), "meshguard-test-")), "x".repeat(90));
    try {
      {
        await using control = await LocalControl.start({ binary, dir });
        await control.createUser("bob");
        await control.setPolicy('{ "grants": [] } // deny all');
      }
      expect(existsSync(join(dir, "db.sqlite"))).toBe(true);
      await using again = await LocalControl.start({ binary, dir, policy: { grants: [{ src: ["*"], dst: ["*"], ip: ["*"] }] } });
      expect((await again.listUsers()).map((u) => u.name)).toEqual(["bob"]);
      expect(JSON.parse((await again.getPolicy())!).grants).toHaveLength(1);
    } finally {
      await rm(join(dir, ".."), { recursive: true, force: true });
    }
  }, 30_000);

  it("restart brings headscale back on the same URL and state, also after a crash", async () => {
    await using control = await LocalControl.start({ binary, policy: '{ "grants": [] } // deny all' });
    await control.createUser("carol");
    for (const signal of ["SIGTERM", "SIGKILL"] as const) {
      const pid = control.pid;
      await control.restart({ signal, downMs: 100 });
      expect(alive(pid)).toBe(false);
      expect(control.pid).not.toBe(pid);
      expect(control.running).toBe(true);
      expect((await fetch(`${control.url}/health`)).status).toBe(200);
      expect((await control.listUsers()).map((u) => u.name)).toEqual(["carol"]);
      expect(await control.getPolicy()).toBe('{ "grants": [] } // deny all');
    }
    expect(control.recentOutput().filter((l) => /listening and serving HTTP/.test(l))).toHaveLength(3);
    await control.close();
    await expect(control.restart()).rejects.toMatchObject({ code: "MESHGUARD_CONTROL_UNAVAILABLE" });
  }, 60_000);

  it("anchors a policy stored without the anchor when it starts on a kept dir", async () => {
    const dir = await mkdtemp(join(tmpdir(), "meshguard-test-"));
    try {
      {
        await using control = await LocalControl.start({ binary, dir });
        // Set behind LocalControl's back, as with headscale's own CLI.
        await writeFile(join(dir, "raw.json"), '{ "grants": [] }\n');
        execFileSync(binary, ["-c", control.configPath, "policy", "set", "--file", join(dir, "raw.json")]);
        expect(storedPolicy(control)).not.toContain(ANCHOR);
      }
      await using again = await LocalControl.start({ binary, dir });
      expect(storedPolicy(again)).toContain(ANCHOR);
      expect(await again.getPolicy()).toBe('{ "grants": [] }');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 30_000);

  it("reports why headscale did not start, with its output", async () => {
    const err = await LocalControl.start({ binary, ephemeralInactivityTimeout: "10s" }).catch((e: unknown) => e);
    expect(isMeshguardError(err, "MESHGUARD_CONTROL_UNAVAILABLE")).toBe(true);
    expect((err as Error).message).toMatch(/headscale did not start: it exited/);
    expect((err as Error).message).toMatch(/inactivity_timeout \(10s\) is set too low/);
  }, 30_000);
});

describe("ensureHeadscale", () => {
  it("honours MESHGUARD_HEADSCALE_BIN and explains a bad one", async () => {
    const saved = process.env.MESHGUARD_HEADSCALE_BIN;
    try {
      process.env.MESHGUARD_HEADSCALE_BIN = binary;
      expect(await ensureHeadscale({ allowBuild: false })).toBe(binary);
      process.env.MESHGUARD_HEADSCALE_BIN = "/nonexistent/headscale";
      await expect(ensureHeadscale()).rejects.toMatchObject({ code: "MESHGUARD_CONTROL_UNAVAILABLE" });
    } finally {
      if (saved === undefined) delete process.env.MESHGUARD_HEADSCALE_BIN;
      else process.env.MESHGUARD_HEADSCALE_BIN = saved;
    }
  });

  it("says how to get the binary when it is missing and building is off", async () => {
    const saved = { cache: process.env.MESHGUARD_CACHE_DIR, bin: process.env.MESHGUARD_HEADSCALE_BIN };
    const cache = await mkdtemp(join(tmpdir(), "meshguard-cache-"));
    try {
      process.env.MESHGUARD_CACHE_DIR = cache;
      delete process.env.MESHGUARD_HEADSCALE_BIN;
      const err = await ensureHeadscale({ allowBuild: false }).catch((e: unknown) => e);
      expect(isMeshguardError(err, "MESHGUARD_CONTROL_UNAVAILABLE")).toBe(true);
      expect((err as Error).message).toContain(`headscale-${HEADSCALE_VERSION}`);
      expect((err as { hint?: string }).hint).toMatch(/npm run build.*before entering the network namespace/);
    } finally {
      for (const [k, v] of [["MESHGUARD_CACHE_DIR", saved.cache], ["MESHGUARD_HEADSCALE_BIN", saved.bin]] as const) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
      await rm(cache, { recursive: true, force: true });
    }
  });
});

describe("meshguard dev", () => {
  it("prints the control URL and working keys as JSON, then stops on request", async () => {
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    let out = "";
    let err = "";
    stdout.on("data", (d: Buffer) => (out += d));
    stderr.on("data", (d: Buffer) => (err += d));
    const stop = new AbortController();
    const done = runCli(["dev", "--json"], { stdout, stderr, signal: stop.signal });
    while (!out.includes("\n")) {
      if (await Promise.race([done.then(() => true), new Promise<false>((r) => setTimeout(() => r(false), 50))])) break;
    }
    const info = JSON.parse(out);
    expect(info).toMatchObject({ user: { name: "dev" }, agentTags: ["tag:agent"], persistent: false });
    expect(info.authKey).toMatch(/^hskey-auth-/);
    expect(info.agentAuthKey).toMatch(/^hskey-auth-/);
    expect((await fetch(`${info.controlUrl}/health`)).status).toBe(200);
    expect(err).toContain("starting headscale");

    stop.abort();
    expect(await done).toBe(0);
    expect(alive(info.headscale.pid)).toBe(false);
    expect(existsSync(info.dir)).toBe(false);
  }, 30_000);

  it("exits 1 with the policy error as JSON when the policy is refused", async () => {
    const dir = await mkdtemp(join(tmpdir(), "meshguard-dev-"));
    try {
      const file = join(dir, "policy.hujson");
      await writeFile(file, '{ "grants": [ { "src": ["tag:nope"], "dst": ["*"], "ip": ["*"] } ] }');
      const stdout = new PassThrough();
      let out = "";
      stdout.on("data", (d: Buffer) => (out += d));
      expect(await runCli(["dev", "--json", "--policy", file], { stdout, stderr: new PassThrough() })).toBe(1);
      expect(JSON.parse(out).error).toMatchObject({ code: "MESHGUARD_CONTROL_POLICY_REJECTED" });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 30_000);

  it("--policy with a combined policy file applies its tailnet part (headscale refuses the meshguard key)", async () => {
    const file = fileURLToPath(new URL("../../examples/getting-started/tailnet.hujson", import.meta.url));
    const stdout = new PassThrough();
    let out = "";
    stdout.on("data", (d: Buffer) => (out += d));
    const stop = new AbortController();
    const done = runCli(["dev", "--json", "--policy", file], { stdout, stderr: new PassThrough(), signal: stop.signal });
    while (!out.includes("\n")) {
      if (await Promise.race([done.then(() => true), new Promise<false>((r) => setTimeout(() => r(false), 50))])) break;
    }
    const info = JSON.parse(out);
    expect(info.error, "the combined file was refused").toBeUndefined();
    expect(info.agentAuthKey).toMatch(/^hskey-auth-/);
    stop.abort();
    expect(await done).toBe(0);
  }, 30_000);

  it("rejects unknown options with status 2", async () => {
    expect(await runCli(["dev", "--nope"], { stdout: new PassThrough(), stderr: new PassThrough() })).toBe(2);
  });
});
