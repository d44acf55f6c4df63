/** `meshguard status`: a running node's peers, their tags, path and latency, and the node itself. */

import type { PeerStatus, StatusResult } from "../inspect/index.js";
import { ATTACH_OPTIONS, BRIEF_OPTIONS, slow, withSession } from "./attach.js";
import type { Command, Context } from "./command.js";

/** who: a node's identity in one word: its tags, else its user. */
export function who(tags: readonly string[], user?: string): string {
  return tags.length ? tags.join(",") : (user ?? "-");
}

function pathText(p: PeerStatus): string {
  if (p.path === "direct") return `direct ${p.curAddr ?? ""}`.trim();
  if (p.path === "derp") return `relay "${p.relay ?? "?"}"`;
  if (p.path === "peer-relay") return `peer-relay ${p.curAddr ?? ""}`.trim();
  return "-";
}

function table(rows: string[][]): string[] {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => "  " + r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join("  ").trimEnd());
}

export function statusText(s: StatusResult): string {
  const me = s.self;
  const out = [`${me.name}  ${me.ips.join(", ")}  ${who(me.tags, me.user)}  ${me.state}`];
  out.push(`  pid ${me.pid}, state ${me.dir}${me.socket ? `, socket ${me.socket}` : " (brought up by this command)"}`);
  out.push(`  control ${me.controlUrl}`);
  if (me.health.length) out.push(`  health: ${me.health.join("; ")}`);
  const g = me.guard;
  if (g === null) out.push(`  guard: none in this process`);
  else {
    const pol = g.policy === null ? "no policy (every call is denied)" : `policy ${g.policy.hash ? `sha256:${g.policy.hash.slice(0, 12)}` : "(custom evaluator)"}${g.policy.file ? ` from ${g.policy.file}` : ""}`;
    out.push(`  guard: ${g.mode}, ${pol}, deciding as ${who(g.principal.tags, g.principal.user)}`);
  }
  out.push(``);
  if (s.peers.length === 0) {
    out.push(`no peers (the tailnet policy lets this node reach none, and none reach it)`);
    return out.join("\n") + "\n";
  }
  out.push(`peers (${s.peers.length}):`);
  const rows = [["NAME", "IP", "IDENTITY", "PATH", "LATENCY", ""]];
  for (const p of s.peers) {
    const latency = p.latencyMs !== null ? `${p.latencyMs.toFixed(2)} ms` : p.pingError ? `(${p.pingError.replace(/^MESHGUARD_/, "").toLowerCase()})` : "-";
    rows.push([p.name, p.ips[0] ?? "-", who(p.tags, p.user), pathText(p), latency, p.online ? (p.active ? "active" : "") : "offline"]);
  }
  out.push(...table(rows));
  return out.join("\n") + "\n";
}

async function run(ctx: Context): Promise<number> {
  const ping = !ctx.flag("no-ping");
  const s = await withSession(ctx, { brief: true }, (session) =>
    slow(ctx, ping ? "pinging the online peers for their latency (--no-ping skips it)..." : "waiting for the node's status...", session.call("status", { ping })),
  );
  ctx.result(s, () => statusText(s));
  return 0;
}

export const statusCommand: Command = {
  name: "status",
  summary: "show a running node: itself, its peers, their tags, path and latency",
  usage: ["[--state-dir DIR | --socket PATH] [--no-ping] [--json]", "--control URL [--auth-key K | --auth-key-file FILE] [--hostname NAME] [--json]"],
  description: `Attaches to a running node's control socket and shows the node (name, IPs,
tags or user, backend state, state directory, control server, the process's
guard and the policy in force) and every peer in its netmap: name, tailnet IP,
tags or user, how it is reached (direct with the peer's ip:port, through a DERP
relay, or no path yet), the round trip of one disco ping, and whether it is
online. Only the peers the tailnet policy lets the node see are listed.

Which node: --socket PATH, else --state-dir DIR, else the one running node found
in the default state directories (~/.local/state/meshguard/*/,
$XDG_STATE_HOME/meshguard/*/, $TMPDIR/meshguard-*/); several running is an
error that lists them. With --control URL, or with no running node and
$TS_CONTROL_URL set, the command brings a node up briefly instead (ephemeral,
with --auth-key or $TS_AUTHKEY; with --state-dir, that node itself) and shows
the tailnet as that node sees it; progress goes to stderr.`,
  args: [],
  options: {
    ...ATTACH_OPTIONS,
    "no-ping": { type: "boolean", help: "do not ping the peers (no latency, answers at once)" },
    ...BRIEF_OPTIONS,
  },
  json: "print { self: { name, hostname, id, ips, tags, user?, state, health, controlUrl, dir, pid, socket?, guard: { mode, principal, policy: { hash?, file?, format? } | null } | null }, peers: [{ id, name, hostname, ips, tags, user?, online, path, curAddr?, relay?, active, lastHandshake, rxBytes, txBytes, latencyMs, pingError? }] }",
  examples: [
    { cmd: "status", about: "the one node running on this machine" },
    { cmd: "status --state-dir ~/.local/state/meshguard/research-agent --json", about: "a chosen node, as JSON" },
    { cmd: "status --control http://127.0.0.1:8080 --auth-key-file agent.key", about: "no node running: look at the tailnet from a node brought up for the command" },
  ],
  exits: {
    0: "shown",
    1: "no running node found, or several (MESHGUARD_NO_RUNNING_NODE); the socket refused or failed (MESHGUARD_CONTROL_SOCKET_FAILED); the brief node could not join (MESHGUARD_AUTH_FAILED, ...)",
    2: "usage error (also: --socket with --state-dir or --control)",
  },
  run,
};
