/**
 * The HTTP layer of undici — Node's global `fetch`, and the npm `undici`
 * package's fetch/request — in three parts:
 *
 * 1. A global dispatcher that wraps the one in place. Node's bundled undici
 *    and the npm package both read the dispatcher from the same global
 *    symbols (`Symbol.for("undici.globalDispatcher.1")`, `.2`), so setting
 *    them covers both. fetch follows redirects itself and dispatches every
 *    hop, so every hop is checked here. LLM calls are recognised here and
 *    their body is buffered to read the model.
 * 2. `globalThis.fetch` is wrapped only to rethrow a PolicyDeniedError that
 *    fetch would wrap in `TypeError: fetch failed`.
 * 3. Diagnostics channels, for what does not use the global dispatcher (an
 *    explicit `dispatcher:` or Agent, MeshNode.fetch): `undici:request:create`
 *    judges every undici request whatever its dispatcher (a deny sets the
 *    request's error, so undici aborts it before writing), and
 *    `undici:client:beforeConnect` tells the connect patch which socket is
 *    undici's HTTP connection (net.ts).
 */

import dc from "node:diagnostics_channel";
import { EventEmitter } from "node:events";
import { createRequire } from "node:module";
import type { Target } from "../policy/types.js";
import { PolicyDeniedError, deniedCause } from "./errors.js";
import type { GuardCore, Verdict } from "./core.js";
import { current, shared } from "./state.js";
import { defaultPort, headerRecord, httpTarget, llmProviderFor, llmTarget, splitPathQuery } from "./targets.js";
import { normalizeHost } from "../policy/hosts.js";
import { skipHttpCheck } from "./sdk-context.js";

const SYM1 = Symbol.for("undici.globalDispatcher.1");
const SYM2 = Symbol.for("undici.globalDispatcher.2");

interface Dispatcher {
  dispatch(opts: DispatchOptions, handler: Handler): boolean;
  close(...a: unknown[]): unknown;
  destroy(...a: unknown[]): unknown;
}
interface DispatchOptions {
  origin?: string | URL;
  path: string;
  method: string;
  headers?: unknown;
  body?: unknown;
  [k: string]: unknown;
}
interface Handler {
  onError?(err: Error): void;
  onResponseError?(controller: unknown, err: Error): void;
}

/** GuardedDispatcher checks each request, then hands it to the dispatcher it wraps. */
class GuardedDispatcher extends EventEmitter {
  constructor(readonly inner: Dispatcher) {
    super();
  }

  dispatch(opts: DispatchOptions, handler: Handler): boolean {
    const core = current();
    if (core === undefined) return this.inner.dispatch(opts, handler);
    const v = checkDispatch(core, opts, "fetch");
    if (v === undefined) return innerDispatch(this.inner, opts, handler);
    if (v instanceof PolicyDeniedError) {
      fail(handler, v);
      return true;
    }
    v.then(
      (newOpts) => innerDispatch(this.inner, newOpts ?? opts, handler),
      (err: unknown) => fail(handler, err as Error),
    );
    return true;
  }

  close(...a: unknown[]): unknown {
    return this.inner.close(...a);
  }

  destroy(...a: unknown[]): unknown {
    return this.inner.destroy(...a);
  }
}

/** Requests created while the wrapper dispatches were already judged: the request:create backstop skips them. */
let dispatchingDepth = 0;

function innerDispatch(inner: Dispatcher, opts: DispatchOptions, handler: Handler): boolean {
  dispatchingDepth++;
  try {
    return inner.dispatch(opts, handler);
  } finally {
    dispatchingDepth--;
  }
}

function fail(handler: Handler, err: Error): void {
  queueMicrotask(() => {
    try {
      if (typeof handler.onError === "function") handler.onError(err);
      else handler.onResponseError?.({ abort() {}, pause() {}, resume() {}, aborted: true, paused: false }, err);
    } catch {
      // a handler that throws on error must not take the process down
    }
  });
}

interface Origin {
  scheme: "http" | "https";
  host: string;
  port: number;
}

/** Parsed origins, by origin string: an agent talks to few origins, and URL parsing is a large part of a check. */
const origins = new Map<string, Origin | undefined>();

function parseOrigin(origin: string | URL | undefined): Origin | undefined {
  if (origin === undefined) return undefined;
  if (typeof origin === "string") {
    const hit = origins.get(origin);
    if (hit !== undefined || origins.has(origin)) return hit;
    const o = originOf(new URL(origin));
    if (origins.size > 1024) origins.clear();
    origins.set(origin, o);
    return o;
  }
  return originOf(origin);
}

function originOf(u: URL): Origin | undefined {
  const scheme = u.protocol === "https:" ? "https" : u.protocol === "http:" ? "http" : undefined;
  if (scheme === undefined) return undefined;
  return { scheme, host: normalizeHost(u.hostname), port: u.port ? Number(u.port) : defaultPort(scheme) };
}

/**
 * checkDispatch judges one dispatch. The Promise form resolves with the
 * options to dispatch (with a buffered body when it had to read one).
 */
