// The tailnet dial channel: MeshNode.dial asks whoever subscribes to
// "meshguard:tailnet:dial" (the guard) before it connects, and the verdict
// only moves towards refusing: a deny is final, holds all have to resolve,
// nothing can mark a dial allowed. A second copy of meshguard in the process
// is judged by the first copy's guard and cannot install its own.
import dc from "node:diagnostics_channel";
import { cpSync, existsSync, mkdtempSync, rmSync, symlinkSync } from "node:fs";
import type net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { DIAL_CHANNEL, type DialMessage, type MeshNode } from "../../src/node.js";
import { PolicyDeniedError, installGuard, type GuardHandle } from "../../src/guard/index.js";
import { loadPolicy } from "../../src/policy/index.js";
import { startTailnet, type Tailnet } from "../integration/tailnet.js";

let tn: Tailnet;
let service: MeshNode;
let agent: MeshNode;
const ports = new Map<number, { count: number; close(): Promise<void> }>();

beforeAll(async () => {
  tn = await startTailnet(false);
  service = await tn.start("service", { tags: ["tag:service"] });
  agent = await tn.start("agent-a", { tags: ["tag:agent-a"] });
  for (const port of [7101, 7102]) {
    const c = { count: 0, close: async () => {} };
    const server = await service.listen(port);
    server.on("connection", (s: net.Socket) => {
      c.count++;
      s.end("hello");
    });
    c.close = () => new Promise<void>((r) => server.close(() => r()));
    ports.set(port, c);
  }
});

afterAll(async () => {
  for (const c of ports.values()) await c.close();
  await agent?.close();
  await service?.close();
  await tn?.control.close();
});

/** The guard allows tailnet port 7101 of the service and nothing else. */
const ALLOW_7101 = loadPolicy(JSON.stringify({ version: 1, rules: [{ id: "svc-7101", src: ["tag:agent-a"], tcp: { host: ["service"], port: [7101], tailnet: true } }] }));

let undo: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const u of undo.reverse()) await u();
  undo = [];
});

function subscribe(fn: (m: DialMessage) => void): void {
  const f = (m: unknown) => fn(m as DialMessage);
  dc.subscribe(DIAL_CHANNEL, f);
  undo.push(() => void dc.unsubscribe(DIAL_CHANNEL, f));
}

function guard(): GuardHandle {
  const g = installGuard({ identity: { node: "agent-a", tags: ["tag:agent-a"] }, policy: ALLOW_7101, intercept: { sdk: false, fetch: false, http: false, net: false } });
  undo.push(() => g.close());
  return g;
}

/** dialed dials the service and says what happened: "connected" (the service accepted and answered) or the error. */
async function dialed(port: number, node: Pick<MeshNode, "dial"> = agent): Promise<"connected" | Error> {
  let s: net.Socket;
  try {
    s = await node.dial("service", port);
  } catch (err) {
    return err as Error;
  }
  const chunks: Buffer[] = [];
  for await (const c of s) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString() === "hello" ? "connected" : new Error("no answer");
}

/** accepted waits a moment for connections in flight and returns the count on a port. */
async function accepted(port: number): Promise<number> {
  await new Promise((r) => setTimeout(r, 150));
  return ports.get(port)!.count;
}

