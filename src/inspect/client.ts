/**
 * The client side of the control socket: connect to one, call its methods,
 * and find the sockets of the nodes running on this machine.
 */

import { lstatSync, readdirSync } from "node:fs";
import net from "node:net";
import { homedir, tmpdir } from "node:os";
import { dirname, join } from "node:path";

import { ErrorCode, MeshguardError, type ErrorCode as Code } from "../errors.js";
import { probe } from "./server.js";
import { LIMITS, SOCKET_NAME, SOCKET_PROTOCOL_VERSION, type SocketMethod, type SocketMethods, type SocketResponse } from "./protocol.js";

/** socketPathOf is where a node whose state is in `dir` serves its control socket. */
export function socketPathOf(dir: string): string {
  return join(dir, SOCKET_NAME);
}

/** ControlClient is one connection to a node's control socket. */
export class ControlClient {
  private nextId = 1;
  private buf = "";
  private readonly waiting = new Map<number, { resolve: (r: SocketResponse) => void; reject: (e: Error) => void }>();
  private failure?: MeshguardError;
  readonly path: string;
  private readonly sock: net.Socket;


  private constructor(
    path: string,
    sock: net.Socket,
  ) {
    this.path = path;
    this.sock = sock;
    sock.setEncoding("utf8");
    sock.on("data", (chunk: string) => {
      this.buf += chunk;
      for (let nl = this.buf.indexOf("\n"); nl >= 0; nl = this.buf.indexOf("\n")) {
        const line = this.buf.slice(0, nl);
        this.buf = this.buf.slice(nl + 1);
        let res: SocketResponse;
        try {
          res = JSON.parse(line) as SocketResponse;
        } catch {
          this.fail(new MeshguardError(ErrorCode.CONTROL_SOCKET_FAILED, `${path} answered something that is not JSON: ${JSON.stringify(line.slice(0, 80))}`));
          return;
        }
        const w = typeof res.id === "number" ? this.waiting.get(res.id) : undefined;
        if (w) {
          this.waiting.delete(res.id as number);
          w.resolve(res);
        } else if (res.error) {
          // An answer to no request: the server refusing the connection as a whole.
          this.fail(remoteError(res.error, path));
        }
      }
    });
    sock.on("error", (err) => this.fail(new MeshguardError(ErrorCode.CONTROL_SOCKET_FAILED, `connection to ${path} failed: ${(err as NodeJS.ErrnoException).code ?? err.message}`, { cause: err })));
    sock.on("close", () => this.fail(new MeshguardError(ErrorCode.CONTROL_SOCKET_FAILED, `${path} closed the connection (the node stopped?)`)));
  }

  private fail(err: MeshguardError): void {
    this.failure ??= err;
    for (const w of this.waiting.values()) w.reject(this.failure);
    this.waiting.clear();
  }

  /** connect opens a connection; a missing or dead socket is MESHGUARD_NO_RUNNING_NODE. */
  static connect(path: string, timeoutMs = 3000): Promise<ControlClient> {
    return new Promise((resolve, reject) => {
      const sock = net.connect(path);
      const t = setTimeout(() => {
        sock.destroy();
        reject(new MeshguardError(ErrorCode.CONTROL_SOCKET_FAILED, `${path} did not accept a connection within ${timeoutMs} ms`, { hint: "the node's process may be stuck; check it" }));
      }, timeoutMs);
      sock.once("connect", () => {
        clearTimeout(t);
        sock.removeAllListeners("error");
        resolve(new ControlClient(path, sock));
      });
      sock.once("error", (err: NodeJS.ErrnoException) => {
        clearTimeout(t);
        reject(connectError(path, err));
      });
    });
  }

