import { EventEmitter } from "node:events";
import net from "node:net";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import type { Agent, RequestInfo, RequestInit, Response } from "undici";
import { loadBackend } from "./backend/load.js";
import type { Backend, CoreEvent, ExportedConn, PeerInfo, UpResult } from "./backend/protocol.js";
import { configSchemas, knobsFor, parseWith, resolveStartOptions, type ResolvedStartOptions, type StartOptions, type TailnetIdentity } from "./config.js";
import { announceConnection, judgeDial } from "./dial-channel.js";
import { ErrorCode, MeshguardError, isMeshguardError } from "./errors.js";
import { fetchHasSubscribers, fetchPrepare, tailnetDispatcher, type DispatchPrepare } from "./fetch-channel.js";
import { progressReporter } from "./progress.js";
import { StateMirror, stateKey } from "./state-store.js";
import { openControlSocket, permissionModelDenies, socketPathOf, type ControlSocket, type PeerPath, type PingKind, type PingReply } from "./inspect/index.js";
import { createTailnetAgent, markDialed, watchCreatedRequests, type TailnetAgent } from "./tailnet-http.js";

export type { PeerInfo as Peer } from "./backend/protocol.js";
export type { PeerPath, PingKind, PingReply } from "./inspect/index.js";
export type { ProgressEvent, ProgressPhase, StartOptions, TailnetIdentity } from "./config.js";
export { CONNECTION_CHANNEL, DIAL_CHANNEL, type ConnectionMessage, type DialMessage, type DialVerdict } from "./dial-channel.js";
export { FETCH_CHANNEL, type FetchMessage } from "./fetch-channel.js";

/** Who is behind a tailnet connection, as the tailnet says. */
export interface WhoIs {
  node: { id: string; name: string; hostname: string; tags: string[]; ips: string[] };
  /** The owning user; for a tagged node headscale reports a placeholder. */
  user: { login: string; displayName: string };
  /** True when the node's identity is its tags (an agent), not a user. */
  tagged: boolean;
  /**
   * The humans accountable for the node: the user of a user-owned node; for a
   * tagged node the owners of its tags, from `tagOwners` (groups expanded).
   */
  owners: string[];
  /** App capabilities granted to the caller, by capability name (grants with `app`). */
  caps: Record<string, unknown[]>;
}

export interface NodeStatus {
  state: string;
  ips: string[];
  name?: string;
  id?: string;
  health?: string[] | null;
}

export interface DialOptions {
  timeoutMs?: number;
  /** Keep the writable side open after the peer ends (default false, like net.connect). */
  allowHalfOpen?: boolean;
}

/** Socket metadata for connections made or accepted over the tailnet. */
const connInfo = new WeakMap<net.Socket, { remoteAddr: string; localAddr: string }>();

/** MeshNodeEvents types MeshNode's events (EventEmitter<MeshNodeEvents>). */
export interface MeshNodeEvents {
  state: [state: string];
  netmap: [ev: { peers: PeerInfo[] }];
  log: [line: string];
  warning: [err: MeshguardError];
}

/**
 * MeshNode is this process as a node of a tailnet: its own WireGuard
 * identity, reachable by MagicDNS name, able to dial and listen on tailnet
 * ports and to ask who is behind any tailnet connection.
 *
 * Events: `state` (backend state), `netmap` ({ peers } whenever the peers this
 * node may reach change), `log` (with verbose), `warning`.
 */
export class MeshNode extends EventEmitter<MeshNodeEvents> {
  /** Tailnet IPs of this node (IPv4 first). */
  readonly ips: string[];
  /** MagicDNS name of this node, fully qualified. */
  readonly name: string;
  readonly hostname: string;
  /** Stable node ID given by the control server. */
  readonly id: string;
  /** Milliseconds from start() to online. */
  readonly onlineMs: number;

  /**
   * The node's state directory (its tailnet keys). An app that runs as this
   * node keeps its own state beside them (the token issuer's signing keys),
   * so the node's identity and the app's keys live and die together.
   */
  get dir(): string {
    return this.opts.dir;
  }

