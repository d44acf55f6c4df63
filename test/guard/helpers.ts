// Shared fixtures of the guard tests: local servers that count what reaches
// them, policies written as objects, and a guard installed per test.
import { fork } from "node:child_process";
import dgram from "node:dgram";
import http from "node:http";
import net from "node:net";
import type { AddressInfo } from "node:net";
import { afterEach, expect } from "vitest";
import { installGuard, type GuardHandle } from "../../src/guard/index.js";
import type { GuardOptions } from "../../src/guard/types.js";
import { loadPolicy, type Policy } from "../../src/policy/index.js";
import type { DecisionEvent } from "../../src/policy/event.js";

export const AGENT = { node: "agent", tags: ["tag:agent"] };

export interface Counting {
  port: number;
  url: string;
  /** HTTP requests received. */
  hits: number;
  /** TCP connections accepted. */
  conns: number;
  /** Bodies received, in order. */
  bodies: string[];
  close(): Promise<void>;
}

/** countingServer starts an HTTP server on 127.0.0.1 that counts connections and requests. */
export async function countingServer(handler?: (req: http.IncomingMessage, res: http.ServerResponse, body: string) => void): Promise<Counting> {
  const c = { port: 0, url: "", hits: 0, conns: 0, bodies: [] as string[] } as Counting;
  const server = http.createServer((req, res) => {
    c.hits++;
    const chunks: Buffer[] = [];
    req.on("data", (d: Buffer) => chunks.push(d));
    req.on("end", () => {
      const body = Buffer.concat(chunks).toString("utf8");
      c.bodies.push(body);
      if (handler) handler(req, res, body);
      else res.end("ok");
    });
  });
  server.on("connection", () => c.conns++);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  c.port = (server.address() as AddressInfo).port;
  c.url = `http://127.0.0.1:${c.port}`;
  c.close = () =>
    new Promise<void>((r) => {
      server.closeAllConnections();
      server.close(() => r());
    });
  return c;
}

/** tcpServer counts raw TCP connections and echoes. */
export async function tcpServer(): Promise<{ port: number; conns: number; close(): Promise<void> }> {
  const c = { port: 0, conns: 0 } as { port: number; conns: number; close(): Promise<void> };
  const server = net.createServer((s) => {
    c.conns++;
    s.pipe(s);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  c.port = (server.address() as AddressInfo).port;
  c.close = () => new Promise<void>((r) => server.close(() => r()));
  return c;
}

/** policyOf loads a meshguard policy from rules (and optional tests). */
export function policyOf(rules: object[], extra: object = {}): Policy {
  return loadPolicy(JSON.stringify({ version: 1, rules, ...extra }));
}

let guards: GuardHandle[] = [];

/** guard installs a guard for this test (uninstalled after it). */
export function guard(opts: Partial<GuardOptions> & { rules?: object[] }): GuardHandle {
  const { rules, ...rest } = opts;
  const g = installGuard({ identity: AGENT, ...(rules ? { policy: policyOf(rules) } : {}), intercept: { sdk: false }, ...rest });
  guards.push(g);
  return g;
}

afterEach(() => {
  for (const g of guards) g.uninstall();
  guards = [];
});

/** denied awaits a promise expected to fail with PolicyDeniedError (possibly as a cause) and returns the error. */
export async function denied(p: Promise<unknown>): Promise<Error & { code?: string; ruleId?: string; reason?: string }> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e as Error,
  );
  expect(err, "expected the call to be denied").toBeDefined();
  let e: unknown = err;
  for (let i = 0; i < 5 && e && (e as { code?: string }).code !== "MESHGUARD_POLICY_DENIED"; i++) e = (e as { cause?: unknown }).cause;
  expect((e as { code?: string })?.code, `expected MESHGUARD_POLICY_DENIED, got ${String(err)}`).toBe("MESHGUARD_POLICY_DENIED");
  return e as Error & { code?: string };
}

/** httpGet does a node:http GET and resolves with the status and body. */
export function httpGet(url: string | URL, opts: http.RequestOptions = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, opts, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (d: Buffer) => chunks.push(d));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end();
  });
}

export const allowHttp = (host: string, extra: object = {}) => ({ id: `http-${host.replace(/\*/g, "any")}`, src: ["tag:agent"], http: { host: [host], ...extra } });
export const allowTcp = (host: string, port: number | string = "*") => ({ id: `tcp-${host.replace(/\*/g, "any")}`, src: ["tag:agent"], tcp: { host: [host], port: [port] } });

