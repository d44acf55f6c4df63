/**
 * `meshguard connect HOST:PORT... [--listen ADDR]...`: clients that are not
 * tailnet nodes (a coding CLI, curl, a browser, a Python program) reach
 * tailnet services through local listeners, with the identity of this
 * command's node. Prints, per forward, the settings to point a client at it,
 * then runs until SIGINT or SIGTERM.
 */

import { connect, type Connection, type ForwardInfo } from "../connect/index.js";
import { ErrorCode } from "../index.js";
import type { Command, Context } from "./command.js";

/** STOPPED_EARLY is the status when a signal stops the command before the forwards are ready (128 + SIGINT, as a shell reports it). */
const STOPPED_EARLY = 130;

/** clientSettings is what to give a client of a forward, assuming the target is an AI gateway (any HTTP service works with `url`). */
export function clientSettings(f: ForwardInfo): Record<string, string> {
  return { OPENAI_BASE_URL: `${f.url}/v1`, ANTHROPIC_BASE_URL: f.url };
}

function text(c: Connection): string {
  const lines = [`connected as ${c.node.name} (${c.node.ips.join(", ")}); forwarding:`, ``];
  for (const f of c.forwards) {
    lines.push(`  ${f.url} -> ${f.target}`);
    lines.push(`    for an AI gateway:`);
    for (const [k, v] of Object.entries(clientSettings(f))) lines.push(`      export ${k}=${v}`);
    lines.push(`      curl ${f.url}/v1/models`, ``);
  }
  lines.push(`Connections reach the tailnet as this node. Press Ctrl-C to stop.`, ``);
  return lines.join("\n");
}

async function run(ctx: Context): Promise<number> {
  const controlUrl = ctx.str("control") ?? process.env.TS_CONTROL_URL;
  if (!controlUrl) throw ctx.usage("expected --control URL (or TS_CONTROL_URL)");
  const keyFile = ctx.str("auth-key-file");
  if (keyFile !== undefined && ctx.str("auth-key") !== undefined) throw ctx.usage("give --auth-key or --auth-key-file, not both");
  const authKey = keyFile !== undefined ? (await ctx.read(keyFile, ErrorCode.INVALID_OPTIONS)).trim() : ctx.str("auth-key");
  const listens = ctx.list("listen");
  if (listens.length > ctx.positionals.length) throw ctx.usage(`${listens.length} --listen for ${ctx.positionals.length} target(s): give at most one --listen per target, in the same order`);
  const hostname = ctx.str("hostname");
  const dir = ctx.str("dir");

  const stop = ctx.stopper();
  let conn: Connection | undefined;
  try {
    conn = await connect({
      controlUrl,
      ...(authKey ? { authKey } : {}),
      ...(hostname !== undefined ? { hostname } : {}),
      ...(dir !== undefined ? { dir } : {}),
      // A target without its own --listen gets a free loopback port.
      forwards: ctx.positionals.map((target, i) => ({ target, ...(listens[i] !== undefined ? { listen: listens[i] } : {}) })),
      allowNonLoopback: ctx.flag("allow-non-loopback"),
      log: ctx.progress,
      onProgress: (p) => ctx.progress(p.message),
      signal: stop.signal,
    });
    const c = conn;
    ctx.result({ name: c.node.name, ips: c.node.ips, forwards: c.forwards.map((f) => ({ ...f, env: clientSettings(f) })) }, () => text(c));
    ctx.progress(`stopping (${await stop.stopped})`);
    return 0;
  } catch (err) {
    // A signal during the start makes the start fail; that is a stop, not an error.
    if (stop.reason && !conn) return STOPPED_EARLY;
    throw err;
  } finally {
    await conn?.close();
  }
}

export const connectCommand: Command = {
  name: "connect",
  summary: "forward local ports to tailnet services, as a node of its own",
  usage: ["HOST:PORT... [--listen ADDR]... --control URL [--auth-key K | --auth-key-file FILE] [--hostname NAME] [--dir DIR] [--allow-non-loopback] [--json]"],
  description: `Joins the tailnet as its own node and, for each HOST:PORT (a tailnet service by
MagicDNS name or tailnet IP), listens on a local address and carries every
connection made there to that service with this node's identity: the service
(an AI gateway, a tool server) sees this node's tags and owners, whoever the
local client is. For clients that cannot be nodes: a coding CLI, curl, a
browser, a Python program. The n-th --listen is the n-th target's local
address (default 127.0.0.1 with a free port); only loopback addresses unless
--allow-non-loopback. A connection the tailnet refuses is closed and logged;
the listener stays up. Prints each forward's URL and the client settings
(OPENAI_BASE_URL, ANTHROPIC_BASE_URL), then runs until SIGINT or SIGTERM.
Progress and per-connection failures go to stderr. The node is ephemeral
unless --dir keeps its state.`,
  args: ["HOST:PORT"],
  variadic: true,
  options: {
    listen: { type: "string", multiple: true, arg: "ADDR", help: "local address of the next target: HOST:PORT or PORT (127.0.0.1); port 0 picks a free one" },
    control: { type: "string", arg: "URL", help: "the control server (default: $TS_CONTROL_URL)" },
    "auth-key": { type: "string", arg: "K", help: "the node's auth key; its tags are the identity services see (default: $TS_AUTHKEY)" },
    "auth-key-file": { type: "string", arg: "FILE", help: "read the auth key from FILE (\"-\": standard input), keeping it out of the process list" },
    hostname: { type: "string", arg: "NAME", help: "the node's name (default: connect- and this machine's name)" },
    dir: { type: "string", arg: "DIR", help: "keep the node's state in DIR, as a node that stays on the tailnet (default: an ephemeral node)" },
    "allow-non-loopback": { type: "boolean", help: "allow --listen on addresses other than loopback: everyone who can reach them acts as this node" },
  },
  json: "print one JSON object when the forwards are ready: { name, ips, forwards: [{ target, listen: { host, port }, url, env }] }",
  examples: [
    { cmd: "connect gateway:80 --listen 127.0.0.1:4000 --control http://127.0.0.1:8080 --auth-key-file ~/.meshguard/laptop.key", about: "the AI gateway at http://127.0.0.1:4000 (OPENAI_BASE_URL=http://127.0.0.1:4000/v1)" },
    { cmd: "connect gateway:80 tools:8000 --listen 4000 --listen 4001 --json", about: "two services at once; control URL and key from TS_CONTROL_URL and TS_AUTHKEY" },
  ],
  exits: {
    0: "stopped by SIGINT or SIGTERM after the forwards were ready",
    1: "the node could not join the tailnet (MESHGUARD_AUTH_FAILED, MESHGUARD_CONTROL_UNREACHABLE, ...), a local address could not be listened on (MESHGUARD_LISTEN_FAILED), or an address is invalid or not loopback (MESHGUARD_INVALID_OPTIONS)",
    2: "usage error (also: no target, more --listen than targets, no control URL)",
    [STOPPED_EARLY]: "stopped by a signal before the forwards were ready",
  },
  run,
};