  /**
   * Which core runs this node: "native" (the Node addon) or "wasm" (the Go
   * core compiled to WebAssembly, in a worker thread). Exported because the
   * "auto" backend choice may fall back to wasm, which reaches peers only
   * through DERP: a program can say so, or refuse it.
   */
  get backendKind(): "native" | "wasm" {
    return this.backend.kind;
  }

  /** The control server this node joined (what a service tells clients that must join the same tailnet, e.g. the gateway's console). */
  get controlUrl(): string {
    return this.opts.controlUrl;
  }

  private readonly backend: Backend;
  private readonly handle: number;
  private readonly opts: ResolvedStartOptions;
  private readonly servers = new Map<number, net.Server>();
  /** Releases of the process holds of open listeners (see listen). */
  private readonly listenerHolds = new Map<number, () => void>();
  private releaseHold: () => void;
  private held = true;
  private readonly unsubscribe: () => void;
  private closed = false;
  /** The node's state store, when the `state` option gave one. */
  private state?: { mirror: StateMirror; ownDir: boolean };
  private closing?: Promise<void>;
  private dispatcher?: Agent;
  private agents: { http?: TailnetAgent; https?: TailnetAgent } = {};
  /** Tag owners and groups as the followed policy says (setTailnetIdentity); the start options override them per key. */
  private identity: Required<TailnetIdentity> = { tagOwners: {}, groups: {} };
  private socket?: ControlSocket;

  /**
   * The path of the node's local control socket (what `meshguard status`,
   * `whois`, `ping` and `policy explain` attach to), or undefined when it
   * serves none (the `controlSocket` start option).
   */
  get controlSocket(): string | undefined {
    return this.socket?.path;
  }

  private constructor(backend: Backend, handle: number, opts: ResolvedStartOptions, up: UpResult, hold: () => void, unsubscribe: () => void) {
    super();
    this.backend = backend;
    this.handle = handle;
    this.opts = opts;
    this.ips = up.ips;
    this.name = up.name;
    this.hostname = up.hostname;
    this.id = up.id;
    this.onlineMs = up.onlineMs;
    this.releaseHold = hold;
    this.unsubscribe = unsubscribe;
    watchCreatedRequests();
  }

  /**
   * start creates the node, joins the tailnet and resolves once it is online.
   * Options are validated first; a bad one is a MeshguardError naming the field.
   */
  static async start(options: StartOptions): Promise<MeshNode> {
    const opts = resolveStartOptions(options);
    const progress = progressReporter(opts.onProgress);
    opts.signal?.throwIfAborted();
    progress("loading", "loading the meshguard core");
    const backend = await loadBackend({ ...(opts.addonPath ? { addonPath: opts.addonPath } : {}), ...(opts.backend ? { backend: opts.backend } : {}), knobs: knobsFor(opts.controlUrl) });
    // A state store: the core works on a copy in a directory (a private one unless `dir` was given).
    let state: { mirror: StateMirror; ownDir: boolean } | undefined;
    if (opts.state) {
      const ownDir = (options as { dir?: string }).dir === undefined;
      if (ownDir) opts.dir = mkdtempSync(join(tmpdir(), `meshguard-${opts.hostname}-`));
      const mirror = new StateMirror(opts.state, stateKey(opts.hostname), opts.dir, (err) => process.emitWarning(err.message, { code: (err as MeshguardError).code ?? ErrorCode.INTERNAL }));
      state = { mirror, ownDir };
      try {
        await mirror.load();
      } catch (err) {
        if (ownDir) rmSync(opts.dir, { recursive: true, force: true });
        throw err;
      }
    }
    progress("creating", `creating node ${opts.hostname} (state in ${opts.dir})`);
    const { node: handle } = await backend.call("create", {
      config: {
        dir: opts.dir,
        hostname: opts.hostname,
        controlUrl: opts.controlUrl,
        authKey: opts.authKey ?? process.env.TS_AUTHKEY ?? "",
        ephemeral: opts.ephemeral,
        tags: opts.tags,
        verbose: opts.verbose,
      },
    });
    const hold = backend.hold();
    // Events that arrive before the node object exists (state while coming
    // up) go to progress; later ones to the node.
    let node: MeshNode | undefined;
    const early: CoreEvent[] = [];
    const unsubscribe = backend.onEvent((ev) => {
      if (ev.node !== handle) return;
      if (node) node.onCoreEvent(ev);
      else {
        if (ev.event === "state") progress("connecting", `tailnet state: ${String(ev.data.state)}`);
        early.push(ev);
      }
    });
    const abort = () => void backend.call("close", { node: handle }).catch(() => {});
    opts.signal?.addEventListener("abort", abort, { once: true });
    // An abort that came while the core was loading fired no listener: act on it now.
    if (opts.signal?.aborted) abort();
    let up: UpResult;
    try {
      up = await backend.call("up", { node: handle, timeoutMs: opts.timeoutMs });
    } catch (err) {
      await backend.call("close", { node: handle }).catch(() => {});
      unsubscribe();
      hold();
      await state?.mirror.close(false);
      if (state?.ownDir) rmSync(opts.dir, { recursive: true, force: true });
      if (opts.signal?.aborted) throw new MeshguardError(ErrorCode.CLOSED, "MeshNode.start was aborted", { cause: opts.signal.reason });
      throw err;
    } finally {
      opts.signal?.removeEventListener("abort", abort);
    }
    node = new MeshNode(backend, handle, opts, up, hold, unsubscribe);
    node.state = state;
    state?.mirror.watch();
    for (const ev of early) if (ev.event !== "state") node.onCoreEvent(ev);
    await node.openSocket();
    progress("online", `online as ${up.name} (${up.ips.join(", ")}) in ${up.onlineMs} ms`);
    return node;
  }