function checkDispatch(core: GuardCore, opts: DispatchOptions, layer: "fetch"): undefined | PolicyDeniedError | Promise<DispatchOptions | undefined> {
  let o: Origin | undefined;
  try {
    o = parseOrigin(opts.origin);
  } catch {
    o = undefined;
  }
  if (o === undefined) {
    const t: Target = { kind: "http", scheme: "http", host: String(opts.origin ?? ""), port: 0, method: String(opts.method), path: String(opts.path), query: "", headers: {} };
    return core.mode === "observe" ? undefined : new PolicyDeniedError(t, "the request has no http(s) origin the guard can read");
  }
  const headers = headerRecord(opts.headers);
  const method = String(opts.method).toUpperCase();
  if (skipHttpCheck(o.scheme, o.host, o.port, method, String(opts.path))) {
    core.noteOrigin(o.host, o.port);
    return undefined;
  }
  const size = knownSize(opts.body, headers);
  const [path] = splitPathQuery(String(opts.path));
  const provider = llmProviderFor(core.llmProviders, o.host, o.port, method, path);
  const base = { scheme: o.scheme, host: o.host, port: o.port, method, rawPath: String(opts.path), headers };
  if (provider === undefined) {
    const v = core.check(httpTarget(size === undefined ? base : { ...base, bodySize: size }), layer);
    if (v === undefined) {
      core.noteOrigin(o.host, o.port);
      return undefined;
    }
    if (v instanceof PolicyDeniedError) return v;
    return v.then(() => {
      core.noteOrigin(o.host, o.port);
      return undefined;
    });
  }
  // An LLM call: read the body (up to maxBodyBytes) to name the model.
  const origin = o;
  return readBody(opts.body, size, core.maxBodyBytes).then(
    (buf) => {
      let parsed: unknown;
      try {
        parsed = JSON.parse(buf.toString("utf8"));
      } catch {
        parsed = undefined;
      }
      const http = httpTarget({ ...base, bodySize: buf.length, ...(parsed !== undefined ? { body: parsed } : {}) });
      const llm = llmTarget(provider, parsed) ?? { kind: "llm" as const, provider, model: "(unknown: no model in the body)" };
      const v: Verdict = core.checkAll([http, llm], layer);
      const next = { ...opts, body: buf };
      const allowed = () => {
        core.noteOrigin(origin.host, origin.port);
        return next;
      };
      if (v === undefined) return allowed();
      if (v instanceof PolicyDeniedError) throw v;
      return v.then(allowed);
    },
    (why: Error) => {
      const llm: Target = { kind: "llm", provider, model: "(unknown: body not read)" };
      if (core.mode === "observe") return undefined;
      throw new PolicyDeniedError(llm, `an LLM call's body could not be checked: ${why.message} (fails closed)`);
    },
  );
}

function knownSize(body: unknown, headers: Record<string, string>): number | undefined {
  if (body === null || body === undefined) return 0;
  if (typeof body === "string") return Buffer.byteLength(body);
  if (body instanceof Uint8Array) return body.byteLength;
  const cl = headers["content-length"];
  return cl !== undefined && /^\d+$/.test(cl) ? Number(cl) : undefined;
}

/** readBody buffers a request body of declared size ≤ max; an unknown-size stream is refused (fails closed). */
async function readBody(body: unknown, size: number | undefined, max: number): Promise<Buffer> {
  if (body === null || body === undefined) return Buffer.alloc(0);
  if (typeof body === "string") return Buffer.from(body);
  if (body instanceof Uint8Array) return Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  if (size === undefined) throw new Error("the body is a stream of unknown size");
  if (size > max) throw new Error(`the body (${size} bytes) is larger than maxBodyBytes (${max})`);
  const it = body as AsyncIterable<unknown>;
  if (typeof it[Symbol.asyncIterator] !== "function") throw new Error("the body is of a kind the guard cannot read");
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of it) {
    const b = typeof c === "string" ? Buffer.from(c) : Buffer.from(c as Uint8Array);
    n += b.length;
    if (n > max) throw new Error(`the body is larger than maxBodyBytes (${max})`);
    chunks.push(b);
  }
  return Buffer.concat(chunks);
}

// ---- installation ----

let installed: { previous: Dispatcher; wrapper: GuardedDispatcher; fetch: typeof fetch | undefined } | undefined;

/** currentGlobalDispatcher returns the dispatcher in place, creating undici's default Agent if none exists yet. */
function currentGlobalDispatcher(): Dispatcher {
  const g = globalThis as unknown as Record<symbol, Dispatcher | undefined>;
  let d = g[SYM1] ?? g[SYM2];
  if (d !== undefined) return d;
  // Nothing has used fetch yet. Reading a lazy web global loads Node's
  // bundled undici, which sets its default Agent: wrapping that one keeps
  // global fetch on the bundled client (measured ~15 µs per request faster
  // than routing it through the npm package's Agent).
  void globalThis.Headers;
  d = g[SYM1] ?? g[SYM2];
  if (d !== undefined) return d;
  const req = createRequire(import.meta.url);
  const undici = req("undici") as { getGlobalDispatcher(): Dispatcher };
  return undici.getGlobalDispatcher();
}

