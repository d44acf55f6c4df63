#!/usr/bin/env node
// An agent on its own tailnet node, with the guard on: the smallest program
// a user of the published package writes. It imports `meshguard` by name, so
// it runs the same in a project that ran `npm install meshguard` (the
// install test runs it there, with no Go and no C compiler on the PATH) and
// in a checkout after `npm run build`.
//
//   tools  (tag:tools)  an HTTP service on the tailnet, counting requests
//   agent  (tag:agent)  its calls pass the guard: GET /search is allowed,
//                       DELETE /admin/users is refused before it leaves
//
// Run: node test/netns.mjs node examples/tailnet-guard.mjs   (local headscale on 127.0.0.1)
import http from "node:http";
import { MeshNode } from "meshguard";
import { LocalControl } from "meshguard/control";
import { installGuard } from "meshguard/guard";
import { loadPolicy } from "meshguard/policy";

const tailnetPolicy = {
  tagOwners: { "tag:tools": ["alice@"], "tag:agent": ["alice@"] },
  grants: [{ src: ["tag:agent"], dst: ["tag:tools"], ip: ["tcp:80"] }],
};
// The guard's rules (meshguard's part of a policy file): read-only search.
const guardPolicy = loadPolicy(`{
  "meshguard": {
    "version": 1,
    "rules": [
      { "id": "search", "src": ["tag:agent"], "http": { "host": ["tools"], "method": ["GET"], "path": ["/search"] } },
    ],
  },
}`);

const control = await LocalControl.start({ policy: tailnetPolicy });
const nodes = [];
let guard;
let hits = 0;
try {
  await control.createUser("alice");
  const start = async (hostname, tag) => {
    const authKey = await control.createAuthKey({ tags: [tag], ephemeral: true, expiration: "10m" });
    const node = await MeshNode.start({ controlUrl: control.url, authKey, hostname, ephemeral: true, tagOwners: tailnetPolicy.tagOwners });
    nodes.push(node);
    return node;
  };
  const tools = await start("tools", "tag:tools");
  await tools.listen(
    80,
    http.createServer((req, res) => {
      hits++;
      res.end(`tools saw ${req.method} ${req.url}`);
    }),
  );
  const agent = await start("agent", "tag:agent");
  console.log(`agent ${agent.ips[0]} joined the tailnet at ${control.url}`);

  guard = installGuard({ policy: guardPolicy, identity: agent });
  await guard.ready;
  for (const [method, url] of [["GET", "http://tools/search"], ["DELETE", "http://tools/admin/users"]]) {
    try {
      const res = await agent.fetch(url, { method });
      console.log(`${method} ${url}: ${res.status} ${await res.text()}`);
    } catch (err) {
      // fetch reports a refused call as TypeError("fetch failed") with the denial as its cause.
      const denied = err.cause ?? err;
      console.log(`${method} ${url}: refused — ${denied.code}: ${denied.message.split("\n")[0]}`);
    }
  }
  console.log(`the tools service saw ${hits} request(s)`);
} finally {
  await guard?.close();
  for (const n of nodes.reverse()) await n.close();
  await control.close();
}
if (hits !== 1) process.exitCode = 1;
