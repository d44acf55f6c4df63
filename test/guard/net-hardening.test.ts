// Issue 7, items 1, 2, 3 (connections) and 5: what the connect patch, the
// node:http hooks and the fetch layer guarantee. Every server here counts
// connections and raw bytes off the socket, so "nothing reached it" means
// no connection and no byte, not "no request parsed".
import dc from "node:diagnostics_channel";
import http from "node:http";
import net from "node:net";
import type { AddressInfo } from "node:net";
import fc from "fast-check";
import { getGlobalDispatcher } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PolicyDeniedError, type GuardHandle } from "../../src/guard/index.js";
import type { DecisionEvent } from "../../src/policy/event.js";
import { allowHttp, allowTcp, denied, guard, httpGet, policyOf, samePortPair } from "./helpers.js";

/** A TCP server that answers every request line "200 ok" and counts connections and bytes. */
interface Wire {
  host: string;
  port: number;
  url: string;
  conns: number;
  bytes: number;
  /** Everything received, as latin1. */
  text: string;
  close(): Promise<void>;
}

async function wire(host = "127.0.0.1", port = 0): Promise<Wire> {
  const w = { host, port, url: "", conns: 0, bytes: 0, text: "" } as Wire;
  const socks = new Set<net.Socket>();
  const server = net.createServer((s) => {
    w.conns++;
    socks.add(s);
    s.on("close", () => socks.delete(s));
    s.on("error", () => {});
    s.on("data", (d: Buffer) => {
      w.bytes += d.length;
      w.text += d.toString("latin1");
      // One answer per request head seen (enough for the sequential requests of these tests).
      const heads = d.toString("latin1").split("\r\n\r\n").length - 1;
      for (let i = 0; i < heads; i++) s.write("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  w.port = (server.address() as AddressInfo).port;
  w.url = `http://${host}:${w.port}`;
  w.close = () =>
    new Promise<void>((r) => {
      for (const s of socks) s.destroy();
      server.close(() => r());
    });
  return w;
}

let A: Wire; // 127.0.0.1:P — what the policies allow
let B: Wire; // 127.0.0.2:P — never allowed, same port

beforeAll(async () => {
  [A, B] = await samePortPair(wire);
});
afterAll(async () => {
  await A.close();
  await B.close();
});

const pause = (ms = 60) => new Promise((r) => setTimeout(r, ms));
const snap = (w: Wire) => ({ conns: w.conns, bytes: w.bytes });

/** ended waits for a socket to connect or close; never rejects. */
function ended(s: net.Socket): Promise<"connected" | Error | undefined> {
  return new Promise((resolve) => {
    let err: Error | undefined;
    s.on("error", (e) => (err = e));
    s.once("connect", () => {
      s.destroy();
      resolve("connected");
    });
    s.once("close", () => resolve(err));
  });
}

/** outcome of a promise, never rejecting. */
const settled = <T>(p: Promise<T>) => p.then((v) => ({ ok: true as const, v }), (e: unknown) => ({ ok: false as const, e }));

function recorder(g: GuardHandle) {
  const r = { decisions: [] as DecisionEvent[], warnings: [] as Error[] };
  g.on("decision", (ev) => r.decisions.push(ev));
  g.on("warning", (e) => r.warnings.push(e));
  return r;
}

/** A caller lookup that answers `ip` for every name and counts its calls. */
function lookupTo(ip: string) {
  const calls: string[] = [];
  const fn = (host: string, opts: { all?: boolean }, cb: (e: Error | null, a: unknown, f?: number) => void) => {
    calls.push(host);
    if (opts?.all) cb(null, [{ address: ip, family: net.isIP(ip) }]);
    else cb(null, ip, net.isIP(ip));
  };
  return { fn: fn as unknown as net.LookupFunction, calls };
}

/** The guard's resolver, counting the names it is asked. */
function resolverTo(map: Record<string, string>) {
  const asked: string[] = [];
  const resolver = async (host: string) => {
    asked.push(host);
    const ip = map[host];
    if (ip === undefined) throw Object.assign(new Error(`no ${host}`), { code: "ENOTFOUND" });
    return [{ address: ip, family: net.isIP(ip) }];
  };
  return { resolver, asked };
}

describe("item 1: a check judges its own call", () => {
  it("a later connect() on the same socket, even one Node rejects at once, does not change what a pending connect is judged as", async () => {
    guard({ rules: [allowTcp("127.0.0.1", A.port)] });
    const before = snap(B);
    for (const later of [(s: net.Socket) => s.connect(A.port, "127.0.0.1"), (s: net.Socket) => s.connect({ port: A.port, host: "127.0.0.1", localAddress: "not-an-ip" })]) {
      const s = new net.Socket();
      const done = ended(s);
      s.connect(B.port, "127.0.0.2");
      try {
        later(s);
      } catch {
        // Node refused the second call at once
      }
      await done;
    }
    await pause();
    expect(snap(B)).toEqual(before);
    // Positive control: the allowed destination connects.
    expect(await ended(net.connect(A.port, "127.0.0.1"))).toBe("connected");
  });

  it("options are read once: a getter cannot show the guard one host and Node another", async () => {
    guard({ rules: [allowTcp("127.0.0.1", A.port)] });
    const before = snap(B);
    let reads = 0;
    // Node's Socket constructor reads host once before connect(); every read after the second names B.
    const opts = {
      port: A.port,
      get host() {
        return reads++ < 2 ? "127.0.0.1" : "127.0.0.2";
      },
    };
    const s = net.connect(opts);
    const to = new Promise((r) => s.once("connect", () => r(s.remoteAddress)));
    const r = await ended(s);
    await pause();
    expect(snap(B)).toEqual(before);
    expect(r).toBe("connected");
    expect(await to).toBe("127.0.0.1"); // the address judged
    expect(reads).toBe(2);
  });

  it("a pre-normalized-looking array is read the way Node reads it", async () => {
    guard({ rules: [allowTcp("127.0.0.1", A.port)] });
    const before = snap(B);
    // Without Node's private mark, Node reads the array itself as the options object.
    const arr = Object.assign([{ port: A.port, host: "127.0.0.1" }, null], { port: B.port, host: "127.0.0.2" });
    const s = new net.Socket();
    const done = ended(s);
    try {
      s.connect(arr as unknown as net.SocketConnectOpts);
    } catch {
      // refused by Node or the guard: either way nowhere
    }
    await done;
    await pause();
    expect(snap(B)).toEqual(before);
  });

  it("nothing on a socket or on globalThis marks a call as checked; the process-wide registry is frozen and exposes no state", async () => {
    const g = guard({ rules: [allowTcp("127.0.0.1", A.port)] });
    const before = snap(B);
    for (const name of ["meshguard.guard.internal", "meshguard.guard.pass", "meshguard.guard.undici", "meshguard.guard.http", "meshguard.guard.dest"]) {
      const s = new net.Socket() as net.Socket & Record<symbol, unknown>;
      s[Symbol.for(name)] = true;
      const done = ended(s);
      s.connect(B.port, "127.0.0.2");
      await done;
    }
    await pause();
    expect(snap(B)).toEqual(before);
    // The one process-wide value: frozen, read-only, and nothing in it reaches the guard.
    const key = Symbol.for("meshguard.guard.registry");
    const reg = (globalThis as unknown as Record<symbol, Record<string, unknown>>)[key]!;
    expect(Object.isFrozen(reg)).toBe(true);
    expect(Object.keys(reg).sort()).toEqual(["claim", "installed", "release", "version"]);
    expect(Object.getOwnPropertyDescriptor(globalThis, key)).toMatchObject({ writable: false, configurable: false });
    expect((reg.installed as () => boolean)()).toBe(true);
    expect((reg.claim as () => unknown)()).toBeUndefined(); // taken: a second copy installs nothing
    (reg.release as (t: object) => void)({}); // a forged token frees nothing
    expect((reg.installed as () => boolean)()).toBe(true);
    expect(Object.getOwnPropertySymbols(globalThis).filter((s) => /meshguard/.test(s.description ?? ""))).toEqual([key]);
    g.uninstall();
    expect((reg.installed as () => boolean)()).toBe(false);
  });

  it("the global dispatcher does not hand out the unguarded one it wraps", () => {
    guard({ rules: [] });
    const d = getGlobalDispatcher() as unknown as Record<string, unknown>;
    expect(d.inner).toBeUndefined();
    expect(Object.values(d).some((v) => typeof (v as { dispatch?: unknown })?.dispatch === "function")).toBe(false);
  });

  it("a forged undici:client:beforeConnect lets no raw socket through, even to an origin an HTTP rule allows", async () => {
    guard({ rules: [allowHttp("127.0.0.1", { port: [A.port], path: ["/public"] })] });
    expect(await (await fetch(`${A.url}/public`)).text()).toBe("ok");
    const before = snap(A);
    dc.channel("undici:client:beforeConnect").publish({ connectParams: { host: `127.0.0.1:${A.port}`, hostname: "127.0.0.1", protocol: "http:", port: String(A.port), servername: null, localAddress: null }, connector: () => {} });
    const s = net.connect(A.port, "127.0.0.1");
    s.write("GET /secret HTTP/1.1\r\nhost: x\r\n\r\n");
    expect(await ended(s)).toBeInstanceOf(PolicyDeniedError);
    await pause();
    expect(snap(A)).toEqual(before);
  });
});

describe("item 2: node:http is judged as it goes on the wire", () => {
  /** A request created as GET /public, changed by `change`, then ended; resolves with how it ended. */
  const changed = (change: (r: http.ClientRequest) => void, opts: http.RequestOptions = {}, body?: string) =>
    new Promise<"response" | Error>((resolve) => {
      const r = http.request({ host: "127.0.0.1", port: A.port, path: "/public", agent: false, ...opts });
      r.on("response", (res) => {
        res.resume();
        resolve("response");
      });
      r.on("error", resolve);
      change(r);
      r.end(body);
    });

  it("req.path, req.method and headers changed after creation are what is judged; a denied request sends no byte", async () => {
    const g = guard({ rules: [allowHttp("127.0.0.1", { port: [A.port], method: ["GET"], path: ["/public"] }), { id: "no-admin", src: ["*"], effect: "deny", http: { host: ["127.0.0.1"] }, when: { headers: { "x-admin": "*" } } }] });
    const rec = recorder(g);
    for (const change of [(r: http.ClientRequest) => void (r.path = "/secret"), (r: http.ClientRequest) => void (r.method = "DELETE"), (r: http.ClientRequest) => r.setHeader("x-admin", "1")]) {
      const before = A.bytes;
      const out = await changed(change);
      expect(out).toBeInstanceOf(PolicyDeniedError);
      await pause(20);
      expect(A.bytes - before, "bytes of a denied request").toBe(0);
    }
    // The decisions name what would have been sent.
    expect(rec.decisions.map((e) => `${e.outcome} ${(e.target as { method: string }).method} ${(e.target as { path: string }).path}`)).toEqual(["deny GET /secret", "deny DELETE /public", "deny GET /public"]);
    // Positive control.
    expect(await changed(() => {})).toBe("response");
  });

  it("the declared body size is the one Node writes, and no more body than declared leaves", async () => {
    guard({ rules: [{ ...allowHttp("127.0.0.1", { port: [A.port] }), when: { maxBodyBytes: 16 } }] });
    // A Content-Length raised after creation.
    let before = A.bytes;
    expect(await changed((r) => r.setHeader("content-length", "1000"), { method: "POST", headers: { "content-length": "4" } }, "x".repeat(1000))).toBeInstanceOf(PolicyDeniedError);
    // A small declared size with a larger body: the excess would be a second request on the connection.
    expect(await changed(() => {}, { method: "POST", headers: { "content-length": "4" } }, `tiny${"GET /smuggled HTTP/1.1\r\nhost: x\r\n\r\n"}`)).toBeInstanceOf(PolicyDeniedError);
    // A GET with a body Node sends unframed (no Content-Length): the same.
    expect(await changed(() => {}, {}, "GET /smuggled HTTP/1.1\r\nhost: x\r\n\r\n")).toBeInstanceOf(PolicyDeniedError);
    // Content-Length and Transfer-Encoding together.
    expect(await changed((r) => r.setHeader("transfer-encoding", "chunked"), { method: "POST", headers: { "content-length": "4" } }, "tiny")).toBeInstanceOf(PolicyDeniedError);
    await pause(20);
    expect(A.text).not.toContain("/smuggled");
    before = A.bytes;
    expect(await changed(() => {}, { method: "POST", headers: { "content-length": "4" } }, "tiny")).toBe("response");
    expect(A.bytes).toBeGreaterThan(before);
  });

  it("a call denied on host or port opens no connection and asks no resolver, even before its header block exists", async () => {
    const { resolver, asked } = resolverTo({ "b.test": "127.0.0.2" });
    // A rule for a name only: nothing could allow b.test (a CIDR rule could, after a look-up).
    guard({ rules: [allowHttp("a.test", { port: [A.port] })], resolver });
    const before = snap(B);
    for (const url of [`${B.url}/x`, `http://b.test:${B.port}/x`]) {
      const r = http.request(url, { agent: false });
      const out = new Promise((resolve) => r.on("error", resolve));
      await pause(30); // no end() yet: the connection is judged on host and port alone
      r.end();
      expect(await out).toBeInstanceOf(PolicyDeniedError);
    }
    await pause();
    expect(snap(B)).toEqual(before);
    expect(asked).toEqual([]);
  });

  it("one decision (one rate token) per call, on a new and on a reused connection", async () => {
    const g = guard({ rules: [{ ...allowHttp("127.0.0.1", { port: [A.port] }), when: { rate: { perMinute: 4 } } }] });
    const rec = recorder(g);
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      for (let i = 0; i < 4; i++) expect((await httpGet(`${A.url}/r${i}`, { agent })).status).toBe(200);
      expect(rec.decisions.map((e) => e.outcome)).toEqual(["allow", "allow", "allow", "allow"]);
      await denied(httpGet(`${A.url}/r5`, { agent }));
    } finally {
      agent.destroy();
    }
  });

  it("the port judged is the request's own, never the Host header's (also when the connection starts later)", async () => {
    const other = await wire("127.0.0.1");
    try {
      const g = guard({ rules: [allowHttp("127.0.0.1", { port: [A.port] })] });
      const rec = recorder(g);
      const late = (o: { port?: unknown; host?: unknown }) => {
        const s = new net.Socket();
        process.nextTick(() => s.connect(Number(o.port), String(o.host)));
        return s;
      };
      await denied(httpGet(`${other.url}/x`, { headers: { host: `127.0.0.1:${A.port}` }, createConnection: late } as http.RequestOptions));
      expect(rec.decisions.map((e) => (e.target as { port: number }).port)).toEqual([other.port]);
      expect(other.conns).toBe(0);
      expect((await httpGet(`${A.url}/x`, { headers: { host: `127.0.0.1:${other.port}` }, createConnection: late } as http.RequestOptions)).status).toBe(200);
    } finally {
      await other.close();
    }
  });
});

describe("item 3: names and addresses", () => {
  it("CIDR rules, allow and deny, apply to the address a name resolves to (guard resolver, caller lookup, fetch)", async () => {
    const { resolver } = resolverTo({ "a.test": "127.0.0.1", "b.test": "127.0.0.2" });
    const g = guard({
      rules: [{ id: "tcp-test", src: ["tag:agent"], tcp: { host: ["*.test"], port: [A.port] } }, { id: "http-test", src: ["tag:agent"], http: { host: ["*.test"], port: [A.port] } }, { id: "no-b", src: ["*"], effect: "deny", http: { host: ["127.0.0.2/32"] } }, { id: "no-b-tcp", src: ["*"], effect: "deny", tcp: { host: ["127.0.0.2/32"], port: ["*"] } }],
      resolver,
      allowResolved: () => true,
    });
    const rec = recorder(g);
    const before = snap(B);
    expect(await ended(net.connect({ host: "b.test", port: B.port }))).toBeInstanceOf(PolicyDeniedError);
    expect(await ended(net.connect({ host: "a.test", port: B.port, lookup: lookupTo("127.0.0.2").fn }))).toBeInstanceOf(PolicyDeniedError);
    await denied(httpGet(`http://b.test:${B.port}/x`, { agent: false }));
    await denied(fetch(`http://b.test:${B.port}/x`));
    await pause();
    expect(snap(B)).toEqual(before);
    expect(rec.decisions.filter((e) => e.outcome === "deny").map((e) => e.ruleId)).toEqual(["no-b-tcp", "no-b-tcp", "no-b", "no-b"]);
    // Positive controls: the same names resolving to A, judged with the address.
    rec.decisions.length = 0;
    expect(await ended(net.connect({ host: "a.test", port: A.port }))).toBe("connected");
    expect((await httpGet(`http://a.test:${A.port}/x`, { agent: false })).status).toBe(200);
    expect(await (await fetch(`http://a.test:${A.port}/x`)).text()).toBe("ok");
    expect(rec.decisions.map((e) => [e.outcome, (e.target as { resolvedIp?: string }).resolvedIp])).toEqual([
      ["allow", "127.0.0.1"],
      ["allow", "127.0.0.1"],
      ["allow", "127.0.0.1"],
    ]);
  });

  it("a CIDR allow rule lets a name be looked up and judged by its address; a name no rule could allow is never looked up", async () => {
    const { resolver, asked } = resolverTo({ "in.test": "127.0.0.1", "out.test": "127.0.0.2" });
    guard({ rules: [allowTcp("127.0.0.1/32", A.port), allowHttp("api.example", { port: [A.port] })], resolver, allowResolved: () => true });
    expect(await ended(net.connect({ host: "in.test", port: A.port }))).toBe("connected");
    expect(await ended(net.connect({ host: "out.test", port: A.port }))).toBeInstanceOf(PolicyDeniedError);
    asked.length = 0;
    // Only an http rule for another name, no CIDR http rule: http and fetch to these names need no look-up.
    await denied(httpGet(`http://out.test:${A.port}/x`, { agent: false }));
    await denied(fetch(`http://out.test:${A.port}/x`));
    expect(asked).toEqual([]);
  });

  it("the guard's resolver is what connections by name use (service discovery), pinned: the connection goes to the address judged", async () => {
    let n = 0;
    const resolver = async () => [{ address: n++ === 0 ? "127.0.0.1" : "127.0.0.2", family: 4 }];
    guard({ rules: [allowTcp("svc.internal", A.port), allowHttp("svc.internal", { port: [A.port] })], resolver, allowResolved: () => true });
    const before = snap(B);
    expect(await (await fetch(`http://svc.internal:${A.port}/x`)).text()).toBe("ok");
    expect((await httpGet(`http://svc.internal:${A.port}/x`, { agent: false })).status).toBe(200);
    expect(await ended(net.connect({ host: "svc.internal", port: A.port }))).toBe("connected");
    expect(n).toBe(1); // one answer, reused while fresh
    expect(snap(B)).toEqual(before);
  });

  it("localhost is loopback only, whatever a lookup answers", async () => {
    guard({ rules: [allowTcp("localhost", A.port)] });
    const e = await ended(net.connect({ host: "localhost", port: A.port, lookup: lookupTo("0.0.0.0").fn }));
    expect(e).toBeInstanceOf(PolicyDeniedError);
    expect((e as Error).message).toMatch(/loopback only/);
    expect(await ended(net.connect({ host: "localhost", port: A.port, lookup: lookupTo("127.0.0.1").fn }))).toBe("connected");
  });

  it("a host that normalises to an IP literal is that literal on both sides", async () => {
    const g = guard({ rules: [allowTcp("127.0.0.1", A.port)] });
    const rec = recorder(g);
    for (const form of ["127.0.0.1.", "[127.0.0.1]"]) {
      const lk = lookupTo("127.0.0.2");
      const s = net.connect({ host: form, port: A.port, lookup: lk.fn });
      const connectedTo = new Promise((r) => s.once("connect", () => r(s.remoteAddress)));
      expect(await connectedTo).toBe("127.0.0.1");
      s.destroy();
      expect(lk.calls).toEqual([]); // a literal is not looked up
    }
    expect(rec.decisions.map((e) => (e.target as { host: string }).host)).toEqual(["127.0.0.1", "127.0.0.1"]);
  });
});

describe("item 5: the guard never crashes the host", () => {
  /** runs fn with uncaughtException/unhandledRejection recorded instead of fatal. */
  async function crashes(fn: () => Promise<void>): Promise<unknown[]> {
    const got: unknown[] = [];
    const evs = ["uncaughtException", "unhandledRejection"] as const;
    const saved = evs.map((e) => process.listeners(e as "uncaughtException"));
    const rec = (e: unknown) => void got.push(e);
    for (const e of evs) {
      process.removeAllListeners(e);
      process.on(e, rec);
    }
    try {
      await fn();
      await pause(30);
    } finally {
      evs.forEach((e, i) => {
        process.removeAllListeners(e);
        for (const l of saved[i]!) process.on(e, l);
      });
    }
    return got;
  }

  const boom = () => {
    throw new Error("hostile");
  };
  const trap = () => new Proxy({}, { get: boom, has: boom, ownKeys: boom, getOwnPropertyDescriptor: boom, getPrototypeOf: boom });
  const garbage = (): unknown[] => [null, undefined, 0, "", 7n, Symbol("s"), [], () => {}, trap(), { request: trap() }, { request: { get origin() { return boom(); } } }, { request: { origin: B.url, method: Symbol("m"), path: {} } }, { request: { origin: { toString: boom }, method: "GET", path: "/" } }, { connectParams: trap() }, { connectParams: { hostname: ["127.0.0.2"], port: { valueOf: boom }, protocol: "http:" } }, { get connectParams() { return boom(); } }, { request: {}, socket: trap() }, { verdict: trap() }, { verdict: { deny: boom, hold: boom }, host: "x", port: 1, node: trap() }, { verdict: { deny: () => {}, hold: () => {} }, host: { toString: boom }, port: "1" }];

  it("garbage on every channel the guard subscribes to: no exception reaches the process, request-shaped messages are denied, warnings are emitted", async () => {
    const g = guard({ rules: [allowHttp("127.0.0.1", { port: [A.port] }), allowTcp("127.0.0.1", A.port)] });
    const rec = recorder(g);
    const requests: Record<string, unknown>[] = [];
    const got = await crashes(async () => {
      for (const name of ["undici:request:create", "undici:client:beforeConnect", "undici:client:sendHeaders", "undici:request:error", "meshguard:tailnet:dial"]) {
        for (const m of garbage()) dc.channel(name).publish(m);
        const r = { origin: `http://127.0.0.2:${B.port}`, method: "GET", path: "/" };
        dc.channel(name).publish({ request: r });
        if (name === "undici:request:create") requests.push(r);
      }
      // A dial message with a readable verdict and a host or port nobody can read is denied.
      let deniedDial = false;
      dc.channel("meshguard:tailnet:dial").publish(Object.freeze({ node: { hostname: "a" }, host: 42, port: "x", verdict: Object.freeze({ deny: () => void (deniedDial = true), hold: () => {}, denied: false }) }));
      expect(deniedDial).toBe(true);
    });
    expect(got.map(String)).toEqual([]);
    for (const r of requests) expect(r.error).toBeInstanceOf(PolicyDeniedError);
    expect(rec.warnings.length).toBeGreaterThan(0);
    // Still guarding, still allowing.
    expect(await (await fetch(`${A.url}/ok`)).text()).toBe("ok");
    await denied(fetch(`${B.url}/x`));
  });

  it("odd arguments to net.connect, http.request and fetch: no exception escapes the guard, nothing reaches a denied server", async () => {
    const g = guard({ rules: [allowHttp("127.0.0.1", { port: [A.port] }), allowTcp("127.0.0.1", A.port)] });
    const rec = recorder(g);
    const before = snap(B);
    const got = await crashes(async () => {
      const netArgs: unknown[][] = [[{ port: B.port, host: "127.0.0.2", get lookup() { return boom(); } }], [{ get port() { return boom(); }, host: "127.0.0.2" }], [trap()], [{ port: B.port, host: { toString: () => "127.0.0.2" } }], [{ port: String(B.port), host: "127.0.0.2" }], [{ port: B.port, host: "127.0.0.2", lookup: "nope" }], [B.port, "127.0.0.2", () => {}], [{ port: B.port, host: "127.0.0.2", family: 99 }], [{ path: "" , port: B.port, host: "127.0.0.2" }]];
      for (const args of netArgs) {
        try {
          const s = (net.connect as (...a: unknown[]) => net.Socket)(...args);
          await ended(s);
        } catch {
          // Node's own argument errors, thrown to the caller as without the guard
        }
      }
      const httpArgs: unknown[][] = [[{ host: "127.0.0.2", port: B.port, headers: [["x", "1"]] }], [{ host: "127.0.0.2", port: B.port, method: "POST", headers: { expect: "100-continue" } }], [{ host: "127.0.0.2", port: B.port, agent: { addRequest: boom } }], [{ host: "127.0.0.2", port: B.port, createConnection: boom }], [{ get host() { return boom(); } }], [{ host: "127.0.0.2", port: B.port, setHost: false, headers: { host: `127.0.0.1:${A.port}` } }]];
      for (const args of httpArgs) {
        try {
          const r = (http.request as (...a: unknown[]) => http.ClientRequest)(...args);
          await new Promise((resolve) => {
            r.on("error", resolve);
            r.on("response", (res) => res.resume().on("end", resolve));
            r.on("close", resolve);
            r.end();
          });
        } catch {
          // thrown by Node for the shape itself
        }
      }
      const inits: unknown[] = [{ method: {} }, { headers: trap() }, { body: trap(), method: "POST" }, { dispatcher: trap() }, { get method() { return boom(); } }, { redirect: "nope" }, { body: "x", method: "GET" }];
      for (const init of inits) await settled(fetch(`${B.url}/x`, init as RequestInit));
    });
    expect(got.map(String)).toEqual([]);
    await pause();
    expect(snap(B)).toEqual(before);
    expect(rec.decisions.every((e) => e.outcome === "deny")).toBe(true);
  });

  it("generated arguments (fuzz) to net.connect, http.request and fetch under a policy that allows nothing: no exception escapes the guard, no connection is made", async () => {
    // No rule: nothing may connect, and no name may be looked up (the resolver counts if it is asked).
    let asked = 0;
    guard({ rules: [], resolver: async () => (asked++, []) });
    // "<trap>" and "<boom>" become a throwing Proxy and a value whose conversions throw (fast-check itself must not touch them).
    const value = fc.oneof(fc.anything({ withBigInt: true, withNullPrototype: true }), fc.constantFrom<unknown>(A.port, B.port, String(A.port), "127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]", "127.0.0.1.", "x.test", 0, -1, 65536, NaN, "<trap>", "<boom>"));
    const arm = (v: unknown): unknown => (v === "<trap>" ? trap() : v === "<boom>" ? { toString: boom, valueOf: boom } : v);
    const armed = (o: Record<string, unknown>) => Object.fromEntries(Object.entries(o).map(([k, v]) => [k, arm(v)]));
    const fields = ["host", "hostname", "port", "path", "lookup", "family", "hints", "localAddress", "timeout", "method", "headers", "agent", "setHost", "protocol", "auth", "body", "redirect", "signal"];
    const opts = fc.dictionary(fc.constantFrom(...fields), value, { maxKeys: 6 });
    const calls = fc.sample(fc.tuple(fc.constantFrom("net", "http", "fetch"), opts, value), { numRuns: 240, seed: 70 });
    const before = [snap(A), snap(B)];
    const got = await crashes(async () => {
      for (const [api, raw, rawExtra] of calls) {
        const o = armed(raw);
        const extra = arm(rawExtra);
        try {
          if (api === "net") {
            const s = (net.connect as (...a: unknown[]) => net.Socket)(o, extra);
            s.setTimeout(200, () => s.destroy());
            await ended(s);
          } else if (api === "http") {
            const r = http.request({ port: A.port, ...o } as http.RequestOptions);
            r.setTimeout(200, () => r.destroy());
            await new Promise((resolve) => {
              r.on("error", resolve);
              r.on("close", resolve);
              r.on("response", (res) => res.resume().on("end", resolve));
              r.end();
            });
          } else {
            await settled(fetch(typeof extra === "string" ? `http://${extra}:${A.port}/` : `${A.url}/`, o as RequestInit));
          }
        } catch {
          // Node's own argument errors, thrown to the caller as without the guard
        }
      }
    });
    expect(got.map(String)).toEqual([]);
    await pause();
    expect([snap(A), snap(B)]).toEqual(before);
    expect(asked).toBe(0);
  });

  it("an evaluator that throws or answers a Proxy denies the call with a warning; throwing listeners change nothing", async () => {
    const hostile = { evaluate: () => trap() as never };
    const g = guard({ policy: hostile });
    const rec = recorder(g);
    const before = snap(A);
    const got = await crashes(async () => {
      expect(await ended(net.connect(A.port, "127.0.0.1"))).toBeInstanceOf(PolicyDeniedError);
      await denied(httpGet(`${A.url}/x`));
      await denied(fetch(`${A.url}/x`));
    });
    expect(got.map(String)).toEqual([]);
    expect(snap(A)).toEqual(before);
    expect(rec.warnings.length).toBeGreaterThan(0);
    g.uninstall();
    const g2 = guard({ policy: policyOf([allowTcp("127.0.0.1", A.port)]) });
    g2.on("decision", boom);
    g2.on("warning", boom);
    const got2 = await crashes(async () => {
      expect(await ended(net.connect(A.port, "127.0.0.1"))).toBe("connected");
      expect(await ended(net.connect(B.port, "127.0.0.2"))).toBeInstanceOf(PolicyDeniedError);
    });
    expect(got2.map(String)).toEqual([]);
  });
});