// ---- issue 7: the bypass suite's fixtures ----
// Every server below counts what reaches it at the lowest level it can see
// (connections, bytes, datagrams, DNS queries), so that a test asserting
// "zero" cannot pass because a request arrived in a shape a parser ignored.

/** One HTTP request as a Victim parsed it off the wire. */
export interface WireRequest {
  method: string;
  path: string;
  headers: Record<string, string>;
  body: string;
}

/** A server on one address that counts every connection and every byte, and parses HTTP/1.1 requests itself. */
export interface Victim {
  host: string;
  port: number;
  /** `http://host:port` (IPv6 in brackets). */
  url: string;
  /** TCP connections accepted. */
  conns: number;
  /** Bytes received, over all connections. */
  bytes: number;
  /** Requests parsed, in order. */
  requests: WireRequest[];
  /** The local address each accepted connection arrived on (what the client connected to), with the first line it sent. */
  accepted: { localAddress: string; firstLine: string }[];
  /** Requests whose path starts with `prefix` (all when omitted). */
  hits(prefix?: string): number;
  /** A copy of the counters, to compare with later. */
  snapshot(): { conns: number; bytes: number; requests: number };
  close(): Promise<void>;
}

/**
 * victim starts a TCP server on `host` (default 127.0.0.1; any 127/8 address
 * and ::1 work on Linux) that answers every HTTP request `200 ok`
 * (keep-alive; `respond` may choose another answer). It parses requests
 * itself (Content-Length and chunked bodies) so that every byte is counted:
 * Node's HTTP server reads sockets below the 'data' event.
 */
