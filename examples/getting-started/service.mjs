// A service on the tailnet: it knows who calls from the tailnet itself, and
// accepts only tokens bound to the calling node. No API keys anywhere.
// Run all of getting-started with: node examples/getting-started/run.mjs
import http from "node:http";
import { MeshNode } from "meshguard";
import { createVerifier, sendTokenError, TokenVerifyError } from "meshguard/tokens";

const { MESHGUARD_CONTROL_URL: controlUrl = "http://127.0.0.1:8080", MESHGUARD_AUTH_KEY: authKey } = process.env;

const node = await MeshNode.start({ controlUrl, authKey, hostname: "billing" });
const verifier = createVerifier({ issuer: "http://tokens", audience: "http://billing", node });
await verifier.ready; // the issuer's keys and revocation feed, read over the tailnet

const server = http.createServer(async (req, res) => {
  try {
    // Who is calling: node name, tags, owners, and the app capabilities grants give it.
    const who = await node.whois(req.socket);
    // The token: signed by the issuer, for this audience, method and path, bound to the calling node.
    const token = await verifier.verifyRequest(req);
    console.log(`billing: ${req.method} ${req.url} from ${who.node.name} (${who.node.tags.join(", ")}), ` +
      `caps ${JSON.stringify(who.caps["example.com/cap/billing"])}, token ${token.jti} for node ${token.sub}`);
    res.setHeader("content-type", "application/json");
    res.end(JSON.stringify({ id: 7, amount: 4200 }));
  } catch (err) {
    if (err instanceof TokenVerifyError) return sendTokenError(res, err); // 401/403/503 with WWW-Authenticate
    res.statusCode = 500;
    res.end();
  }
});
await node.listen(80, server);
console.log("billing: listening on http://billing");

process.once("SIGTERM", async () => {
  await verifier.close();
  await node.close();
});
