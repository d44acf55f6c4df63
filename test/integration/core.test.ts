// The core against a real headscale and real nodes: data path, netmap
// trimming, whois, failures, and that closing releases everything.
import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { EventEmitter, once } from "node:events";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MeshNode, type Peer, type WhoIs } from "../../src/index.js";
import { watchPolicyFile, type ReloadTarget } from "../../src/distribution/index.js";
import { coreHandles } from "../../src/testing/index.js";
import { expectCode, policy, readAll, startTailnet, type Tailnet } from "./tailnet.js";

const MiB = 1 << 20;
const fixture = (name: string) => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url));

let tn: Tailnet;
let service: MeshNode;
let agentA: MeshNode;

beforeAll(async () => {
  tn = await startTailnet(false);
  service = await tn.start("service", { tags: ["tag:service"] });
  agentA = await tn.start("agent-a", { tags: ["tag:agent-a"] });
});

afterAll(async () => {
  await agentA?.close();
  await service?.close();
  await tn?.control.close();
});

const sha = (b: Buffer) => createHash("sha256").update(b).digest();

describe("data path", () => {
  // "two nodes in one process exchange 1 MiB both ways with half-close" is
  // in test/conformance/backends.test.ts, against the native and wasm backends.

  it("two nodes in separate processes exchange 1 MiB both ways with half-close", async () => {
    const key = await tn.key(["tag:service"]);
    const child = spawn(process.execPath, [fixture("echo-peer.mjs"), tn.control.url, key, join(tn.stateDir, "remote"), "remote-svc", "7002", String(MiB)], {
      stdio: ["pipe", "pipe", "inherit"],
    });
    const lines = createInterface({ input: child.stdout! });
    const next = async () => JSON.parse(String((await once(lines, "line"))[0])) as { event: string; handles?: Record<string, number> };
    try {
      expect((await next()).event).toBe("online");
      await waitForPeer(agentA, "remote-svc");
      const payload = randomBytes(MiB);
      const sock = await agentA.dial("remote-svc", 7002, { allowHalfOpen: true });
      sock.end(payload);
      const back = await readAll(sock);
      expect(back.length).toBe(32 + MiB);
      expect(back.subarray(0, 32).equals(sha(payload))).toBe(true);
      expect(back.subarray(32).every((b) => b === 7)).toBe(true);
      child.stdin!.end();
      const closed = await next();
      expect(closed.event).toBe("closed");
      expect(closed.handles).toEqual({ nodes: 0, listeners: 0, conns: 0 });
    } finally {
      child.kill();
    }
  });

  // "sockets carry the tailnet addresses of both ends" is in
  // test/conformance/backends.test.ts, against the native and wasm backends.
});

describe("calls", () => {
  // Calls are queued on the C side and drained by one Go goroutine that an
  // eventfd wakes when the queue goes from empty to non-empty
  // (docs/core.md, "Nothing blocks the JS thread"): a burst made in one
  // tick must be answered in full, and dials in it must still run
  // concurrently (each one waits for the network).
  it("a burst of 2,000 calls made in one tick is answered in full, and 50 dials in one tick all connect", async () => {
    const counts = await Promise.all(Array.from({ length: 2000 }, () => coreHandles()));
    expect(counts).toHaveLength(2000);
    for (const c of counts) expect(c.nodes).toBeGreaterThanOrEqual(2);
    const server = await service.listen(7050, net.createServer((s) => s.end("ok")));
    try {
      const socks = await Promise.all(Array.from({ length: 50 }, () => agentA.dial("service", 7050)));
      const replies = await Promise.all(socks.map(readAll));
      expect(replies.map(String)).toEqual(Array(50).fill("ok"));
    } finally {
      server.close();
    }
  });
});

