#!/usr/bin/env node
// meshguard demo: a local tailnet with a tool service and two AI agents.
//
//   tool service  (tag:tools)     an HTTP service on the tailnet that asks
//                                 the tailnet who is calling — no API keys
//   research-agent (tag:research) allowed by policy: its call succeeds
//   rogue-agent    (tag:rogue)    not allowed: the control server never even
//                                 tells it the service exists
//
// Run: npm run demo   (everything stays on 127.0.0.1)
import http from "node:http";
import { LocalControl, ensureHeadscale } from "../dist/control/index.js";
import { MeshNode } from "../dist/index.js";

const t0 = performance.now();
const step = (msg) => console.log(`[${((performance.now() - t0) / 1000).toFixed(1).padStart(5)}s] ${msg}`);

// The tailnet policy (HuJSON, headscale/Tailscale format): deny by default.
const policy = {
  groups: { "group:ml-team": ["alice@"] },
  tagOwners: {
    "tag:tools": ["alice@"],
    "tag:research": ["group:ml-team"],
    "tag:rogue": ["alice@"],
  },
  grants: [
    {
      src: ["tag:research"],
      dst: ["tag:tools"],
      ip: ["tcp:80"],
      // An app capability the tool service reads with whois.
      app: { "meshguard.dev/cap/tools": [{ allow: ["search", "summarize"] }] },
    },
  ],
};

step("building/finding headscale (first run builds it: a few minutes)");
await ensureHeadscale({ onProgress: (ev) => step(ev.message) });
step("starting a local control server (headscale) on 127.0.0.1");
const control = await LocalControl.start({ policy });
const nodes = [];
try {
  await control.createUser("alice");
  const key = (tag) => control.createAuthKey({ tags: [tag], ephemeral: true, reusable: false, expiration: "10m" });
  const start = async (hostname, tag) => {
    const node = await MeshNode.start({
      controlUrl: control.url,
      authKey: await key(tag),
      hostname,
      ephemeral: true,
      tagOwners: policy.tagOwners,
      groups: policy.groups,
      onProgress: (e) => e.phase === "online" && step(`${hostname}: ${e.message}`),
    });
    nodes.push(node);
    return node;
  };

  step(`control server at ${control.url}; starting the tool service node`);
  const tools = await start("tools", "tag:tools");
  const server = http.createServer(async (req, res) => {
    const who = await tools.whois(req.socket);
    console.log(
      `         tools: ${req.method} ${req.url} from ${who.node.name} tags=${who.node.tags.join(",")} ` +
        `owners=${who.owners.join(",")} caps=${JSON.stringify(who.caps["meshguard.dev/cap/tools"] ?? [])}`,
    );
    res.setHeader("content-type", "application/json");
    res.end(JSON.stringify({ hello: who.node.hostname, results: ["paper-1", "paper-2"] }));
  });
  await tools.listen(80, server);

  step("starting two agent nodes");
  const research = await start("research-agent", "tag:research");
  const rogue = await start("rogue-agent", "tag:rogue");

  step(`research-agent peers: ${(await research.peers()).map((p) => p.hostname).join(", ") || "(none)"}`);
  const res = await research.fetch("http://tools/search?q=wireguard");
  step(`research-agent -> http://tools/search: ${res.status} ${await res.text()}`);

  step(`rogue-agent peers: ${(await rogue.peers()).map((p) => p.hostname).join(", ") || "(none)"}`);
  try {
    await rogue.fetch("http://tools/search?q=secrets");
    step("rogue-agent -> http://tools/search: UNEXPECTEDLY SUCCEEDED");
    process.exitCode = 1;
  } catch (err) {
    const cause = err.cause ?? err;
    step(`rogue-agent -> http://tools/search: refused (${cause.code}): ${cause.message.split("\n")[0]}`);
  }
  server.close();
} finally {
  step("closing nodes (ephemeral nodes log out) and stopping the control server");
  await Promise.allSettled(nodes.map((n) => n.close()));
  await control.close();
  step("done");
}
