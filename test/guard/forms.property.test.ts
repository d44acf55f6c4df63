// Issue 7, item 10: the guard judges the address Node uses. Generated host
// and URL forms — IPv4 shorthand and numeric forms (127.1, 2130706433,
// 0x7f.0.0.1, 0177.0.0.1), IPv6 and IPv4-mapped forms (::1,
// [::ffff:127.0.0.1], ::ffff:7f00:1), trailing dots, case,
// percent-encoding, userinfo, IDN (full-width forms) — all of them mapping
// to loopback addresses only, are fed to the guard and to Node's real
// connection path (fetch, node:http with a URL and with options, net.connect).
// Servers listen on 127.0.0.1, 127.0.0.2 and ::1 (one port), so the server
// that gets the call says which address Node connected to. Two properties:
//
//  1. whenever a call reaches a server, the guard's decision for it (its
//     `decision` event: target.host when that is an IP literal, else
//     target.resolvedIp) names that server's address;
//  2. under a policy allowing only 127.0.0.2, no call reaches 127.0.0.1 or ::1.
//
// Every form is checked to map to loopback before it is used — by the URL
// parser for URL forms, by the system resolver for raw host forms — and raw
// host forms are looked up through a lookup that refuses anything but
// loopback: nothing generated here can leave the host.
import dns from "node:dns";
import http from "node:http";
import net from "node:net";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { DecisionEvent } from "../../src/policy/event.js";
import { guard, recorder, victim, type Victim } from "./helpers.js";

const LOOPBACK = new net.BlockList();
LOOPBACK.addSubnet("127.0.0.0", 8, "ipv4");
LOOPBACK.addAddress("::1", "ipv6");

/** canon writes an IP literal one way: IPv4-mapped IPv6 as IPv4, IPv6 compressed lower-case, no zone or brackets. */
function canon(ip: string): string {
  let s = ip.replace(/^\[|\]$/g, "");
  const pct = s.indexOf("%");
  if (pct >= 0) s = s.slice(0, pct);
  if (net.isIP(s) === 4) return s;
  if (net.isIP(s) !== 6) return s;
  s = new URL(`http://[${s}]/`).hostname.slice(1, -1);
  const m = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(s);
  if (m) {
    const hi = parseInt(m[1]!, 16);
    const lo = parseInt(m[2]!, 16);
    return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
  }
  return s;
}

function isLoopback(ip: string): boolean {
  const c = canon(ip);
  const f = net.isIP(c);
  return f !== 0 && LOOPBACK.check(c, f === 4 ? "ipv4" : "ipv6");
}

/** A lookup that answers like the system resolver but refuses any non-loopback address. */
const loopbackOnlyLookup = ((host: string, opts: dns.LookupOptions, cb: (err: Error | null, addr?: unknown, family?: number) => void) => {
  dns.lookup(host, { ...opts, all: true }, (err, addrs) => {
    if (err) return cb(err);
    const bad = addrs.find((a) => !isLoopback(a.address));
    if (bad) return cb(new Error(`test resolver: ${host} resolves to non-loopback ${bad.address}: refused`));
    if (opts.all) cb(null, addrs);
    else cb(null, addrs[0]!.address, addrs[0]!.family);
  });
}) as unknown as net.LookupFunction;

// ---- the forms ----

type Addr = "127.0.0.1" | "127.0.0.2" | "::1";

/** Raw host strings (what net.connect / http.request({ host }) take) for 127.0.0.x. */
const ipv4Raw = (x: 1 | 2) => [
  `127.0.0.${x}`,
  `127.${x}`,
  `127.0.${x}`,
  String(2130706432 + x),
  `0x7f00000${x}`,
  `0X7F00000${x}`,
  `0x7f.0.0.${x}`,
  `0x7f.0x0.0x0.0x${x}`,
  `0177.0.0.0${x}`,
  `0177.0000.0.${x}`,
  `0x7f.${x}`,
  `::ffff:127.0.0.${x}`,
  `::ffff:7f00:${x}`,
  `::FFFF:7F00:${x}`,
  `0:0:0:0:0:ffff:7f00:${x}`,
  `::ffff:7f00:000${x}`,
  `127.0.0.${x}.`,
  `[127.0.0.${x}]`,
];
const ipv6Raw = ["::1", "0:0:0:0:0:0:0:1", "::0:1", "0::1", "::0001", "0000:0000::1", "::1%lo", "[::1]"];
const localhostRaw = ["localhost", "LOCALHOST", "LocalHost", "localhost."];