  /** openSocket serves the control socket as the controlSocket option says (see config.ts). */
  private async openSocket(): Promise<void> {
    // Unix sockets in the state directory: not on Windows, where the default is none (asking for one fails).
    const byDefault = process.platform !== "win32" && !/^(0|off|false|no)$/i.test(process.env.MESHGUARD_CONTROL_SOCKET ?? "");
    const want = this.opts.controlSocket ?? byDefault;
    if (want === false) return;
    const path = typeof want === "string" ? want : socketPathOf(this.opts.dir);
    // A process confined by Node's permission model without write access to its state: no socket, as asked.
    if (this.opts.controlSocket === undefined && permissionModelDenies(dirname(path))) return;
    try {
      this.socket = await openControlSocket(this, path);
    } catch (err) {
      if (this.opts.controlSocket === undefined) {
        // Served by default, not asked for: the node works without it, and says why it has none.
        process.emitWarning(`${(err as Error).message} (the node runs without a control socket; set controlSocket: false or MESHGUARD_CONTROL_SOCKET=off to silence this)`, { code: ErrorCode.CONTROL_SOCKET_FAILED });
        return;
      }
      await this.close().catch(() => {});
      throw err;
    }
  }

  private onCoreEvent(ev: CoreEvent): void {
    switch (ev.event) {
      case "state":
        this.emit("state", String(ev.data.state));
        break;
      case "netmap":
        this.emit("netmap", { peers: ev.data.peers as PeerInfo[] });
        break;
      case "log":
        this.emit("log", String(ev.data.line));
        break;
      case "accept": {
        const conn = ev.data as unknown as ExportedConn;
        const server = conn.listener === undefined ? undefined : this.servers.get(conn.listener);
        if (!server || this.closed) {
          this.backend.discardConn(conn);
          return;
        }
        const sock = this.wrap(conn, (server as unknown as { allowHalfOpen?: boolean }).allowHalfOpen ?? false);
        server.emit("connection", sock);
        break;
      }
      case "listenerClosed": {
        const id = Number(ev.data.listener);
        const server = this.servers.get(id);
        this.listenerHolds.get(id)?.();
        if (server) {
          this.servers.delete(id);
          server.emit("close");
        }
        break;
      }
      case "error":
        this.emitWarning(new MeshguardError(ErrorCode.INTERNAL, `tailnet backend: ${String(ev.data.message)}`));
        break;
      case "panic":
        this.emitWarning(new MeshguardError(ErrorCode.CORE_PANIC, `the core recovered from a panic: ${String(ev.data.message)}`));
        break;
    }
  }

  private emitWarning(err: MeshguardError): void {
    if (this.listenerCount("warning") > 0) this.emit("warning", err);
  }

