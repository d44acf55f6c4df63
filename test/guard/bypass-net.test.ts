// Issue 7, items 1, 2, 3 (connections) and 5: every family of calls a
// security review found reaching a host the policy does not allow, or
// taking the process down. Each case counts what reaches a local server
// (connections and bytes, read off the socket) and expects zero; each has a
// positive control — the same code aimed at the allowed server gets its hit
// — so no case can pass by breaking everything. The family is the first word
// of each title ("net:"), the helper that closes it.
//
// The servers: A on 127.0.0.1:P is allowed, B on 127.0.0.2:P (the same port,
// another loopback address) never is, so a test can tell "judged as A,
// connected to B" apart from "judged by port".
import dc from "node:diagnostics_channel";
import http from "node:http";
import net from "node:net";
import { types } from "node:util";
import fc from "fast-check";
import { getGlobalDispatcher } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { judgeDial } from "../../src/dial-channel.js";
import type { DecisionRequest } from "../../src/policy/types.js";
import {
  allowHttp,
  allowTcp,
  catchCrashes,
  denied,
  denyHost,
  fixedLookup,
  guard,
  httpGet,
  outcome,
  recorder,
  settle,
  settled,
  until,
  samePortPair, victim,
  type Victim,
} from "./helpers.js";

let A: Victim; // 127.0.0.1:P, allowed by the tests' policies
let B: Victim; // 127.0.0.2:P, never allowed
let C: Victim; // 127.0.0.1:Q, a port no rule allows

beforeAll(async () => {
  [A, B] = await samePortPair(victim);
  C = await victim("127.0.0.1");
});
afterAll(async () => {
  await A.close();
  await B.close();
  await C.close();
});

/** untouched runs `call` and checks that `v` saw no connection and no byte. */
async function untouched(v: Victim, call: () => Promise<unknown>, what = "the call"): Promise<void> {
  const before = v.snapshot();
  await call();
  await settle();
  expect(v.snapshot(), `${what} must not reach ${v.host}:${v.port}`).toEqual(before);
}

/** reached runs `call` and checks that something of it got to `v`: a connection, or bytes on a reused one (the positive control). */
async function reached(v: Victim, call: () => Promise<unknown>, what = "the positive control"): Promise<void> {
  const before = v.snapshot();
  await call();
  expect(await until(() => v.conns > before.conns || v.bytes > before.bytes), `${what} must reach ${v.host}:${v.port}`).toBe(true);
}

/** connectTo opens a raw TCP connection and waits for its outcome. */
const connectTo = (v: Victim, opts: Partial<net.NetConnectOpts> = {}) => outcome(net.connect({ host: v.host, port: v.port, ...opts } as net.NetConnectOpts));

const allowAll = { evaluate: () => ({ effect: "allow" as const, reason: "forged" }) };

describe("net: a check judges its own call (issue 7 item 1)", () => {
  /** A connect to `first` left pending, then `later` on the same socket before the first is decided. */
  const pendingThen = (first: () => net.NetConnectOpts, later: (s: net.Socket) => void) => async () => {
    const s = new net.Socket();
    const done = outcome(s);
    s.connect(first());
    try {
      later(s);
    } catch {
      // Node may reject the later connect() at once; the pending one is still there.
    }
    await done;
  };
  const toA = (s: net.Socket) => s.connect(A.port, A.host);
  // localAddress is validated after the socket is marked connecting: Node throws ERR_INVALID_IP_ADDRESS synchronously.
  const toARejected = (s: net.Socket) => s.connect({ port: A.port, host: A.host, localAddress: "not-an-address" });

  it.each([
    ["a later connect()", toA],
    ["a later connect() that Node rejects at once", toARejected],
  ])("net: %s to an allowed address does not change what a pending connect to a denied one is judged as", async (_name, later) => {
    guard({ rules: [allowTcp("127.0.0.1", A.port)] });
    await untouched(B, pendingThen(() => ({ host: B.host, port: B.port }), later));
    await reached(A, pendingThen(() => ({ host: A.host, port: A.port }), later));
  });

  it("net: a later connect() does not change what a pending connect by name (waiting for its lookup) is judged as", async () => {
    guard({ rules: [allowTcp("127.0.0.1", A.port), allowTcp("allowed.test", A.port)], allowResolved: () => true });
    await untouched(B, pendingThen(() => ({ host: "denied.test", port: B.port, lookup: fixedLookup(B.host).fn }), toA));
    await reached(A, pendingThen(() => ({ host: "allowed.test", port: A.port, lookup: fixedLookup(A.host).fn }), toA));
  });
});