function setGlobal(d: Dispatcher): void {
  const g = globalThis as unknown as Record<symbol, unknown>;
  for (const sym of [SYM1, SYM2]) {
    const desc = Object.getOwnPropertyDescriptor(g, sym);
    if (desc === undefined) Object.defineProperty(g, sym, { value: d, writable: true, enumerable: false, configurable: false });
    else g[sym] = d;
  }
}

export function installUndici(): void {
  if (installed) return;
  const previous = currentGlobalDispatcher();
  const wrapper = new GuardedDispatcher(previous);
  setGlobal(wrapper);
  const origFetch = globalThis.fetch;
  if (typeof origFetch === "function") {
    const guardedFetch = function fetch(input: Parameters<typeof globalThis.fetch>[0], init?: Parameters<typeof globalThis.fetch>[1]) {
      return origFetch(input, init).catch(rethrowDenied);
    };
    globalThis.fetch = guardedFetch as typeof globalThis.fetch;
  }
  installed = { previous, wrapper, fetch: origFetch };
  dc.subscribe("undici:request:create", onRequestCreate);
  dc.subscribe("undici:client:beforeConnect", onBeforeConnect);
}

export function uninstallUndici(): void {
  if (!installed) return;
  const g = globalThis as unknown as Record<symbol, unknown>;
  // Put the previous dispatcher back only if nobody replaced ours meanwhile.
  if (g[SYM1] === installed.wrapper) setGlobal(installed.previous);
  if (installed.fetch) globalThis.fetch = installed.fetch;
  dc.unsubscribe("undici:request:create", onRequestCreate);
  dc.unsubscribe("undici:client:beforeConnect", onBeforeConnect);
  installed = undefined;
}

function rethrowDenied(err: unknown): never {
  throw deniedCause(err) ?? err;
}

interface UndiciRequest {
  origin?: string | URL;
  method: string;
  path: string;
  headers?: unknown;
  body?: unknown;
  error?: Error;
}

/**
 * The backstop: a request made through a dispatcher the guard does not wrap.
 * It is judged synchronously; an approve rule cannot hold it here (deny),
 * and an LLM call's model is read only from a string/bytes body.
 */
function onRequestCreate(message: unknown): void {
  const core = current();
  if (core === undefined || dispatchingDepth > 0) return;
  const req = (message as { request: UndiciRequest }).request;
  try {
    const v = backstopVerdict(core, req);
    if (v !== undefined) req.error = v;
  } catch (err) {
    req.error = err instanceof PolicyDeniedError ? err : new PolicyDeniedError({ kind: "http", scheme: "http", host: String(req.origin), port: 0, method: req.method, path: req.path, query: "", headers: {} }, `the guard could not read the request (fails closed): ${(err as Error).message}`);
  }
}

function backstopVerdict(core: GuardCore, req: UndiciRequest): PolicyDeniedError | undefined {
  const o = parseOrigin(req.origin);
  const method = String(req.method).toUpperCase();
  const raw = String(req.path);
  if (o === undefined) return core.mode === "observe" ? undefined : new PolicyDeniedError({ kind: "http", scheme: "http", host: String(req.origin), port: 0, method, path: raw, query: "", headers: {} }, "the request has no http(s) origin the guard can read");
  if (skipHttpCheck(o.scheme, o.host, o.port, method, raw)) return undefined;
  const headers = headerRecord(req.headers);
  const size = knownSize(req.body, headers);
  const [path] = splitPathQuery(raw);
  const provider = llmProviderFor(core.llmProviders, o.host, o.port, method, path);
  const base = { scheme: o.scheme, host: o.host, port: o.port, method, rawPath: raw, headers };
  const targets: Target[] = [httpTarget(size === undefined ? base : { ...base, bodySize: size })];
  if (provider !== undefined) {
    const b = req.body;
    let parsed: unknown;
    if (typeof b === "string" || b instanceof Uint8Array) {
      try {
        parsed = JSON.parse(Buffer.from(b as string).toString("utf8"));
      } catch {
        parsed = undefined;
      }
    }
    targets.push(llmTarget(provider, parsed) ?? { kind: "llm", provider, model: "(unknown: body not readable here)" });
  }
  const v = core.checkAll(targets, "fetch");
  if (v === undefined) {
    core.noteOrigin(o.host, o.port);
    return undefined;
  }
  if (v instanceof PolicyDeniedError) return v;
  v.catch(() => {});
  return new PolicyDeniedError(targets[targets.length - 1]!, "an approve rule cannot hold a request made through a custom undici dispatcher; use the global fetch");
}

function onBeforeConnect(message: unknown): void {
  if (current() === undefined) return;
  const p = (message as { connectParams?: { hostname?: string; port?: string | number; protocol?: string } }).connectParams;
  if (!p?.hostname) return;
  const port = Number(p.port) || defaultPort(p.protocol ?? "http:");
  shared.undiciConnect = { host: normalizeHost(p.hostname), port };
  // undici's connector opens the socket synchronously after this message.
  queueMicrotask(() => {
    shared.undiciConnect = undefined;
  });
}
