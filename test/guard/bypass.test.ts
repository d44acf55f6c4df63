// Every way around a host rule named in issue 3, item 4: an IP literal, a
// redirect, a name that resolves elsewhere (rebinding), a proxy, and a
// spoofed Host header. Each test counts hits on local servers and expects
// zero where the policy says no.
import http from "node:http";
import net from "node:net";
import type { AddressInfo } from "node:net";
import { Agent, ProxyAgent, setGlobalDispatcher, getGlobalDispatcher } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { allowHttp, allowTcp, countingServer, denied, guard, httpGet, type Counting } from "./helpers.js";

let a: Counting; // 127.0.0.1: the allowed server
let b: Counting; // 127.0.0.2 would need a second address; a second port on 127.0.0.1 is the "other host" by port

beforeAll(async () => {
  b = await countingServer();
  a = await countingServer((req, res) => {
    if (req.url === "/redirect") {
      res.writeHead(302, { location: `http://127.0.0.2:${b.port}/stolen` }).end();
    } else if (req.url === "/redirect-same") {
      res.writeHead(302, { location: `/ok` }).end();
    } else res.end("ok");
  });
  // b also listens on 127.0.0.2 (all of 127/8 is loopback on Linux).
  await new Promise<void>((resolve, reject) => {
    const s = http.createServer((_req, res) => {
      b.hits++;
      res.end("stolen");
    });
    s.on("connection", () => b.conns++);
    s.on("error", reject);
    s.listen(b.port, "127.0.0.2", () => resolve());
    afterAll(() => new Promise<void>((r) => s.close(() => r())));
  });
});
afterAll(async () => {
  await a.close();
  await b.close();
});

/** A lookup that resolves every name to `ip`, counting calls. */
function fixedLookup(ip: string) {
  const calls: string[] = [];
  const fn = (host: string, opts: { all?: boolean }, cb: (err: Error | null, addr: unknown, fam?: number) => void) => {
    calls.push(host);
    if (opts.all) cb(null, [{ address: ip, family: 4 }]);
    else cb(null, ip, 4);
  };
  return { fn, calls };
}

describe("bypass: IP literal", () => {
  it("a rule for a name does not allow its IP literal", async () => {
    guard({ rules: [allowHttp("api.test")] });
    const hits = a.hits;
    await denied(fetch(`${a.url}/ok`));
    await denied(httpGet(`${a.url}/ok`));
    expect(a.hits).toBe(hits);
  });
});

describe("bypass: redirect", () => {
  it("fetch following a redirect to a disallowed host is denied at the hop; the other host sees nothing", async () => {
    guard({ rules: [allowHttp("127.0.0.1")] });
    const [bHits, bConns] = [b.hits, b.conns];
    const err = await denied(fetch(`${a.url}/redirect`));
    expect(err.message).toContain("127.0.0.2");
    expect(b.hits).toBe(bHits);
    expect(b.conns).toBe(bConns);
  });

  it("a redirect to an allowed place is followed", async () => {
    guard({ rules: [allowHttp("127.0.0.1")] });
    const res = await fetch(`${a.url}/redirect-same`);
    expect(await res.text()).toBe("ok");
  });
});

describe("bypass: a name that resolves elsewhere", () => {
  it("a name resolving to a loopback address is refused by default (rebinding), before any connection", async () => {
    guard({ rules: [allowHttp("api.test")] });
    const { fn } = fixedLookup("127.0.0.1");
    const hits = a.hits;
    const conns = a.conns;
    const err = await denied(httpGet(`http://api.test:${a.port}/ok`, { lookup: fn as unknown as net.LookupFunction }));
    expect(err.message).toMatch(/resolves to 127\.0\.0\.1/);
    expect(a.hits).toBe(hits);
    expect(a.conns).toBe(conns);
  });

  it("a denied name is never looked up (no DNS query leaves)", async () => {
    guard({ rules: [allowHttp("api.test")] });
    const { fn, calls } = fixedLookup("127.0.0.1");
    await denied(httpGet(`http://other.test:${a.port}/ok`, { lookup: fn as unknown as net.LookupFunction }));
    expect(calls).toEqual([]);
  });

  it("the connection goes to the address that was checked: one lookup, pinned", async () => {
    guard({ rules: [allowHttp("api.test")], allowResolved: (_h, ip) => ip === "127.0.0.1" });
    // A rebinding resolver: the first answer is the checked one, later answers point elsewhere.
    let n = 0;
    const lookup = (_h: string, opts: { all?: boolean }, cb: (e: Error | null, a: unknown, f?: number) => void) => {
      const ip = n++ === 0 ? "127.0.0.1" : "127.0.0.2";
      if (opts.all) cb(null, [{ address: ip, family: 4 }]);
      else cb(null, ip, 4);
    };
    const bHits = b.hits;
    const res = await httpGet(`http://api.test:${a.port}/ok`, { lookup: lookup as unknown as net.LookupFunction, agent: false });
    expect(res.body).toBe("ok");
    expect(n).toBe(1);
    expect(b.hits).toBe(bHits);
  });

  it("a resolver answer with several addresses is cut to the one checked", async () => {
    guard({ rules: [allowTcp("db.test", a.port)], allowResolved: () => true });
    let got: string | undefined;
    const lookup = (_h: string, _o: unknown, cb: (e: Error | null, a: unknown) => void) =>
      cb(null, [
        { address: "127.0.0.1", family: 4 },
        { address: "127.0.0.2", family: 4 },
      ]);
    await new Promise<void>((resolve, reject) => {
      const s = net.connect({ host: "db.test", port: a.port, lookup: lookup as unknown as net.LookupFunction });
      s.on("connect", () => {
        got = s.remoteAddress;
        s.destroy();
        resolve();
      });
      s.on("error", reject);
    });
    expect(got).toBe("127.0.0.1");
  });
});