describe("net: marks on sockets cannot be forged (issue 7 item 1)", () => {
  // The names meshguard 0.1 used for its socket marks. After the fix they must mean nothing.
  const NAMES = ["meshguard.guard.internal", "meshguard.guard.pass", "meshguard.guard.undici", "meshguard.guard.http", "meshguard.guard.dest"];

  /** Values a forger would try for a mark: a flag, or an attachment naming the destination as already judged. */
  const forgeries = (v: Victim): unknown[] => [true, 1, { host: v.host, port: v.port, verdict: undefined }, { host: v.host, port: v.port, tls: false }];

  /** markedConnect sets `marks` on a fresh socket and connects it to `v`. */
  const markedConnect = (v: Victim, marks: [symbol, unknown][]) => async () => {
    const s = new net.Socket() as net.Socket & Record<symbol, unknown>;
    for (const [k, val] of marks) s[k] = val;
    const done = outcome(s);
    s.connect(v.port, v.host);
    await done;
  };

  it.each(NAMES)("net: a socket carrying Symbol.for(%j) is still checked", async (name) => {
    guard({ rules: [allowTcp("127.0.0.1", A.port)] });
    const key = Symbol.for(name);
    for (const val of forgeries(B)) await untouched(B, markedConnect(B, [[key, val]]), `a socket marked ${name}=${JSON.stringify(val)}`);
    await reached(A, markedConnect(A, [[key, true]]));
  });

  it("net: marks copied from sockets the guard passed (an allowed request's socket) do not let another socket through", async () => {
    guard({ rules: [allowTcp("127.0.0.1", A.port), allowHttp("127.0.0.1", { port: [A.port] })] });
    const plain = new Set(Object.getOwnPropertySymbols(new net.Socket()));
    const seen: net.Socket[] = [];
    const onSocket = (m: unknown) => void seen.push((m as { socket: net.Socket }).socket);
    dc.subscribe("net.client.socket", onSocket);
    try {
      await httpGet(`${A.url}/ok`, { agent: false });
      await connectTo(A);
    } finally {
      dc.unsubscribe("net.client.socket", onSocket);
    }
    const copied: [symbol, unknown][] = [];
    for (const s of seen) for (const k of Object.getOwnPropertySymbols(s)) if (!plain.has(k)) copied.push([k, (s as unknown as Record<symbol, unknown>)[k]]);
    await untouched(B, markedConnect(B, copied), `a socket carrying ${copied.map(([k]) => String(k)).join(", ")}`);
    await reached(A, markedConnect(A, copied));
  });

  it("net: the marks of the guard's own connection (its approval webhook, seen on net.client.socket) do not let a user socket through", async () => {
    // The webhook answers no: the guard's own POST is its one unchecked connection here.
    const hook = await victim("127.0.0.1", 0, () => ({ headers: { "content-type": "application/json" }, body: '{"approved":false}' }));
    try {
      guard({
        rules: [allowTcp("127.0.0.1", A.port), { id: "ask", src: ["tag:agent"], effect: "approve", http: { host: ["127.0.0.1"], port: [A.port], path: ["/ask"] } }],
        approvals: { webhook: `${hook.url}/hook` },
      });
      const plain = new Set(Object.getOwnPropertySymbols(new net.Socket()));
      const seen: net.Socket[] = [];
      const onSocket = (m: unknown) => void seen.push((m as { socket: net.Socket }).socket);
      dc.subscribe("net.client.socket", onSocket);
      try {
        await denied(fetch(`${A.url}/ask`));
      } finally {
        dc.unsubscribe("net.client.socket", onSocket);
      }
      expect(hook.hits("/hook"), "the webhook was asked").toBe(1);
      const copied: [symbol, unknown][] = [];
      for (const s of seen) for (const k of Object.getOwnPropertySymbols(s)) if (!plain.has(k)) copied.push([k, (s as unknown as Record<symbol, unknown>)[k]]);
      await untouched(B, markedConnect(B, copied), `a socket carrying the webhook socket's ${copied.map(([k]) => String(k)).join(", ")}`);
      await reached(A, markedConnect(A, copied));
    } finally {
      await hook.close();
    }
  });
});

