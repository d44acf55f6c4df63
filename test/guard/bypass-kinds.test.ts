// Issue 7, item 3 (new target kinds): node:dns look-ups are judged as `dns`
// targets (`{ kind: "dns", name }`) and a DNS server other than the system's
// is a target the policy must allow; dgram sends are judged as `udp`
// targets. Each case counts what reaches a local server — DNS queries on a
// local DNS server, datagrams on a local UDP socket — and expects zero, with
// a positive control: the same code aimed at what the policy allows gets
// through. The family is the first word of each title ("kinds:").
//
// The rules use the policy format version that knows the new kinds
// (format version 2; helpers.ts: KINDS_VERSION, allowDns, allowUdp). A DNS
// server other than the system's is allowed by the dns rule's `server` list.
// The DNS servers run in child processes: their replies are datagrams, and
// the guard in this process would judge them.
import dgram from "node:dgram";
import dns from "node:dns";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import {
  allowDns,
  allowHttp,
  allowUdp,
  dnsVictim,
  fixedLookup,
  guard,
  isDenied,
  policyWithKinds,
  recorder,
  settle,
  settled,
  udpVictim,
  until,
  type DnsVictim,
  type UdpVictim,
} from "./helpers.js";

let ns: DnsVictim; // a DNS server on 127.0.0.1 (for setServers / Resolver)
let sys: DnsVictim | undefined; // the system resolver's own server, when this process may stand it up (below)
let sysCleanup: (() => void) | undefined;

/**
 * Inside the test network namespace (root, MESHGUARD_NETNS=1) the system
 * resolver's server address (/etc/resolv.conf) is put on the namespace's
 * loopback interface and served by a counting DNS server, so that a test
 * can see whether dns.lookup (getaddrinfo) sent a query at all. Nothing
 * leaves the namespace; the address is removed afterwards. Elsewhere the
 * look-up tests check the error only.
 */
async function standUpSystemResolver(): Promise<void> {
  if (process.env.MESHGUARD_NETNS !== "1" || process.getuid?.() !== 0) return;
  let server: string | undefined;
  try {
    server = /^nameserver\s+(\d+\.\d+\.\d+\.\d+)\s*$/m.exec(readFileSync("/etc/resolv.conf", "utf8"))?.[1];
  } catch {
    return;
  }
  if (server === undefined) return;
  const onLo = server.startsWith("127.");
  try {
    if (!onLo) execFileSync("ip", ["addr", "add", `${server}/32`, "dev", "lo"], { stdio: "ignore" });
  } catch {
    return;
  }
  sysCleanup = () => {
    if (!onLo) execFileSync("ip", ["addr", "del", `${server}/32`, "dev", "lo"], { stdio: "ignore" });
  };
  try {
    sys = await dnsVictim("127.0.0.1", server, 53);
  } catch {
    sysCleanup();
    sysCleanup = undefined;
  }
}

const savedServers = dns.getServers();
beforeAll(async () => {
  ns = await dnsVictim("127.0.0.1");
  await standUpSystemResolver();
});
afterAll(async () => {
  dns.setServers(savedServers);
  await ns.close();
  await sys?.close();
  sysCleanup?.();
});

const queriesFor = (v: DnsVictim | undefined, name: string) => (v?.queries ?? []).filter((q) => q.name.toLowerCase() === name).length;

