// node:dgram under the guard: every datagram is a `udp` target, decided
// before its destination is looked up. Each case counts the datagrams a
// local UDP server receives: zero where the policy says no, and the same
// code aimed at the allowed port gets through (the positive control).
import dgram from "node:dgram";
import type { AddressInfo } from "node:net";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { DecisionEvent } from "../../src/policy/index.js";
import { denied, guard, policyOf } from "./helpers.js";

/** A UDP server on 127.0.0.1 that counts what it receives. */
interface Sink {
  port: number;
  got: string[];
  close(): Promise<void>;
}

async function udpSink(): Promise<Sink> {
  const s = dgram.createSocket("udp4");
  const sink: Sink = { port: 0, got: [], close: () => new Promise<void>((r) => s.close(() => r())) };
  s.on("message", (m) => sink.got.push(m.toString()));
  await new Promise<void>((r) => s.bind(0, "127.0.0.1", () => r()));
  sink.port = (s.address() as AddressInfo).port;
  return sink;
}

let allowed: Sink; // the policy allows datagrams to this port
let other: Sink; // ... and not to this one

beforeAll(async () => {
  allowed = await udpSink();
  other = await udpSink();
});
afterAll(async () => {
  await allowed.close();
  await other.close();
});

const sockets: dgram.Socket[] = [];
function client(opts: Partial<dgram.SocketOptions> = {}): dgram.Socket {
  const s = dgram.createSocket({ type: "udp4", ...opts });
  sockets.push(s);
  return s;
}
afterEach(() => {
  for (const s of sockets.splice(0)) s.close();
});

const v2 = (rules: object[]) => ({ policy: policyOf(rules, { version: 2 }) });
const allowUdp = (host: string, port: number | string) => ({ id: `udp-${host}`, src: ["tag:agent"], udp: { host: [host], port: [port] } });

/** sent calls send(...args, callback) and resolves when the callback says it was sent (rejects with its error). */
function sent(sock: dgram.Socket, ...args: unknown[]): Promise<void> {
  return new Promise<void>((resolve, reject) => (sock.send as (...a: unknown[]) => void)(...args, (err: Error | null) => (err ? reject(err) : resolve())));
}

/** sendto is the legacy spelling (undocumented in the types, still in Node): it calls send. */
function sendto(sock: dgram.Socket, ...args: unknown[]): Promise<void> {
  const legacy = sock as unknown as { sendto(...a: unknown[]): void };
  return new Promise<void>((resolve, reject) => legacy.sendto(...args, (err: Error | null) => (err ? reject(err) : resolve())));
}

/** settle waits until `sink` has received `n` datagrams (or a moment has passed: a denied one never comes). */
async function settle(sink: Sink, n: number): Promise<void> {
  for (let i = 0; i < 50 && sink.got.length < n; i++) await new Promise((r) => setTimeout(r, 10));
  await new Promise((r) => setTimeout(r, 20));
}