describe("net: the process-wide handle (issue 7 item 1)", () => {
  /** Every value meshguard keeps on globalThis (found by name, as any code in the process can). */
  const handles = (): [symbol, unknown][] =>
    Object.getOwnPropertySymbols(globalThis)
      .filter((s) => /meshguard/i.test(s.description ?? ""))
      .map((s) => [s, (globalThis as unknown as Record<symbol, unknown>)[s]]);

  /** Everything reachable from `root` through own properties (getters invoked, as an attacker would), to depth 4. */
  function reachable(root: unknown): { path: string; value: unknown }[] {
    const out: { path: string; value: unknown }[] = [];
    const seen = new Set<unknown>();
    const walk = (v: unknown, path: string, depth: number) => {
      out.push({ path, value: v });
      if ((typeof v !== "object" && typeof v !== "function") || v === null || seen.has(v) || depth > 4) return;
      seen.add(v);
      for (const k of Reflect.ownKeys(v)) {
        let child: unknown;
        try {
          child = (v as Record<PropertyKey, unknown>)[k];
        } catch {
          continue;
        }
        walk(child, `${path}.${String(k)}`, depth + 1);
      }
    };
    walk(root, "", 0);
    return out;
  }

  it("net: every meshguard value on globalThis is frozen and reaches no guard state, evaluator or context to mark a call", () => {
    guard({ rules: [allowTcp("127.0.0.1", A.port)] });
    const found = handles();
    for (const [sym, v] of found) {
      for (const { path, value } of reachable(v)) {
        const where = `globalThis[${String(sym)}]${path}`;
        if ((typeof value === "object" || typeof value === "function") && value !== null) {
          expect(Object.isFrozen(value), `${where} must be frozen`).toBe(true);
          expect(typeof (value as { evaluate?: unknown }).evaluate, `${where} must not be an evaluator`).not.toBe("function");
          expect(typeof (value as { run?: unknown; enterWith?: unknown }).enterWith, `${where} must not be an async context a caller can enter`).not.toBe("function");
        }
        expect(/(^|\.)(core|evaluator|state|undiciConnect|principal)$/.test(path), `${where} must not expose guard state`).toBe(false);
      }
    }
  });

  it("net: writing through the process-wide handle does not turn the guard off or widen it", async () => {
    guard({ rules: [allowTcp("127.0.0.1", A.port)] });
    const undo: (() => void)[] = [];
    const set = (o: Record<PropertyKey, unknown>, k: PropertyKey, v: unknown) => {
      const had = Object.getOwnPropertyDescriptor(o, k);
      try {
        o[k] = v;
      } catch {
        return; // frozen: good
      }
      undo.push(() => {
        try {
          if (had) Object.defineProperty(o, k, had);
          else delete o[k];
        } catch {
          // frozen after all
        }
      });
    };
    try {
      for (const [, v] of handles()) {
        for (const { value } of reachable(v)) {
          if ((typeof value !== "object" && typeof value !== "function") || value === null) continue;
          const o = value as Record<PropertyKey, unknown>;
          if (typeof o.evaluate === "function") set(o, "evaluate", allowAll.evaluate);
          if ("evaluator" in o) set(o, "evaluator", allowAll);
          if ("core" in o) set(o, "core", undefined);
          if ("undiciConnect" in o) set(o, "undiciConnect", { host: B.host, port: B.port });
        }
      }
      await untouched(B, () => connectTo(B), "a raw connect after the handle was written to");
      await untouched(B, () => settled(httpGet(`${B.url}/x`)), "an http request after the handle was written to");
      await untouched(B, () => settled(fetch(`${B.url}/x`)), "a fetch after the handle was written to");
    } finally {
      for (const u of undo.reverse()) u();
    }
    await reached(A, () => connectTo(A));
  });

  it("net: an async context found on the process-wide handle cannot be entered to skip the check (tailnet dials and connections)", async () => {
    guard({ rules: [allowTcp("127.0.0.1", A.port), allowTcp("allowed-peer", 7101)] });
    const node = { hostname: "agent", peers: async () => [] };
    const contexts = handles()
      .flatMap(([, v]) => reachable(v).map((r) => r.value))
      .filter((v): v is { run: (s: unknown, f: () => unknown) => unknown } => typeof (v as { run?: unknown })?.run === "function" && typeof (v as { enterWith?: unknown })?.enterWith === "function");
    for (const als of contexts) {
      for (const store of [true, 1, {}]) {
        await als.run(store, () => untouched(B, () => connectTo(B), "a connect inside the guard's own context"));
        const dial = await settled(Promise.resolve().then(() => als.run(store, () => judgeDial(node, "denied-peer", 7102))));
        expect(dial.ok, "a tailnet dial inside the guard's own context must still be judged (denied)").toBe(false);
      }
    }
    // Positive controls: the harness does reach A, and an allowed dial is allowed.
    await reached(A, () => connectTo(A));
    expect((await settled(Promise.resolve().then(() => judgeDial(node, "allowed-peer", 7101)))).ok).toBe(true);
  });

  it("net: the unguarded dispatcher behind the guard's global one is still judged", async () => {
    guard({ rules: [allowHttp("127.0.0.1", { port: [A.port] })] });
    const inner = (getGlobalDispatcher() as unknown as { inner?: unknown }).inner;
    if (inner !== undefined) {
      await untouched(B, () => settled(fetch(`${B.url}/x`, { dispatcher: inner } as RequestInit)), "fetch through the inner dispatcher");
    }
    await reached(A, () => fetch(`${A.url}/ok`).then((r) => r.text()));
  });
});

