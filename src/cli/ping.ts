/** `meshguard ping PEER`: round trips to a peer and the path they take, from a running node. */

import { setTimeout as sleep } from "node:timers/promises";

import { ErrorCode, MeshguardError } from "../index.js";
import type { PingKind, PingReply } from "../inspect/index.js";
import { ATTACH_OPTIONS, BRIEF_OPTIONS, withSession } from "./attach.js";
import type { Command, Context } from "./command.js";

const KINDS: readonly PingKind[] = ["disco", "tsmp", "icmp"];
/** The pause between pings. */
const INTERVAL_MS = 200;

type Reply = ({ seq: number } & PingReply) | { seq: number; error: { code: string; message: string } };

function via(r: PingReply): string {
  if (r.path === "direct") return `direct ${r.endpoint ?? ""}`.trim();
  if (r.path === "derp") return `DERP relay "${r.derpRegion ?? "?"}"`;
  if (r.path === "peer-relay") return `peer relay ${r.endpoint ?? ""}`.trim();
  return "WireGuard";
}

function intArg(ctx: Context, name: string, def: number, min: number, max: number): number {
  const t = ctx.str(name);
  if (t === undefined) return def;
  const n = Number(t);
  if (!/^\d+$/.test(t) || n < min || n > max) throw ctx.usage(`--${name} must be a whole number ${min}-${max}`);
  return n;
}

async function run(ctx: Context): Promise<number> {
  const [host] = ctx.positionals as [string];
  const count = intArg(ctx, "count", 3, 1, 1000);
  const timeoutMs = intArg(ctx, "timeout", 5000, 1, 30_000);
  const kind = (ctx.str("kind") ?? "disco") as PingKind;
  if (!KINDS.includes(kind)) throw ctx.usage(`--kind must be one of ${KINDS.join(", ")}`);
  const stop = ctx.stopper();
  const replies: Reply[] = await withSession(ctx, { brief: true }, async (s) => {
    const out: Reply[] = [];
    for (let seq = 1; seq <= count && !stop.reason; seq++) {
      if (seq > 1) await sleep(INTERVAL_MS);
      try {
        const r = await s.call("ping", { host, kind, timeoutMs });
        out.push({ seq, ...r });
        if (!ctx.json) ctx.stdout.write(`pong from ${r.name} (${r.ip}) via ${via(r)} in ${r.latencyMs.toFixed(2)} ms\n`);
      } catch (err) {
        if (!(err instanceof MeshguardError) || (err.code !== ErrorCode.TIMEOUT && err.code !== ErrorCode.DIAL_FAILED)) throw err;
        out.push({ seq, error: { code: err.code, message: err.message.split("\n")[0]! } });
        ctx.progress(`ping ${seq}: ${err.message.split("\n")[0]}`);
      }
    }
    return out;
  });
  const ok = replies.filter((r): r is { seq: number } & PingReply => !("error" in r));
  const doc = { host, kind, sent: replies.length, received: ok.length, replies };
  if (ctx.json) {
    // With no answer the error document is the one document on stdout.
    if (ok.length > 0) ctx.result(doc, "");
  } else {
    const ms = ok.map((r) => r.latencyMs).sort((a, b) => a - b);
    ctx.stdout.write(`${replies.length} sent, ${ok.length} answered${ms.length ? `; min ${ms[0]!.toFixed(2)} ms, median ${ms[Math.floor((ms.length - 1) / 2)]!.toFixed(2)} ms, max ${ms[ms.length - 1]!.toFixed(2)} ms` : ""}\n`);
  }
  if (ok.length === 0) {
    // Reported as a failure with its own document; the replies are in the message.
    throw new MeshguardError(ErrorCode.TIMEOUT, `${host} answered none of ${replies.length} ${kind} ping(s)`, { hint: "check that the peer is online (meshguard status) and that the tailnet policy lets this node reach it" });
  }
  return 0;
}

export const pingCommand: Command = {
  name: "ping",
  summary: "ping a peer from a running node: round trip and direct or relayed path",
  usage: ["PEER [--count N] [--kind disco|tsmp|icmp] [--timeout MS] [--state-dir DIR | --socket PATH] [--json]", "PEER --control URL [--auth-key K | --auth-key-file FILE] [--json]"],
  description: `Sends --count pings (default 3, ${INTERVAL_MS} ms apart) from a running node to PEER
(a MagicDNS name, short or full, or a tailnet IP) and prints each answer's round
trip and path. The default disco ping is magicsock's own, outside WireGuard: it
shows whether the peer is reached directly (its ip:port) or through a DERP relay,
and setting up a direct path often takes a ping or two. tsmp and icmp go through
WireGuard (and, for icmp, the peer's IP stack); they do not see the path.
Which node pings, and bringing one up briefly, as for \`meshguard status\`.`,
  args: ["PEER"],
  options: {
    count: { type: "string", arg: "N", help: "how many pings (default 3)" },
    kind: { type: "string", arg: "KIND", help: "disco (default), tsmp or icmp" },
    timeout: { type: "string", arg: "MS", help: "how long to wait for each answer (default 5000)" },
    ...ATTACH_OPTIONS,
    ...BRIEF_OPTIONS,
  },
  json: "print { host, kind, sent, received, replies: [{ seq, ip, name, latencyMs, path, endpoint?, derpRegion? } | { seq, error: { code, message } }] }",
  examples: [
    { cmd: "ping tools", about: "three disco pings from the running node to the peer tools" },
    { cmd: "ping 100.64.0.7 --kind tsmp --count 10 --json", about: "ten pings through WireGuard, as JSON" },
  ],
  exits: {
    0: "at least one ping was answered",
    1: "none was answered (MESHGUARD_TIMEOUT), PEER is not a peer of the node (MESHGUARD_NO_PEER), or no node to ask (MESHGUARD_NO_RUNNING_NODE, MESHGUARD_CONTROL_SOCKET_FAILED)",
    2: "usage error (also: a bad --count, --kind or --timeout)",
  },
  run,
};