  private wrap(conn: ExportedConn, allowHalfOpen: boolean): net.Socket {
    const sock = this.backend.openConn(conn, { allowHalfOpen });
    const remote = splitHostPort(conn.remoteAddr);
    const local = splitHostPort(conn.localAddr);
    // The socket is one end of a socketpair; give it the tailnet addresses so
    // code reading req.socket.remoteAddress sees the real peer.
    Object.defineProperties(sock, {
      remoteAddress: { value: remote.host, configurable: true },
      remotePort: { value: remote.port, configurable: true },
      remoteFamily: { value: remote.host.includes(":") ? "IPv6" : "IPv4", configurable: true },
      localAddress: { value: local.host, configurable: true },
      localPort: { value: local.port, configurable: true },
    });
    connInfo.set(sock, { remoteAddr: conn.remoteAddr, localAddr: conn.localAddr });
    return sock;
  }

  /**
   * unref lets the process exit while this node is open, like
   * net.Socket.unref(); ref undoes it. An open node keeps the process alive
   * by default, as an open socket does.
   */
  unref(): this {
    if (this.held && !this.closed) {
      this.held = false;
      this.releaseHold();
    }
    return this;
  }

  /** ref undoes unref. */
  ref(): this {
    if (!this.held && !this.closed) {
      this.held = true;
      this.releaseHold = this.backend.hold();
    }
    return this;
  }

  private assertOpen(what: string): void {
    if (this.closed) throw new MeshguardError(ErrorCode.CLOSED, `${what}: node ${this.hostname} is closed`, { hint: "start a new MeshNode" });
  }

  /** status returns the backend state and addresses. */
  async status(): Promise<NodeStatus> {
    this.assertOpen("status");
    return this.backend.call("status", { node: this.handle });
  }

  /** peers lists the peers in this node's netmap: only those policy lets it see. */
  async peers(): Promise<PeerInfo[]> {
    this.assertOpen("peers");
    return this.backend.call("peers", { node: this.handle });
  }

  /**
   * paths says how this node reaches each peer now: directly (with the
   * peer's ip:port), through a DERP relay or a peer relay, or not yet.
   * Exported for `meshguard status` and for agents that report their
   * connectivity.
   */
  async paths(): Promise<PeerPath[]> {
    this.assertOpen("paths");
    return this.backend.call("paths", { node: this.handle });
  }

  /**
   * ping sends one ping to a peer (MagicDNS name or tailnet IP) and says how
   * long the answer took and, for the default "disco" kind, which path it
   * took. "tsmp" and "icmp" go through WireGuard. A peer that does not
   * answer within timeoutMs (default 5 s) is MESHGUARD_TIMEOUT; a name that
   * is not a peer MESHGUARD_NO_PEER. For `meshguard ping` and health checks.
   */
  async ping(host: string, opts: { kind?: PingKind; timeoutMs?: number } = {}): Promise<PingReply> {
    this.assertOpen("ping");
    if (typeof host !== "string" || host === "") throw new MeshguardError(ErrorCode.INVALID_OPTIONS, "ping: host must be a non-empty string (a MagicDNS name or tailnet IP)");
    const kind = opts.kind ?? "disco";
    if (!["disco", "tsmp", "icmp"].includes(kind)) throw new MeshguardError(ErrorCode.INVALID_OPTIONS, `ping: kind must be "disco", "tsmp" or "icmp", got ${JSON.stringify(kind)}`);
    const timeoutMs = opts.timeoutMs ?? 5000;
    if (!Number.isInteger(timeoutMs) || timeoutMs < 1 || timeoutMs > 60_000) throw new MeshguardError(ErrorCode.INVALID_OPTIONS, `ping: timeoutMs must be an integer 1-60000, got ${String(timeoutMs)}`);
    const r = await this.backend.call("ping", { node: this.handle, host, kind, timeoutMs });
    return {
      ip: r.ip,
      name: r.name,
      latencyMs: Math.round(r.latencyUs) / 1000,
      path: r.path,
      ...(r.endpoint ? { endpoint: r.endpoint } : {}),
      ...(r.derpRegion ? { derpRegion: r.derpRegion } : {}),
    };
  }

