/**
 * The HTTP layer of undici — Node's global `fetch`, and the npm `undici`
 * package's fetch/request — in three parts:
 *
 * 1. A global dispatcher that wraps the one in place. Node's bundled undici
 *    and the npm package both read the dispatcher from the same global
 *    symbols (`Symbol.for("undici.globalDispatcher.1")`, `.2`), so setting
 *    them covers both. fetch follows redirects itself and dispatches every
 *    hop, so every hop is checked here. A host that is a name is resolved
 *    first (resolve.ts) when some rule could allow it, and the request is
 *    judged with the address (CIDR rules apply to it); a name no rule could
 *    allow is denied without a look-up. LLM calls are recognised here and
 *    their body is buffered to read the model.
 * 2. `globalThis.fetch` is wrapped only to rethrow a PolicyDeniedError that
 *    fetch would wrap in `TypeError: fetch failed`.
 * 3. MeshNode.fetch sends through the same judging wrapper, put around the
 *    node's own Agent through the tailnet dispatcher channel
 *    (fetch-channel.ts); tailnet names are not looked up here.
 * 4. Diagnostics channels, for what does not use the global dispatcher (an
 *    explicit `dispatcher:` or Agent): `undici:request:create`
 *    judges every undici request whatever its dispatcher (a deny sets the
 *    request's error, so undici aborts it before writing).
 *
 * Which connection is undici's. undici announces a new connection on
 * `undici:client:beforeConnect` and opens it at once. The announcement is
 * trusted only as far as the guard can check it: the message is validated,
 * and it counts only when a request the guard itself judged and allowed
 * (the Request objects it saw, held in this module) is waiting to be sent
 * to that origin; it is then spent by the very next connection (or tailnet
 * dial) the process opens, which must go to that origin, and it takes one
 * waiting request with it. A forged announcement, one for an origin with
 * nothing waiting, or a second socket opened after undici's, gets nothing:
 * the socket is judged as raw TCP.
 */

import dc from "node:diagnostics_channel";
import { EventEmitter } from "node:events";
import { createRequire } from "node:module";
import { isIpLiteral } from "../policy/ip.js";
import type { HttpTarget, Target } from "../policy/types.js";
import { PolicyDeniedError, deniedCause } from "./errors.js";
import { errorText, type GuardCore, type Verdict } from "./core.js";
import { pinned, refusedAddress, resolveName, type Resolved } from "./resolve.js";
import { current } from "./state.js";
import { defaultPort, headerRecord, hostKey, httpTarget, llmProviderFor, llmTarget, splitPathQuery } from "./targets.js";
import { normalizeHost } from "../policy/hosts.js";
import { skipHttpCheck } from "./sdk-context.js";
import { gatewayHttpVerdict, NOT_GATEWAY } from "./gateways.js";
import { DISPATCHER_CHANNEL, dispatchPrepared, failDispatch, type DispatcherMessage, type DispatchPrepare } from "../fetch-channel.js";

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

/**
 * GuardedDispatcher checks each request, then hands it to the dispatcher it
 * wraps. The wrapped dispatcher is private: handing it out would hand out
 * an unguarded dispatcher (the request:create backstop would still judge
 * its requests, but nothing needs it).
 */
class GuardedDispatcher extends EventEmitter {
  readonly #inner: Dispatcher;
  /** Host names are tailnet (MagicDNS) names the node resolves itself: not looked up here. */
  readonly #tailnet: boolean;
  /** A MeshNode.fetch's prepare step (the tokens client's credentials): run on what was allowed, never on a denied dispatch. */
  readonly #prepare: DispatchPrepare | undefined;

  constructor(inner: Dispatcher, tailnet = false, prepare?: DispatchPrepare) {
    super();
    this.#inner = inner;
    this.#tailnet = tailnet;
    this.#prepare = prepare;
  }

