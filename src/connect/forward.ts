/**
 * Forward is one local listener whose connections are carried to a tailnet
 * service. Invariants:
 *
 * - a failure belongs to its connection: a refused dial, a reset or a
 *   timeout closes that connection (and logs one line); the listener and
 *   every other connection go on, and nothing is thrown to the process;
 * - bytes flow both ways through `pipe`, so backpressure holds end to end
 *   (a slow reader on either side stops the other from reading), and a
 *   half-close (FIN) on one side is passed on as a half-close to the other;
 * - the local socket is not read until the tailnet side exists
 *   (pauseOnConnect): what a client sends early waits in the kernel.
 */

import net from "node:net";

import { ErrorCode, MeshguardError, isMeshguardError } from "../errors.js";
import { formatHostPort, urlHost, type HostPort } from "./address.js";
import type { ForwardSpec } from "./options.js";

/** Dialer opens a tailnet connection with half-close kept (MeshNode.dial with allowHalfOpen). */
export type Dialer = (host: string, port: number) => Promise<net.Socket>;

/** ForwardInfo is a forward as it runs: where to point a client. */
export interface ForwardInfo {
  /** The tailnet service, as given ("gateway:80"). */
  target: string;
  /** The local address actually bound (port 0 resolved). */
  listen: HostPort;
  /** `http://HOST:PORT` of the listener, for HTTP clients (a wildcard bind is given as loopback). */
  url: string;
}

export class Forward {
  readonly #spec: ForwardSpec;
  readonly #dial: Dialer;
  readonly #log: (line: string) => void;
  readonly #server: net.Server;
  /** Every socket of a connection in progress, both sides, so that close() can end them. */
  readonly #sockets = new Set<net.Socket>();
  /** The local sides alone: one per connection. */
  readonly #locals = new Set<net.Socket>();
  #closing?: Promise<void>;
  #bound?: HostPort;

  constructor(spec: ForwardSpec, dial: Dialer, log: (line: string) => void) {
    this.#spec = spec;
    this.#dial = dial;
    this.#log = log;
    this.#server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (sock) => this.#accept(sock));
    // An error of an accepted socket never reaches the server; a server error
    // after listen() (EMFILE on accept) must not crash the process either.
    this.#server.on("error", (err) => this.#log(`${this.#where()}: listener error: ${err.message}`));
  }

  /** listen binds the local address; a failure is MESHGUARD_LISTEN_FAILED naming it. */
  async listen(): Promise<void> {
    const { host, port } = this.#spec.listen;
    await new Promise<void>((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException) => {
        const why = err.code === "EADDRINUSE" ? "the port is in use" : err.code === "EADDRNOTAVAIL" ? "that address is not one of this machine's" : err.code === "EACCES" ? "permission denied (ports below 1024 need privileges)" : (err.code ?? err.message);
        reject(new MeshguardError(ErrorCode.LISTEN_FAILED, `cannot listen on ${formatHostPort(host, port)} for ${this.#spec.target}: ${why}`, { hint: "pick another port, or port 0 to let the system choose", cause: err }));
      };
      this.#server.once("error", onError);
      this.#server.listen({ host, port, exclusive: true }, () => {
        this.#server.off("error", onError);
        resolve();
      });
    });
    const a = this.#server.address() as net.AddressInfo;
    this.#bound = { host: a.address, port: a.port };
  }

  info(): ForwardInfo {
    const listen = this.#bound ?? this.#spec.listen;
    return { target: this.#spec.target, listen: { ...listen }, url: `http://${urlHost(listen.host)}:${listen.port}` };
  }

  /** connections is how many local connections are open (being dialed or carried). */
  get connections(): number {
    return this.#locals.size;
  }

  /** close stops accepting and destroys every open connection (both sides). Idempotent. */
  close(): Promise<void> {
    this.#closing ??= new Promise<void>((resolve) => {
      this.#server.close(() => resolve());
      for (const s of this.#sockets) s.destroy();
    });
    return this.#closing;
  }

  #where(): string {
    const l = this.#bound ?? this.#spec.listen;
    return `${formatHostPort(l.host, l.port)} -> ${this.#spec.target}`;
  }

  #track(sock: net.Socket): void {
    this.#sockets.add(sock);
    sock.once("close", () => this.#sockets.delete(sock));
  }

  #accept(local: net.Socket): void {
    if (this.#closing) return void local.destroy();
    this.#track(local);
    this.#locals.add(local);
    local.once("close", () => this.#locals.delete(local));
    const from = formatHostPort(local.remoteAddress ?? "?", local.remotePort ?? 0);
    // A reset before the dial completes is seen as 'close' below; the error itself carries nothing to act on.
    local.on("error", () => {});
    const { host, port } = this.#spec.to;
    this.#dial(host, port).then(
      (remote) => {
        if (local.destroyed || this.#closing) return void remote.destroy();
        this.#track(remote);
        this.#splice(local, remote, from);
      },
      (err: unknown) => {
        if (!this.#closing) this.#log(`${from} via ${this.#where()}: ${describe(err)}; connection closed`);
        local.destroy();
      },
    );
  }

  /**
   * splice carries bytes both ways. A side that closes cleanly ends the
   * other (what was written still drains); a side that fails destroys the
   * other at once, so the client sees the reset rather than a silent stall.
   */
  #splice(local: net.Socket, remote: net.Socket, from: string): void {
    let failed = false;
    const fail = (side: string) => (err: Error) => {
      if (failed) return;
      failed = true;
      if (!this.#closing) this.#log(`${from} via ${this.#where()}: ${side} side: ${describe(err)}; connection closed`);
      local.destroy();
      remote.destroy();
    };
    local.removeAllListeners("error");
    local.on("error", fail("local"));
    remote.on("error", fail("tailnet"));
    local.on("close", (hadError) => (hadError ? remote.destroy() : remote.end()));
    remote.on("close", (hadError) => (hadError ? local.destroy() : local.end()));
    local.pipe(remote);
    remote.pipe(local);
  }
}

/** describe renders an error for a log line: a meshguard code first, else the system error code. */
function describe(err: unknown): string {
  if (isMeshguardError(err)) return `${err.code}: ${err.message.split("\n")[0]}`;
  const e = err as NodeJS.ErrnoException;
  return e?.code ? `${e.code}${e.message && !e.message.includes(e.code) ? `: ${e.message}` : ""}` : String(e?.message ?? err);
}