describe("send on an unconnected socket", () => {
  it("a datagram to a port the policy does not allow never leaves; to the allowed port it arrives", async () => {
    const g = guard(v2([allowUdp("127.0.0.1", allowed.port)]));
    const events: DecisionEvent[] = [];
    g.on("decision", (e) => events.push(e));
    const c = client();
    const err = await denied(sent(c, "secret", other.port, "127.0.0.1"));
    expect(err.message).toContain(`udp 127.0.0.1:${other.port}`);
    await sent(c, "hello", allowed.port, "127.0.0.1");
    await settle(allowed, 1);
    expect(other.got).toEqual([]);
    expect(allowed.got.at(-1)).toBe("hello");
    expect(events.map((e) => [e.layer, e.outcome, e.request])).toEqual([
      ["udp", "deny", `udp 127.0.0.1:${other.port}`],
      ["udp", "allow", `udp 127.0.0.1:${allowed.port}`],
    ]);
  });

  it("every overload of send, and sendto, is judged: none reaches the denied port, each reaches the allowed one", async () => {
    guard(v2([allowUdp("127.0.0.1", allowed.port)]));
    const c = client();
    const before = allowed.got.length;
    const forms = (port: number): Array<[string, unknown[]]> => [
      ["send(buf, port, address)", [Buffer.from("a"), port, "127.0.0.1"]],
      ["send(buf, offset, length, port, address)", [Buffer.from("xbx"), 1, 1, port, "127.0.0.1"]],
      ["send([bufs], port, address)", [[Buffer.from("c"), Buffer.from("c")], port, "127.0.0.1"]],
      ["send(string, port) (address defaults to 127.0.0.1)", ["d", port]],
      ["send(Uint8Array, String(port), address)", [new Uint8Array([101]), String(port), "127.0.0.1"]],
    ];
    for (const [name, args] of forms(other.port)) await expect(sent(c, ...args), name).rejects.toMatchObject({ code: "MESHGUARD_POLICY_DENIED" });
    await expect(sendto(c, Buffer.from("f"), 0, 1, other.port, "127.0.0.1")).rejects.toMatchObject({ code: "MESHGUARD_POLICY_DENIED" });
    for (const [, args] of forms(allowed.port)) await sent(c, ...args);
    await sendto(c, Buffer.from("f"), 0, 1, allowed.port, "127.0.0.1");
    await settle(allowed, before + 6);
    expect(other.got).toEqual([]);
    expect(allowed.got.slice(before).sort()).toEqual(["a", "b", "cc", "d", "e", "f"]);
  });

  it("without a callback, a denied send makes the socket emit `error` (as Node does for a failed send)", async () => {
    guard(v2([allowUdp("127.0.0.1", allowed.port)]));
    const c = client();
    const err = await new Promise<Error>((resolve) => {
      c.once("error", resolve);
      c.send("x", other.port, "127.0.0.1");
    });
    expect((err as { code?: string }).code).toBe("MESHGUARD_POLICY_DENIED");
    await settle(other, 1);
    expect(other.got).toEqual([]);
  });

  it("one decision per datagram, also for the first send of an unbound socket (Node binds, then sends)", async () => {
    const g = guard(v2([allowUdp("127.0.0.1", allowed.port)]));
    const events: DecisionEvent[] = [];
    g.on("decision", (e) => events.push(e));
    const c = client();
    await Promise.all([sent(c, "1", allowed.port, "127.0.0.1"), sent(c, "2", allowed.port, "127.0.0.1")]);
    expect(events).toHaveLength(2);
  });
});

describe("names", () => {
  /** A socket lookup that maps every name to 127.0.0.1, counting calls. */
  function mapTo127() {
    const calls: string[] = [];
    const lookup = (host: string, _family: unknown, cb: (err: Error | null, a: string, f: number) => void) => {
      calls.push(host);
      cb(null, "127.0.0.1", 4);
    };
    return { lookup: lookup as unknown as dgram.SocketOptions["lookup"], calls };
  }

  it("a denied name is never looked up; an allowed one is looked up once and the datagram goes to that address", async () => {
    guard({ ...v2([allowUdp("svc.test", allowed.port)]), allowResolved: (_h, ip) => ip === "127.0.0.1" });
    const { lookup, calls } = mapTo127();
    const c = client({ lookup });
    // Node resolves the bind address through the socket's lookup too: bind first, then count.
    await new Promise<void>((r) => c.bind(0, "127.0.0.1", () => r()));
    calls.length = 0;
    await denied(sent(c, "x", allowed.port, "evil.test"));
    expect(calls).toEqual([]);
    await sent(c, "via name", allowed.port, "svc.test");
    await settle(allowed, allowed.got.length + 1);
    expect(calls).toEqual(["svc.test"]);
    expect(allowed.got.at(-1)).toBe("via name");
  });

  it("a name that resolves to loopback is refused unless allowResolved says yes (rebinding), before anything is sent", async () => {
    guard(v2([allowUdp("svc.test", other.port)]));
    const { lookup } = mapTo127();
    const err = await denied(sent(client({ lookup }), "x", other.port, "svc.test"));
    expect(err.message).toMatch(/resolves to 127\.0\.0\.1/);
    await settle(other, 1);
    expect(other.got).toEqual([]);
  });

  it("a socket lookup cannot send an address judged as written somewhere else", async () => {
    guard(v2([{ id: "both", src: ["tag:agent"], udp: { host: ["::1", "127.0.0.1"], port: [allowed.port] } }]));
    const { lookup } = mapTo127();
    const c = client({ lookup });
    const before = allowed.got.length;
    // A udp4 socket hands "::1" to its lookup, which answers 127.0.0.1: not the address judged.
    const err = await denied(sent(c, "moved", allowed.port, "::1"));
    expect(err.message).toContain("turned ::1 into 127.0.0.1");
    await sent(c, "as judged", allowed.port, "127.0.0.1");
    await settle(allowed, before + 1);
    expect(allowed.got.slice(before)).toEqual(["as judged"]);
  });

  it("the name's own look-up is part of the udp decision, not a dns target", async () => {
    const g = guard(v2([allowUdp("localhost", allowed.port)]));
    const events: DecisionEvent[] = [];
    g.on("decision", (e) => events.push(e));
    await sent(client(), "local", allowed.port, "localhost");
    await settle(allowed, allowed.got.length + 1);
    expect(allowed.got.at(-1)).toBe("local");
    expect(events.map((e) => e.request)).toEqual([`udp localhost:${allowed.port}`]);
  });
});

