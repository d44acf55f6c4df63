// node:http and node:https under the guard: request/get, agents (default,
// keep-alive, custom, agent: false), createConnection, and TLS.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PolicyDeniedError } from "../../src/guard/index.js";
import { allowHttp, countingServer, denied, guard, httpGet, type Counting } from "./helpers.js";

let srv: Counting;
beforeAll(async () => {
  srv = await countingServer();
});
afterAll(() => srv.close());

const rules = [allowHttp("127.0.0.1", { path: ["/ok", "/ok/**"], method: ["GET", "POST"] })];

describe("node:http", () => {
  it("http.request and http.get: allowed goes through, denied emits PolicyDeniedError with zero hits", async () => {
    guard({ rules });
    const [hits, conns] = [srv.hits, srv.conns];
    expect((await httpGet(`${srv.url}/ok`)).body).toBe("ok");
    expect(srv.hits).toBe(hits + 1);
    const err = await denied(httpGet(`${srv.url}/nope`));
    expect(err).toBeInstanceOf(PolicyDeniedError);
    const viaGet = new Promise((resolve, reject) => http.get(`${srv.url}/nope`, resolve).on("error", reject));
    await denied(viaGet);
    expect(srv.hits).toBe(hits + 1);
    expect(srv.conns).toBe(conns + 1);
  });

  it("the method is part of the decision", async () => {
    guard({ rules });
    const hits = srv.hits;
    await denied(httpGet(`${srv.url}/ok`, { method: "DELETE" }));
    expect(srv.hits).toBe(hits);
  });

  it("a keep-alive agent: a denied request on a reused socket sends nothing", async () => {
    guard({ rules });
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const hits = srv.hits;
    await httpGet(`${srv.url}/ok`, { agent });
    await denied(httpGet(`${srv.url}/secret`, { agent }));
    await httpGet(`${srv.url}/ok/again`, { agent });
    expect(srv.hits).toBe(hits + 2);
    agent.destroy();
  });

  it("a custom Agent subclass and agent: false are covered", async () => {
    guard({ rules });
    class MyAgent extends http.Agent {
      // A subclass that builds its own connection, as proxy and pooling libraries do.
      override createConnection(o: net.NetConnectOpts): net.Socket {
        return net.createConnection(o);
      }
    }
    const hits = srv.hits;
    await denied(httpGet(`${srv.url}/x`, { agent: new MyAgent() }));
    await denied(httpGet(`${srv.url}/x`, { agent: false }));
    expect((await httpGet(`${srv.url}/ok`, { agent: false })).status).toBe(200);
    expect(srv.hits).toBe(hits + 1);
  });

  it("createConnection returning a plain net socket is covered", async () => {
    guard({ rules });
    const conns = srv.conns;
    const createConnection = () => net.connect(srv.port, "127.0.0.1");
    await denied(httpGet(`${srv.url}/x`, { createConnection } as http.RequestOptions));
    expect(srv.conns).toBe(conns);
  });

  it("a POST body is never sent when the request is denied", async () => {
    guard({ rules });
    const hits = srv.hits;
    const p = new Promise((resolve, reject) => {
      const req = http.request(`${srv.url}/upload`, { method: "POST" }, resolve);
      req.on("error", reject);
      req.write("secret data");
      req.end();
    });
    await denied(p);
    expect(srv.hits).toBe(hits);
    expect(srv.bodies.some((b) => b.includes("secret data"))).toBe(false);
  });
});

/** A self-signed certificate for 127.0.0.1, made with the openssl CLI when present. */
function selfSigned(): { key: Buffer; cert: Buffer } | undefined {
  try {
    const d = mkdtempSync(join(tmpdir(), "mg-tls-"));
    execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", join(d, "k.pem"), "-out", join(d, "c.pem"), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"], { stdio: "ignore" });
    return { key: readFileSync(join(d, "k.pem")), cert: readFileSync(join(d, "c.pem")) };
  } catch {
    return undefined;
  }
}

describe("node:https", () => {
  const pair = selfSigned();
  it("https.request: allowed and denied (zero TLS handshakes on deny)", async () => {
    expect(pair, "openssl is needed to make a test certificate").toBeDefined();
    let conns = 0;
    let hits = 0;
    const server = https.createServer({ key: pair!.key, cert: pair!.cert }, (_req, res) => {
      hits++;
      res.end("tls ok");
    });
    server.on("connection", () => conns++);
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const port = (server.address() as AddressInfo).port;
    guard({ rules: [allowHttp("127.0.0.1", { scheme: ["https"], path: ["/ok"] })] });
    const get = (path: string) =>
      new Promise<string>((resolve, reject) => {
        https
          .get({ host: "127.0.0.1", port, path, ca: pair!.cert }, (res) => {
            let b = "";
            res.on("data", (d) => (b += d));
            res.on("end", () => resolve(b));
          })
          .on("error", reject);
      });
    expect(await get("/ok")).toBe("tls ok");
    const before = conns;
    await denied(get("/no"));
    expect(conns).toBe(before);
    expect(hits).toBe(1);
    // fetch over https with the same policy
    await denied(fetch(`https://127.0.0.1:${port}/no`));
    expect(conns).toBe(before);
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  });
});