  /**
   * dial opens a TCP connection to a peer by MagicDNS name (short or full) or
   * tailnet IP. A name that is not a peer fails with MESHGUARD_NO_PEER: a
   * tailnet dial never falls back to the host network.
   */
  async dial(host: string, port: number, opts: DialOptions = {}): Promise<net.Socket> {
    this.assertOpen("dial");
    if (typeof host !== "string" || host === "") throw new MeshguardError(ErrorCode.INVALID_OPTIONS, "dial: host must be a non-empty string (a MagicDNS name or tailnet IP)");
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw new MeshguardError(ErrorCode.INVALID_OPTIONS, `dial: port must be an integer 1-65535, got ${String(port)}`);
    // Subscribers of DIAL_CHANNEL (the guard) judge the dial before any
    // connection exists: a deny throws here, a hold (an approval) waits.
    const held = judgeDial(this, host, port);
    if (held !== undefined) {
      await held;
      this.assertOpen("dial"); // closed while an approval was pending
    }
    const conn = await this.backend.call("dial", { node: this.handle, host, port, timeoutMs: opts.timeoutMs ?? 30_000 });
    if (this.closed) {
      this.backend.discardConn(conn);
      throw new MeshguardError(ErrorCode.CLOSED, "dial: node closed while dialing");
    }
    const sock = this.wrap(conn, opts.allowHalfOpen ?? false);
    markDialed(sock, { node: this, host, port, tls: false });
    announceConnection(this, host, port, sock);
    return sock;
  }

  /**
   * listen accepts TCP connections on a tailnet port of this node and emits
   * them as `connection` events on a net.Server — the one given (an
   * http.Server works) or a new one. Closing the server stops the tailnet
   * listener.
   */
  async listen<S extends net.Server = net.Server>(port: number, server?: S): Promise<S> {
    this.assertOpen("listen");
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw new MeshguardError(ErrorCode.INVALID_OPTIONS, `listen: port must be an integer 1-65535, got ${String(port)}`);
    const srv = (server ?? net.createServer()) as S;
    const { listener } = await this.backend.call("listen", { node: this.handle, port });
    this.servers.set(listener, srv);
    // The listener keeps the process alive until it closes — by server.close(), by the core, or
    // by node.close(): each path releases it (release is idempotent).
    const held = this.backend.hold();
    let released = false;
    const hold = () => {
      if (released) return;
      released = true;
      this.listenerHolds.delete(listener);
      held();
    };
    this.listenerHolds.set(listener, hold);
    const ip = this.ips[0] ?? "";
    // The server is not bound to a host socket; address() and close() speak
    // of the tailnet listener instead.
    Object.defineProperty(srv, "listening", { get: () => this.servers.has(listener), configurable: true });
    srv.address = () => ({ address: ip, family: ip.includes(":") ? "IPv6" : "IPv4", port });
    (srv as net.Server).close = (cb?: (err?: Error) => void) => {
      hold();
      if (!this.servers.has(listener)) {
        cb?.(new MeshguardError(ErrorCode.CLOSED, "server is not listening"));
        return srv;
      }
      this.servers.delete(listener);
      void this.backend
        .call("closeListener", { listener })
        .catch(() => {})
        .then(() => {
          srv.emit("close");
          cb?.();
        });
      return srv;
    };
    queueMicrotask(() => srv.emit("listening"));
    return srv;
  }

