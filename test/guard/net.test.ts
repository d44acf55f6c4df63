// Raw connections under the guard: net.connect, new net.Socket().connect
// (how database drivers connect), tls.connect, unix sockets.
import { mkdtempSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import tls from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PolicyDeniedError } from "../../src/guard/index.js";
import { allowTcp, denied, guard, tcpServer } from "./helpers.js";

let srv: Awaited<ReturnType<typeof tcpServer>>;
beforeAll(async () => {
  srv = await tcpServer();
});
afterAll(() => srv.close());

/** connected resolves when the socket connects and echoes a byte back, rejects on error. */
function echo(sock: net.Socket): Promise<string> {
  return new Promise((resolve, reject) => {
    sock.once("error", reject);
    sock.once("connect", () => sock.write("x"));
    sock.once("data", (d) => {
      resolve(String(d));
      sock.destroy();
    });
  });
}

describe("net", () => {
  it("net.connect: allowed port connects, another port is denied with zero connections", async () => {
    guard({ rules: [allowTcp("127.0.0.1", srv.port)] });
    const conns = srv.conns;
    expect(await echo(net.connect(srv.port, "127.0.0.1"))).toBe("x");
    expect(srv.conns).toBe(conns + 1);
    const other = await tcpServer();
    const err = await denied(echo(net.connect({ port: other.port, host: "127.0.0.1" })));
    expect(err).toBeInstanceOf(PolicyDeniedError);
    expect((err as PolicyDeniedError).target).toMatchObject({ kind: "tcp", tls: false, host: "127.0.0.1", port: other.port });
    expect(other.conns).toBe(0);
    await other.close();
  });

  it("new net.Socket().connect() (database drivers) is covered", async () => {
    guard({ rules: [] });
    const conns = srv.conns;
    const s = new net.Socket();
    const p = echo(s);
    s.connect(srv.port, "127.0.0.1");
    await denied(p);
    expect(srv.conns).toBe(conns);
  });

  it("net.createConnection with a callback: the callback never runs on deny", async () => {
    guard({ rules: [] });
    let called = false;
    const s = net.createConnection(srv.port, "127.0.0.1", () => (called = true));
    await denied(new Promise((_, reject) => s.on("error", reject)));
    expect(called).toBe(false);
  });

  it("tls.connect allowed by a tcp rule reaches the server", async () => {
    guard({ rules: [allowTcp("127.0.0.1", srv.port)] });
    const conns = srv.conns;
    // The echo server does not speak TLS: the handshake fails, but not by policy.
    const err = await new Promise<Error>((resolve) => {
      const s = tls.connect({ host: "127.0.0.1", port: srv.port, rejectUnauthorized: false });
      s.on("error", resolve);
      s.setTimeout(2000, () => s.destroy(new Error("timeout")));
    });
    expect((err as { code?: string }).code).not.toBe("MESHGUARD_POLICY_DENIED");
    expect(srv.conns).toBe(conns + 1);
  });

  it("a rule limited to plain TCP (tls: false) denies tls.connect with zero connections", async () => {
    guard({ rules: [{ id: "plain", src: ["tag:agent"], tcp: { host: ["127.0.0.1"], port: [srv.port], tls: false } }] });
    const conns = srv.conns;
    const e = await denied(
      new Promise((resolve, reject) => {
        const s = tls.connect({ host: "127.0.0.1", port: srv.port, rejectUnauthorized: false });
        s.on("error", reject);
        s.on("secureConnect", resolve);
      }),
    );
    expect((e as PolicyDeniedError).target).toMatchObject({ kind: "tcp", tls: true });
    expect(srv.conns).toBe(conns);
  });

  it("a unix socket is denied unless allowIpc lists it", async () => {
    const dir = mkdtempSync(join(tmpdir(), "mg-ipc-"));
    const path = join(dir, "s.sock");
    let conns = 0;
    const server = net.createServer((s) => {
      conns++;
      s.end();
    });
    await new Promise<void>((r) => server.listen(path, r));
    const g = guard({ rules: [] });
    await denied(new Promise((resolve, reject) => net.connect(path).on("connect", resolve).on("error", reject)));
    expect(conns).toBe(0);
    g.uninstall();
    guard({ rules: [], allowIpc: [dir + "/"] });
    await new Promise((resolve, reject) => net.connect(path).on("connect", resolve).on("error", reject));
    expect(conns).toBe(1);
    await new Promise<void>((r) => server.close(() => r()));
  });
});
