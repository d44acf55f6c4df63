/**
 * `meshguard tokens serve --policy FILE ...`: the token issuer as its own
 * tailnet node. Joins the tailnet, follows FILE (its `token` rules say what
 * each caller may be granted; a FILE that does not load leaves the last good
 * policy in force) and serves discovery, JWKS, /token, /revoke and the
 * revocation feed at http://HOSTNAME[:PORT].
 *
 * The signing keys and the revocation log live in the state directory; with
 * an ephemeral node (no --dir and no --state-dir) they last as long as the
 * process, which is said on stderr.
 */

import { ErrorCode, MeshguardError, MeshNode } from "../index.js";
import { DURATION_HINT, jsonLinesSink, parseDuration, type ClosableAuditSink } from "../policy/index.js";
import { startTokenIssuer, type TokenIssuer } from "../tokens/index.js";
import type { Command, Context } from "./command.js";

const DEFAULT_HOSTNAME = "tokens";
/** STOPPED_EARLY is the status when a signal stops the issuer before it serves (128 + SIGINT, as a shell reports it). */
const STOPPED_EARLY = 130;

async function run(ctx: Context): Promise<number> {
  const policyFile = ctx.str("policy");
  const controlUrl = ctx.str("control") ?? process.env.TS_CONTROL_URL;
  if (policyFile === undefined || !controlUrl) throw ctx.usage("expected --policy FILE and --control URL (or TS_CONTROL_URL)");
  const portText = ctx.str("port");
  const port = portText === undefined ? 80 : Number(portText);
  if (!/^\d+$/.test(portText ?? "80") || port < 1 || port > 65535) throw ctx.usage("--port must be 1-65535");

  const stop = ctx.stopper();
  const hostname = ctx.str("hostname") ?? DEFAULT_HOSTNAME;
  const authKey = ctx.str("auth-key") ?? process.env.TS_AUTHKEY;
  const dir = ctx.str("dir");
  const stateDir = ctx.str("state-dir");
  const durations: Record<string, string> = {};
  for (const [opt, key] of [
    ["ttl", "ttl"],
    ["max-ttl", "maxTtl"],
    ["rotate-every", "rotateEvery"],
  ] as const) {
    const v = ctx.str(opt);
    if (v !== undefined && parseDuration(v) === undefined) throw ctx.usage(`--${opt} ${DURATION_HINT}`);
    if (v !== undefined) durations[key] = v;
  }
  const auditFile = ctx.str("audit");
  let node: MeshNode | undefined;
  let issuer: TokenIssuer | undefined;
  let audit: ClosableAuditSink | undefined;
  try {
    node = await MeshNode.start({
      controlUrl,
      hostname,
      ...(authKey ? { authKey } : {}),
      ...(dir !== undefined ? { dir } : { ephemeral: true }),
      onProgress: (p) => ctx.progress(p.message),
      signal: stop.signal,
    });
    if (dir === undefined && stateDir === undefined) ctx.progress("warning: an ephemeral node without --state-dir: signing keys and revocations last only as long as this process");
    if (auditFile !== undefined) audit = jsonLinesSink(auditFile, { onError: (err) => ctx.progress(`warning: the audit file ${auditFile}: ${err.message}`) });
    issuer = await startTokenIssuer({ node, policyFile, port, admins: ctx.list("admin"), ...durations, ...(stateDir !== undefined ? { stateDir } : {}), ...(audit ? { audit } : {}) });
    issuer.on("reload", (ev) => ctx.progress(`policy reloaded from ${ev.source} (${ev.hash.slice(0, 12)})`));
    issuer.on("reloadError", (err) => ctx.progress(`policy reload failed, the last good policy stays in force: ${err.message.split("\n")[0]}`));
    issuer.on("warning", (err) => ctx.progress(`warning: ${err.message}`));
    const why = issuer.policyError;
    ctx.progress(why === undefined ? `policy ${policyFile} loaded` : `no policy in force yet, nothing is granted until ${policyFile} loads: ${why.split("\n")[0]}`);
    const keys = issuer.jwks().keys.map((k) => k.kid);
    ctx.result({ issuer: issuer.url, name: node.name, ips: node.ips, keys }, `issuing tokens as ${issuer.url} (node ${node.name}, key ${keys[0]}); Ctrl-C to stop\n`);
    ctx.progress(`stopping (${await stop.stopped})`);
    return 0;
  } catch (err) {
    if (stop.reason && !issuer) return STOPPED_EARLY;
    if (err instanceof MeshguardError) throw err;
    throw new MeshguardError(ErrorCode.INTERNAL, `tokens serve failed: ${(err as Error).message}`, { cause: err });
  } finally {
    await issuer?.close();
    await audit?.close?.();
    await node?.close();
  }
}