describe("bypass: proxy", () => {
  /** A forward proxy (absolute-form requests and CONNECT) that counts what it is asked. */
  async function proxyServer() {
    const p = { port: 0, requests: 0, connects: 0, conns: 0 };
    const server = http.createServer((_req, res) => {
      p.requests++;
      res.end("via proxy");
    });
    server.on("connect", (_req, sock: net.Socket) => {
      p.connects++;
      sock.end("HTTP/1.1 403 Forbidden\r\n\r\n");
    });
    server.on("connection", () => p.conns++);
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    p.port = (server.address() as AddressInfo).port;
    return { p, close: () => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }) };
  }

  it("fetch through a ProxyAgent: the final target is checked, and the proxy connection itself is not allowed by an http rule", async () => {
    const { p, close } = await proxyServer();
    const previous = getGlobalDispatcher();
    setGlobalDispatcher(new ProxyAgent(`http://127.0.0.1:${p.port}`));
    try {
      guard({ rules: [allowHttp("127.0.0.1", { port: [a.port] })] });
      // allowed final target, but the proxy (127.0.0.1:p.port) is not an allowed TCP target
      await denied(fetch(`${a.url}/ok`));
      // disallowed final target: refused before the proxy is contacted
      await denied(fetch(`http://127.0.0.2:${b.port}/stolen`));
      expect(p.conns).toBe(0);
      expect(p.requests + p.connects).toBe(0);
    } finally {
      setGlobalDispatcher(previous);
      await close();
    }
  });

  it("an explicitly allowed proxy still cannot reach a disallowed final target", async () => {
    const { p, close } = await proxyServer();
    const proxy = new ProxyAgent(`http://127.0.0.1:${p.port}`);
    try {
      guard({ rules: [allowHttp("127.0.0.1", { port: [a.port] }), allowTcp("127.0.0.1", p.port)] });
      await denied(fetch(`http://127.0.0.2:${b.port}/stolen`, { dispatcher: proxy } as RequestInit));
      expect(p.requests + p.connects).toBe(0);
      expect(b.hits).toBe(0);
    } finally {
      await proxy.close();
      await close();
    }
  });

  it("node:http through an agent that connects to a proxy: the proxy connection is judged as TCP and refused", async () => {
    const { p, close } = await proxyServer();
    try {
      guard({ rules: [allowHttp("127.0.0.1", { port: [a.port] })] });
      // An agent that sends every request to the proxy (how proxy agents work).
      class ViaProxy extends http.Agent {
        override createConnection(): net.Socket {
          return net.connect(p.port, "127.0.0.1");
        }
      }
      await denied(httpGet(`${a.url}/ok`, { agent: new ViaProxy() }));
      expect(p.conns).toBe(0);
    } finally {
      await close();
    }
  });

  it("a CONNECT request to a proxy is an HTTP call to the proxy, not to the tunnelled host", async () => {
    const { p, close } = await proxyServer();
    try {
      guard({ rules: [allowHttp("127.0.0.2")] });
      const req = http.request({ host: "127.0.0.1", port: p.port, method: "CONNECT", path: `127.0.0.2:${b.port}` });
      const done = new Promise((resolve, reject) => {
        req.on("connect", resolve);
        req.on("error", reject);
      });
      req.end();
      await denied(done);
      expect(p.conns).toBe(0);
    } finally {
      await close();
    }
  });

  it("Node's built-in proxy support (an Agent with proxyEnv) cannot launder a request", async () => {
    const { p, close } = await proxyServer();
    try {
      guard({ rules: [allowHttp("127.0.0.1", { port: [a.port] })] });
      const agent = new http.Agent({ proxyEnv: { HTTP_PROXY: `http://127.0.0.1:${p.port}` } } as http.AgentOptions);
      await denied(httpGet(`http://127.0.0.2:${b.port}/stolen`, { agent }));
      await denied(httpGet(`${a.url}/ok`, { agent }));
      expect(p.conns).toBe(0);
      expect(b.hits).toBe(0);
    } finally {
      await close();
    }
  });
});

describe("bypass: Host header", () => {
  it("a spoofed Host header does not change the judged host", async () => {
    guard({ rules: [allowHttp("127.0.0.1")] });
    const bHits = b.hits;
    await denied(httpGet(`http://127.0.0.2:${b.port}/stolen`, { headers: { host: `127.0.0.1:${a.port}` } }));
    await denied(fetch(`http://127.0.0.2:${b.port}/stolen`, { headers: { host: `127.0.0.1:${a.port}` } }));
    expect(b.hits).toBe(bHits);
  });
});

describe("bypass: replacing the global dispatcher after install", () => {
  it("a request through a dispatcher set after the guard is still judged", async () => {
    guard({ rules: [allowHttp("127.0.0.1", { path: ["/ok"] })] });
    const previous = getGlobalDispatcher();
    setGlobalDispatcher(new Agent());
    try {
      const hits = a.hits;
      await denied(fetch(`${a.url}/secret`));
      expect(a.hits).toBe(hits);
    } finally {
      setGlobalDispatcher(previous);
    }
  });
});
