// connect() against a real headscale and real nodes: a local client reaches
// a tailnet service with the connect node's identity; several forwards at
// once; half-close and backpressure carried through; a refused target fails
// only its connection; bad or non-loopback addresses refused before anything
// starts; close() releases listeners, connections and the node.
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect, type Connection } from "../../src/connect/index.js";
import type { MeshNode } from "../../src/index.js";
import { coreHandles } from "../../src/testing/index.js";
import { expectCode, startTailnet, type Tailnet } from "../integration/tailnet.js";
import { closedWithoutAnswer, DIGEST_PORT, exchange, freePort, rawGet, serveDigest, serveWho, sha256, who, WHO_PORT } from "./service.js";

const MiB = 1 << 20;
const PAUSED_PORT = 7002;

let tn: Tailnet;
let service: MeshNode;
let agentC: MeshNode;
let conn: Connection;
const logs: string[] = [];
/** Sockets of the paused port, not read until a test resumes them. */
const paused: net.Socket[] = [];

beforeAll(async () => {
  tn = await startTailnet(false);
  service = await tn.start("service", { tags: ["tag:service"] });
  await serveWho(service);
  await serveDigest(service);
  const p = await service.listen(PAUSED_PORT, net.createServer({ allowHalfOpen: true }));
  p.on("connection", (s: net.Socket) => paused.push(s));
  // agent-c is a node, but the policy does not let tag:agent-a see it.
  agentC = await tn.start("agent-c", { tags: ["tag:agent-c"] });
  await serveWho(agentC);
  conn = await connect({
    controlUrl: tn.control.url,
    authKey: await tn.key(["tag:agent-a"]),
    hostname: "laptop",
    forwards: [{ target: `service:${WHO_PORT}` }, { target: `service:${DIGEST_PORT}`, listen: "127.0.0.1:0" }, { target: `service:${PAUSED_PORT}` }, { target: `agent-c:${WHO_PORT}` }],
    log: (l) => logs.push(l),
  });
});

afterAll(async () => {
  await conn?.close();
  await agentC?.close();
  await service?.close();
  await tn?.control.close();
});

const port = (i: number) => conn.forwards[i]!.listen.port;

describe("forwarding", () => {
  it("reports each forward's target, bound loopback address and URL", () => {
    expect(conn.forwards.map((f) => f.target)).toEqual(["service:80", "service:7001", "service:7002", "agent-c:80"]);
    for (const f of conn.forwards) {
      expect(f.listen.host).toBe("127.0.0.1");
      expect(f.listen.port).toBeGreaterThan(0);
      expect(f.url).toBe(`http://127.0.0.1:${f.listen.port}`);
    }
    expect(new Set(conn.forwards.map((f) => f.listen.port)).size).toBe(4);
  });

  it("a local client reaches the service with the connect node's identity (whois: its tags and owners)", async () => {
    const seen = await who(`${conn.forwards[0]!.url}/v1/models`);
    expect(seen).toEqual({ hostname: "laptop", tags: ["tag:agent-a"], owners: ["alice@"], addr: conn.node.ips[0], path: "/v1/models" });
  });

  it("two forwards at once: HTTP on one while 8 MiB cross the other, half-close passed on", async () => {
    const payload = randomBytes(8 * MiB);
    const [digest, seen] = await Promise.all([exchange(port(1), payload), who(`${conn.forwards[0]!.url}/during`)]);
    // The service answers only after it saw the client's FIN: the answer proves the half-close crossed.
    expect(digest).toBe(`${8 * MiB} ${sha256(payload)}`);
    expect(seen.path).toBe("/during");
    expect(seen.tags).toEqual(["tag:agent-a"]);
  });

  it("backpressure: a service that does not read stops the local client's writes; nothing piles up in between", async () => {
    const total = 96 * MiB;
    const chunk = 64 * 1024;
    const payload = randomBytes(total);
    const before = paused.length;
    const sock = net.connect({ host: "127.0.0.1", port: port(2), allowHalfOpen: true });
    // A well-behaved writer: the next chunk only after the kernel took the last ('drain').
    let taken = 0;
    const pumping = (async () => {
      for (let i = 0; i < total; i += chunk) {
        const more = sock.write(payload.subarray(i, i + chunk));
        if (!more) await once(sock, "drain");
        taken = i + chunk;
      }
      sock.end();
    })();
    await expect.poll(() => paused.length, { timeout: 10_000 }).toBe(before + 1);
    // Let the buffers on the way fill: kernel, socketpairs, both netstacks'
    // windows hold ~17 MiB between two nodes and ~25 MiB with the local hop.
    const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
    await sleep(1500);
    const stalled = taken;
    await sleep(500);
    // The writer is stalled well short of the end. Without backpressure the
    // forward would read everything into its memory and the writer would be done.
    expect(taken).toBe(stalled);
    expect(taken).toBeLessThan(total / 2);
    const server = paused[before]!;
    const got: Buffer[] = [];
    server.on("data", (c: Buffer) => got.push(c));
    const ended = once(server, "end");
    await pumping;
    await ended;
    expect(sha256(Buffer.concat(got))).toBe(sha256(payload));
    server.destroy();
    sock.destroy();
  });

  it("a connection that arrives while the node is joining waits for it", async () => {
    const p = await freePort();
    let early: ReturnType<typeof rawGet> | undefined;
    const c = await connect({
      controlUrl: tn.control.url,
      authKey: await tn.key(["tag:agent-a"]),
      hostname: "early",
      forwards: [{ target: `service:${WHO_PORT}`, listen: `127.0.0.1:${p}` }],
      log: () => {},
      onProgress: (ev) => {
        if (ev.phase === "loading") early ??= rawGet(p, "/early");
      },
    });
    try {
      expect(early, "onProgress reported no loading phase").toBeDefined();
      const answer = await early!;
      expect(answer.status).toBe("HTTP/1.1 200 OK");
      expect(JSON.parse(answer.body)).toMatchObject({ hostname: "early", path: "/early" });
    } finally {
      await c.close();
    }
  });
});