  /**
   * fetch makes an HTTP request over the tailnet (WHATWG fetch, undici).
   * https works against peers whose certificate the caller trusts (pass `tls`
   * at start); headscale issues no tailnet certificates. Each request is
   * published on FETCH_CHANNEL when someone subscribes (the tokens client
   * adds a bearer token there) — after the guard, when installed, allowed
   * it (src/fetch-channel.ts).
   */
  async fetch(input: RequestInfo, init?: RequestInit): Promise<Response> {
    this.assertOpen("fetch");
    // undici and tls are loaded on first use: together they are most of the
    // library's memory (~35 MB RSS) and many agents never fetch over the tailnet.
    const [undici, { default: tls }] = await Promise.all([import("undici"), import("node:tls")]);
    this.dispatcher ??= new undici.Agent({
      connect: (o, cb) => {
        const host = o.hostname;
        const port = Number(o.port) || (o.protocol === "https:" ? 443 : 80);
        this.dial(host, port).then(
          (sock) => {
            if (o.protocol !== "https:") return cb(null, sock);
            const t = this.opts.tls;
            const ts = tls.connect({
              socket: sock,
              servername: o.servername || (net.isIP(host) ? undefined : host),
              ...(t?.ca ? { ca: t.ca } : {}),
              ...(t?.cert ? { cert: t.cert } : {}),
              ...(t?.key ? { key: t.key } : {}),
              rejectUnauthorized: t?.rejectUnauthorized ?? true,
              ALPNProtocols: ["http/1.1"],
            });
            ts.once("secureConnect", () => cb(null, ts));
            ts.once("error", (e) => cb(e, null));
          },
          (err: unknown) => cb(err as Error, null),
        );
      },
    });
    // Someone (the tokens client) may add credentials: the fetch's prepare
    // step publishes it on FETCH_CHANNEL. The guard, when installed, sends
    // through its judging wrapper of the node's Agent and runs the step on
    // what it allowed; otherwise the step runs in front of the Agent
    // (fetch-channel.ts).
    let failed: unknown;
    const prepare = fetchHasSubscribers()
      ? ((p: DispatchPrepare): DispatchPrepare =>
          (opts) => {
            const r = p(opts);
            if (r instanceof Promise) r.catch((err: unknown) => void (failed = err));
            return r;
          })(fetchPrepare(this, () => this.assertOpen("fetch")))
      : undefined;
    const dispatcher = tailnetDispatcher(this, this.dispatcher, prepare);
    return undici.fetch(input, { ...init, dispatcher: dispatcher as import("undici").Dispatcher }).catch((err: unknown) => rethrowRefusal(err, failed));
  }

  /**
   * httpAgent is a keep-alive node:http Agent whose connections are tailnet
   * dials of this node: `http.get("http://billing/v2/x", { agent: node.httpAgent })`,
   * or the `httpAgent` option of axios, got and other clients. Its requests
   * are published on FETCH_CHANNEL like a fetch (src/tailnet-http.ts), so
   * the tokens client adds their bearer token.
   */
  get httpAgent(): import("node:http").Agent {
    this.assertOpen("httpAgent");
    return (this.agents.http ??= createTailnetAgent((host, port, cb) => void this.dial(host, port).then((s) => cb(null, s), cb), false));
  }

  /** httpsAgent is httpAgent for https: TLS over the tailnet dial, with the `tls` options given at start (as fetch uses). */
  get httpsAgent(): import("node:http").Agent {
    this.assertOpen("httpsAgent");
    return (this.agents.https ??= createTailnetAgent((host, port, cb) => {
      Promise.all([this.dial(host, port), import("node:tls")]).then(([sock, { default: tls }]) => {
        const t = this.opts.tls;
        const ts = tls.connect({
          socket: sock,
          ...(net.isIP(host) ? {} : { servername: host }),
          ...(t?.ca ? { ca: t.ca } : {}),
          ...(t?.cert ? { cert: t.cert } : {}),
          ...(t?.key ? { key: t.key } : {}),
          rejectUnauthorized: t?.rejectUnauthorized ?? true,
          ALPNProtocols: ["http/1.1"],
        });
        markDialed(ts, { node: this, host, port, tls: true });
        ts.once("secureConnect", () => cb(null, ts));
        ts.once("error", (e) => cb(e));
      }, cb);
    }, true));
  }

  /**
   * whois says who is behind a tailnet connection or address ("ip", "ip:port",
   * or a socket from dial/listen): node, tags, user, the humans accountable
   * for it, and the app capabilities granted to it.
   */
  async whois(target: net.Socket | string): Promise<WhoIs> {
    this.assertOpen("whois");
    let addr: string;
    if (typeof target === "string") addr = target;
    else {
      // A TLS socket over a tailnet connection (an https server on node.listen) is known by the connection under it.
      const info = connInfo.get(target) ?? connInfo.get((target as { _parent?: net.Socket })._parent as net.Socket);
      if (!info) throw new MeshguardError(ErrorCode.INVALID_OPTIONS, "whois: this socket did not come from MeshNode.dial or MeshNode.listen", { hint: "pass the tailnet address as a string instead" });
      addr = info.remoteAddr;
    }
    const w = await this.backend.call("whois", { node: this.handle, addr });
    const tags = w.node.tags ?? [];
    return {
      node: { id: w.node.id, name: w.node.name, hostname: w.node.hostname, tags, ips: w.node.ips ?? [] },
      user: w.user,
      tagged: w.tagged,
      owners: w.tagged ? this.ownersOfTags(tags) : w.user.login ? [w.user.login] : [],
      caps: w.caps ?? {},
    };
  }