/** URL host forms: the raw ones that are valid in a URL, plus percent-encoding and full-width (IDN) spellings. */
function urlHosts(x: 1 | 2): string[] {
  const v4 = ipv4Raw(x).filter((h) => !h.includes(":") && !h.startsWith("["));
  const mapped = [`[::ffff:127.0.0.${x}]`, `[::ffff:7f00:${x}]`, `[::FFFF:7F00:${x}]`, `[0:0:0:0:0:ffff:7f00:${x}]`];
  const pct = [`%31%32%37.0.0.${x}`, `127%2E0%2E0%2E${x}`, `127%2e0%2e0%2e${x}`, `%30x7f.${x}`];
  const wide = [`１２７．０．０．${String.fromCharCode(0xff10 + x)}`, `127。0。0。${x}`, `127｡0｡0｡${x}`];
  return [...v4, ...mapped, ...pct, ...wide];
}
const urlHosts6 = ["[::1]", "[0:0:0:0:0:0:0:1]", "[::0001]", "[0::1]", "[0:0::1]"];
const urlLocalhost = ["localhost", "LOCALHOST", "ＬＯＣＡＬＨＯＳＴ", "locａlhost", "LocalHost"];

const rawForm = fc.constantFrom(...ipv4Raw(1), ...ipv4Raw(2), ...ipv6Raw, ...localhostRaw);
const urlHost = fc.constantFrom(...urlHosts(1), ...urlHosts(2), ...urlHosts6, ...urlLocalhost);
/** Userinfo, some of it naming another loopback address (the classic authority confusion). */
const userinfo = fc.constantFrom("", "user:pass@", "127.0.0.2@", "127.0.0.1@", "%31%32%37.0.0.2@", "a:b@", "LOCALHOST@");

type Api = "fetch" | "http-url" | "http-options" | "net";
interface Call {
  api: Api;
  /** The host form as written (raw or URL host). */
  host: string;
  userinfo: string;
  /** Raw forms: look up through the loopback-only test resolver, or let the guard's/Node's own resolver do it. */
  ownLookup: boolean;
}

const call: fc.Arbitrary<Call> = fc.oneof(
  fc.record({ api: fc.constant<Api>("fetch"), host: urlHost, userinfo: fc.constant(""), ownLookup: fc.constant(false) }),
  fc.record({ api: fc.constant<Api>("http-url"), host: urlHost, userinfo, ownLookup: fc.constant(false) }),
  fc.record({ api: fc.constant<Api>("http-options"), host: rawForm, userinfo: fc.constant(""), ownLookup: fc.boolean() }),
  fc.record({ api: fc.constant<Api>("net"), host: rawForm, userinfo: fc.constant(""), ownLookup: fc.boolean() }),
);

// ---- the servers ----

let servers: Record<Addr, Victim>;
let port = 0;

beforeAll(async () => {
  for (let i = 0; ; i++) {
    const first = await victim("127.0.0.1");
    try {
      servers = { "127.0.0.1": first, "127.0.0.2": await victim("127.0.0.2", first.port), "::1": await victim("::1", first.port) };
      port = first.port;
      break;
    } catch (err) {
      await first.close();
      if (i > 5) throw err;
    }
  }
});
afterAll(async () => {
  for (const v of Object.values(servers)) await v.close();
});

/**
 * expectedAddress is where the form can lead, found without the guard:
 * the URL parser's host (an IP literal, or localhost through the system
 * resolver), or the system resolver for a raw form. It fails the test when
 * a form could lead anywhere but loopback (a bug in the generators).
 */
/** The system resolver as it was before any guard patched node:dns: the test's own look-ups are not calls under test. */
const systemLookup = dns.promises.lookup;

async function expectedAddress(c: Call): Promise<string | undefined> {
  let name = c.host;
  if (c.api === "fetch" || c.api === "http-url") {
    const u = new URL(`http://${c.userinfo}${c.host}:${port}/`);
    name = u.hostname.replace(/^\[|\]$/g, "");
  } else name = name.replace(/^\[|\]$/g, "");
  // A literal with a trailing dot ("127.0.0.2.") is that literal: the guard
  // judges it and connects to it as such (docs/guard.md, "Names and addresses").
  if (name.endsWith(".") && net.isIP(name.slice(0, -1)) !== 0) name = name.slice(0, -1);
  if (net.isIP(name) !== 0) {
    expect(isLoopback(name), `${c.host} is loopback`).toBe(true);
    return canon(name);
  }
  const addrs = await systemLookup(name, { all: true }).catch(() => []);
  for (const a of addrs) expect(isLoopback(a.address), `${c.host} resolves to loopback only (got ${a.address})`).toBe(true);
  return addrs[0] === undefined ? undefined : canon(addrs[0].address);
}

let nextId = 0;