describe("failures stay with their connection", () => {
  it("a target the tailnet does not allow: the connection is closed with a log line naming it, the listener stays up", async () => {
    const start = logs.length;
    expect(await closedWithoutAnswer(port(3), "GET / HTTP/1.0\r\n\r\n")).toEqual({ bytes: 0 });
    await expect.poll(() => logs.length).toBe(start + 1);
    expect(logs[start]).toMatch(new RegExp(`^127\\.0\\.0\\.1:\\d+ via 127\\.0\\.0\\.1:${port(3)} -> agent-c:80: MESHGUARD_NO_PEER: .*; connection closed$`));
    // The same listener takes the next connection (and refuses it the same way) ...
    expect(await closedWithoutAnswer(port(3), "again")).toEqual({ bytes: 0 });
    await expect.poll(() => logs.length).toBe(start + 2);
    // ... and the other forwards are untouched.
    expect((await who(`${conn.forwards[0]!.url}/after`)).path).toBe("/after");
  });

  it("a service that drops the connection ends that connection only", async () => {
    const srv = await service.listen(7003, net.createServer((s) => s.once("data", () => s.destroy())));
    const c = await connect({ controlUrl: tn.control.url, authKey: await tn.key(["tag:agent-a"]), hostname: "resets", forwards: [{ target: "service:7003" }, { target: `service:${WHO_PORT}` }], log: () => {} });
    try {
      const r = await closedWithoutAnswer(c.forwards[0]!.listen.port, "x");
      expect(r.bytes).toBe(0);
      const still = await rawGet(c.forwards[1]!.listen.port, "/still");
      expect(JSON.parse(still.body)).toMatchObject({ hostname: "resets", path: "/still" });
      await expect.poll(() => c.connections()).toBe(0);
    } finally {
      await c.close();
      srv.close();
    }
  });
});

