// Serving the console (no browser needed): the files and their headers,
// the Content-Security-Policy's hash of the inline import map, caching,
// methods, paths that are not files, the console turned off; and which
// browser requests the gateway refuses (other sites, foreign host names).
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http, { type IncomingMessage } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { browserRefusal } from "../../src/gateway/console/browser.js";
import { startGateway, type GatewayHandle } from "../../src/gateway/index.js";

let dir: string;
let gw: GatewayHandle;
let off: GatewayHandle;

async function gateway(extra: Record<string, unknown>): Promise<GatewayHandle> {
  return startGateway({
    config: {
      policy: join(dir, "policy.hujson"),
      dataDir: join(dir, `data-${Math.random()}`),
      providers: { openai: { baseUrl: "http://127.0.0.1:9/v1", format: "openai", models: ["gpt-4o-mini"] } },
      loopback: { listen: "127.0.0.1:0", principal: "alice@example.com" },
      ...extra,
    },
  });
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "mg-console-"));
  writeFileSync(join(dir, "policy.hujson"), JSON.stringify({ meshguard: { version: 3, rules: [] } }));
  gw = await gateway({ console: { hosts: ["ai.example.com"] } });
  off = await gateway({ console: { enabled: false } });
});
afterAll(async () => {
  await gw?.close();
  await off?.close();
  rmSync(dir, { recursive: true, force: true });
});

/** A raw request (Host and Sec-Fetch-* set as a browser would; fetch cannot set Host). */
function raw(base: string, path: string, opts: { method?: string; headers?: Record<string, string> } = {}): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${base}${path}`, { method: opts.method ?? "GET", headers: opts.headers }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => (body += c));
      res.on("end", () => resolve({ status: res.statusCode!, headers: res.headers, body }));
    });
    req.on("error", reject);
    req.end();
  });
}

describe("the console's files", () => {
  it("/console redirects to /console/, which is the page with a strict policy allowing its import map by hash", async () => {
    const r = await raw(gw.loopbackUrl!, "/console");
    expect(r.status).toBe(308);
    expect(r.headers.location).toBe("/console/");
    const page = await raw(gw.loopbackUrl!, "/console/");
    expect(page.status).toBe(200);
    expect(page.headers["content-type"]).toBe("text/html; charset=utf-8");
    const map = /<script type="importmap">([\s\S]*?)<\/script>/.exec(page.body)![1]!;
    const hash = createHash("sha256").update(map).digest("base64");
    expect(page.headers["content-security-policy"]).toBe(
      `default-src 'none'; script-src 'self' 'sha256-${hash}'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`,
    );
    expect(page.headers["x-content-type-options"]).toBe("nosniff");
    // Every module the import map names is served by the gateway itself.
    for (const url of Object.values(JSON.parse(map).imports as Record<string, string>)) {
      const f = await raw(gw.loopbackUrl!, `/console/${url.replace(/^\.\//, "")}`);
      expect(f.status, url).toBe(200);
      expect(f.headers["content-type"]).toBe("text/javascript; charset=utf-8");
    }
  });

  it("serves the page's modules and the UI libraries from the package, each with its type", async () => {
    for (const [path, type, text] of [
      ["/console/app.js", "text/javascript; charset=utf-8", "render("],
      ["/console/pages/usage.js", "text/javascript; charset=utf-8", "uPlot"],
      ["/console/vendor/uplot.js", "text/javascript; charset=utf-8", "uPlot"],
      ["/console/vendor/uplot.css", "text/css; charset=utf-8", ".uplot"],
      ["/console/app.css", "text/css; charset=utf-8", "--accent"],
    ] as const) {
      const r = await raw(gw.loopbackUrl!, path);
      expect(r.status, path).toBe(200);
      expect(r.headers["content-type"], path).toBe(type);
      expect(r.body, path).toContain(text);
    }
  });

  it("revalidates by ETag (304), answers HEAD without a body, refuses other methods (405)", async () => {
    const first = await raw(gw.loopbackUrl!, "/console/app.js");
    expect(first.headers["cache-control"]).toBe("no-cache");
    const again = await raw(gw.loopbackUrl!, "/console/app.js", { headers: { "if-none-match": String(first.headers.etag) } });
    expect(again.status).toBe(304);
    expect(again.body).toBe("");
    const head = await raw(gw.loopbackUrl!, "/console/app.js", { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(Number(head.headers["content-length"])).toBe(Buffer.byteLength(first.body));
    const post = await raw(gw.loopbackUrl!, "/console/", { method: "POST" });
    expect(post.status).toBe(405);
    expect(post.headers.allow).toBe("GET, HEAD");
  });

  it("a path that is not one of its files is a 404, whatever it tries", async () => {
    for (const p of ["/console/nope.js", "/console/../package.json", "/console/%2e%2e/package.json", "/console/lib", "/console/vendor/../../src/gateway/start.ts"]) {
      expect((await raw(gw.loopbackUrl!, p)).status, p).toBe(404);
    }
  });

  it("the build puts the page's files in dist/console, which the package publishes", () => {
    const root = join(import.meta.dirname, "..", "..");
    const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
    expect(pkg.files).toContain("dist");
    for (const dep of ["preact", "htm", "uplot"]) expect(Object.keys(pkg.dependencies)).toContain(dep);
    // npm test builds before it runs the tests: dist/console is the copy of src/gateway/console/ui.
    const list = (d: string): string[] => readdirSync(d, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name).slice(d.length)).sort();
    const dist = join(root, "dist", "console");
    expect(existsSync(dist), "dist/console: run `npm run build`").toBe(true);
    const src = join(root, "src", "gateway", "console", "ui");
    expect(list(dist)).toEqual(list(src));
    for (const f of list(src)) expect(readFileSync(join(dist, f), "utf8"), `dist/console${f} is stale: run \`npm run build\``).toBe(readFileSync(join(src, f), "utf8"));
  });

  it("turned off in the config, /console/ is not an endpoint", async () => {
    const r = await raw(off.loopbackUrl!, "/console/");
    expect(r.status).toBe(404);
    expect(r.body).not.toContain("<html");
  });
});