/** perform makes the call; resolves when it is over (never rejects). The call carries `id` so the server that gets it is known. */
function perform(c: Call, id: string): Promise<void> {
  const path = `/p/${id}`;
  const lookup = c.ownLookup ? {} : { lookup: loopbackOnlyLookup };
  const timeout = AbortSignal.timeout(3000);
  switch (c.api) {
    case "fetch":
      return fetch(`http://${c.host}:${port}${path}`, { signal: timeout }).then(
        (r) => r.arrayBuffer().then(() => {}),
        () => {},
      );
    case "http-url":
    case "http-options":
      return new Promise((resolve) => {
        const opts: http.RequestOptions = { agent: false, signal: timeout, ...(c.api === "http-options" ? lookup : {}) };
        const req =
          c.api === "http-url" ? http.request(`http://${c.userinfo}${c.host}:${port}${path}`, opts) : http.request({ ...opts, host: c.host, port, path });
        req.on("response", (res) => {
          res.resume();
          res.on("end", () => resolve());
          res.on("error", () => resolve());
        });
        req.on("error", () => resolve());
        req.on("close", () => resolve());
        req.end();
      });
    case "net":
      return new Promise((resolve) => {
        const s = net.connect({ host: c.host, port, ...lookup } as net.NetConnectOpts);
        s.setTimeout(3000, () => s.destroy());
        s.on("connect", () => s.write(`ID ${id}\r\n\r\n`));
        s.on("data", () => s.destroy()); // the server answered: it has the line
        s.on("error", () => {});
        s.on("close", () => resolve());
      });
  }
}

/** received says which server got the call `id` (undefined: none). */
function received(c: Call, id: string): Addr[] {
  const got: Addr[] = [];
  for (const [addr, v] of Object.entries(servers) as [Addr, Victim][]) {
    const hit = c.api === "net" ? v.accepted.some((a) => a.firstLine === `ID ${id}`) : v.requests.some((r) => r.path === `/p/${id}`);
    if (hit) got.push(addr);
  }
  return got;
}

/** The addresses the guard judged in these events: the host when it is an IP literal, else the resolved address. */
function judged(events: DecisionEvent[]): string[] {
  const out: string[] = [];
  for (const ev of events) {
    if (ev.outcome !== "allow") continue;
    const t = ev.target as { host?: string; resolvedIp?: string };
    if (typeof t.host === "string" && net.isIP(t.host.replace(/^\[|\]$/g, "").split("%")[0]!) !== 0) out.push(canon(t.host));
    else if (typeof t.resolvedIp === "string") out.push(canon(t.resolvedIp));
  }
  return out;
}

/** A call of the property: checks the form, makes the call, and returns what happened. */
async function attempt(c: Call, events: { decisions: DecisionEvent[]; clear(): void }) {
  const expected = await expectedAddress(c);
  const id = `${process.pid}-${nextId++}`;
  events.clear();
  await perform(c, id);
  // A server counts a request when its last byte arrives; the client may finish first.
  await new Promise((r) => setTimeout(r, 5));
  const got = received(c, id);
  return { expected, got, judgedAddrs: judged(events.decisions), events: events.decisions.map((e) => `${e.outcome} ${e.request}${(e.target as { resolvedIp?: string }).resolvedIp ? ` (resolved ${(e.target as { resolvedIp?: string }).resolvedIp})` : ""}`) };
}

const rule = (id: string, hosts: string[]) => [
  { id: `${id}-http`, src: ["tag:agent"], http: { host: hosts, port: [port] } },
  { id: `${id}-tcp`, src: ["tag:agent"], tcp: { host: hosts, port: [port] } },
];

describe("forms: the guard judges the address Node connects to", () => {
  it("every call that reaches a server was judged, as that server's address (loopback allowed by range, by name and by literal)", async () => {
    const g = guard({ rules: [...rule("loopback", ["127.0.0.0/8", "::1/128", "localhost"])], allowResolved: () => true });
    const rec = recorder(g);
    let reachedSome = 0;
    await fc.assert(
      fc.asyncProperty(call, async (c) => {
        const r = await attempt(c, rec);
        expect(r.got.length, `${c.api} ${c.host}: reached more than one server (${r.got.join(", ")})`).toBeLessThanOrEqual(1);
        const to = r.got[0];
        if (to === undefined) return;
        reachedSome++;
        expect(r.expected, `${c.api} ${JSON.stringify(c.userinfo + c.host)} reached ${to}, where the form leads`).toBe(canon(to));
        expect(r.judgedAddrs, `${c.api} ${JSON.stringify(c.userinfo + c.host)} reached ${to}; the guard judged ${JSON.stringify(r.events)}`).toContain(canon(to));
      }),
      { numRuns: 250 },
    );
    // The property is not vacuous: allowed literal forms do connect.
    expect(reachedSome).toBeGreaterThan(20);
  });

  it("under a policy allowing only 127.0.0.2, no form reaches 127.0.0.1 or ::1", async () => {
    const g = guard({ rules: rule("only-2", ["127.0.0.2"]), allowResolved: () => true });
    const rec = recorder(g);
    let reached2 = 0;
    await fc.assert(
      fc.asyncProperty(call, async (c) => {
        const r = await attempt(c, rec);
        for (const to of r.got) {
          expect(to, `${c.api} ${JSON.stringify(c.userinfo + c.host)} reached ${to} under a policy allowing only 127.0.0.2; the guard judged ${JSON.stringify(r.events)}`).toBe("127.0.0.2");
          reached2++;
          expect(r.judgedAddrs).toContain("127.0.0.2");
        }
      }),
      { numRuns: 250 },
    );
    // Positive control: forms of 127.0.0.2 do get through.
    expect(reached2).toBeGreaterThan(5);
  });
});
