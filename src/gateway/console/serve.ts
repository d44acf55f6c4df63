/**
 * Serving the web console: GET/HEAD /console/ (the page) and the files it
 * loads, with a strict Content-Security-Policy (scripts and styles only
 * from the gateway, the one inline import map by its hash, no framing).
 * The console is a client of the gateway's API like any other: it holds no
 * data and no privilege; what a caller sees is what the API answers them.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { MeshguardError } from "../../errors.js";
import { loadAssets, type ConsoleAssets } from "./assets.js";

export const CONSOLE_PREFIX = "/console";

/** isConsolePath tells whether `path` is the console's. */
export function isConsolePath(path: string): boolean {
  return path === CONSOLE_PREFIX || path.startsWith(`${CONSOLE_PREFIX}/`);
}

const SECURITY_HEADERS = {
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "cross-origin-opener-policy": "same-origin",
  "cross-origin-resource-policy": "same-origin",
  "x-frame-options": "DENY",
};

/** ConsoleServer answers the console's paths; files are read on first use. */
export class ConsoleServer {
  #assets: ConsoleAssets | MeshguardError | undefined;
  readonly #warn: (err: unknown) => void;

  constructor(warn: (err: unknown) => void) {
    this.#warn = warn;
  }

  #load(): ConsoleAssets | MeshguardError {
    if (this.#assets === undefined) {
      try {
        this.#assets = loadAssets();
      } catch (err) {
        this.#assets = err as MeshguardError;
        this.#warn(err);
      }
    }
    return this.#assets;
  }

  handle(req: IncomingMessage, res: ServerResponse, path: string): void {
    const text = (status: number, body: string, headers: Record<string, string> = {}) => {
      res.writeHead(status, { "content-type": "text/plain; charset=utf-8", "content-length": Buffer.byteLength(body), ...SECURITY_HEADERS, ...headers });
      res.end(req.method === "HEAD" ? undefined : body);
    };
    if (req.method !== "GET" && req.method !== "HEAD") return text(405, `${req.method} is not allowed on the console`, { allow: "GET, HEAD" });
    // Relative URLs in the page resolve against /console/, so the bare prefix redirects there.
    if (path === CONSOLE_PREFIX) return text(308, "the console is at /console/", { location: `${CONSOLE_PREFIX}/` });
    const assets = this.#load();
    if (assets instanceof Error) return text(500, `${assets.message} (${assets.code})`);
    const file = assets.files.get(path.slice(CONSOLE_PREFIX.length + 1));
    if (file === undefined) return text(404, `no console file ${path}`);
    const headers = {
      ...SECURITY_HEADERS,
      "content-security-policy": assets.csp,
      etag: file.etag,
      // Revalidated on every load (a 304 costs one round trip): a new gateway version is never mixed with cached files.
      "cache-control": "no-cache",
    };
    if (req.headers["if-none-match"] === file.etag) {
      res.writeHead(304, headers);
      res.end();
      return;
    }
    res.writeHead(200, { ...headers, "content-type": file.type, "content-length": file.body.length });
    res.end(req.method === "HEAD" ? undefined : file.body);
  }
}