  /** call sends one request and resolves with its result; an error answer rejects with the node's code, message and hint. */
  async call<M extends SocketMethod>(method: M, params: SocketMethods[M]["params"] = {} as SocketMethods[M]["params"], timeoutMs = LIMITS.requestTimeoutMs + 5000): Promise<SocketMethods[M]["result"]> {
    if (this.failure) throw this.failure;
    const id = this.nextId++;
    const line = JSON.stringify({ v: SOCKET_PROTOCOL_VERSION, id, method, params });
    if (Buffer.byteLength(line) > LIMITS.maxRequestBytes) throw new MeshguardError(ErrorCode.CONTROL_SOCKET_BAD_REQUEST, `the ${method} request is over ${LIMITS.maxRequestBytes} bytes`);
    const res = await new Promise<SocketResponse>((resolve, reject) => {
      const t = setTimeout(() => {
        this.waiting.delete(id);
        reject(new MeshguardError(ErrorCode.TIMEOUT, `${this.path} did not answer ${method} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiting.set(id, {
        resolve: (r) => (clearTimeout(t), resolve(r)),
        reject: (e) => (clearTimeout(t), reject(e)),
      });
      this.sock.write(line + "\n");
    });
    if (res.error) throw remoteError(res.error, this.path);
    return res.result as SocketMethods[M]["result"];
  }

  close(): void {
    this.failure ??= new MeshguardError(ErrorCode.CLOSED, "client closed");
    this.sock.destroy();
  }
}

function connectError(path: string, err: NodeJS.ErrnoException): MeshguardError {
  switch (err.code) {
    case "ENOENT":
      return new MeshguardError(ErrorCode.NO_RUNNING_NODE, `no node is running at ${path} (no such socket)`, { hint: "start the node, or check --state-dir / --socket", cause: err });
    case "ECONNREFUSED":
      return new MeshguardError(ErrorCode.NO_RUNNING_NODE, `${path} is a stale socket: the node that made it is gone`, { hint: "the next node started with that state directory removes it", cause: err });
    case "EACCES":
    case "EPERM":
      return new MeshguardError(ErrorCode.CONTROL_SOCKET_FAILED, `permission denied on ${path}: a control socket answers only its owner`, { hint: "run the command as the user the node runs as", cause: err });
    case "ENOTSOCK":
      return new MeshguardError(ErrorCode.CONTROL_SOCKET_FAILED, `${path} is not a socket`, { cause: err });
    default:
      return new MeshguardError(ErrorCode.CONTROL_SOCKET_FAILED, `cannot connect to ${path}: ${err.code ?? err.message}`, { cause: err });
  }
}

const KNOWN = new Set<string>(Object.values(ErrorCode));

function remoteError(e: { code: string; message: string; hint?: string }, path: string): MeshguardError {
  const code = (KNOWN.has(e.code) ? e.code : ErrorCode.INTERNAL) as Code;
  return new MeshguardError(code, String(e.message ?? `${path}: error ${e.code}`), e.hint ? { hint: e.hint } : {});
}

/** FoundSocket is one candidate socket and whether a node answers on it. */
export interface FoundSocket {
  socket: string;
  dir: string;
  state: "live" | "stale" | "denied";
}

/**
 * stateDirs are the directories whose subdirectories hold nodes' state by
 * default: ~/.local/state/meshguard/HOSTNAME (persistent nodes, see
 * config.ts), $XDG_STATE_HOME/meshguard/HOSTNAME, and TMPDIR/meshguard-HOSTNAME-PID
 * (ephemeral nodes without a dir).
 */
export function defaultSocketCandidates(env: NodeJS.ProcessEnv = process.env): string[] {
  const out = new Set<string>();
  const bases = [join(homedir(), ".local", "state", "meshguard")];
  if (env.XDG_STATE_HOME) bases.push(join(env.XDG_STATE_HOME, "meshguard"));
  for (const base of bases) for (const d of subdirs(base)) out.add(socketPathOf(join(base, d)));
  const tmp = tmpdir();
  for (const d of subdirs(tmp)) if (/^meshguard-.+-\d+$/.test(d)) out.add(socketPathOf(join(tmp, d)));
  return [...out].filter((p) => {
    try {
      const st = lstatSync(p);
      const uid = process.getuid?.();
      return st.isSocket() && (uid === undefined || st.uid === uid);
    } catch {
      return false;
    }
  });
}

function subdirs(dir: string): string[] {
  try {
    return readdirSync(dir, { withFileTypes: true })
      .filter((e) => e.isDirectory())
      .map((e) => e.name);
  } catch {
    return [];
  }
}

/** discoverSockets probes every default candidate (in parallel) and says which answer. */
export async function discoverSockets(env: NodeJS.ProcessEnv = process.env): Promise<FoundSocket[]> {
  const cands = defaultSocketCandidates(env);
  const states = await Promise.all(cands.map((c) => probe(c, 1000)));
  return cands.map((socket, i) => ({ socket, dir: dirname(socket), state: states[i]! })).sort((a, b) => a.socket.localeCompare(b.socket));
}