describe("kinds: node:dns look-ups are judged as dns targets", () => {
  const lookupCb = (name: string, opts: dns.LookupOptions = {}) =>
    new Promise<unknown>((resolve, reject) => dns.lookup(name, opts, (err, address) => (err ? reject(err) : resolve(address))));

  it("kinds: dns.lookup of a name no rule allows is denied and sends no query; an allowed one is answered", async () => {
    const g = guard({ policy: policyWithKinds([allowDns(["ok.test", "localhost"])]) });
    const rec = recorder(g);
    for (const [what, call] of [
      ["dns.lookup", () => lookupCb("denied.test")],
      ["dns.lookup { all: true }", () => lookupCb("denied.test", { all: true })],
      ["dns.lookup { family: 6 }", () => lookupCb("denied.test", { family: 6 })],
      ["dns.promises.lookup", () => dns.promises.lookup("denied.test")],
    ] as const) {
      const r = await settled(call());
      expect(r.ok === false && isDenied(r.error), `${what}("denied.test") must be refused by the guard, got ${r.ok ? "an answer" : String(r.error)}`).toBe(true);
    }
    expect(rec.decisions.some((e) => (e.target as { kind: string }).kind === "dns" && (e.target as { name?: string }).name === "denied.test")).toBe(true);
    // Positive control: allowed names resolve (localhost from /etc/hosts; ok.test from the system's server when it is stood up here).
    expect(await dns.promises.lookup("localhost")).toMatchObject({ address: "127.0.0.1" });
    if (sys !== undefined) {
      expect(await dns.promises.lookup("ok.test")).toMatchObject({ address: "127.0.0.1" });
      // The responder reports each query over IPC, which may trail the answer: wait for it (bounded).
      // IPC keeps order, so once ok.test is reported any query for denied.test (sent earlier) would be too.
      await vi.waitFor(() => expect(queriesFor(sys, "ok.test")).toBeGreaterThan(0), { timeout: 10_000 });
    }
    expect(queriesFor(sys, "denied.test"), "queries the system resolver received for the denied name").toBe(0);
  });

  /** Every resolve* entry point, each given one name. */
  const resolvers = (r: dns.Resolver | typeof dns) => [
    ["resolve4", (n: string) => new Promise((ok, ko) => r.resolve4(n, (e, a) => (e ? ko(e) : ok(a))))],
    ["resolve (A)", (n: string) => new Promise((ok, ko) => r.resolve(n, "A", (e, a) => (e ? ko(e) : ok(a))))],
    ["resolve6", (n: string) => new Promise((ok, ko) => r.resolve6(n, (e, a) => (e ? ko(e) : ok(a))))],
    ["resolveTxt", (n: string) => new Promise((ok, ko) => r.resolveTxt(n, (e, a) => (e ? ko(e) : ok(a))))],
    ["resolveMx", (n: string) => new Promise((ok, ko) => r.resolveMx(n, (e, a) => (e ? ko(e) : ok(a))))],
    ["resolveAny", (n: string) => new Promise((ok, ko) => r.resolveAny(n, (e, a) => (e ? ko(e) : ok(a))))],
  ] as const;
  const promiseResolvers = (r: dns.promises.Resolver | typeof dns.promises) => [
    ["promises.resolve4", (n: string) => r.resolve4(n)],
    ["promises.resolve (A)", (n: string) => r.resolve(n, "A")],
    ["promises.resolveCname", (n: string) => r.resolveCname(n)],
  ] as const;

  it("kinds: dns.resolve* of a name no rule allows sends no query, on an allowed server; an allowed name is answered", async () => {
    guard({ policy: policyWithKinds([allowDns(["ok.test"], [ns.server])]) });
    dns.setServers([ns.server]);
    try {
      for (const [what, call] of [...resolvers(dns), ...promiseResolvers(dns.promises)]) {
        const r = await settled(call("denied.test"));
        expect(r.ok, `dns.${what}("denied.test") must fail`).toBe(false);
      }
      await settled(new Promise((ok, ko) => dns.reverse("127.0.0.2", (e, a) => (e ? ko(e) : ok(a)))));
      await settle();
      // Positive control: the same server, an allowed name.
      expect(await dns.promises.resolve4("ok.test")).toEqual(["127.0.0.1"]);
      // Queries are reported over IPC, in order, possibly after the answer: once ok.test's is in, earlier ones would be too.
      await vi.waitFor(() => expect(queriesFor(ns, "ok.test")).toBeGreaterThan(0), { timeout: 10_000 });
      expect(queriesFor(ns, "denied.test"), "queries for the denied name").toBe(0);
      expect(queriesFor(ns, "2.0.0.127.in-addr.arpa"), "a reverse look-up no rule allows").toBe(0);
    } finally {
      dns.setServers(savedServers);
    }
  });

  it("kinds: a Resolver with its own server that no rule allows sends no query, even for an allowed name", async () => {
    guard({ policy: policyWithKinds([allowDns(["ok.test"])]) });
    const r = new dns.Resolver();
    r.setServers([ns.server]);
    const pr = new dns.promises.Resolver();
    pr.setServers([ns.server]);
    const before = ns.queries.length;
    for (const [what, call] of [...resolvers(r), ...promiseResolvers(pr)]) {
      const out = await settled(call("ok.test"));
      expect(out.ok, `Resolver.${what}("ok.test") through a server no rule allows must fail`).toBe(false);
    }
    await settle();
    expect(ns.queries.length - before, "queries that reached the unallowed server").toBe(0);
  });

  it("kinds: (control) a Resolver with its own server that a rule allows is answered for an allowed name only", async () => {
    guard({ policy: policyWithKinds([allowDns(["ok.test"], [ns.server])]) });
    const r = new dns.promises.Resolver();
    r.setServers([ns.server]);
    expect(await r.resolve4("ok.test")).toEqual(["127.0.0.1"]);
    const before = queriesFor(ns, "denied.test");
    expect((await settled(r.resolve4("denied.test"))).ok).toBe(false);
    await settle();
    expect(queriesFor(ns, "denied.test")).toBe(before);
  });
});

