/**
 * The policy server (`meshguard policy serve`): serves the current policy as
 * a signed bundle over HTTP — on a tailnet port through `node.listen`, so
 * only peers the tailnet policy lets in can ask, and whois says who did.
 *
 *   GET /v1/policy[?wait=SECONDS]
 *     200  the bundle (JSON), with ETag "<version>-<hash prefix>"
 *     304  with If-None-Match equal to the current ETag: the client is up to
 *          date. With ?wait=N (≤ 55) the answer is held until the policy
 *          changes or N seconds pass — a long poll, so agents apply a change
 *          within a round trip of it being signed.
 *     503  no valid policy has been loaded yet
 *
 * A policy that does not load (invalid, failing tests) is never signed: the
 * server keeps serving the last good bundle and reports the error.
 */

import { watch, type FSWatcher } from "node:fs";
import { readFile } from "node:fs/promises";
import http from "node:http";
import { basename, dirname } from "node:path";
import { signBundle, type KeyInput, type PolicyBundle } from "./bundle.js";
import { loadPolicy } from "../policy/load.js";

export const POLICY_PATH = "/v1/policy";
export const MAX_WAIT_SECONDS = 55;

export interface PolicyServerOptions {
  /** The Ed25519 private key bundles are signed with. */
  privateKey: KeyInput;
  /** A policy file to serve and watch for changes. */
  file?: string;
  /** Or a policy text (update later with `update`). */
  policy?: string;
  /** Progress and errors, one line each. */
  log?: (line: string) => void;
  /** Who asked (for the log): given the request's socket, e.g. node.whois. */
  whois?: (req: http.IncomingMessage) => Promise<string>;
}

interface Waiter {
  res: http.ServerResponse;
  timer: NodeJS.Timeout;
}

/** PolicyServer signs and serves the current policy. */
export class PolicyServer implements AsyncDisposable {
  #bundle: PolicyBundle | undefined;
  #waiters = new Set<Waiter>();
  #watcher: FSWatcher | undefined;
  #debounce: NodeJS.Timeout | undefined;
  #closed = false;
  readonly #opts: PolicyServerOptions;
  readonly #log: (line: string) => void;
  /** The HTTP handler (mount it on any http.Server). */
  readonly handler: http.RequestListener;

  constructor(opts: PolicyServerOptions) {
    this.#opts = opts;
    this.#log = opts.log ?? (() => {});
    this.handler = (req, res) => this.#handle(req, res);
    if (opts.policy !== undefined) this.update(opts.policy);
  }

  /** The bundle being served, if any. */
  get bundle(): PolicyBundle | undefined {
    return this.#bundle;
  }

  /** etag of the current bundle. */
  get etag(): string | undefined {
    return this.#bundle ? `"${this.#bundle.version}-${this.#bundle.sha256.slice(0, 16)}"` : undefined;
  }