describe("net: forged diagnostics-channel messages grant nothing (issue 7 item 1)", () => {
  const beforeConnect = dc.channel("undici:client:beforeConnect");

  /** forgedRaw announces an undici connection to `v` as undici would, then opens a raw socket there and writes a request the HTTP rule denies. */
  const forgedRaw = (v: Victim) => async () => {
    beforeConnect.publish({ connectParams: { host: `${v.host}:${v.port}`, hostname: v.host, protocol: "http:", port: String(v.port), servername: null, localAddress: null }, connector: () => {} });
    const s = net.connect(v.port, v.host);
    s.on("error", () => {});
    s.write(`POST /secret HTTP/1.1\r\nhost: ${v.host}\r\ncontent-length: 0\r\n\r\n`);
    await outcome(s);
  };

  it("net: a forged undici:client:beforeConnect does not let a raw socket reach an origin an HTTP rule allows (for another path)", async () => {
    const T = await victim("127.0.0.1"); // allowed as raw TCP: the positive control's target
    try {
      guard({ rules: [allowHttp("127.0.0.1", { port: [A.port], path: ["/public"] }), allowTcp("127.0.0.1", T.port)] });
      // An allowed request makes A's origin "in use" (how undici's own connection is attributed).
      expect(await (await fetch(`${A.url}/public`)).text()).toBe("ok");
      const before = A.hits("/secret");
      await untouched(A, forgedRaw(A), "a raw socket after a forged beforeConnect");
      expect(A.hits("/secret")).toBe(before);
      await reached(T, forgedRaw(T));
      expect(await until(() => T.hits("/secret") === 1)).toBe(true);
    } finally {
      await T.close();
    }
  });

  it("net: a raw socket opened in the same tick as a real undici connection to the same origin is not taken for undici's", async () => {
    // Fresh servers: undici must open a new connection (a pooled one announces nothing).
    const H = await victim("127.0.0.1"); // allowed by an HTTP rule for one path only
    const T = await victim("127.0.0.1"); // allowed as raw TCP: the positive control's target
    try {
      guard({ rules: [allowHttp("127.0.0.1", { port: [H.port, T.port], path: ["/public"] }), allowTcp("127.0.0.1", T.port)] });
      /** The global WebSocket (undici) connects synchronously in its constructor; a raw socket follows at once. */
      const sameTick = (v: Victim) => async () => {
        const ws = new WebSocket(`ws://${v.host}:${v.port}/public`);
        ws.onerror = () => {};
        const s = net.connect(v.port, v.host);
        s.on("error", () => {});
        s.write(`POST /secret HTTP/1.1\r\nhost: ${v.host}\r\ncontent-length: 0\r\n\r\n`);
        await outcome(s);
        await settle();
        ws.close();
      };
      await sameTick(H)();
      expect(H.hits("/public"), "undici's own upgrade request went out").toBe(1);
      expect(H.hits("/secret"), "a raw request no rule allows, on a socket opened next to undici's").toBe(0);
      await sameTick(T)();
      expect(await until(() => T.hits("/secret") > 0), "positive control: the same code where raw TCP is allowed").toBe(true);
    } finally {
      await H.close();
      await T.close();
    }
  });

  it("net: a forged undici:client:beforeConnect does not turn a tailnet dial into an HTTP client's connection", async () => {
    guard({ rules: [allowHttp("peer.test", { port: [A.port], path: ["/public"] }), allowTcp("allowed-peer", A.port)] });
    // The allowed request (its connection fails: the name does not resolve here) leaves peer.test's origin "in use".
    await settled(fetch(`http://peer.test:${A.port}/public`));
    const node = { hostname: "agent", peers: async () => [] };
    const dialAfterForgery = (host: string) =>
      settled(
        Promise.resolve().then(() => {
          beforeConnect.publish({ connectParams: { host: `${host}:${A.port}`, hostname: host, protocol: "http:", port: String(A.port) }, connector: () => {} });
          return judgeDial(node, host, A.port);
        }),
      );
    expect((await dialAfterForgery("peer.test")).ok, "a dial to an HTTP-only origin needs a tcp rule").toBe(false);
    expect((await dialAfterForgery("allowed-peer")).ok, "positive control: a dial a tcp rule allows").toBe(true);
  });
});