  /**
   * setTailnetIdentity gives the node the identity part of the tailnet
   * policy — tag owners and groups — that whois uses to name a tagged
   * node's `owners`. The policy-distribution layer calls it on every good
   * reload when given the node (watchPolicyFile / pollPolicyServer with
   * `node`), so one policy source serves the guard and whois. `tagOwners`
   * and `groups` given to MeshNode.start override it, entry by entry.
   * Each call replaces what an earlier call set.
   */
  setTailnetIdentity(identity: TailnetIdentity): void {
    const id = parseWith(configSchemas().TailnetIdentitySchema, identity, "MeshNode.setTailnetIdentity argument");
    this.identity = { tagOwners: id.tagOwners, groups: id.groups };
  }

  private ownersOfTags(tags: string[]): string[] {
    const tagOwners = (t: string) => this.opts.tagOwners[t] ?? this.identity.tagOwners[t] ?? [];
    const members = (g: string) => this.opts.groups[g] ?? this.identity.groups[g] ?? [];
    const out = new Set<string>();
    const expand = (o: string, seen: Set<string>) => {
      if (o.startsWith("group:")) {
        if (seen.has(o)) return;
        seen.add(o);
        for (const m of members(o)) expand(m, seen);
      } else if (o.startsWith("tag:")) {
        if (seen.has(o)) return;
        seen.add(o);
        for (const m of tagOwners(o)) expand(m, seen);
      } else out.add(o);
    };
    for (const t of tags) for (const o of tagOwners(t)) expand(o, new Set([t]));
    return [...out].sort();
  }

  /**
   * close stops the node. An ephemeral node is logged out first, so it
   * disappears from the control server at once. Idempotent: every call
   * returns the same promise. `await using` calls it too.
   */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.closed = true;
      await this.socket?.close();
      for (const srv of this.servers.values()) queueMicrotask(() => srv.emit("close"));
      this.servers.clear();
      for (const release of [...this.listenerHolds.values()]) release();
      const d = this.dispatcher;
      this.dispatcher = undefined;
      for (const a of Object.values(this.agents)) a.destroy();
      this.agents = {};
      await d?.destroy().catch(() => {});
      try {
        await this.backend.call("close", { node: this.handle, logout: this.opts.ephemeral });
      } finally {
        this.unsubscribe();
        if (this.held) this.releaseHold();
        this.held = false;
        await this.state?.mirror.close(this.opts.ephemeral);
        if (this.state?.ownDir) rmSync(this.opts.dir, { recursive: true, force: true });
      }
    })();
    return this.closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** splitHostPort splits "1.2.3.4:80" or "[fd7a::1]:80". */
export function splitHostPort(addr: string): { host: string; port: number } {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(addr) ?? /^([^:]+):(\d+)$/.exec(addr);
  if (!m) return { host: addr, port: 0 };
  return { host: m[1] ?? addr, port: Number(m[2]) };
}

/**
 * rethrowRefusal unwraps a policy denial from fetch's `TypeError: fetch
 * failed`, as the guard does for the global fetch: the caller (and an SDK
 * deciding whether to retry, such as the AI SDK, which retries any "fetch
 * failed") sees the refusal itself, which is final. So is the failure of
 * the fetch's own prepare step (a token the issuer refused), as it was
 * thrown.
 */
function rethrowRefusal(err: unknown, prepareFailure?: unknown): never {
  let e: unknown = err;
  for (let i = 0; i < 8 && e !== null && typeof e === "object"; i++) {
    // The fetch's own prepare step failed (a token the issuer refused): its reason, as thrown.
    if (prepareFailure !== undefined && e === prepareFailure) throw e;
    if (isMeshguardError(e, ErrorCode.POLICY_DENIED)) throw e;
    e = (e as { cause?: unknown }).cause;
  }
  throw err;
}