describe("the tailnet dial channel", () => {
  it("without a subscriber a dial goes ahead; a subscriber's deny refuses it before any connection", async () => {
    expect(dc.channel(DIAL_CHANNEL).hasSubscribers).toBe(false);
    const before = ports.get(7102)!.count;
    expect(await dialed(7102)).toBe("connected");
    const seen: DialMessage[] = [];
    subscribe((m) => {
      seen.push(m);
      m.verdict.deny(new Error("not today"));
    });
    const err = await dialed(7102);
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toBe("not today");
    expect(seen.map((m) => [m.node.hostname, m.host, m.port])).toEqual([["agent-a", "service", 7102]]);
    expect(await accepted(7102)).toBe(before + 1);
  });

  it("the guard subscribes when installed and unsubscribes on close", async () => {
    const g = guard();
    expect(dc.channel(DIAL_CHANNEL).hasSubscribers).toBe(true);
    expect(await dialed(7101)).toBe("connected");
    expect(await dialed(7102)).toBeInstanceOf(PolicyDeniedError);
    await g.close();
    expect(dc.channel(DIAL_CHANNEL).hasSubscribers).toBe(false);
    expect(await dialed(7102)).toBe("connected");
  });

  it("a subscriber calling hold(resolved) or deny() cannot undo or replace the guard's deny, before or after it", async () => {
    const tries: string[] = [];
    // Subscribed before the guard: tries to take the verdict apart first.
    subscribe((m) => {
      m.verdict.hold(Promise.resolve());
      for (const attempt of [
        () => Object.assign(m, { verdict: { deny() {}, hold() {} } }),
        () => Object.assign(m.verdict, { deny() {} }),
        () => Object.defineProperty(m.verdict, "denied", { get: () => false }),
      ]) {
        try {
          attempt();
          tries.push("changed");
        } catch {
          tries.push("refused");
        }
      }
    });
    guard();
    // Subscribed after the guard: sees the deny and tries to clear it.
    let sawDenied: boolean | undefined;
    subscribe((m) => {
      sawDenied = m.verdict.denied;
      m.verdict.hold(Promise.resolve());
      m.verdict.deny(new Error("a later deny must not replace the first"));
    });
    const before = ports.get(7102)!.count;
    const err = await dialed(7102);
    expect(err).toBeInstanceOf(PolicyDeniedError);
    expect((err as PolicyDeniedError).target).toMatchObject({ kind: "tcp", host: "service", port: 7102, tailnet: true });
    expect(tries).toEqual(["refused", "refused", "refused"]);
    expect(sawDenied).toBe(true);
    expect(await accepted(7102)).toBe(before);
    // The message has no way to say "allow".
    let keys: string[] = [];
    subscribe((m) => void (keys = Object.keys(m.verdict).sort()));
    await dialed(7101);
    expect(keys).toEqual(["denied", "deny", "hold"]);
  });

  it("holds accumulate: the dial waits for every one, and one rejection refuses it", async () => {
    guard();
    const slow = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
    let reject: (e: Error) => void = () => {};
    let mode: "wait" | "reject" = "wait";
    subscribe((m) => m.verdict.hold(slow(100)));
    subscribe((m) => m.verdict.hold(mode === "wait" ? slow(300) : new Promise<void>((_r, j) => (reject = j))));
    const t0 = performance.now();
    expect(await dialed(7101)).toBe("connected");
    expect(performance.now() - t0).toBeGreaterThanOrEqual(290);

    mode = "reject";
    const before = ports.get(7101)!.count;
    const p = dialed(7101);
    await slow(150);
    reject(new Error("the approver said no"));
    const err = await p;
    expect((err as Error).message).toBe("the approver said no");
    expect(await accepted(7101)).toBe(before);
  });

  it("a second copy of meshguard in the process is judged by the first copy's guard and cannot install a guard", async () => {
    const copy = copyOfPackage();
    try {
      const other = (await import(pathToFileURL(join(copy, "dist", "index.js")).href)) as typeof import("../../src/index.js");
      const otherGuard = (await import(pathToFileURL(join(copy, "dist", "guard", "index.js")).href)) as typeof import("../../src/guard/index.js");
      expect(other.MeshNode).not.toBe((await import("../../src/index.js")).MeshNode);
      guard();

      // The addon can be initialised once per process, so the copy's node
      // shares this copy's backend and node handle: its dial is the copy's
      // own code (and its own dial channel module), the connection is real.
      const twin = Object.assign(Object.create(other.MeshNode.prototype) as MeshNode, {
        ...(agent as unknown as Record<string, unknown>),
        servers: new Map(),
      });
      expect(twin).toBeInstanceOf(other.MeshNode);
      const before = { 7101: ports.get(7101)!.count, 7102: ports.get(7102)!.count };
      expect(await dialed(7101, twin)).toBe("connected");
      const err = await dialed(7102, twin);
      expect((err as { code?: string }).code).toBe("MESHGUARD_POLICY_DENIED");
      expect(await accepted(7101)).toBe(before[7101] + 1);
      expect(await accepted(7102)).toBe(before[7102]);

      let second: unknown;
      try {
        otherGuard.installGuard({ identity: { node: "agent-a", tags: ["tag:agent-a"] }, intercept: { sdk: false } });
      } catch (e) {
        second = e;
      }
      expect((second as { code?: string })?.code).toBe("MESHGUARD_GUARD_ALREADY_INSTALLED");
    } finally {
      rmSync(copy, { recursive: true, force: true });
    }
  });
});

/** copyOfPackage copies the built package (dist/ and package.json) to a temp dir, as a nested install would hold it. */
function copyOfPackage(): string {
  const root = fileURLToPath(new URL("../..", import.meta.url));
  const dist = join(root, "dist", "index.js");
  if (!existsSync(dist)) throw new Error("dist/ is missing: run `node test/build.mjs` first");
  const dir = mkdtempSync(join(tmpdir(), "mg-copy-"));
  cpSync(join(root, "dist"), join(dir, "dist"), { recursive: true });
  cpSync(join(root, "package.json"), join(dir, "package.json"));
  symlinkSync(join(root, "node_modules"), join(dir, "node_modules"));
  return dir;
}
