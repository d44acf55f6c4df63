/**
 * How `meshguard status`, `whois`, `ping` and `policy explain` reach a node:
 * attach to a running node's control socket, or bring a node up briefly
 * when none runs. The choice, in order:
 *
 *   1. --socket PATH: that socket, nothing else;
 *   2. --state-dir DIR: the node whose state is DIR (DIR/meshguard.sock);
 *      none running there and a control URL known: that node, brought up
 *      briefly with its own identity;
 *   3. --control URL: a new ephemeral node, brought up briefly;
 *   4. the sockets in the default state directories: the one running node;
 *      several: an error listing them; none: a brief node when
 *      $TS_CONTROL_URL is set, else an error saying where it looked.
 */

import { basename } from "node:path";

import { ErrorCode, MeshguardError, MeshNode } from "../index.js";
import { callMethod, ControlClient, discoverSockets, socketPathOf, type SocketMethod, type SocketMethods } from "../inspect/index.js";
import type { Context, OptionSpec } from "./command.js";

/** ATTACH_OPTIONS select a running node. */
export const ATTACH_OPTIONS: Record<string, OptionSpec> = {
  "state-dir": { type: "string", arg: "DIR", help: "the node whose state directory is DIR (its socket is DIR/meshguard.sock)" },
  socket: { type: "string", arg: "PATH", help: "the node serving the control socket at PATH" },
};

/** BRIEF_OPTIONS bring a node up for the command's length when none runs. */
export const BRIEF_OPTIONS: Record<string, OptionSpec> = {
  control: { type: "string", arg: "URL", help: "bring a node up briefly on this control server instead of attaching (with no running node, $TS_CONTROL_URL does too)" },
  "auth-key": { type: "string", arg: "K", help: "the brief node's auth key (default: $TS_AUTHKEY)" },
  "auth-key-file": { type: "string", arg: "FILE", help: "read the brief node's auth key from FILE, keeping it out of the process list" },
  hostname: { type: "string", arg: "NAME", help: "the brief node's name (default: meshguard-cli-PID, or the --state-dir's name)" },
};

/** Session is a node to ask: attached through its socket, or brought up by this command. */
export interface Session {
  /** "attached" (a running node, through `socket`) or "brief" (a node this command brought up). */
  readonly mode: "attached" | "brief";
  readonly socket?: string;
  call<M extends SocketMethod>(method: M, params?: SocketMethods[M]["params"]): Promise<SocketMethods[M]["result"]>;
  close(): Promise<void>;
}

function attached(client: ControlClient): Session {
  return {
    mode: "attached",
    socket: client.path,
    call: (method, params) => client.call(method, params),
    close: async () => client.close(),
  };
}