describe("net: node:http is judged as it goes on the wire (issue 7 item 2)", () => {
  /** A node:http request created as `GET /public`, changed by `mutate` before end(). */
  const mutated = (v: Victim, mutate: (req: http.ClientRequest) => void, opts: http.RequestOptions = {}, body?: string) => () =>
    new Promise<void>((resolve) => {
      const req = http.request({ host: v.host, port: v.port, method: "GET", path: "/public", agent: false, ...opts });
      req.on("error", () => resolve());
      req.on("response", (res) => {
        res.resume();
        res.on("end", () => resolve());
      });
      req.on("close", () => resolve());
      mutate(req);
      req.end(body);
    });

  const cases: { name: string; rules: () => object[]; bad: (r: http.ClientRequest) => void; good: (r: http.ClientRequest) => void; opts?: http.RequestOptions; badBody?: string; goodBody?: string }[] = [
    { name: "req.method changed after creation", rules: () => [allowHttp("127.0.0.1", { port: [A.port], method: ["GET"], path: ["/public"] })], bad: (r) => void (r.method = "DELETE"), good: (r) => void (r.method = "GET") },
    { name: "req.path changed after creation", rules: () => [allowHttp("127.0.0.1", { port: [A.port], method: ["GET"], path: ["/public"] })], bad: (r) => void (r.path = "/secret"), good: (r) => void (r.path = "/public") },
    {
      name: "a header set after creation that a deny rule names",
      rules: () => [allowHttp("127.0.0.1", { port: [A.port] }), { id: "no-admin", src: ["*"], effect: "deny", http: { host: ["127.0.0.1"] }, when: { headers: { "x-admin": "*" } } }],
      bad: (r) => r.setHeader("x-admin", "1"),
      good: (r) => r.setHeader("x-other", "1"),
    },
    {
      name: "a header an allow rule requires, removed after creation",
      rules: () => [{ ...allowHttp("127.0.0.1", { port: [A.port] }), when: { headers: { "x-env": "test" } } }],
      opts: { headers: { "x-env": "test" } },
      bad: (r) => r.removeHeader("x-env"),
      good: (r) => r.setHeader("x-env", "test"),
    },
    {
      name: "the declared body size raised after creation",
      rules: () => [{ ...allowHttp("127.0.0.1", { port: [A.port] }), when: { maxBodyBytes: 16 } }],
      opts: { method: "POST", headers: { "content-length": "4" } },
      bad: (r) => r.setHeader("content-length", "1000"),
      badBody: "x".repeat(1000),
      good: (r) => r.setHeader("content-length", "4"),
      goodBody: "tiny",
    },
    {
      name: "the declared body size removed after creation (a streamed body of unknown size)",
      rules: () => [{ ...allowHttp("127.0.0.1", { port: [A.port] }), when: { maxBodyBytes: 16 } }],
      opts: { method: "POST", headers: { "content-length": "4" } },
      bad: (r) => r.removeHeader("content-length"),
      badBody: "x".repeat(1000),
      good: () => {},
      goodBody: "tiny",
    },
  ];

  it.each(cases)("net: $name cannot pass a rule the final request fails (no byte of it leaves)", async (c) => {
    guard({ rules: c.rules() });
    const before = A.snapshot();
    await mutated(A, c.bad, c.opts, c.badBody)();
    await settle();
    // A denied-at-flush request may have connected (host and port are allowed), but sent nothing.
    expect(A.bytes - before.bytes, "bytes of the changed request that reached the server").toBe(0);
    expect(A.requests.length).toBe(before.requests);
    const hits = A.hits("/public");
    await mutated(A, c.good, c.opts, c.goodBody)();
    expect(await until(() => A.hits("/public") > hits), "positive control: the same code with an allowed final request").toBe(true);
  });

  it("net: a request changed after creation on a reused keep-alive socket sends nothing either", async () => {
    guard({ rules: [allowHttp("127.0.0.1", { port: [A.port], method: ["GET"], path: ["/public"] })] });
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const hits = A.hits("/public");
      await mutated(A, () => {}, { agent })();
      expect(A.hits("/public")).toBe(hits + 1);
      const before = A.snapshot();
      await mutated(A, (r) => void (r.path = "/secret"), { agent })();
      await settle();
      expect(A.bytes - before.bytes).toBe(0);
      await mutated(A, (r) => void (r.path = "/public"), { agent })();
      expect(await until(() => A.hits("/public") === hits + 2)).toBe(true);
    } finally {
      agent.destroy();
    }
  });

  it("net: a call denied on host or port opens no connection (node:http and fetch)", async () => {
    guard({ rules: [allowHttp("127.0.0.1", { port: [A.port] })] });
    await untouched(B, () => settled(httpGet(`${B.url}/x`)), "node:http to a denied host");
    await untouched(B, () => settled(fetch(`${B.url}/x`)), "fetch to a denied host");
    await untouched(C, () => settled(httpGet(`${C.url}/x`)), "node:http to a denied port");
    await untouched(C, () => settled(fetch(`${C.url}/x`)), "fetch to a denied port");
    await untouched(C, () => settled(httpGet(`${C.url}/x`, { agent: new http.Agent({ keepAlive: true }) })), "node:http with a keep-alive agent to a denied port");
    await reached(A, () => httpGet(`${A.url}/x`));
    await reached(A, () => fetch(`${A.url}/x`).then((r) => r.text()));
  });

  it("net: the port and host judged never come from the Host header", async () => {
    const g = guard({ rules: [allowHttp("127.0.0.1", { port: [A.port] })] });
    const rec = recorder(g);
    // A connection that starts after the request got it: the guard cannot read the destination from the socket then.
    const late = (o: { port?: number | string | null; host?: string | null }) => {
      const s = new net.Socket();
      process.nextTick(() => s.connect(Number(o.port), String(o.host)));
      return s;
    };
    const spoofed = (v: Victim) => () => settled(httpGet(`${v.url}/x`, { headers: { host: `127.0.0.1:${A.port}` }, createConnection: late } as http.RequestOptions));
    await untouched(C, spoofed(C), "a request to a denied port with the allowed port in its Host header");
    const http_ = rec.decisions.filter((e) => e.target.kind === "http");
    for (const ev of http_) expect(ev.target, `the judged request (${ev.request}) takes its port from the Host header`).toMatchObject({ host: "127.0.0.1", port: C.port });
    await reached(A, spoofed(A));
  });

  const keepAlive = new http.Agent({ keepAlive: true });
  afterAll(() => keepAlive.destroy());

  it("net: one evaluation (one rate token) per call", async () => {
    const rate = (r: object) => ({ ...r, when: { rate: { perMinute: 3 } } });
    for (const [name, call] of [
      ["node:http", () => httpGet(`${A.url}/rate`).then((r) => r.body)],
      ["node:http keep-alive", () => httpGet(`${A.url}/rate`, { agent: keepAlive }).then((r) => r.body)],
      ["fetch", () => fetch(`${A.url}/rate`).then((r) => r.text())],
    ] as const) {
      const g = guard({ rules: [rate(allowHttp("127.0.0.1", { port: [A.port] }))] });
      const rec = recorder(g);
      const hits = A.hits("/rate");
      for (let i = 0; i < 3; i++) {
        rec.clear();
        const r = await settled(call());
        expect(r.ok, `${name}: call ${i + 1} of 3 is within the rate`).toBe(true);
        expect(rec.decisions.length, `${name}: decisions for one call`).toBe(1);
      }
      expect(A.hits("/rate")).toBe(hits + 3);
      await denied(call());
      g.uninstall();
    }
  });
});