describe("first dial", () => {
  // The first dial to a peer runs in attempts that reset the WireGuard peer
  // when a handshake goes unanswered (go/core dialTCP, docs/core.md "First
  // dial"); its timing is measured by bench/tailnet --first-dial, not here.
  it("fresh pairs: each client's first dial, made the moment it is online, connects and carries data", async () => {
    for (let i = 0; i < 6; i++) {
      const srv = await tn.start(`fd-service-${i}`, { tags: ["tag:service"] });
      const cli = await tn.start(`fd-agent-${i}`, { tags: ["tag:agent-a"] });
      try {
        const server = await srv.listen(7100);
        server.on("connection", (s: net.Socket) => s.pipe(s));
        const sock = await cli.dial(srv.ips[0]!, 7100);
        const msg = randomBytes(4096);
        sock.end(msg);
        expect(sha(await readAll(sock))).toEqual(sha(msg));
        server.close();
      } finally {
        await cli.close();
        await srv.close();
      }
    }
  });

  it("a first dial to a peer that stopped answering is MESHGUARD_TIMEOUT at its timeout, and the node dials others after it", async () => {
    // Not ephemeral on our side: close() does not log it out, so it stays in
    // the netmap, offline, and nothing answers its address.
    const gone = await tn.start("fd-gone", { tags: ["tag:service"], ephemeral: false });
    const ip = gone.ips[0]!;
    await gone.close();
    try {
      const t0 = performance.now();
      const err = await expectCode(agentA.dial(ip, 7101, { timeoutMs: 5_000 }), "MESHGUARD_TIMEOUT");
      const ms = performance.now() - t0;
      expect(err.message).toContain(ip);
      expect(ms).toBeGreaterThanOrEqual(4_900);
      expect(ms).toBeLessThan(8_000);
      const server = await service.listen(7102);
      const sock = await agentA.dial("service", 7102);
      sock.destroy();
      server.close();
    } finally {
      for (const n of await tn.control.listNodes()) if (n.name === "fd-gone") await tn.control.deleteNode(n.id);
    }
  });
});

describe("fetch over the tailnet", () => {
  const tlsFile = (f: string) => readFileSync(fixture(`tls/${f}`));

  it("http by MagicDNS name, with the caller identified by the service", async () => {
    const server = await service.listen(
      7060,
      http.createServer(async (req, res) => {
        const who = await service.whois(req.socket);
        res.setHeader("content-type", "application/json");
        res.end(JSON.stringify({ path: req.url, caller: who.node.hostname, remote: req.socket.remoteAddress }));
      }),
    );
    const res = await agentA.fetch("http://service:7060/v2/transactions?limit=1");
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ path: "/v2/transactions?limit=1", caller: "agent-a", remote: agentA.ips[0] });
    server.close();
  });

  it("https to a peer whose certificate the caller trusts; untrusted is refused", async () => {
    const server = await service.listen(7061, https.createServer({ key: tlsFile("service.key"), cert: tlsFile("service.pem") }, (_req, res) => res.end("secret")));
    const trusting = await tn.start("tls-agent", { tags: ["tag:agent-a"], tls: { ca: tlsFile("ca.pem") } });
    try {
      const res = await trusting.fetch("https://service:7061/");
      expect(await res.text()).toBe("secret");
      const err = await agentA.fetch("https://service:7061/").then(
        () => undefined,
        (e: unknown) => e as Error,
      );
      expect(err).toBeInstanceOf(Error);
      expect(String((err as Error & { cause?: Error }).cause?.message ?? err)).toMatch(/certificate/i);
    } finally {
      server.close();
      await trusting.close();
    }
  });

  it("await using closes the node", async () => {
    let kept: MeshNode | undefined;
    {
      await using n = await tn.start("disposable", { tags: ["tag:agent-a"] });
      kept = n;
    }
    await expectCode(kept.peers(), "MESHGUARD_CLOSED");
  });
});