describe("browser requests the gateway refuses", () => {
  it("a browser naming a host that is not the gateway's (DNS rebinding) is refused, on the console and the API", async () => {
    const evil = { host: "evil.example:8080", "sec-fetch-site": "same-origin", "sec-fetch-mode": "cors" };
    for (const p of ["/meshguard/v1/whoami", "/console/", "/v1/models"]) {
      const r = await raw(gw.loopbackUrl!, p, { headers: evil });
      expect(r.status, p).toBe(403);
      expect(r.body).toMatch(/not one of its own/);
    }
    // The names it has: an alias from console.hosts, an IP address, localhost.
    for (const host of ["ai.example.com", "127.0.0.1:4000", "localhost:4000", "[::1]:4000"]) {
      expect((await raw(gw.loopbackUrl!, "/meshguard/v1/whoami", { headers: { ...evil, host } })).status, host).toBe(200);
    }
    // A client that is not a browser (no Sec-Fetch-Site, no Origin) may use any name.
    expect((await raw(gw.loopbackUrl!, "/meshguard/v1/whoami", { headers: { host: "gateway.internal" } })).status).toBe(200);
  });

  const req = (method: string, headers: Record<string, string>) => ({ method, headers: { host: "127.0.0.1:4000", ...headers } }) as unknown as IncomingMessage;
  const names = new Set(["ai-gateway", "ai-gateway.tailnet.example"]);

  it.each([
    ["an SDK or curl (no browser headers)", "POST", "/v1/chat/completions", {}, undefined],
    ["the console's own fetch", "POST", "/v1/chat/completions", { "sec-fetch-site": "same-origin", origin: "http://127.0.0.1:4000" }, undefined],
    ["a link to the console from another site", "GET", "/console/", { "sec-fetch-site": "cross-site", "sec-fetch-mode": "navigate" }, undefined],
    ["the gateway by its MagicDNS name", "GET", "/meshguard/v1/logs", { "sec-fetch-site": "same-origin", host: "ai-gateway.tailnet.example." }, undefined],
    ["a cross-site POST (CSRF)", "POST", "/meshguard/v1/buckets/x/refill", { "sec-fetch-site": "cross-site", "sec-fetch-mode": "no-cors" }, /another site's page/],
    ["a same-site but other-origin request", "POST", "/v1/chat/completions", { "sec-fetch-site": "same-site" }, /another site's page/],
    ["a cross-site read of the API (not a navigation)", "GET", "/meshguard/v1/logs", { "sec-fetch-site": "cross-site", "sec-fetch-mode": "cors" }, /another site's page/],
    ["a cross-site navigation to the API", "GET", "/meshguard/v1/logs", { "sec-fetch-site": "cross-site", "sec-fetch-mode": "navigate" }, /another site's page/],
    ["an Origin that is not the Host (an older browser)", "POST", "/v1/chat/completions", { origin: "http://evil.example" }, /only the gateway's own pages/],
    ["an opaque origin", "POST", "/v1/chat/completions", { origin: "null" }, /opaque origin/],
    ["a foreign host name", "GET", "/console/", { "sec-fetch-site": "none", "sec-fetch-mode": "navigate", host: "rebound.example" }, /not one of its own/],
  ])("%s", (_what, method, path, headers, refused) => {
    const why = browserRefusal(req(method, headers as Record<string, string>), path, names);
    if (refused === undefined) expect(why).toBeUndefined();
    else expect(why).toMatch(refused);
  });
});
