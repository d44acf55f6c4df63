// The serverless shape (issue 12, must-have 6): a node's state through a
// StateStore on both backends, the `handler` helper of meshguard/serverless
// (one node per warm instance, logged out at shutdown), and the example
// function run with one command (examples/serverless/run.mjs), on a real
// local headscale.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { createServer } from "node:http";
import type net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MeshNode, memoryStateStore } from "../../src/index.js";
import { handler } from "../../src/serverless/index.js";
import { expectCode, startTailnet, type Tailnet } from "../integration/tailnet.js";

const repo = fileURLToPath(new URL("../..", import.meta.url));

let tn: Tailnet;
let svc: MeshNode;
beforeAll(async () => {
  tn = await startTailnet(false);
  svc = await tn.start("sl-svc", { tags: ["tag:service"], backend: "native" });
  const app = createServer((req, res) => res.end(`${req.url} from ${req.socket.remoteAddress}`));
  (await svc.listen(7500)).on("connection", (s: net.Socket) => app.emit("connection", s));
}, 60_000);
afterAll(async () => {
  await svc?.close();
  await tn?.control.close();
});

const nodesNamed = async (name: string) => (await tn.control.listNodes()).filter((n) => n.name === name);

describe.each(["native", "wasm"] as const)("%s backend: the node's state goes through a StateStore", (backend) => {
  it("a node restarted from the store keeps its identity; the private working directory is removed; a logged-out node's state is deleted", async () => {
    const store = memoryStateStore();
    const hostname = `st-${backend}`;
    const key = `${hostname}/tailscaled.state`;
    const a = await tn.start(hostname, { tags: ["tag:agent-a"], backend, ephemeral: false, state: store, dir: undefined });
    const first = { ip: a.ips[0], id: a.id, dir: a.dir };
    await expect.poll(async () => (await store.get(key))?.length ?? 0).toBeGreaterThan(0);
    // Tailscale's state: a JSON object of keys (the node's private keys and its profile among them).
    expect(Object.keys(JSON.parse(Buffer.from((await store.get(key))!).toString("utf8")) as object).length).toBeGreaterThan(0);
    await a.close(); // not ephemeral: no logout, the state stays
    expect(existsSync(first.dir)).toBe(false);
    expect(await store.get(key)).toBeDefined();

    const b = await tn.start(hostname, { tags: ["tag:agent-a"], backend, ephemeral: true, state: store, dir: undefined });
    expect({ ip: b.ips[0], id: b.id }).toEqual({ ip: first.ip, id: first.id });
    expect(await nodesNamed(hostname)).toHaveLength(1);
    await b.close(); // ephemeral: logged out, and its state with it
    expect(await store.get(key)).toBeUndefined();
    expect(await nodesNamed(hostname)).toHaveLength(0);
  }, 90_000);
});

describe("meshguard/serverless handler", () => {
  it("brings one node up per warm instance, shared by concurrent invocations; close logs it out; the next invocation starts a new one", async () => {
    const authKey = await tn.key(["tag:agent-a"]);
    const fn = handler({ controlUrl: tn.control.url, authKey, hostname: "fn-warm", backend: "wasm", closeOn: [] }, async (event: string, node: MeshNode) => {
      const res = await node.fetch(`http://sl-svc:7500/${event}`);
      return { body: await res.text(), node };
    });
    const [r1, r2] = await Promise.all([fn("a"), fn("b")]);
    expect(r1.node).toBe(r2.node);
    expect(r1.node.backendKind).toBe("wasm");
    expect(r1.body).toBe(`/a from ${r1.node.ips[0]}`);
    expect((await fn("c")).node).toBe(r1.node);
    // The serverless defaults: ephemeral, state in memory (a private working directory), no control socket.
    const [n] = await nodesNamed("fn-warm");
    expect(n?.ephemeral).toBe(true);
    expect(r1.node.controlSocket).toBeUndefined();
    const dir = r1.node.dir;
    await fn.close();
    expect(await nodesNamed("fn-warm")).toHaveLength(0);
    expect(existsSync(dir)).toBe(false);
    await expectCode(r1.node.peers(), "MESHGUARD_CLOSED");
    const again = await fn("d");
    expect(again.node).not.toBe(r1.node);
    await fn.close();
  }, 90_000);

  it("a start that fails fails that invocation and the next one tries again; wrong options fail when the handler is made", async () => {
    const authKey = await tn.key(["tag:agent-a"]);
    let calls = 0;
    const fn = handler(
      () => {
        calls++;
        if (calls === 1) return { controlUrl: "ftp://nope", hostname: "fn-retry" };
        return { controlUrl: tn.control.url, authKey, hostname: "fn-retry", backend: "wasm", closeOn: [] };
      },
      async (_e: unknown, node: MeshNode) => node.name,
    );
    await expectCode(fn(1), "MESHGUARD_INVALID_OPTIONS");
    expect(calls).toBe(1);
    expect((await fn(2)).split(".")[0]).toBe("fn-retry");
    expect(calls).toBe(2);
    await fn.close();
    expect(() => handler({ controlUrl: "nope", hostname: "x" }, async () => 1)).toThrow(/controlUrl: must be an http/);
    expect(() => handler({ controlUrl: tn.control.url, hostname: "x", closeOn: ["TERM" as NodeJS.Signals] }, async () => 1)).toThrow(/closeOn.0: must be a signal name/);
    expect(() => handler({ controlUrl: tn.control.url, hostname: "x" }, undefined as never)).toThrow(/second argument must be a function/);
  }, 90_000);
});

describe("shutdown without a signal", () => {
  it("when the instance's event loop runs out (beforeExit), the handler logs its node out and the process ends", async () => {
    const script = `
      import { handler } from ${JSON.stringify(`${repo}/dist/serverless/index.js`)};
      const fn = handler({ controlUrl: process.env.CTL, authKey: process.env.KEY, hostname: "fn-exit", backend: "wasm" }, async (_e, node) => node.ips[0]);
      console.log(await fn({}));`;
    const env = { ...process.env, CTL: tn.control.url, KEY: await tn.key(["tag:agent-a"]) };
    const r = spawnSync(process.execPath, ["--input-type=module", "-e", script], { env, encoding: "utf8", timeout: 90_000 });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout.trim()).toMatch(/^100\.\d+\.\d+\.\d+$/);
    expect(await nodesNamed("fn-exit")).toHaveLength(0);
  }, 120_000);
});

describe("the example function, run with one command", () => {
  it("examples/serverless/run.mjs: a cold then two warm invocations on one node, and its ephemeral node leaves the tailnet on SIGTERM", () => {
    expect(existsSync(`${repo}/dist/serverless/index.js`), "dist/ is missing: run npx tsup").toBe(true);
    const env = { ...process.env };
    delete env.MESHGUARD_BACKEND;
    const r = spawnSync(process.execPath, ["examples/serverless/run.mjs"], { cwd: repo, env, encoding: "utf8", timeout: 120_000 });
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/cold invocation: 200 "tools saw GET \/search\?q=cold from fn \(tag:fn\)"/);
    expect(r.stdout.match(/warm invocation: 200 "tools saw GET \/search\?q=warm-\d from fn \(tag:fn\)"/g)).toHaveLength(2);
    expect(r.stdout).toMatch(/nodes of tag:fn on the tailnet: 1 \(one per warm instance: 1 node name\(s\) seen\)/);
    expect(r.stdout).toMatch(/instance ended by SIGTERM/);
    expect(r.stdout).toMatch(/nodes of tag:fn after shutdown: 0 \(the handler logged its ephemeral node out\)/);
  }, 150_000);
});