async function waitForPeer(node: MeshNode, hostname: string, timeoutMs = 20_000): Promise<Peer> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const p = (await node.peers()).find((x) => x.hostname === hostname);
    if (p) return p;
    if (Date.now() > deadline) throw new Error(`${hostname} never appeared in the netmap of ${node.hostname}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe("progress", () => {
  it("MeshNode.start reports its steps as { phase, message, elapsedMs }, in order", async () => {
    const events: object[] = [];
    const n = await tn.start("progress-one", { tags: ["tag:agent-a"], onProgress: (ev) => events.push(ev) });
    await n.close();
    for (const ev of events) expect(Object.keys(ev).sort()).toEqual(["elapsedMs", "message", "phase"]);
    const phases = (events as { phase: string }[]).map((e) => e.phase);
    expect(phases[0]).toBe("loading");
    expect(phases[1]).toBe("creating");
    expect(phases.at(-1)).toBe("online");
    expect(new Set(phases.slice(2, -1))).toEqual(new Set(["connecting"]));
    const ms = (events as { elapsedMs: number }[]).map((e) => e.elapsedMs);
    expect(ms).toEqual([...ms].sort((a, b) => a - b));
    expect((events.at(-1) as { message: string }).message).toMatch(/^online as progress-one\./);
  });
});

describe("several tailnets in one process", () => {
  it("nodes on a second, separate tailnet share the Go runtime and stay apart", async () => {
    const other = await startTailnet(false);
    try {
      const svc2 = await other.start("service", { tags: ["tag:service"] });
      const a2 = await other.start("agent-a", { tags: ["tag:agent-a"] });
      const server = await svc2.listen(7050);
      server.on("connection", (s: net.Socket) => s.end("tailnet two"));
      const sock = await a2.dial("service", 7050);
      expect((await readAll(sock)).toString()).toBe("tailnet two");
      // Same names and even the same addresses on both tailnets: the first
      // tailnet's service has no listener on that port, so its dial is refused.
      await expectCode(agentA.dial("service", 7050, { timeoutMs: 5_000 }), "MESHGUARD_DIAL_FAILED");
      server.close();
      await a2.close();
      await svc2.close();
    } finally {
      await other.control.close();
    }
  });
});

/** whoisSeenByService dials the service from `caller` and returns what the service's whois says of it. */
async function whoisSeenByService(caller: MeshNode, port: number): Promise<WhoIs> {
  const server = await service.listen(port);
  const who = new Promise<WhoIs>((resolve, reject) =>
    server.once("connection", (s: net.Socket) => service.whois(s).then(resolve, reject).finally(() => s.destroy())),
  );
  const sock = await caller.dial("service", port);
  try {
    return await who;
  } finally {
    sock.destroy();
    server.close();
  }
}

describe("whois", () => {
  it("identifies a tagged caller: node, tags, owners from tagOwners, app capabilities", async () => {
    const w = await whoisSeenByService(agentA, 7010);
    expect(w.node.name).toBe(agentA.name);
    expect(w.node.hostname).toBe("agent-a");
    expect(w.node.tags).toEqual(["tag:agent-a"]);
    expect(w.node.ips).toContain(agentA.ips[0]);
    expect(w.tagged).toBe(true);
    expect(w.owners).toEqual(["alice@"]);
    expect(w.caps["meshguard.dev/cap/tools"]).toEqual([{ tools: ["search", "read"] }]);
  });

  it("identifies a user-owned caller: the user is the owner", async () => {
    const human = await tn.start("alice-laptop", { authKey: await tn.userKey() });
    try {
      await waitForPeer(human, "service");
      const w = await whoisSeenByService(human, 7011);
      expect(w.node.hostname).toBe("alice-laptop");
      expect(w.node.tags).toEqual([]);
      expect(w.tagged).toBe(false);
      expect(w.user.login).toMatch(/^alice/);
      expect(w.owners).toEqual([w.user.login]);
      expect(w.caps["meshguard.dev/cap/tools"]).toEqual([{ tools: ["admin"] }]);
      // whois by address string gives the same identity
      const byAddr = await service.whois(human.ips[0]!);
      expect(byAddr.node.id).toBe(w.node.id);
    } finally {
      await human.close();
    }
  });

  it("a node started without tagOwners names a tagged peer's owners once a reloader applied a policy that has them; start options override", async () => {
    // A combined policy file: the tailnet part's tagOwners and groups serve
    // whois, meshguard's part the guard (no rule needed here).
    const dir = mkdtempSync(join(tmpdir(), "mg-owners-"));
    const file = join(dir, "policy.hujson");
    writeFileSync(
      file,
      JSON.stringify({
        groups: { "group:security": ["carol@"] },
        tagOwners: { "tag:agent-a": ["group:security", "dave@"], "tag:service": ["carol@"] },
        meshguard: { version: 1, rules: [] },
      }),
    );
    const bare = await tn.start("svc-bare", { tags: ["tag:service"], tagOwners: {}, groups: {} });
    const pinned = await tn.start("svc-pinned", { tags: ["tag:service"], tagOwners: { "tag:agent-a": ["bob@"] }, groups: {} });
    const guardLike = Object.assign(new EventEmitter(), { setPolicy: () => {} }) as unknown as ReloadTarget & EventEmitter;
    const errors: unknown[] = [];
    guardLike.on("reloadError", (e) => errors.push(e));
    try {
      const addr = agentA.ips[0]!;
      expect((await bare.whois(addr)).owners).toEqual([]);
      await using _bare = watchPolicyFile(guardLike, file, { node: bare });
      await using _pinned = watchPolicyFile(guardLike, file, { node: pinned });
      await Promise.all([_bare.ready, _pinned.ready]);
      expect(errors).toEqual([]);
      expect((await bare.whois(addr)).owners).toEqual(["carol@", "dave@"]);
      // The explicit option wins for the tag it names.
      expect((await pinned.whois(addr)).owners).toEqual(["bob@"]);
      // A bad identity is refused, naming the field.
      expect(() => bare.setTailnetIdentity({ tagOwners: { agent: ["x@"] } })).toThrow(/tagOwners\.agent: must look like tag:name/);
    } finally {
      await bare.close();
      await pinned.close();
    }
  });

  it("an address no node has is MESHGUARD_WHOIS_NOT_FOUND", async () => {
    await expectCode(service.whois("100.100.100.100:1"), "MESHGUARD_WHOIS_NOT_FOUND");
  });
});

describe("netmap trimming by policy", () => {
  it("agent-c cannot see or dial the service until the policy allows it, then gets a netmap event", async () => {
    const agentC = await tn.start("agent-c", { tags: ["tag:agent-c"] });
    try {
      const server = await service.listen(7020);
      server.on("connection", (s: net.Socket) => s.end("hello agent"));
      // agent-a sees the service (sanity), agent-c does not.
      expect((await agentA.peers()).map((p) => p.hostname)).toContain("service");
      expect((await agentC.peers()).map((p) => p.hostname)).not.toContain("service");
      const err = await expectCode(agentC.dial("service", 7020), "MESHGUARD_NO_PEER");
      expect(err.message).toMatch(/not a peer/);
      await expectCode(agentC.dial(service.ips[0]!, 7020), "MESHGUARD_NO_PEER");

      const sawService = new Promise<Peer[]>((resolve) => {
        const onNetmap = (ev: { peers: Peer[] }) => {
          if (ev.peers.some((p) => p.hostname === "service")) {
            agentC.off("netmap", onNetmap);
            resolve(ev.peers);
          }
        };
        agentC.on("netmap", onNetmap);
      });
      await tn.control.setPolicy(policy(true));
      const peers = await sawService;
      expect(peers.find((p) => p.hostname === "service")?.tags).toEqual(["tag:service"]);
      const sock = await agentC.dial("service", 7020);
      expect((await readAll(sock)).toString()).toBe("hello agent");
      server.close();
    } finally {
      await tn.control.setPolicy(policy(false));
      await agentC.close();
    }
  });
});

describe("failures are typed errors, and the process survives them", () => {
  it("a bad option names the field", async () => {
    const err = await expectCode(MeshNode.start({ controlUrl: "ftp://x", hostname: "Bad_Name" } as never), "MESHGUARD_INVALID_OPTIONS");
    expect(err.message).toMatch(/controlUrl/);
    expect(err.message).toMatch(/hostname/);
    await expectCode(MeshNode.start({ controlUrl: tn.control.url, hostname: "ok", colour: "red" } as never), "MESHGUARD_INVALID_OPTIONS");
  });

  it("a wrong auth key is MESHGUARD_AUTH_FAILED", async () => {
    await expectCode(
      MeshNode.start({ controlUrl: tn.control.url, authKey: "hskey-auth-0000000000000000000000000000000000000000000000000000000000000000", hostname: "intruder", dir: join(tn.stateDir, "intruder"), ephemeral: true, timeoutMs: 20_000 }),
      "MESHGUARD_AUTH_FAILED",
    );
  });

  it("an unhashed auth key (createAuthKey hashed: false) brings a node up with the key's tags; a wrong one is MESHGUARD_AUTH_FAILED", async () => {
    const plain = await tn.control.createAuthKey({ tags: ["tag:agent"], reusable: true, ephemeral: true, expiration: "1h", hashed: false });
    expect(plain).toMatch(/^[0-9a-f]{48}$/);
    const node = await tn.start("unhashed-key", { authKey: plain });
    try {
      const me = (await tn.control.listNodes()).find((n) => n.name === "unhashed-key");
      expect(me?.tags).toEqual(["tag:agent"]);
    } finally {
      await node.close();
    }
    const wrong = plain.replace(/^./, (c) => (c === "0" ? "1" : "0"));
    await expectCode(MeshNode.start({ controlUrl: tn.control.url, authKey: wrong, hostname: "intruder-2", dir: join(tn.stateDir, "intruder-2"), ephemeral: true, timeoutMs: 20_000 }), "MESHGUARD_AUTH_FAILED");
  });

  it("an unreachable control server fails fast with MESHGUARD_CONTROL_UNREACHABLE", async () => {
    const port = await freePort();
    const t0 = Date.now();
    const err = await expectCode(
      MeshNode.start({ controlUrl: `http://127.0.0.1:${port}`, authKey: "x", hostname: "lost", dir: join(tn.stateDir, "lost"), ephemeral: true }),
      "MESHGUARD_CONTROL_UNREACHABLE",
    );
    expect(Date.now() - t0).toBeLessThan(10_000);
    expect(err.message).toContain(`127.0.0.1:${port}`);
  });

  it("listening twice on a port is MESHGUARD_PORT_IN_USE", async () => {
    const server = await service.listen(7030);
    await expectCode(service.listen(7030), "MESHGUARD_PORT_IN_USE");
    server.close();
  });

  it("bad dial arguments are MESHGUARD_INVALID_OPTIONS", async () => {
    await expectCode(agentA.dial("service", 0), "MESHGUARD_INVALID_OPTIONS");
    await expectCode(agentA.dial("", 80), "MESHGUARD_INVALID_OPTIONS");
  });

  it("a dial to a name that is no peer is MESHGUARD_NO_PEER, and never leaves the tailnet", async () => {
    await expectCode(agentA.dial("example.com", 80), "MESHGUARD_NO_PEER");
    await expectCode(agentA.dial("127.0.0.1", tn.control.url ? Number(new URL(tn.control.url).port) : 80), "MESHGUARD_NO_PEER");
  });

  it("use after close is MESHGUARD_CLOSED; close is idempotent", async () => {
    const n = await tn.start("short-lived", { tags: ["tag:agent-a"] });
    await n.close();
    await n.close();
    await expectCode(n.dial("service", 80), "MESHGUARD_CLOSED");
    await expectCode(n.listen(80), "MESHGUARD_CLOSED");
    await expectCode(n.peers(), "MESHGUARD_CLOSED");
    await expectCode(n.whois("100.64.0.1"), "MESHGUARD_CLOSED");
  });

  it("closing an ephemeral node removes it from the control server at once", async () => {
    const n = await tn.start("ephemeral-one", { tags: ["tag:agent-a"] });
    expect((await tn.control.listNodes()).map((x) => x.name)).toContain("ephemeral-one");
    await n.close();
    expect((await tn.control.listNodes()).map((x) => x.name)).not.toContain("ephemeral-one");
  });
});