describe("addresses", () => {
  const base = () => ({ controlUrl: tn.control.url, authKey: "unused", log: () => {} });

  it("a listen address that is not loopback is refused without allowNonLoopback, before any node starts", async () => {
    const nodes = (await coreHandles()).nodes;
    for (const listen of ["0.0.0.0:0", "[::]:0", "10.1.2.3:8080"]) {
      const err = await expectCode(connect({ ...base(), forwards: [{ target: "service:80", listen }] }), "MESHGUARD_INVALID_OPTIONS");
      expect(err.message).toMatch(/forwards\.0\.listen: .* is not a loopback address: anyone who can reach it would use the tailnet as this node; .*allowNonLoopback/);
    }
    expect((await coreHandles()).nodes).toBe(nodes);
  });

  it("other bad addresses name their field", async () => {
    const cases: [object, RegExp][] = [
      [{ target: "service" }, /forwards\.0\.target: must be HOST:PORT/],
      [{ target: "service:0" }, /forwards\.0\.target: port must be 1-65535/],
      [{ target: "service:80", listen: "example.com:80" }, /forwards\.0\.listen: listen host must be an IP address of this machine/],
      [{ target: "service:80", listen: "127.0.0.1:70000" }, /forwards\.0\.listen: port must be 0-65535/],
      [{ target: "bad_name!:80" }, /forwards\.0\.target: "bad_name!" is neither a MagicDNS name nor an IP address/],
    ];
    for (const [fwd, re] of cases) expect((await expectCode(connect({ ...base(), forwards: [fwd as { target: string }] }), "MESHGUARD_INVALID_OPTIONS")).message).toMatch(re);
    expect((await expectCode(connect({ ...base(), forwards: [] }), "MESHGUARD_INVALID_OPTIONS")).message).toMatch(/forwards: at least one forward/);
  });

  it("with allowNonLoopback it listens on every interface, warns, and gives a loopback URL", async () => {
    const lines: string[] = [];
    const c = await connect({ controlUrl: tn.control.url, authKey: await tn.key(["tag:agent-a"]), hostname: "wide", forwards: [{ target: `service:${WHO_PORT}`, listen: "0.0.0.0:0" }], allowNonLoopback: true, log: (l) => lines.push(l) });
    try {
      expect(c.forwards[0]!.listen.host).toBe("0.0.0.0");
      expect(c.forwards[0]!.url).toBe(`http://127.0.0.1:${c.forwards[0]!.listen.port}`);
      expect(lines).toEqual([`warning: 0.0.0.0:${c.forwards[0]!.listen.port} -> service:80 listens beyond loopback (allowNonLoopback): anyone who can reach that address uses the tailnet as this node`]);
      expect((await who(`${c.forwards[0]!.url}/`)).hostname).toBe("wide");
    } finally {
      await c.close();
    }
  });

  it("a local port in use is MESHGUARD_LISTEN_FAILED naming it, and no node is left behind", async () => {
    const taken = net.createServer();
    await new Promise<void>((r) => taken.listen(0, "127.0.0.1", r));
    const p = (taken.address() as net.AddressInfo).port;
    const before = await coreHandles();
    try {
      const err = await expectCode(connect({ ...base(), forwards: [{ target: "service:80" }, { target: "service:81", listen: `127.0.0.1:${p}` }] }), "MESHGUARD_LISTEN_FAILED");
      expect(err.message).toMatch(new RegExp(`cannot listen on 127\\.0\\.0\\.1:${p} for service:81: the port is in use`));
      expect(await coreHandles()).toEqual(before);
    } finally {
      taken.close();
    }
  });
});

describe("close", () => {
  it("close() stops the listeners, ends open connections, closes the node and removes it from the tailnet", async () => {
    const before = await coreHandles();
    const c = await connect({ controlUrl: tn.control.url, authKey: await tn.key(["tag:agent-a"]), hostname: "closing", forwards: [{ target: `service:${PAUSED_PORT}` }, { target: `service:${WHO_PORT}` }], log: () => {} });
    const n = paused.length;
    const open = net.connect({ host: "127.0.0.1", port: c.forwards[0]!.listen.port });
    open.on("error", () => {});
    const openClosed = new Promise((r) => open.once("close", r));
    open.write("hello");
    await expect.poll(() => paused.length, { timeout: 10_000 }).toBe(n + 1); // carried all the way: both sides exist
    expect(c.connections()).toBe(1);
    expect((await tn.control.listNodes()).some((x) => x.name === "closing")).toBe(true);

    await c.close();
    await openClosed;
    expect(c.connections()).toBe(0);
    for (const f of c.forwards) {
      const refused = await new Promise<string>((r) => net.connect({ host: "127.0.0.1", port: f.listen.port }).once("error", (e: NodeJS.ErrnoException) => r(e.code ?? "")).once("connect", () => r("connected")));
      expect(refused).toBe("ECONNREFUSED");
    }
    await expectCode(c.node.status(), "MESHGUARD_CLOSED");
    paused[n]!.destroy(); // the service's side, which it never read
    // Connections of earlier tests may still be draining: none of ours is left.
    // A handle goes when its close has travelled JS → the core's copy loop, which a loaded machine (the full run's parallel files) can take seconds to do.
    await expect.poll(async () => (await coreHandles()).conns <= before.conns, { timeout: 10_000 }).toBe(true);
    expect({ ...(await coreHandles()), conns: 0 }).toEqual({ ...before, conns: 0 });
    expect((await tn.control.listNodes()).some((x) => x.name === "closing")).toBe(false);
    await c.close(); // idempotent
  });
});