describe("net: clients the security model names (WebSocket, node:http2)", () => {
  it("net: the global WebSocket is judged as an HTTP GET of its URL: a denied host or path sends nothing", async () => {
    guard({ rules: [allowHttp("127.0.0.1", { port: [A.port], path: ["/ok"] })] });
    const open = (url: string) => async () => {
      const ws = new WebSocket(url);
      await new Promise<void>((resolve) => {
        ws.onerror = () => resolve();
        ws.onclose = () => resolve();
      });
    };
    await untouched(B, open(`ws://${B.host}:${B.port}/ok`), "a WebSocket to a denied host");
    await untouched(A, open(`ws://${A.host}:${A.port}/secret`), "a WebSocket to a denied path");
    const hits = A.hits("/ok");
    await open(`ws://${A.host}:${A.port}/ok`)();
    expect(await until(() => A.hits("/ok") > hits), "positive control: the allowed path gets the upgrade request").toBe(true);
  });

  it("net: node:http2 is judged by its TCP connection only (an HTTP rule does not open it; a TCP rule does)", async () => {
    const session = (v: Victim) => async () => {
      const { connect } = await import("node:http2");
      const s = connect(`http://${v.host}:${v.port}`);
      await new Promise<void>((resolve) => {
        s.on("error", () => resolve());
        s.on("connect", () => resolve());
        setTimeout(resolve, 300);
      });
      s.destroy();
    };
    guard({ rules: [allowHttp("127.0.0.1", { port: [A.port] })] });
    await untouched(A, session(A), "an HTTP/2 session where only HTTP/1 rules allow the origin");
    await untouched(B, session(B), "an HTTP/2 session to a denied host");
  });

  it("net: (control) node:http2 with a TCP rule reaches the server", async () => {
    guard({ rules: [allowTcp("127.0.0.1", A.port)] });
    const { connect } = await import("node:http2");
    await reached(A, async () => {
      const s = connect(`http://${A.host}:${A.port}`);
      s.on("error", () => {});
      await settle(100);
      s.destroy();
    });
  });
});

describe("net: names and addresses (issue 7 item 3)", () => {
  it("net: what a caller-supplied lookup returns is judged: a CIDR deny rule applies to it", async () => {
    guard({ rules: [allowTcp("api.test", A.port), allowHttp("api.test", { port: [A.port] }), ...denyHost("127.0.0.2/32")], allowResolved: () => true });
    const viaNet = (ip: string) => () => connectTo(A, { host: "api.test", lookup: fixedLookup(ip).fn });
    const viaHttp = (ip: string) => () => settled(httpGet(`http://api.test:${A.port}/x`, { lookup: fixedLookup(ip).fn, agent: false }));
    await untouched(B, viaNet(B.host), "net.connect whose lookup answers a denied address");
    await untouched(B, viaHttp(B.host), "node:http whose lookup answers a denied address");
    await reached(A, viaNet(A.host));
    await reached(A, viaHttp(A.host));
  });

  it("net: a CIDR deny rule applies to the address the guard's own resolver returns", async () => {
    // "127.2" and "127.1" are names to Node (not IP literals); the system resolver turns them into 127.0.0.2 and 127.0.0.1.
    guard({ rules: [allowTcp("*", A.port), allowHttp("*", { port: [A.port] }), ...denyHost("127.0.0.2/32")], allowResolved: () => true });
    await untouched(B, () => connectTo(B, { host: "127.2" }), "net.connect to a name resolving into a denied range");
    await untouched(B, () => settled(httpGet(`http://x/`, { host: "127.2", port: B.port, agent: false })), "node:http to a name resolving into a denied range");
    await reached(A, () => connectTo(A, { host: "127.1" }));
  });

  it("net: a CIDR allow rule applies to the resolved address (the name is looked up, the address judged)", async () => {
    guard({ rules: [allowTcp("127.0.0.1/32", A.port)], allowResolved: () => true });
    await untouched(B, () => connectTo(B, { host: "127.2" }), "a name resolving outside the allowed range");
    await reached(A, () => connectTo(A, { host: "127.1" }), "a name resolving inside the allowed range");
  });

  it("net: `localhost` means loopback only, whatever a custom lookup answers", async () => {
    guard({ rules: [allowTcp("localhost", A.port), allowHttp("localhost", { port: [A.port] })] });
    // 0.0.0.0 is not loopback; Linux delivers a connect to it to the local host (A's listener), so the count shows it.
    await untouched(A, () => connectTo(A, { host: "localhost", lookup: fixedLookup("0.0.0.0").fn }), "net.connect to localhost looked up as 0.0.0.0");
    await untouched(A, () => settled(httpGet(`http://localhost:${A.port}/x`, { lookup: fixedLookup("0.0.0.0").fn, agent: false })), "node:http to localhost looked up as 0.0.0.0");
    await reached(A, () => connectTo(A, { host: "localhost", lookup: fixedLookup("127.0.0.1").fn }));
    await reached(A, () => connectTo(A, { host: "localhost" }), "localhost through the system resolver");
  });

  it.each(["127.0.0.1.", "[127.0.0.1]"])("net: the host %j is judged as the address Node connects to", async (form) => {
    guard({ rules: [allowTcp("127.0.0.1", A.port), allowHttp("127.0.0.1", { port: [A.port] })] });
    // The guard reads the form as the IP literal 127.0.0.1; Node hands it to the lookup, which answers what it likes.
    await untouched(B, () => connectTo(B, { host: form, lookup: fixedLookup(B.host).fn }), `net.connect to ${form} looked up as ${B.host}`);
    await untouched(B, () => settled(httpGet(`http://x/`, { host: form, port: B.port, lookup: fixedLookup(B.host).fn, agent: false })), `node:http to ${form} looked up as ${B.host}`);
    await reached(A, () => connectTo(A, { host: form, lookup: fixedLookup(A.host).fn }));
  });
});

