/**
 * A real webhook endpoint for hook tests: a node:http server on 127.0.0.1
 * that records every POST it receives and answers what the test's handler
 * says — JSON, raw text, a status, or nothing at all (`hang`).
 */
import http from "node:http";
import type { AddressInfo } from "node:net";

export interface Received {
  headers: http.IncomingHttpHeaders;
  /** The parsed JSON body. */
  body: any;
  time: number;
}

export type Answer =
  | { json: unknown; status?: number }
  | { raw: string; status?: number; contentType?: string }
  | { status: number; location?: string }
  /** Never answers (the connection stays open until the server closes). */
  | { hang: true }
  /** Sends headers and the first bytes of a body, then stalls. */
  | { stallAfterHeaders: true };

export interface HookServer {
  url: string;
  received: Received[];
  close(): Promise<void>;
}

export async function hookServer(handler: (r: Received, n: number) => Answer | Promise<Answer>, path = "/hook"): Promise<HookServer> {
  const received: Received[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", async () => {
      const text = Buffer.concat(chunks).toString("utf8");
      const r: Received = { headers: req.headers, body: text ? JSON.parse(text) : undefined, time: Date.now() };
      received.push(r);
      const a = await handler(r, received.length);
      if ("hang" in a) return;
      if ("stallAfterHeaders" in a) {
        res.writeHead(200, { "content-type": "application/json" });
        res.write('{"action":');
        return;
      }
      if ("json" in a) {
        res.writeHead(a.status ?? 200, { "content-type": "application/json" });
        res.end(JSON.stringify(a.json));
      } else if ("raw" in a) {
        res.writeHead(a.status ?? 200, { "content-type": a.contentType ?? "text/plain" });
        res.end(a.raw);
      } else {
        res.writeHead(a.status, a.location ? { location: a.location } : {});
        res.end();
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}${path}`,
    received,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A port nothing listens on: a server bound and closed again. */
export async function deadUrl(): Promise<string> {
  const s = http.createServer();
  await new Promise<void>((resolve) => s.listen(0, "127.0.0.1", resolve));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return `http://127.0.0.1:${port}/hook`;
}