export const tokensServeCommand: Command = {
  name: "tokens serve",
  summary: "issue session-scoped tokens to agents on the tailnet",
  usage: ["--policy FILE --control URL [--auth-key K] [--hostname NAME] [--port PORT] [--dir DIR] [--state-dir DIR] [--ttl D] [--max-ttl D] [--rotate-every D] [--admin SRC]... [--audit FILE] [--json]"],
  description: `Joins the tailnet as its own node and issues short-lived EdDSA tokens
(OAuth client_credentials and token exchange) at http://HOSTNAME[:PORT]/token:
the caller is known by whois (no secret), and FILE's token rules (policy format
version 4) say what it may be granted. Serves discovery
(/.well-known/openid-configuration), the keys (/.well-known/jwks.json),
revocation (/revoke) and the signed revocation feed (/revocations). FILE is
followed: a FILE that does not load leaves the last good policy in force.
Signing keys (mode 0600, rotated by kid) and the revocation log live in the
state directory. Runs until SIGINT or SIGTERM; progress goes to stderr.`,
  args: [],
  minArgs: 0,
  options: {
    policy: { type: "string", arg: "FILE", help: "the policy file whose token rules decide what is granted (followed)" },
    control: { type: "string", arg: "URL", help: "the control server (default: $TS_CONTROL_URL)" },
    "auth-key": { type: "string", arg: "K", help: "the node's auth key (default: $TS_AUTHKEY)" },
    hostname: { type: "string", arg: "NAME", help: `the node's name, and the host of the issuer URL (default "${DEFAULT_HOSTNAME}")` },
    port: { type: "string", arg: "PORT", help: "the tailnet port (default 80)" },
    dir: { type: "string", arg: "DIR", help: "the node's state directory (default: an ephemeral node)" },
    "state-dir": { type: "string", arg: "DIR", help: "where keys and revocations are kept (default: DIR/tokens)" },
    ttl: { type: "string", arg: "D", help: 'lifetime of a token that asks for none (default "15m")' },
    "max-ttl": { type: "string", arg: "D", help: 'no token lives longer (default "1h")' },
    "rotate-every": { type: "string", arg: "D", help: 'how long a signing key signs before the next takes over (default "24h")' },
    admin: { type: "string", arg: "SRC", multiple: true, help: "who may revoke any token: a tag, user, group or node name" },
    audit: { type: "string", arg: "FILE", help: "append every token issued, refused, exchanged or revoked to FILE as decision events (JSON lines; never a token)" },
  },
  json: "print one JSON object when serving: { issuer, name, ips, keys }",
  examples: [
    { cmd: "tokens serve --policy policy.hujson --control http://127.0.0.1:8080 --auth-key $KEY --dir ./tokens-node --admin group:security", about: "issue tokens as http://tokens; keys kept in ./tokens-node/tokens" },
  ],
  exits: {
    0: "stopped by SIGINT or SIGTERM",
    1: "the node could not join the tailnet or listen, or the keys or revocation log could not be used (see the error's code)",
    2: "usage error (also: --policy or --control missing, a bad --port or duration)",
    [STOPPED_EARLY]: "stopped by a signal before the issuer was serving",
  },
  run,
};