describe("kinds: dgram sends are judged as udp targets", () => {
  let U1: UdpVictim; // 127.0.0.1:U, allowed
  let U2: UdpVictim; // 127.0.0.2:U, never allowed
  let U6: UdpVictim; // [::1]:U, never allowed
  beforeAll(async () => {
    for (let i = 0; ; i++) {
      U1 = await udpVictim("127.0.0.1");
      try {
        U2 = await udpVictim("127.0.0.2", U1.port);
        U6 = await udpVictim("::1", U1.port);
        break;
      } catch (err) {
        await U1.close();
        await U2?.close();
        if (i > 5) throw err;
      }
    }
  });
  afterAll(async () => {
    await U1.close();
    await U2.close();
    await U6.close();
  });

  /** Ways to send one datagram to host:port; each resolves once the send is done or failed. */
  const senders: [string, (host: string, port: number, family?: "udp4" | "udp6") => Promise<void>][] = [
    [
      "send(msg, port, host, cb)",
      (host, port, family = "udp4") =>
        new Promise((resolve) => {
          const s = dgram.createSocket(family);
          s.on("error", () => {});
          s.send("send", port, host, () => {
            s.close();
            resolve();
          });
        }),
    ],
    [
      "send(msg, offset, length, port, host)",
      (host, port, family = "udp4") =>
        new Promise((resolve) => {
          const s = dgram.createSocket(family);
          s.on("error", () => {});
          s.send(Buffer.from("xsendtox"), 1, 6, port, host, () => {
            s.close();
            resolve();
          });
        }),
    ],
    [
      "connect() then send(msg)",
      (host, port, family = "udp4") =>
        new Promise((resolve) => {
          const s = dgram.createSocket(family);
          const done = () => {
            try {
              s.close();
            } catch {
              // closed already
            }
            resolve();
          };
          s.on("error", done);
          s.connect(port, host, () => {
            try {
              s.send("connected", () => done());
            } catch {
              done();
            }
          });
        }),
    ],
  ];

  it.each(senders)("kinds: %s to a host the policy does not allow: no datagram leaves", async (_name, send) => {
    guard({ policy: policyWithKinds([allowUdp("127.0.0.1", U1.port)]) });
    const [n2, n6] = [U2.datagrams.length, U6.datagrams.length];
    await send(U2.host, U2.port);
    await send(U6.host, U6.port, "udp6");
    await settle();
    expect(U2.datagrams.length - n2, "datagrams at 127.0.0.2").toBe(0);
    expect(U6.datagrams.length - n6, "datagrams at [::1]").toBe(0);
    const n1 = U1.datagrams.length;
    await send(U1.host, U1.port);
    expect(await until(() => U1.datagrams.length > n1), "positive control: the same send to the allowed host").toBe(true);
  });

  it("kinds: a policy that allows no UDP at all (format version 1) lets no datagram leave", async () => {
    guard({ rules: [allowHttp("127.0.0.1")] });
    const n = U1.datagrams.length;
    await senders[0]![1](U1.host, U1.port);
    await settle();
    expect(U1.datagrams.length - n).toBe(0);
  });

  it("kinds: what a socket's lookup returns for a name is judged: a CIDR deny rule applies to it", async () => {
    guard({
      policy: policyWithKinds([
        { ...allowUdp("svc.test", U1.port), id: "udp-svc" },
        { id: "no-127-0-0-2", src: ["*"], effect: "deny", udp: { host: ["127.0.0.2/32"], port: ["*"] } },
      ]),
      allowResolved: () => true,
    });
    const sendVia = (ip: string) =>
      new Promise<void>((resolve) => {
        const s = dgram.createSocket({ type: "udp4", lookup: fixedLookup(ip).fn as never });
        s.on("error", () => {});
        s.send("named", U1.port, "svc.test", () => {
          s.close();
          resolve();
        });
      });
    const n2 = U2.datagrams.length;
    await sendVia(U2.host);
    await settle();
    expect(U2.datagrams.length - n2, "a name looked up as a denied address").toBe(0);
    const n1 = U1.datagrams.length;
    await sendVia(U1.host);
    expect(await until(() => U1.datagrams.length > n1), "positive control: the name looked up as an allowed address").toBe(true);
  });
});