describe("connected sockets", () => {
  it("connect to a denied peer fails and connects nothing; to the allowed one, send() delivers", async () => {
    guard(v2([allowUdp("127.0.0.1", allowed.port)]));
    const bad = client();
    const err = await new Promise<Error | null>((resolve) => bad.connect(other.port, "127.0.0.1", (e?: Error) => resolve(e ?? null)));
    expect((err as { code?: string }).code).toBe("MESHGUARD_POLICY_DENIED");
    expect(() => bad.remoteAddress()).toThrow(/not connected/i);

    const good = client();
    await new Promise<void>((resolve, reject) => good.connect(allowed.port, "127.0.0.1", (e?: Error) => (e ? reject(e) : resolve())));
    await sent(good, "connected");
    await settle(allowed, allowed.got.length + 1);
    expect(allowed.got.at(-1)).toBe("connected");
    expect(other.got).toEqual([]);
  });

  it("each send on a connected socket is judged: after a policy change the next datagram does not leave", async () => {
    const g = guard(v2([allowUdp("127.0.0.1", other.port)]));
    const c = client();
    await new Promise<void>((resolve, reject) => c.connect(other.port, "127.0.0.1", (e?: Error) => (e ? reject(e) : resolve())));
    await sent(c, "before");
    await settle(other, 1);
    expect(other.got).toEqual(["before"]);
    g.setPolicy(policyOf([allowUdp("127.0.0.1", allowed.port)], { version: 2 }));
    await denied(sent(c, "after"));
    await denied(sent(c, Buffer.from("after"), 0, 5));
    await settle(other, 2);
    expect(other.got).toEqual(["before"]);
    other.got.length = 0;
  });

  it.runIf(typeof (dgram.Socket.prototype as { connectSync?: unknown }).connectSync === "function")("connectSync to a denied peer throws; to the allowed one it connects", () => {
    guard(v2([allowUdp("127.0.0.1", allowed.port)]));
    const c = client() as dgram.Socket & { connectSync(port: number, address: string): void };
    expect(() => c.connectSync(other.port, "127.0.0.1")).toThrow(/udp 127\.0\.0\.1/);
    c.connectSync(allowed.port, "127.0.0.1");
    expect(c.remoteAddress().port).toBe(allowed.port);
  });
});

describe("intercept", () => {
  it("intercept.dgram: false leaves sends unjudged (the positive control of the denials above)", async () => {
    const g = guard({ ...v2([]), intercept: { sdk: false, dgram: false } });
    expect(g.instrumented).not.toContain("dgram");
    await sent(client(), "unjudged", other.port, "127.0.0.1");
    await settle(other, 1);
    expect(other.got).toEqual(["unjudged"]);
    other.got.length = 0;
  });

  it("a socket used while the guard was installed sends freely once it is closed", async () => {
    const g = guard(v2([]));
    const c = client();
    await denied(sent(c, "x", other.port, "127.0.0.1"));
    g.uninstall();
    await sent(c, "free", other.port, "127.0.0.1");
    await settle(other, 1);
    expect(other.got).toEqual(["free"]);
    other.got.length = 0;
  });
});