/** openSession finds the node to ask (see the top of this file); `brief: false` never brings one up. */
export async function openSession(ctx: Context, opts: { brief: boolean }): Promise<Session> {
  const socket = ctx.str("socket");
  const stateDir = ctx.str("state-dir");
  const control = opts.brief ? ctx.str("control") : undefined;
  if (socket !== undefined && stateDir !== undefined) throw ctx.usage("give --socket or --state-dir, not both");
  if (control !== undefined && socket !== undefined) throw ctx.usage("--control brings a node up briefly; it cannot be combined with --socket");
  if (socket !== undefined) return attached(await ControlClient.connect(socket));
  if (stateDir !== undefined) {
    try {
      return attached(await ControlClient.connect(socketPathOf(stateDir)));
    } catch (err) {
      const controlUrl = control ?? (opts.brief ? process.env.TS_CONTROL_URL : undefined);
      if (!(err instanceof MeshguardError && err.code === ErrorCode.NO_RUNNING_NODE) || !controlUrl) throw err;
      ctx.progress(`no node is running with state ${stateDir}: bringing it up briefly`);
      return brief(ctx, controlUrl, { dir: stateDir, hostname: ctx.str("hostname") ?? basename(stateDir) });
    }
  }
  if (control !== undefined) return brief(ctx, control, {});
  const found = await discoverSockets();
  const live = found.filter((f) => f.state === "live");
  if (live.length === 1) {
    ctx.progress(`attached to the running node at ${live[0]!.socket}`);
    return attached(await ControlClient.connect(live[0]!.socket));
  }
  if (live.length > 1) {
    throw new MeshguardError(ErrorCode.NO_RUNNING_NODE, `${live.length} nodes are running; choose one:\n${live.map((f) => `    --state-dir ${f.dir}`).join("\n")}`, { hint: "pass --state-dir DIR or --socket PATH" });
  }
  const envControl = opts.brief ? process.env.TS_CONTROL_URL : undefined;
  if (envControl) {
    ctx.progress("no running node found: bringing one up briefly ($TS_CONTROL_URL)");
    return brief(ctx, envControl, {});
  }
  const stale = found.filter((f) => f.state === "stale").map((f) => f.socket);
  const staleText = stale.length === 0 ? "" : `; stale sockets of nodes that are gone: ${stale.slice(0, 3).join(", ")}${stale.length > 3 ? ` and ${stale.length - 3} more` : ""}`;
  throw new MeshguardError(ErrorCode.NO_RUNNING_NODE, `no running node found (looked for meshguard.sock in ~/.local/state/meshguard/*/, $XDG_STATE_HOME/meshguard/*/ and $TMPDIR/meshguard-*/${staleText})`, {
    hint: opts.brief ? "start the node (it serves its socket by default), pass --state-dir DIR or --socket PATH, or --control URL with an auth key to bring a node up briefly" : "start the node (it serves its socket by default), or pass --state-dir DIR or --socket PATH",
  });
}

async function brief(ctx: Context, controlUrl: string, where: { dir?: string; hostname?: string }): Promise<Session> {
  const keyFile = ctx.str("auth-key-file");
  if (keyFile !== undefined && ctx.str("auth-key") !== undefined) throw ctx.usage("give --auth-key or --auth-key-file, not both");
  const authKey = keyFile !== undefined ? (await ctx.read(keyFile, ErrorCode.INVALID_OPTIONS)).trim() : (ctx.str("auth-key") ?? process.env.TS_AUTHKEY);
  const hostname = where.hostname ?? ctx.str("hostname") ?? `meshguard-cli-${process.pid}`;
  const stop = ctx.stopper();
  ctx.progress(`connecting to control ${controlUrl} as ${hostname}`);
  const node = await MeshNode.start({
    controlUrl,
    hostname,
    ...(authKey ? { authKey } : {}),
    ...(where.dir !== undefined ? { dir: where.dir } : { ephemeral: true }),
    // This node lives for one command: nobody attaches to it.
    controlSocket: false,
    onProgress: (p) => {
      if (p.phase !== "loading") ctx.progress(p.message);
    },
    signal: stop.signal,
  });
  try {
    await firstNetmap(ctx, node);
  } catch (err) {
    await node.close();
    throw err;
  }
  return {
    mode: "brief",
    call: (method, params) => callMethod(node, method, params ?? {}),
    close: () => {
      ctx.progress(`closing the brief node ${node.hostname}`);
      return node.close();
    },
  };
}

/** firstNetmap waits (briefly) for the node's first netmap, so that its peers are known. */
async function firstNetmap(ctx: Context, node: MeshNode, timeoutMs = 5000): Promise<void> {
  if ((await node.peers()).length > 0) return;
  ctx.progress("waiting for the netmap");
  await new Promise<void>((resolve) => {
    const t = setTimeout(done, timeoutMs);
    function done() {
      clearTimeout(t);
      node.off("netmap", done);
      resolve();
    }
    node.on("netmap", done);
  });
}

/** slow reports `message` as progress if `work` takes more than a second (the convention for progress). */
export async function slow<T>(ctx: Context, message: string, work: Promise<T>): Promise<T> {
  const t = setTimeout(() => ctx.progress(message), 1000);
  try {
    return await work;
  } finally {
    clearTimeout(t);
  }
}

/** withSession runs `f` on the chosen node and always lets go of it. */
export async function withSession<T>(ctx: Context, opts: { brief: boolean }, f: (s: Session) => Promise<T>): Promise<T> {
  const s = await openSession(ctx, opts);
  try {
    return await f(s);
  } finally {
    await s.close();
  }
}