  /**
   * update loads a new policy text (throws if it is invalid or its tests
   * fail — nothing changes then), signs it and wakes every waiting client.
   */
  update(text: string): PolicyBundle {
    loadPolicy(text, this.#opts.file ? { file: this.#opts.file } : {});
    if (this.#bundle && this.#bundle.policy === text) return this.#bundle;
    const version = Math.max((this.#bundle?.version ?? 0) + 1, Date.now());
    this.#bundle = signBundle(text, this.#opts.privateKey, { version });
    this.#log(`serving policy version ${version} (sha256 ${this.#bundle.sha256.slice(0, 12)})`);
    for (const w of this.#waiters) this.#answer(w);
    return this.#bundle;
  }

  /** start reads the policy file (if any) and watches it. */
  async start(): Promise<void> {
    const file = this.#opts.file;
    if (file === undefined || this.#closed) return;
    await this.#reloadFile();
    // Watch the directory: editors replace a file by renaming a new one over it.
    this.#watcher = watch(dirname(file), (_ev, name) => {
      if (name !== null && name !== basename(file)) return;
      clearTimeout(this.#debounce);
      this.#debounce = setTimeout(() => void this.#reloadFile(), 100);
    });
    this.#watcher.on("error", (err) => this.#log(`watching ${file}: ${err.message}`));
  }

  async #reloadFile(): Promise<void> {
    const file = this.#opts.file!;
    let text: string;
    try {
      text = await readFile(file, "utf8");
    } catch (err) {
      this.#log(`cannot read ${file} (still serving the last good policy): ${(err as Error).message}`);
      return;
    }
    try {
      this.update(text);
    } catch (err) {
      this.#log(`${file} was not signed (still serving the last good policy): ${(err as Error).message}`);
    }
  }

  #handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const url = new URL(req.url ?? "/", "http://policy");
    if (url.pathname !== POLICY_PATH) return void res.writeHead(404, { "content-type": "text/plain" }).end(`not found; the policy is at ${POLICY_PATH}\n`);
    if (req.method !== "GET") return void res.writeHead(405, { allow: "GET" }).end();
    if (this.#opts.whois) void this.#opts.whois(req).then((who) => this.#log(`policy requested by ${who}`), () => {});
    if (this.#bundle === undefined) return void res.writeHead(503, { "content-type": "text/plain", "retry-after": "5" }).end("no valid policy loaded yet\n");
    const wait = Math.min(Math.max(Number(url.searchParams.get("wait") ?? 0) || 0, 0), MAX_WAIT_SECONDS);
    if (req.headers["if-none-match"] === this.etag && wait > 0) {
      const w: Waiter = { res, timer: setTimeout(() => this.#answer(w), wait * 1000) };
      this.#waiters.add(w);
      res.on("close", () => {
        clearTimeout(w.timer);
        this.#waiters.delete(w);
      });
      return;
    }
    this.#answer({ res, timer: undefined as unknown as NodeJS.Timeout }, req.headers["if-none-match"]);
  }

  #answer(w: Waiter, ifNoneMatch?: string | string[]): void {
    clearTimeout(w.timer);
    this.#waiters.delete(w);
    const res = w.res;
    if (res.writableEnded || res.destroyed) return;
    const etag = this.etag!;
    const known = ifNoneMatch ?? res.req?.headers["if-none-match"];
    if (known === etag) return void res.writeHead(304, { etag }).end();
    res.writeHead(200, { "content-type": "application/json", etag, "cache-control": "no-cache" }).end(JSON.stringify(this.#bundle));
  }

  /**
   * close stops watching and answers every waiting client (503, retry).
   * The HTTP server it is mounted on is the caller's to close. Idempotent.
   */
  close(): Promise<void> {
    this.#closed = true;
    this.#watcher?.close();
    this.#watcher = undefined;
    clearTimeout(this.#debounce);
    for (const w of this.#waiters) {
      clearTimeout(w.timer);
      if (!w.res.writableEnded) w.res.writeHead(503, { "retry-after": "1" }).end();
    }
    this.#waiters.clear();
    return Promise.resolve();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/** ServedPolicy is a policy server running on a tailnet port (servePolicy's result). */
export interface ServedPolicy extends AsyncDisposable {
  policy: PolicyServer;
  server: http.Server;
  /** close stops the policy server and the tailnet listener. Idempotent. */
  close(): Promise<void>;
}

/**
 * servePolicy serves the policy on a tailnet port of `node`
 * (anything with MeshNode's `listen(port, server)`), and resolves with the
 * running server; `close()` stops both.
 */
export async function servePolicy(
  node: { listen<S extends http.Server>(port: number, server: S): Promise<S> },
  port: number,
  opts: PolicyServerOptions,
): Promise<ServedPolicy> {
  const policy = new PolicyServer(opts);
  await policy.start();
  let server: http.Server;
  try {
    server = await node.listen(port, http.createServer(policy.handler));
  } catch (err) {
    await policy.close();
    throw err;
  }
  let closing: Promise<void> | undefined;
  const close = (): Promise<void> =>
    (closing ??= (async () => {
      await policy.close();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    })());
  return { policy, server, close, [Symbol.asyncDispose]: close };
}