describe("net: the guard never crashes the host (issue 7 item 5)", () => {
  // The channels a guard may subscribe to; the test publishes on those it does (and on the three it must).
  const CANDIDATES = [
    "undici:request:create",
    "undici:request:bodySent",
    "undici:request:headers",
    "undici:request:trailers",
    "undici:request:error",
    "undici:client:sendHeaders",
    "undici:client:beforeConnect",
    "undici:client:connected",
    "undici:client:connectError",
    "undici:proxy:connected",
    "undici:websocket:open",
    "http.client.request.created",
    "http.client.request.start",
    "http.client.request.error",
    "http.client.response.finish",
    "net.client.socket",
    "udp.socket",
    "child_process",
    "worker_threads",
    "meshguard:tailnet:dial",
  ];
  const MUST = ["undici:request:create", "undici:client:beforeConnect", "meshguard:tailnet:dial"];

  const boom = () => {
    throw new Error("hostile getter");
  };
  const hostileProxy = () => new Proxy({}, { get: boom, has: boom, ownKeys: boom, getOwnPropertyDescriptor: boom, getPrototypeOf: boom });
  /** Shapes written to hurt: proxies and getters that throw, wrong types in every field, frozen objects. */
  const hostile = (): unknown[] => [
    null,
    undefined,
    0,
    "",
    Symbol("x"),
    10n,
    [],
    () => {},
    hostileProxy(),
    { request: hostileProxy() },
    { request: { get origin() { return boom(); }, method: "GET", path: "/" } },
    { request: { origin: `http://127.0.0.2:${B.port}`, method: {}, path: Symbol("p") } },
    { request: { origin: { toString: boom }, method: { toString: boom }, path: { toString: boom }, headers: hostileProxy() } },
    { request: Object.freeze({ origin: `http://127.0.0.2:${B.port}`, method: "GET", path: "/" }) },
    { request: { origin: `http://127.0.0.2:${B.port}`, method: "POST", path: "/v1/chat/completions", body: hostileProxy(), headers: ["content-length"] } },
    { connectParams: hostileProxy() },
    { connectParams: { hostname: { toString: boom }, port: Symbol("p"), protocol: 7 } },
    { connectParams: { hostname: ["127.0.0.2"], port: { valueOf: boom } } },
    { get connectParams() { return boom(); } },
    { socket: hostileProxy() },
    { verdict: { deny: boom, hold: boom }, host: "denied-peer", port: 7102, node: { hostname: "agent" } },
    { verdict: { deny: boom, hold: boom }, host: { toString: boom }, port: "x", node: hostileProxy() },
    { verdict: hostileProxy(), host: "denied-peer", port: 7102 },
    { verdict: { deny: () => {}, hold: () => {}, get denied() { return boom(); } }, host: 42, port: null, node: null },
  ];

  it("net: garbage on every channel the guard subscribes to is contained: the process lives, the call is denied, a warning is emitted", async () => {
    const subscribedBefore = new Set(CANDIDATES.filter((n) => dc.hasSubscribers(n)));
    const g = guard({ rules: [allowHttp("127.0.0.1", { port: [A.port], path: ["/ok"] }), allowTcp("127.0.0.1", A.port)] });
    const rec = recorder(g);
    const channels = [...new Set([...CANDIDATES.filter((n) => dc.hasSubscribers(n) && !subscribedBefore.has(n)), ...MUST])];
    expect(channels.length).toBeGreaterThanOrEqual(MUST.length);
    const fuzz = fc.sample(fc.anything({ withBigInt: true, withMap: true, withSet: true, withTypedArray: true, withDate: true, withNullPrototype: true }), { numRuns: 150, seed: 7 });
    // Shaped garbage: the right top-level key, anything below it.
    const shaped = fc.sample(
      fc.oneof(
        fc.record({ request: fc.dictionary(fc.constantFrom("origin", "method", "path", "headers", "body", "error"), fc.anything()) }),
        fc.record({ connectParams: fc.dictionary(fc.constantFrom("hostname", "host", "port", "protocol", "servername"), fc.anything()) }),
        fc.record({ node: fc.anything(), host: fc.anything(), port: fc.anything() }),
      ),
      { numRuns: 150, seed: 11 },
    );
    // Request objects the test can read back after publishing (plain, writable, no error of their own).
    const readable: Record<string, unknown>[] = [];
    const crashes = await catchCrashes(async () => {
      for (const name of channels) {
        const ch = dc.channel(name);
        for (const msg of [...hostile(), ...fuzz, ...shaped]) {
          const r = name === "undici:request:create" && typeof msg === "object" && msg !== null && !types.isProxy(msg) ? (msg as { request?: unknown }).request : undefined;
          const check = typeof r === "object" && r !== null && !types.isProxy(r) && !Object.isFrozen(r) && !Object.hasOwn(r, "error") && Object.getOwnPropertyDescriptor(r, "origin")?.get === undefined;
          ch.publish(msg);
          if (check) readable.push(r as Record<string, unknown>);
        }
        // A dial message with a verdict the test can read: a garbage host or port is denied, not let through.
        if (name === "meshguard:tailnet:dial") {
          for (const [host, port] of [[42, 1], ["denied-peer", "x"], [{}, {}], ["", -1]] as [unknown, unknown][]) {
            let deniedIt = false;
            ch.publish(Object.freeze({ node: { hostname: "agent" }, host, port, verdict: Object.freeze({ deny: () => void (deniedIt = true), hold: (p: Promise<unknown>) => void p.then(() => {}, () => void (deniedIt = true)), denied: false }) }));
            await settle(1);
            expect(deniedIt, `a dial to ${String(host)}:${String(port)} must be denied`).toBe(true);
          }
        }
      }
    });
    expect([...new Set(crashes.map(String))], "exceptions that reached the process").toEqual([]);
    // The call concerned is denied: every request object the guard was handed carries an error now (none of them is an allowed request).
    expect(readable.length).toBeGreaterThan(10);
    for (const r of readable) expect(r.error, `request ${safeString(r)} must be denied`).toBeInstanceOf(Error);
    expect(rec.warnings.length, "a warning for the messages the guard could not read").toBeGreaterThan(0);
    // The guard still works, and nothing the garbage announced opened a way through.
    await untouched(B, () => connectTo(B), "a raw connect after the garbage");
    await untouched(B, () => settled(fetch(`${B.url}/x`)), "a fetch after the garbage");
    await reached(A, () => fetch(`${A.url}/ok`).then((r) => r.text()));
  });

  it("net: an evaluator returning a hostile decision, and listeners that throw, do not crash the process (the call is denied)", async () => {
    const hostileDecision = { evaluate: (_r: DecisionRequest) => hostileProxy() as never };
    const g = guard({ policy: hostileDecision, rules: undefined });
    const rec = recorder(g);
    const crashes = await catchCrashes(async () => {
      await untouched(B, () => connectTo(B), "a connect judged by a hostile decision");
      await untouched(B, () => settled(httpGet(`${B.url}/x`)), "node:http judged by a hostile decision");
      await untouched(B, () => settled(fetch(`${B.url}/x`)), "fetch judged by a hostile decision");
    });
    expect([...new Set(crashes.map(String))], "exceptions that reached the process").toEqual([]);
    expect(rec.warnings.length).toBeGreaterThan(0);
    g.uninstall();

    // Listeners that throw: a decision listener and a warning listener.
    const g2 = guard({ rules: [allowTcp("127.0.0.1", A.port)], allowResolved: () => true });
    g2.on("decision", boom);
    g2.on("warning", boom);
    const crashes2 = await catchCrashes(async () => {
      await untouched(B, () => connectTo(B), "a denied connect with throwing listeners");
      // a refused resolution warns from inside a lookup callback
      await untouched(B, () => connectTo(B, { host: "denied.test", lookup: fixedLookup(B.host).fn }));
      await reached(A, () => connectTo(A), "an allowed connect with throwing listeners");
    });
    expect([...new Set(crashes2.map(String))], "exceptions that reached the process").toEqual([]);
  });

  it("net: a caller-supplied lookup answering garbage never crashes the process or connects anywhere unjudged", async () => {
    guard({ rules: [allowTcp("*.test", A.port)] }); // no allowResolved: no loopback answer is acceptable for a name
    // Only loopback/unspecified addresses and junk: nothing may leave the host even if the guard let it through.
    const answers = fc.sample(
      fc.oneof(
        fc.anything(),
        fc.constantFrom("127.0.0.1", "127.0.0.2", "0.0.0.0", "::1", "::ffff:127.0.0.2", "", "not-an-ip"),
        fc.array(fc.record({ address: fc.oneof(fc.constantFrom("127.0.0.1", "127.0.0.2", "::1", "0.0.0.0"), fc.anything()), family: fc.oneof(fc.constantFrom(4, 6), fc.anything()) }), { maxLength: 3 }),
      ),
      { numRuns: 120, seed: 3 },
    );
    const before = [A.snapshot(), B.snapshot()];
    const crashes = await catchCrashes(async () => {
      for (const [i, answer] of answers.entries()) {
        const mode = i % 3;
        const lookup = ((_h: string, _o: unknown, cb: (...a: unknown[]) => void) => {
          if (mode === 0) cb(null, answer, 4);
          else if (mode === 1) {
            cb(null, answer);
            cb(null, answer); // twice
          } else throw new Error("lookup threw");
        }) as unknown as net.LookupFunction;
        await connectTo(A, { host: "svc.test", lookup });
      }
    });
    await settle();
    expect([...new Set(crashes.map(String))], "exceptions that reached the process").toEqual([]);
    expect([A.snapshot(), B.snapshot()], "no answer (all loopback or junk, no allowResolved) may connect").toEqual(before);
  });
});

/** safeString prints an object that may throw when printed. */
function safeString(v: unknown): string {
  try {
    return JSON.stringify(v, (_k, x: unknown) => (typeof x === "bigint" || typeof x === "symbol" || typeof x === "function" ? String(x) : x)) ?? String(v);
  } catch {
    return "(unprintable)";
  }
}