export async function victim(
  host = "127.0.0.1",
  port = 0,
  respond?: (req: WireRequest) => { status?: number; headers?: Record<string, string>; body?: string },
): Promise<Victim> {
  const v = { host, port, url: "", conns: 0, bytes: 0, requests: [] as WireRequest[], accepted: [] as Victim["accepted"] } as Victim;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((sock) => {
    v.conns++;
    sockets.add(sock);
    sock.on("close", () => sockets.delete(sock));
    sock.on("error", () => {});
    const entry = { localAddress: sock.localAddress ?? "", firstLine: "" };
    v.accepted.push(entry);
    let buf = Buffer.alloc(0);
    sock.on("data", (d: Buffer) => {
      v.bytes += d.length;
      buf = Buffer.concat([buf, d]);
      if (entry.firstLine === "") {
        const nl = buf.indexOf("\r\n");
        entry.firstLine = (nl < 0 ? buf : buf.subarray(0, nl)).toString("latin1");
      }
      for (;;) {
        const parsed = parseRequest(buf);
        if (parsed === undefined) break;
        buf = buf.subarray(parsed.used);
        v.requests.push(parsed.req);
        const r = respond?.(parsed.req) ?? {};
        const body = r.body ?? "ok";
        const head = [`HTTP/1.1 ${r.status ?? 200} X`, `content-length: ${Buffer.byteLength(body)}`, ...Object.entries(r.headers ?? {}).map(([k, val]) => `${k}: ${val}`)];
        if (parsed.req.method === "CONNECT") head.splice(1, 1);
        sock.write(head.join("\r\n") + "\r\n\r\n" + body);
      }
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  v.port = (server.address() as AddressInfo).port;
  v.url = `http://${host.includes(":") ? `[${host}]` : host}:${v.port}`;
  v.hits = (prefix = "") => v.requests.filter((r) => r.path.startsWith(prefix)).length;
  v.snapshot = () => ({ conns: v.conns, bytes: v.bytes, requests: v.requests.length });
  v.close = () =>
    new Promise<void>((r) => {
      for (const s of sockets) s.destroy();
      server.close(() => r());
    });
  return v;
}

function parseRequest(buf: Buffer): { req: WireRequest; used: number } | undefined {
  const end = buf.indexOf("\r\n\r\n");
  if (end < 0) return undefined;
  const lines = buf.subarray(0, end).toString("latin1").split("\r\n");
  const [method = "", path = ""] = (lines[0] ?? "").split(" ");
  const headers: Record<string, string> = {};
  for (const l of lines.slice(1)) {
    const i = l.indexOf(":");
    if (i > 0) headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
  }
  let at = end + 4;
  let body = "";
  if (/chunked/i.test(headers["transfer-encoding"] ?? "")) {
    const parts: Buffer[] = [];
    for (;;) {
      const nl = buf.indexOf("\r\n", at);
      if (nl < 0) return undefined;
      const size = parseInt(buf.subarray(at, nl).toString("latin1"), 16);
      if (!Number.isFinite(size)) return undefined;
      if (buf.length < nl + 2 + size + 2) return undefined;
      parts.push(buf.subarray(nl + 2, nl + 2 + size));
      at = nl + 2 + size + 2;
      if (size === 0) break;
    }
    body = Buffer.concat(parts).toString("latin1");
  } else {
    const n = Number(headers["content-length"] ?? 0);
    if (buf.length < at + n) return undefined;
    body = buf.subarray(at, at + n).toString("latin1");
    at += n;
  }
  return { req: { method, path, headers, body }, used: at };
}

/** A UDP server counting datagrams. */
export interface UdpVictim {
  host: string;
  port: number;
  datagrams: string[];
  close(): Promise<void>;
}

/** udpVictim binds a UDP socket on `host` (port 0 picks one) and records every datagram. */
export async function udpVictim(host = "127.0.0.1", port = 0): Promise<UdpVictim> {
  const s = dgram.createSocket(host.includes(":") ? "udp6" : "udp4");
  const v = { host, port, datagrams: [] as string[] } as UdpVictim;
  s.on("message", (m) => v.datagrams.push(m.toString("latin1")));
  await new Promise<void>((resolve, reject) => {
    s.once("error", reject);
    s.bind(port, host, () => resolve());
  });
  v.port = s.address().port;
  v.close = () => new Promise<void>((r) => s.close(() => r()));
  return v;
}

/** A DNS server (UDP) that answers every A query with `answer` and counts the queries by name. */
export interface DnsVictim {
  host: string;
  port: number;
  /** `host:port`, as dns.setServers takes it. */
  server: string;
  queries: { name: string; type: number }[];
  close(): Promise<void>;
}

export async function dnsVictim(answer = "127.0.0.1", host = "127.0.0.1", port = 0): Promise<DnsVictim> {
  // The server runs in a child process: its replies are datagrams too, and
  // the guard in this process would judge them.
  const child = fork(new URL("./fixtures/dns-responder.mjs", import.meta.url), [host, String(port), answer, "a-only,live"], {
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  const v = { host, port: 0, server: "", queries: [] as DnsVictim["queries"] } as DnsVictim;
  const TYPE_CODES: Record<string, number> = { A: 1, PTR: 12, TXT: 16, AAAA: 28, SRV: 33, ANY: 255 };
  await new Promise<void>((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`the DNS victim exited (${code}) before listening on ${host}:${port}`)));
    child.on("message", (m: { port?: number; query?: { name: string; type: string }; error?: string }) => {
      if (m.error !== undefined) reject(new Error(`the DNS victim could not listen on ${host}:${port}: ${m.error}`));
      if (m.port !== undefined) {
        v.port = m.port;
        resolve();
      }
      if (m.query !== undefined) v.queries.push({ name: m.query.name, type: TYPE_CODES[m.query.type] ?? Number(m.query.type) });
    });
  });
  child.removeAllListeners("exit");
  v.server = `${host}:${v.port}`;
  v.close = () =>
    new Promise<void>((r) => {
      if (child.exitCode !== null) return r();
      child.once("exit", () => r());
      child.kill();
    });
  return v;
}

/** A lookup function (the `lookup` option of net/http/dgram) that answers every name with `ip`, recording the names asked. */
export function fixedLookup(ip: string): { fn: net.LookupFunction; calls: string[] } {
  const calls: string[] = [];
  const family = net.isIP(ip) === 6 ? 6 : 4;
  const fn = (host: string, opts: { all?: boolean } | number | undefined, cb: (err: Error | null, addr: unknown, fam?: number) => void) => {
    calls.push(host);
    const all = typeof opts === "object" && opts !== null && opts.all === true;
    if (all) cb(null, [{ address: ip, family }]);
    else cb(null, ip, family);
  };
  return { fn: fn as unknown as net.LookupFunction, calls };
}

/** settle waits long enough for a connection or datagram that was going to arrive on loopback to have arrived. */
export const settle = (ms = 60) => new Promise<void>((r) => setTimeout(r, ms));

/** until polls `cond` every 5 ms up to `ms` (for positive controls: the hit that must arrive). */
export async function until(cond: () => boolean, ms = 2000): Promise<boolean> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) return false;
    await new Promise((r) => setTimeout(r, 5));
  }
  return true;
}