describe("resources", () => {
  it("a process that closes its nodes drains the handle tables and exits by itself", async () => {
    const child = spawn(process.execPath, [fixture("exit-check.mjs"), tn.control.url, await tn.key(["tag:agent-a"]), await tn.key(["tag:service"]), join(tn.stateDir, "exit")], { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    child.stdout!.on("data", (c) => (out += c));
    const timer = setTimeout(() => child.kill("SIGKILL"), 40_000);
    const [code, signal] = (await once(child, "exit")) as [number | null, string | null];
    clearTimeout(timer);
    expect(signal, "the process had to be killed: something kept it alive").toBeNull();
    expect(code).toBe(0);
    expect(JSON.parse(out)).toEqual({ got: "bye", handles: { nodes: 0, listeners: 0, conns: 0 } });
  });

  // An unref'd open node not keeping its process alive: test/conformance/backends.test.ts, on each backend.

  it("a node closed while its servers listen does not keep the process alive", async () => {
    const child = spawn(process.execPath, [fixture("close-listening.mjs"), tn.control.url, await tn.key(["tag:agent-a"]), join(tn.stateDir, "close-listening")], { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    child.stdout!.on("data", (c) => (out += c));
    const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
    const [code, signal] = (await once(child, "exit")) as [number | null, string | null];
    clearTimeout(timer);
    expect(signal).toBeNull();
    expect(code).toBe(0);
    expect(out.trim()).toBe("closed");
  });

  it("this process's tables hold exactly what is open", async () => {
    const before = await coreHandles();
    const server = await service.listen(7040);
    const sock = await agentA.dial("service", 7040);
    await once(server, "connection");
    const during = await coreHandles();
    expect(during.listeners).toBe(before.listeners + 1);
    expect(during.conns).toBeGreaterThanOrEqual(before.conns + 2);
    sock.destroy();
    server.close();
    await new Promise((r) => setTimeout(r, 300));
    const after = await coreHandles();
    expect(after.listeners).toBe(before.listeners);
  });
});

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
    s.on("error", reject);
  });
}
