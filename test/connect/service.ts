// The tailnet side of the connect tests: a service node that tells each
// caller who it is (whois), an echo port that answers only after the
// caller's half-close, and small client helpers for the local side.
import { createHash } from "node:crypto";
import http from "node:http";
import net from "node:net";
import type { MeshNode } from "../../src/index.js";

export const WHO_PORT = 80;
export const DIGEST_PORT = 7001;

/** Who a service saw: the caller's node as whois reports it. */
export interface Seen {
  hostname: string;
  tags: string[];
  owners: string[];
  addr: string;
  path: string;
}

/** serveWho answers every HTTP request on `port` with the caller's identity as JSON. */
export async function serveWho(node: MeshNode, port = WHO_PORT): Promise<http.Server> {
  return node.listen(
    port,
    http.createServer(async (req, res) => {
      const who = await node.whois(req.socket);
      const seen: Seen = { hostname: who.node.hostname, tags: who.node.tags, owners: who.owners, addr: req.socket.remoteAddress ?? "", path: req.url ?? "" };
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify(seen));
    }),
  );
}

/**
 * serveDigest: on each connection, reads everything until the caller's FIN,
 * then answers the byte count and SHA-256 of what it read and closes. An
 * answer at all proves the half-close crossed the forward; a right digest
 * proves every byte did.
 */
export async function serveDigest(node: MeshNode, port = DIGEST_PORT): Promise<net.Server> {
  return node.listen(
    port,
    net.createServer({ allowHalfOpen: true }, (sock) => {
      const h = createHash("sha256");
      let n = 0;
      sock.on("data", (c: Buffer) => {
        h.update(c);
        n += c.length;
      });
      sock.on("end", () => sock.end(`${n} ${h.digest("hex")}`));
      sock.on("error", () => {});
    }),
  );
}

export const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");

/** exchange connects to a local port, sends `payload`, half-closes and returns all it reads until the other side's end. */
export async function exchange(port: number, payload: Buffer | string, host = "127.0.0.1"): Promise<string> {
  const sock = net.connect({ host, port, allowHalfOpen: true });
  sock.end(payload);
  const chunks: Buffer[] = [];
  for await (const c of sock) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

/**
 * rawGet sends a GET by hand on a plain socket and reads until the server
 * closes (no half-close: Node's HTTP server drops a request whose client
 * half-closed before the answer).
 */
export async function rawGet(port: number, path: string): Promise<{ status: string; body: string }> {
  const sock = net.connect({ host: "127.0.0.1", port });
  sock.write(`GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
  const chunks: Buffer[] = [];
  for await (const c of sock) chunks.push(c as Buffer);
  const text = Buffer.concat(chunks).toString("utf8");
  const sep = text.indexOf("\r\n\r\n");
  return { status: text.slice(0, text.indexOf("\r\n")), body: sep < 0 ? "" : text.slice(sep + 4) };
}

/** who fetches `url` (a forward's URL plus a path) and returns the identity the service saw. */
export async function who(url: string): Promise<Seen> {
  const res = await fetch(url);
  if (res.status !== 200) throw new Error(`GET ${url}: ${res.status} ${await res.text()}`);
  return (await res.json()) as Seen;
}

/** freePort returns a loopback port that was free a moment ago. */
export async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  const { port } = s.address() as net.AddressInfo;
  await new Promise((r) => s.close(r));
  return port;
}

/** closedBy: what ends a local connection that the forward gave up on: 'close' with no bytes read. */
export async function closedWithoutAnswer(port: number, payload: string): Promise<{ bytes: number }> {
  const sock = net.connect({ host: "127.0.0.1", port });
  sock.on("error", () => {}); // a reset is an acceptable way to be refused
  sock.write(payload);
  let bytes = 0;
  sock.on("data", (c: Buffer) => (bytes += c.length));
  await new Promise((r) => sock.once("close", r));
  return { bytes };
}
