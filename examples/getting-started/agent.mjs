// An agent: its own tailnet node, with the guard around every call it makes.
// Run all of getting-started with: node examples/getting-started/run.mjs
import { readFileSync } from "node:fs";
import { isMeshguardError, MeshNode } from "meshguard";
import { deniedCause, installGuard } from "meshguard/guard";
import { loadPolicy } from "meshguard/policy";
import { createTokenClient } from "meshguard/tokens";

const { MESHGUARD_CONTROL_URL: controlUrl = "http://127.0.0.1:8080", MESHGUARD_AUTH_KEY: authKey } = process.env;

// Join the tailnet. The auth key is tagged tag:agent: that tag is this agent's identity.
const node = await MeshNode.start({ controlUrl, authKey, hostname: "research-agent", ephemeral: true });

// Put the policy around every outbound call of this process: fetch, http, net, dns, MeshNode, SDKs, MCP.
const policy = loadPolicy(readFileSync(new URL("tailnet.hujson", import.meta.url), "utf8"));
const guard = installGuard({ identity: node, policy });
await guard.ready; // the node's own tags are known

// Calls to http://billing get a short-lived token for exactly what they do; no token code below.
const tokens = createTokenClient({ node, issuer: "http://tokens", targets: [{ audience: "http://billing" }] });

const res = await node.fetch("http://billing/v2/transactions/7");
console.log(`allowed: GET http://billing/v2/transactions/7 -> ${res.status} ${await res.text()}`);

/** @param {string} what @param {() => Promise<unknown>} call */
async function blocked(what, call) {
  try {
    await call();
    console.log(`NOT blocked: ${what}`);
    process.exitCode = 1;
  } catch (err) {
    const denied = deniedCause(err); // the guard's PolicyDeniedError, also when a library wrapped it
    if (denied) console.log(`blocked by the guard: ${what} -> ${denied.code}: ${denied.reason}`);
    else if (isMeshguardError(err)) console.log(`blocked: ${what} -> ${err.code}: ${err.message.split("\n")[0]}`);
    else throw err;
  }
}
// Not on the tailnet policy's ports, and no rule allows it: the guard refuses the dial.
await blocked("tcp billing:22", () => node.dial("billing", 22));
// Not in the policy: refused before any name is looked up or any byte leaves.
await blocked("GET https://api.github.com/repos/acme/app", () => fetch("https://api.github.com/repos/acme/app"));
// No rule allows DELETE: the guard refuses it before the token layer, so no token is asked for and the issuer never learns of it.
await blocked("DELETE http://billing/v2/transactions/7", () => node.fetch("http://billing/v2/transactions/7", { method: "DELETE" }));

await tokens.close();
await guard.close();
await node.close();
