/** `meshguard whois IP`: who is behind a tailnet address, as a running node sees it. */

import type { WhoIs } from "../index.js";
import { isAddr } from "../inspect/index.js";
import { ATTACH_OPTIONS, BRIEF_OPTIONS, withSession } from "./attach.js";
import type { Command, Context } from "./command.js";

export function whoisText(addr: string, w: WhoIs): string {
  const out = [`${addr}: ${w.node.name} (${w.tagged ? "tagged node" : "user's node"}, id ${w.node.id})`];
  if (w.node.tags.length) out.push(`  tags:   ${w.node.tags.join(", ")}`);
  if (!w.tagged) out.push(`  user:   ${w.user.login}${w.user.displayName && w.user.displayName !== w.user.login ? ` (${w.user.displayName})` : ""}`);
  out.push(`  owners: ${w.owners.length ? w.owners.join(", ") : "(unknown: the node was given no tagOwners for its tags)"}`);
  out.push(`  ips:    ${w.node.ips.join(", ")}`);
  const caps = Object.entries(w.caps);
  if (caps.length === 0) out.push(`  caps:   none`);
  for (const [name, values] of caps) out.push(`  cap ${name}: ${JSON.stringify(values)}`);
  return out.join("\n") + "\n";
}

async function run(ctx: Context): Promise<number> {
  const [addr] = ctx.positionals as [string];
  if (!isAddr(addr)) throw ctx.usage(`${JSON.stringify(addr)} is not a tailnet IP (whois takes an address: 100.64.0.7, 100.64.0.7:80, [fd7a::1]:80; \`meshguard status\` lists the peers' IPs)`);
  const w = (await withSession(ctx, { brief: true }, (s) => s.call("whois", { addr }))) as WhoIs;
  ctx.result(w, () => whoisText(addr, w));
  return 0;
}

export const whoisCommand: Command = {
  name: "whois",
  summary: "show who is behind a tailnet IP: node, tags, owners, app capabilities",
  usage: ["IP[:PORT] [--state-dir DIR | --socket PATH] [--json]", "IP[:PORT] --control URL [--auth-key K | --auth-key-file FILE] [--json]"],
  description: `Asks a running node who the tailnet says is behind IP (a tailnet address,
optionally with a port): the node's name and id, its tags or owning user, the
humans accountable for it (a tagged node's tag owners, as the node knows them),
its addresses, and the app capabilities the tailnet grants it towards the asking
node. Which node answers, and bringing one up briefly, as for \`meshguard status\`.`,
  args: ["IP"],
  options: { ...ATTACH_OPTIONS, ...BRIEF_OPTIONS },
  json: "print { node: { id, name, hostname, tags, ips }, user: { login, displayName }, tagged, owners, caps }",
  examples: [
    { cmd: "whois 100.64.0.7", about: "who is 100.64.0.7, asked of the running node" },
    { cmd: "whois 100.64.0.7 --state-dir ~/.local/state/meshguard/tools --json", about: "as the tools node sees it (its caps are those granted towards it), as JSON" },
  ],
  exits: {
    0: "shown",
    1: "no tailnet node has that address (MESHGUARD_WHOIS_NOT_FOUND), or no node to ask (MESHGUARD_NO_RUNNING_NODE, MESHGUARD_CONTROL_SOCKET_FAILED)",
    2: "usage error (also: IP missing, or not an IP)",
  },
  run,
};
