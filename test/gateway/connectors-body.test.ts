// An HTTP connector's request bodies and the gateway's maxBodyBytes, on a
// real gateway's loopback listener: a body declared larger is refused before
// anything is decided, and a streamed (chunked) body that grows past the
// limit is cut off — the upstream request aborted, the client answered 413 —
// while smaller streamed bodies still stream through.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startRestSim, type RestSim } from "../../bench/lib/rest-sim.mjs";
import { startGateway, type GatewayHandle } from "../../src/gateway/index.js";

const TOKEN = "sk-body-TOKEN-19cd-5ecret";
const MAX = 64 * 1024;

let dir: string;
let api: RestSim;
let gw: GatewayHandle;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "mg-conn-body-"));
  api = await startRestSim({ bearer: TOKEN });
  const policy = join(dir, "policy.hujson");
  writeFileSync(policy, JSON.stringify({ meshguard: { version: 6, rules: [{ id: "api", src: ["tag:local"], http: { host: ["127.0.0.1"], path: ["/api/**"] } }] } }));
  gw = await startGateway({
    config: {
      policy,
      dataDir: join(dir, "data"),
      maxBodyBytes: MAX,
      providers: { o: { baseUrl: "http://127.0.0.1:9/v1", format: "openai", models: ["*"] } },
      loopback: { listen: "127.0.0.1:0", principal: "tag:local" },
      connectors: { http: { api: { baseUrl: `${api.url}/api`, auth: { type: "bearer", token: { env: "API_TOKEN" } } } } },
    },
    env: { API_TOKEN: TOKEN },
  });
}, 60_000);

afterAll(async () => {
  await gw?.close();
  await api?.close();
  rmSync(dir, { recursive: true, force: true });
});

/**
 * post sends `chunks` to the connector as a chunked body (no Content-Length),
 * or with `length` declared, one chunk every few milliseconds; it resolves
 * with the answer's status, error code and body (the gateway may answer
 * before the body is all sent).
 */
function post(chunks: Buffer[], length?: number): Promise<{ status: number; code: string | undefined; body: string }> {
  const u = new URL(`${gw.loopbackUrl}/v1/connectors/api/echo`);
  return new Promise((resolve, reject) => {
    const req = request({ host: u.hostname, port: u.port, path: u.pathname, method: "POST", headers: { "content-type": "application/octet-stream", ...(length !== undefined ? { "content-length": String(length) } : {}) } }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => (body += c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, code: res.headers["x-meshguard-error"] as string | undefined, body }));
    });
    req.on("error", reject);
    let i = 0;
    const next = () => {
      if (req.destroyed) return;
      if (i === chunks.length) return void req.end();
      req.write(chunks[i++]);
      setTimeout(next, 2);
    };
    next();
  });
}

const chunks = (n: number, size: number) => Array.from({ length: n }, (_, i) => Buffer.alloc(size, 97 + (i % 26)));

describe("request bodies honour maxBodyBytes", () => {
  it("streams a chunked body under the limit through", async () => {
    const r = await post(chunks(8, 4096));
    expect(r.status).toBe(200);
    expect((JSON.parse(r.body) as { body: string }).body.length).toBe(8 * 4096);
  });

  it("refuses a body declared larger with 413, before it reaches the upstream", async () => {
    const n = api.requests.length;
    const r = await post(chunks(1, 16), MAX + 1);
    expect(r).toMatchObject({ status: 413, code: "too_large" });
    expect(r.body).toContain(`limit of ${MAX} bytes`);
    expect(api.requests.length).toBe(n);
  });

  it("cuts off a chunked body that grows past the limit: 413, and the upstream never answers it", async () => {
    const n = api.requests.filter((x) => x.method === "POST").length;
    const r = await post(chunks(40, 4096));
    expect(r).toMatchObject({ status: 413, code: "too_large" });
    // The upstream may have seen the request begin; it never got all of it (the simulator records a request at its end).
    await new Promise((res) => setTimeout(res, 200));
    expect(api.requests.filter((x) => x.method === "POST").length - n).toBe(0);
    await gw.store!.flush();
    const { records } = await gw.store!.queryLogs({ limit: 100 });
    expect(records.find((x) => x.status === 413 && x.reason?.includes("larger than"))).toMatchObject({ operation: "connector.call", outcome: "bad_request" });
  });
});
