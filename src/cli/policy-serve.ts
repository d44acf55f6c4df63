/**
 * `meshguard policy serve FILE --key KEY ...`: a policy server on the
 * tailnet. Joins the tailnet as its own node, signs FILE with the Ed25519
 * key, serves it at http://HOSTNAME:PORT/v1/policy (long poll, ETags), and
 * re-signs it whenever FILE changes — a FILE that does not load is not
 * signed, the last good policy stays served. Agents follow it with
 * `pollPolicyServer` and trust the public key printed here.
 *
 * `meshguard policy serve --keygen KEY` writes a new key pair (KEY, KEY.pub).
 */

import { writeFile } from "node:fs/promises";

import { generateBundleKeys, keyId, POLICY_PATH, servePolicy } from "../distribution/index.js";
import { ErrorCode, MeshguardError, MeshNode } from "../index.js";
import type { Command, Context } from "./command.js";

const DEFAULT_PORT = 8080;
const DEFAULT_HOSTNAME = "policy";
/** STOPPED_EARLY is the status when a signal stops the server before it serves (128 + SIGINT, as a shell reports it). */
const STOPPED_EARLY = 130;

async function keygen(ctx: Context, path: string): Promise<number> {
  const k = generateBundleKeys();
  try {
    await writeFile(path, k.privateKey, { mode: 0o600, flag: "wx" });
    await writeFile(`${path}.pub`, k.publicKey);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new MeshguardError(ErrorCode.INVALID_OPTIONS, `--keygen: cannot write ${e.path ?? path}: ${e.code === "EEXIST" ? "it exists (not overwritten)" : (e.code ?? e.message)}`, {
      ...(e.code === "EEXIST" ? { hint: "pick a new name, or remove the old key pair if no agent trusts it any more" } : {}),
      cause: err,
    });
  }
  const id = keyId(k.publicKey);
  ctx.result({ privateKey: path, publicKey: `${path}.pub`, keyId: id }, `wrote ${path} (private) and ${path}.pub (key id ${id})\n`);
  return 0;
}

async function run(ctx: Context): Promise<number> {
  const keygenPath = ctx.str("keygen");
  if (keygenPath !== undefined) {
    if (ctx.positionals.length) throw ctx.usage("--keygen KEY takes no FILE");
    return keygen(ctx, keygenPath);
  }
  const file = ctx.positionals[0];
  const keyFile = ctx.str("key");
  const controlUrl = ctx.str("control") ?? process.env.TS_CONTROL_URL;
  if (file === undefined || keyFile === undefined || !controlUrl) throw ctx.usage("expected FILE, --key KEY and --control URL (or TS_CONTROL_URL)");
  const portText = ctx.str("port");
  const port = portText === undefined ? DEFAULT_PORT : Number(portText);
  if (!/^\d+$/.test(portText ?? "1") || !Number.isInteger(port) || port < 1 || port > 65535) throw ctx.usage("--port must be 1-65535");
  const privateKey = await ctx.read(keyFile, ErrorCode.INVALID_OPTIONS);

  const stop = ctx.stopper();
  const hostname = ctx.str("hostname") ?? DEFAULT_HOSTNAME;
  const authKey = ctx.str("auth-key");
  const dir = ctx.str("dir");
  let node: MeshNode | undefined;
  let served: Awaited<ReturnType<typeof servePolicy>> | undefined;
  try {
    node = await MeshNode.start({
      controlUrl,
      hostname,
      ...(authKey ? { authKey } : {}),
      ...(dir !== undefined ? { dir } : { ephemeral: true }),
      onProgress: (p) => ctx.progress(p.message),
      signal: stop.signal,
    });
    const n = node;
    served = await servePolicy(n, port, {
      privateKey,
      file,
      log: ctx.progress,
      whois: async (req) => {
        const w = await n.whois(req.socket);
        return `${w.node.hostname} (${w.tagged ? w.node.tags.join(",") : w.user.login})`;
      },
    });
    if (served.policy.bundle === undefined) ctx.progress(`warning: ${file} did not load; nothing is served until it does`);
    const url = `http://${hostname}:${port}${POLICY_PATH}`;
    const id = keyId(privateKey);
    ctx.result({ url, name: n.name, ips: n.ips, keyId: id, version: served.policy.bundle?.version ?? null }, `serving ${file} at ${url} (node ${n.name}, key id ${id}); Ctrl-C to stop\n`);
    ctx.progress(`stopping (${await stop.stopped})`);
    return 0;
  } catch (err) {
    // A signal during the start makes the start fail; that is a stop, not an error.
    if (stop.reason && !served) return STOPPED_EARLY;
    throw err;
  } finally {
    await served?.close();
    await node?.close();
  }
}

export const policyServeCommand: Command = {
  name: "policy serve",
  summary: "serve a signed policy to agents on the tailnet",
  usage: ["FILE --key KEY --control URL [--auth-key K] [--hostname NAME] [--port PORT] [--dir DIR] [--json]", "--keygen KEY [--json]"],
  description: `Joins the tailnet as its own node and serves FILE, signed with the Ed25519
private key KEY, at http://HOSTNAME:PORT${POLICY_PATH} (long poll, ETags); re-signs it
whenever FILE changes. A FILE that does not load is never signed: the last good
policy stays served. Agents follow it with pollPolicyServer and trust KEY.pub.
Runs until SIGINT or SIGTERM; progress goes to stderr.
With --keygen, writes a new key pair (KEY, mode 0600, and KEY.pub) and exits.`,
  args: ["FILE"],
  minArgs: 0,
  options: {
    key: { type: "string", arg: "KEY", help: "the private key (PEM); agents trust KEY.pub" },
    keygen: { type: "string", arg: "KEY", help: "write a new key pair to KEY and KEY.pub (never overwriting), then exit" },
    control: { type: "string", arg: "URL", help: "the control server (default: $TS_CONTROL_URL)" },
    "auth-key": { type: "string", arg: "K", help: "the node's auth key (default: $TS_AUTHKEY)" },
    hostname: { type: "string", arg: "NAME", help: `the node's name (default "${DEFAULT_HOSTNAME}")` },
    port: { type: "string", arg: "PORT", help: `the tailnet port (default ${DEFAULT_PORT})` },
    dir: { type: "string", arg: "DIR", help: "the node's state directory (default: an ephemeral node)" },
  },
  json: "print one JSON object when serving: { url, name, ips, keyId, version } (with --keygen: { privateKey, publicKey, keyId })",
  examples: [
    { cmd: "policy serve --keygen policy.key", about: "make the signing key pair once; give policy.key.pub to the agents" },
    { cmd: "policy serve policy.hujson --key policy.key --control http://127.0.0.1:8080 --auth-key $KEY", about: "serve policy.hujson to the tailnet as http://policy:8080/v1/policy" },
  ],
  exits: {
    0: "stopped by SIGINT or SIGTERM (or --keygen wrote the keys)",
    1: "the node could not join the tailnet or listen, KEY is unreadable, or --keygen could not write (an existing KEY is never overwritten)",
    2: "usage error (also: FILE, --key or --control missing, a bad --port)",
    [STOPPED_EARLY]: "stopped by a signal before the server was serving",
  },
  run,
};
