// Shared fixtures of the guard tests: local servers that count what reaches
// them, policies written as objects, and a guard installed per test.
import http from "node:http";
import net from "node:net";
import type { AddressInfo } from "node:net";
import { afterEach, expect } from "vitest";
import { installGuard, type GuardHandle } from "../../src/guard/index.js";
import type { GuardOptions } from "../../src/guard/types.js";
import { loadPolicy, type Policy } from "../../src/policy/index.js";

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

export const allowHttp = (host: string, extra: object = {}) => ({ id: `http-${host}`, src: ["tag:agent"], http: { host: [host], ...extra } });
export const allowTcp = (host: string, port: number | string = "*") => ({ id: `tcp-${host}`, src: ["tag:agent"], tcp: { host: [host], port: [port] } });