  /** send hands an allowed dispatch on: after the prepare step, when the fetch has one. */
  #send(opts: DispatchOptions, handler: Handler): boolean {
    const prepare = this.#prepare;
    if (prepare === undefined) return innerDispatch(this.#inner, opts, handler);
    return dispatchPrepared(prepare, opts, handler, (o) => innerDispatch(this.#inner, o as DispatchOptions, handler));
  }

  dispatch(opts: DispatchOptions, handler: Handler): boolean {
    const core = current();
    if (core === undefined) return this.#inner.dispatch(opts, handler);
    let v: DispatchVerdict;
    try {
      v = checkDispatch(core, opts, this.#tailnet);
    } catch (err) {
      v = core.failed(unreadable(opts), err);
    }
    if (v === undefined) return this.#send(opts, handler);
    if (v instanceof PolicyDeniedError) {
      failDispatch(handler, v);
      return true;
    }
    v.then(
      (newOpts) => this.#send(newOpts ?? opts, handler),
      (err: unknown) => failDispatch(handler, err instanceof Error ? err : new Error(errorText(err))),
    );
    return true;
  }

  close(...a: unknown[]): unknown {
    return this.#inner.close(...a);
  }

  destroy(...a: unknown[]): unknown {
    return this.#inner.destroy(...a);
  }

  /** The dispatcher this one wraps, for uninstall only (module-private). */
  static innerOf(d: GuardedDispatcher): Dispatcher {
    return d.#inner;
  }
}

/** The dispatch being handed on by the wrapper: the request undici creates for it was judged already. */
let dispatching: { key: string; method: string; used: boolean } | undefined;

function innerDispatch(inner: Dispatcher, opts: DispatchOptions, handler: Handler): boolean {
  const outer = dispatching;
  let key = "";
  try {
    key = parseOrigin(opts.origin)?.key ?? "";
  } catch {
    key = "";
  }
  dispatching = { key, method: String(opts.method).toUpperCase(), used: false };
  try {
    return inner.dispatch(opts, handler);
  } finally {
    dispatching = outer;
  }
}

interface Origin {
  scheme: "http" | "https";
  /** In normal form (normalizeHost). */
  host: string;
  /** As the URL spells it, brackets removed: what undici's connection looks up. */
  hostname: string;
  port: number;
  /** hostKey(host, port): the origin's key in the guard's tables. */
  key: string;
}

/** Parsed origins, by origin string: an agent talks to few origins, and URL parsing is a large part of a check. */
const origins = new Map<string, Origin | undefined>();

function parseOrigin(origin: unknown): Origin | undefined {
  if (origin === undefined || origin === null) return undefined;
  if (typeof origin === "string") {
    const hit = origins.get(origin);
    if (hit !== undefined || origins.has(origin)) return hit;
    let o: Origin | undefined;
    try {
      o = originOf(new URL(origin));
    } catch {
      o = undefined;
    }
    if (origins.size > 1024) origins.clear();
    origins.set(origin, o);
    return o;
  }
  if (origin instanceof URL) return originOf(origin);
  return undefined;
}

function originOf(u: URL): Origin | undefined {
  const scheme = u.protocol === "https:" ? "https" : u.protocol === "http:" ? "http" : undefined;
  if (scheme === undefined) return undefined;
  const hostname = u.hostname.startsWith("[") && u.hostname.endsWith("]") ? u.hostname.slice(1, -1) : u.hostname;
  const host = normalizeHost(u.hostname);
  const port = u.port ? Number(u.port) : defaultPort(scheme);
  return { scheme, host, hostname, port, key: hostKey(host, port) };
}

/** unreadable is the target reported for a request the guard could not read. */
function unreadable(opts: unknown): HttpTarget {
  let host = "(unreadable)";
  try {
    const o = (opts as { origin?: unknown } | null)?.origin;
    if (typeof o === "string") host = o.slice(0, 200);
  } catch {
    // keep the placeholder
  }
  return { kind: "http", scheme: "http", host, port: 0, method: "GET", path: "/", query: "", headers: {} };
}

type DispatchVerdict = undefined | PolicyDeniedError | Promise<DispatchOptions | undefined>;

/**
 * checkDispatch judges one dispatch of the global dispatcher. The Promise
 * form resolves with the options to dispatch (with a buffered body when it
 * had to read one).
 */
function checkDispatch(core: GuardCore, opts: DispatchOptions, tailnet: boolean): DispatchVerdict {
  const o = parseOrigin(opts.origin);
  if (o === undefined) {
    const t: HttpTarget = { ...unreadable(opts), method: String(opts.method), path: String(opts.path) };
    return core.mode === "observe" ? undefined : new PolicyDeniedError(t, "the request has no http(s) origin the guard can read");
  }
  const headers = headerRecord(opts.headers);
  const method = String(opts.method).toUpperCase();
  const rawPath = String(opts.path);
  if (skipHttpCheck(o.scheme, o.host, o.port, method, rawPath)) return undefined;
  const size = knownSize(opts.body, headers);
  const base = { scheme: o.scheme, host: o.host, port: o.port, method, rawPath, headers };
  // A connector call of a registered AI gateway: judged as the upstream request the gateway makes (./gateways.ts).
  const g = gatewayHttpVerdict(core, httpTarget(size === undefined ? base : { ...base, bodySize: size }), "fetch");
  if (g !== NOT_GATEWAY) return g === undefined || g instanceof PolicyDeniedError ? g : g.then(() => undefined);
  const judge = (resolvedIp: string | undefined): DispatchVerdict => judgeDispatch(core, o, base, size, opts, resolvedIp);
  if (tailnet || isIpLiteral(o.host) || !core.screens) return judge(undefined);
  // A name: judged with its address when some rule could allow it, without a look-up when none could.
  const screen = httpTarget(base);
  if (!core.mayAllow(screen)) return judge(undefined);
  const known = pinned(core, o.hostname);
  if (known !== undefined) return withAddress(core, o, known, judge);
  return resolveName(core, o.hostname).then((list) => {
    const v = withAddress(core, o, list, judge);
    if (v instanceof PolicyDeniedError) throw v;
    return v;
  });
}

/** withAddress judges a request to a name with the address it resolved to, unless the address is not fit for the name. */
function withAddress(core: GuardCore, o: Origin, list: Resolved[], judge: (ip: string | undefined) => DispatchVerdict): DispatchVerdict {
  for (const a of list) {
    const why = refusedAddress(core, o.host, a.address);
    if (why === undefined) continue;
    const t: HttpTarget = { kind: "http", scheme: o.scheme, host: o.host, port: o.port, method: "GET", path: "/", query: "", headers: {}, resolvedIp: a.address };
    if (core.mode === "observe") {
      core.warn(new Error(`observe: would deny: ${why}`));
      break;
    }
    const err = new PolicyDeniedError(t, why);
    core.warn(err);
    return err;
  }
  return judge(list[0]!.address);
}

function judgeDispatch(
  core: GuardCore,
  o: Origin,
  base: { scheme: "http" | "https"; host: string; port: number; method: string; rawPath: string; headers: Record<string, string> },
  size: number | undefined,
  opts: DispatchOptions,
  resolvedIp: string | undefined,
): DispatchVerdict {
  const [path] = splitPathQuery(base.rawPath);
  const provider = llmProviderFor(core.llmProviders, o.host, o.port, base.method, path);
  if (provider === undefined) {
    const t = httpTarget(size === undefined ? base : { ...base, bodySize: size });
    if (resolvedIp !== undefined) t.resolvedIp = resolvedIp;
    const v = core.check(t, "fetch");
    if (v === undefined || v instanceof PolicyDeniedError) return v;
    return v.then(() => undefined);
  }
  // An LLM call: read the body (up to maxBodyBytes) to name the model.
  return readBody(opts.body, size, core.maxBodyBytes).then(
    (buf) => {
      let parsed: unknown;
      try {
        parsed = JSON.parse(buf.toString("utf8"));
      } catch {
        parsed = undefined;
      }
      const http = httpTarget({ ...base, bodySize: buf.length, ...(parsed !== undefined ? { body: parsed } : {}) });
      if (resolvedIp !== undefined) http.resolvedIp = resolvedIp;
      const llm = llmTarget(provider, parsed, path) ?? { kind: "llm" as const, provider, model: "(unknown: no model in the body)" };
      const v: Verdict = core.checkAll([http, llm], "fetch");
      const next = { ...opts, body: buf };
      if (v === undefined) return next;
      if (v instanceof PolicyDeniedError) throw v;
      return v.then(() => next);
    },
    (why: Error) => {
      const llm: Target = { kind: "llm", provider, model: "(unknown: body not read)" };
      if (core.mode === "observe") return undefined;
      throw new PolicyDeniedError(llm, `an LLM call's body could not be checked: ${errorText(why)} (fails closed)`);
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

const CHANNELS: Array<[string, (m: unknown) => void]> = [
  ["undici:request:create", onRequestCreate],
  ["undici:client:beforeConnect", onBeforeConnect],
  ["undici:client:sendHeaders", onSent],
  ["undici:request:error", onSent],
  [DISPATCHER_CHANNEL, onTailnetDispatcher],
];

/** The judging wrapper of each MeshNode's Agent (fetch-channel.ts), made once per Agent. */
let tailnetWrappers = new WeakMap<object, GuardedDispatcher>();

/**
 * onTailnetDispatcher hands MeshNode.fetch the judging wrapper of its Agent.
 * A fetch with a prepare step (a tokens client follows FETCH_CHANNEL) gets
 * a wrapper of its own that runs the step on what it allowed: judged
 * first, credentials after. Never throws.
 */
function onTailnetDispatcher(message: unknown): void {
  try {
    const m = message as DispatcherMessage;
    const inner = m?.dispatcher as Dispatcher | undefined;
    if (inner === null || typeof inner !== "object" || typeof inner.dispatch !== "function" || inner instanceof GuardedDispatcher) return;
    const prepare = typeof m.claimPrepare === "function" ? m.claimPrepare() : undefined;
    if (prepare !== undefined) {
      m.dispatcher = new GuardedDispatcher(inner, true, prepare);
      return;
    }
    let w = tailnetWrappers.get(inner);
    if (w === undefined) tailnetWrappers.set(inner, (w = new GuardedDispatcher(inner, true)));
    m.dispatcher = w;
  } catch (err) {
    // The node's own dispatcher is used: the request:create backstop still judges each request.
    current()?.warn(err);
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
  for (const [name, fn] of CHANNELS) dc.subscribe(name, fn);
}

export function uninstallUndici(): void {
  if (!installed) return;
  const g = globalThis as unknown as Record<symbol, unknown>;
  // Put the previous dispatcher back only if nobody replaced ours meanwhile.
  if (g[SYM1] === installed.wrapper) setGlobal(GuardedDispatcher.innerOf(installed.wrapper));
  if (installed.fetch) globalThis.fetch = installed.fetch;
  for (const [name, fn] of CHANNELS) dc.unsubscribe(name, fn);
  installed = undefined;
  tailnetWrappers = new WeakMap();
  waiting.clear();
  pending = undefined;
}

function rethrowDenied(err: unknown): never {
  let d: PolicyDeniedError | undefined;
  try {
    d = deniedCause(err);
  } catch {
    d = undefined;
  }
  throw d ?? err;
}

// ---- requests the guard allowed, and the connections undici opens for them ----

/** Requests the guard allowed and that have not gone out yet, by origin ("host:port"), with when they were allowed. */
const waiting = new Map<string, Map<object, number>>();
/** The origin key of each request in `waiting`. */
const keyOf = new WeakMap<object, string>();
/** A request waits at most this long to count for a connection (a request that never sends frees its place). */
const WAIT_MS = 120_000;
const MAX_WAITING = 4096;

function noteAllowed(req: object, key: string): void {
  let m = waiting.get(key);
  if (m === undefined) {
    if (waiting.size >= MAX_WAITING) waiting.delete(waiting.keys().next().value!);
    waiting.set(key, (m = new Map()));
  }
  if (m.size >= MAX_WAITING) m.delete(m.keys().next().value!);
  m.set(req, Date.now());
  keyOf.set(req, key);
}

function forget(req: object): void {
  const key = keyOf.get(req);
  if (key === undefined) return;
  keyOf.delete(req);
  const m = waiting.get(key);
  if (m === undefined) return;
  m.delete(req);
  if (m.size === 0) waiting.delete(key);
}

/** takeWaiting removes the oldest fresh request waiting for `key`; false when there is none. */
function takeWaiting(key: string): boolean {
  const m = waiting.get(key);
  if (m === undefined) return false;
  const now = Date.now();
  for (const [req, at] of m) {
    m.delete(req);
    keyOf.delete(req);
    if (now - at <= WAIT_MS) {
      if (m.size === 0) waiting.delete(key);
      return true;
    }
  }
  waiting.delete(key);
  return false;
}

function hasWaiting(key: string): boolean {
  const m = waiting.get(key);
  return m !== undefined && m.size > 0;
}

/** The connection undici announced and is about to open (see the file comment). */
let pending: { host: string; port: number; key: string } | undefined;

/**
 * takeUndiciConnect is asked by the connect patch (and the tailnet dial
 * subscriber) for every connection: true when it is the one undici just
 * announced for an origin with an allowed request waiting. The
 * announcement is spent either way.
 */
export function takeUndiciConnect(host: string, port: number): boolean {
  const p = pending;
  if (p === undefined) return false;
  pending = undefined;
  if (p.host !== host || p.port !== port) return false;
  return takeWaiting(p.key);
}

function onBeforeConnect(message: unknown): void {
  pending = undefined;
  if (current() === undefined) return;
  try {
    const cp = (message as { connectParams?: unknown } | null)?.connectParams as { hostname?: unknown; port?: unknown; protocol?: unknown } | undefined;
    const hostname = cp?.hostname;
    const protocol = cp?.protocol;
    const rawPort = cp?.port;
    if (typeof hostname !== "string" || hostname === "" || (protocol !== "http:" && protocol !== "https:") || (typeof rawPort !== "string" && typeof rawPort !== "number")) {
      current()?.warn(new Error("undici:client:beforeConnect: a message the guard cannot read was ignored (it opens nothing)"));
      return;
    }
    const port = rawPort === "" ? defaultPort(protocol) : Number(rawPort);
    if (!Number.isInteger(port) || port < 1 || port > 65535) return;
    const host = normalizeHost(hostname);
    const key = hostKey(host, port);
    if (!hasWaiting(key)) return; // nothing the guard allowed waits for this origin
    const p = { host, port, key };
    pending = p;
    // undici's connector opens the socket synchronously after this message.
    queueMicrotask(() => {
      if (pending === p) pending = undefined;
    });
  } catch (err) {
    current()?.warn(err);
  }
}

/** onSent: a request went out (sendHeaders) or failed (request:error): it no longer waits for a connection. */
function onSent(message: unknown): void {
  try {
    const req = (message as { request?: unknown } | null)?.request;
    if (typeof req === "object" && req !== null) forget(req);
  } catch {
    // a message the guard cannot read names no request it holds
  }
}

interface UndiciRequest {
  origin?: unknown;
  method?: unknown;
  path?: unknown;
  headers?: unknown;
  body?: unknown;
  error?: unknown;
}

/**
 * The backstop: a request made through a dispatcher the guard does not wrap.
 * It is judged synchronously; an approve rule cannot hold it here (deny),
 * and an LLM call's model is read only from a string/bytes body. A request
 * the guard cannot read is denied. Never throws.
 */
function onRequestCreate(message: unknown): void {
  const core = current();
  if (core === undefined) return;
  let req: UndiciRequest | undefined;
  try {
    const r = (message as { request?: unknown } | null)?.request;
    if (typeof r !== "object" || r === null) {
      core.warn(new Error("undici:request:create: a message without a request was ignored"));
      return;
    }
    req = r as UndiciRequest;
  } catch (err) {
    core.warn(err);
    return;
  }
  let verdict: PolicyDeniedError | undefined;
  try {
    const o = parseOrigin(req.origin);
    const d = dispatching;
    if (d !== undefined && !d.used && o !== undefined && o.key === d.key && String(req.method).toUpperCase() === d.method) {
      // The request of the dispatch the wrapper judged: no second decision.
      d.used = true;
      noteAllowed(req, d.key);
      return;
    }
    verdict = backstopVerdict(core, req, o);
    if (verdict === undefined && o !== undefined) noteAllowed(req, o.key);
  } catch (err) {
    verdict = core.failed(unreadable(req), err);
  }
  if (verdict === undefined) return;
  try {
    req.error = verdict;
  } catch (err) {
    core.warn(err);
  }
}

function backstopVerdict(core: GuardCore, req: UndiciRequest, o: Origin | undefined): PolicyDeniedError | undefined {
  const method = String(req.method).toUpperCase();
  const raw = String(req.path);
  if (o === undefined) {
    const t: HttpTarget = { ...unreadable(req), method, path: raw };
    if (core.mode === "observe") return undefined;
    const e = new PolicyDeniedError(t, "the request has no http(s) origin the guard can read");
    core.warn(e);
    return e;
  }
  if (skipHttpCheck(o.scheme, o.host, o.port, method, raw)) return undefined;
  const headers = headerRecord(req.headers);
  const size = knownSize(req.body, headers);
  const [path] = splitPathQuery(raw);
  const provider = llmProviderFor(core.llmProviders, o.host, o.port, method, path);
  const base = { scheme: o.scheme, host: o.host, port: o.port, method, rawPath: raw, headers };
  const http = httpTarget(size === undefined ? base : { ...base, bodySize: size });
  const g = gatewayHttpVerdict(core, http, "fetch", { noHold: "an approve rule cannot hold a request made through a custom undici dispatcher; use the global fetch" });
  if (g !== NOT_GATEWAY) {
    if (!(g instanceof Promise)) return g;
    g.catch(() => {});
    return new PolicyDeniedError(http, "an approve rule cannot hold a request made through a custom undici dispatcher; use the global fetch");
  }
  // Synchronous: the address is known only if the guard's resolver answered for this name recently;
  // otherwise the connection's address is screened when undici connects (net.ts).
  if (!isIpLiteral(o.host)) {
    const known = pinned(core, o.hostname);
    if (known !== undefined) http.resolvedIp = known[0]!.address;
  }
  const targets: Target[] = [http];
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
    targets.push(llmTarget(provider, parsed, path) ?? { kind: "llm", provider, model: "(unknown: body not readable here)" });
  }
  const v = core.checkAll(targets, "fetch");
  if (v === undefined) return undefined;
  if (v instanceof PolicyDeniedError) return v;
  v.catch(() => {});
  return new PolicyDeniedError(targets[targets.length - 1]!, "an approve rule cannot hold a request made through a custom undici dispatcher; use the global fetch");
}