/** outcome waits until a client socket connects, fails or closes, and says which (never rejects). */
export function outcome(sock: net.Socket): Promise<{ connected: boolean; error?: Error }> {
  return new Promise((resolve) => {
    let error: Error | undefined;
    sock.on("error", (e) => (error = e));
    sock.once("connect", () => {
      resolve({ connected: true });
      sock.destroy();
    });
    sock.once("close", () => resolve({ connected: false, ...(error ? { error } : {}) }));
  });
}

/** settled turns a promise into its outcome, never rejecting. */
export function settled<T>(p: Promise<T>): Promise<{ ok: true; value: T } | { ok: false; error: unknown }> {
  return p.then(
    (value) => ({ ok: true as const, value }),
    (error: unknown) => ({ ok: false as const, error }),
  );
}

/** isDenied tells whether an error is (or wraps) a PolicyDeniedError. */
export function isDenied(err: unknown): boolean {
  let e: unknown = err;
  for (let i = 0; i < 6 && e; i++) {
    if ((e as { code?: string }).code === "MESHGUARD_POLICY_DENIED") return true;
    e = (e as { cause?: unknown }).cause;
  }
  return false;
}

/** decisions records the guard's decision events (and warnings) from now on. */
export function recorder(g: GuardHandle): { decisions: DecisionEvent[]; warnings: Error[]; clear(): void } {
  const r = { decisions: [] as DecisionEvent[], warnings: [] as Error[], clear: () => void ((r.decisions.length = 0), (r.warnings.length = 0)) };
  g.on("decision", (ev) => r.decisions.push(ev));
  g.on("warning", (err) => r.warnings.push(err));
  return r;
}

/**
 * catchCrashes runs `fn` with the process's uncaughtException and
 * unhandledRejection handlers replaced by recorders, and returns what they
 * caught: an exception a diagnostics_channel subscriber throws reaches
 * `uncaughtException` on the next tick, and without a handler ends the
 * process. The handlers in place (vitest's) are restored afterwards.
 */
export async function catchCrashes(fn: () => Promise<void>): Promise<unknown[]> {
  const caught: unknown[] = [];
  const events = ["uncaughtException", "unhandledRejection"] as const;
  const saved = events.map((e) => process.listeners(e as "uncaughtException"));
  const rec = (err: unknown) => void caught.push(err);
  for (const e of events) {
    process.removeAllListeners(e);
    process.on(e, rec);
  }
  try {
    await fn();
    await settle(20);
  } finally {
    events.forEach((e, i) => {
      process.removeAllListeners(e);
      for (const l of saved[i]!) process.on(e, l);
    });
  }
  return caught;
}

/** The policy format version that knows the `dns` and `udp` target kinds (issue 7 item 3: the change is versioned). */
export const KINDS_VERSION = 2;

/** policyWithKinds loads a policy that may use the `dns` and `udp` kinds. */
export function policyWithKinds(rules: object[]): Policy {
  return policyOf(rules, { version: KINDS_VERSION });
}

/** A DNS look-up of one of `names` (globs), issue 7's `{ kind: "dns", name }` target. */
export const allowDns = (names: string[], server?: string[]) => ({
  id: `dns-${names.join("-").replace(/[^A-Za-z0-9]/g, "_")}`,
  src: ["tag:agent"],
  dns: server === undefined ? { name: names } : { name: names, server },
});
/** UDP datagrams to host:port (a DNS server other than the system's is one). */
export const allowUdp = (host: string, port: number | string = "*") => ({ id: `udp-${host.replace(/[^A-Za-z0-9]/g, "_")}`, src: ["tag:agent"], udp: { host: [host], port: [port] } });
/** A deny rule for a host pattern (a name or a CIDR range), on http and tcp. */
export const denyHost = (host: string) => [
  { id: `deny-http-${host.replace(/[^A-Za-z0-9]/g, "_")}`, src: ["*"], effect: "deny", http: { host: [host] } },
  { id: `deny-tcp-${host.replace(/[^A-Za-z0-9]/g, "_")}`, src: ["*"], effect: "deny", tcp: { host: [host], port: ["*"] } },
];

/**
 * samePortPair starts one server on 127.0.0.1 and another on 127.0.0.2 at
 * the same port (the allowed one and the one no rule allows: only the
 * address differs), retrying when that port is taken on 127.0.0.2.
 */
export async function samePortPair<S extends { port: number; close(): Promise<void> }>(start: (host: string, port?: number) => Promise<S>): Promise<[S, S]> {
  for (let i = 0; ; i++) {
    const a = await start("127.0.0.1");
    try {
      return [a, await start("127.0.0.2", a.port)];
    } catch (err) {
      await a.close();
      if (i > 5) throw err;
    }
  }
}
