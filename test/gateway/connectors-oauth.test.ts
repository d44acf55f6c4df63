// An HTTP connector whose credential is an OAuth 2.0 client-credentials token,
// end to end over a real tailnet: the gateway fetches the token from a real
// authorization server (oidc-provider on 127.0.0.1), injects it into the
// upstream request, and the upstream (a local REST API that introspects the
// token and echoes it back) accepts it. The agent holds no secret and never
// sees the token or the client secret; concurrent calls share one token.
import http from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startGatewayTailnet, type GatewayTailnet } from "./gateway-tailnet.js";
import { CC_CLIENT, startOAuthServer, type OAuthServer } from "./oauth-server.js";

let t: GatewayTailnet;
let srv: OAuthServer;
let api: http.Server;
let apiUrl: string;
/** The bearer tokens the upstream received, in order. */
const seen: string[] = [];
const answers: string[] = [];

beforeAll(async () => {
  srv = await startOAuthServer({ redirectUris: ["http://127.0.0.1:4999/meshguard/v1/connectors/crm/oauth/callback"] });
  api = http.createServer((req, res) => {
    const token = (req.headers.authorization ?? "").replace(/^Bearer /, "");
    seen.push(token);
    void srv.introspect(token).then(
      (info) => {
        res.writeHead(info.active ? 200 : 401, { "content-type": "application/json", "x-echo": token });
        res.end(JSON.stringify({ active: info.active, client: info.client_id, echoed: token, path: req.url }));
      },
      () => (res.writeHead(500), res.end()),
    );
  });
  await new Promise<void>((r) => api.listen(0, "127.0.0.1", r));
  apiUrl = `http://127.0.0.1:${(api.address() as AddressInfo).port}`;
  t = await startGatewayTailnet({
    meshguard: { version: 6, rules: [{ id: "crm", src: ["tag:agent-a"], http: { host: ["127.0.0.1"], path: ["/crm/**"] } }] },
    config: () => ({
      connectors: {
        http: {
          crm: { baseUrl: `${apiUrl}/crm`, auth: { type: "oauth2", grant: "client_credentials", tokenUrl: srv.tokenUrl, clientId: CC_CLIENT.id, clientSecret: { env: "CC_SECRET" }, scopes: ["api:read"] } },
        },
      },
    }),
    gateway: { env: { SIM_PROVIDER_KEY: "sk-sim-PROVIDER-5ecret-4f9a", CC_SECRET: CC_CLIENT.secret } },
  });
}, 120_000);

afterAll(async () => {
  await t?.close();
  await new Promise((r) => api?.close(r));
  await srv?.close();
});

describe("an oauth2 (client credentials) connector", () => {
  it("injects a token the authorization server issued; concurrent calls share one token fetch; no token or secret reaches the agent", async () => {
    const before = srv.tokenRequests.length;
    const rs = await Promise.all(
      Array.from({ length: 8 }, async (_, i) => {
        const r = await t.nodes.agentA.fetch(`${t.gw.url}/v1/connectors/crm/items/${i}` as never);
        const text = await r.text();
        answers.push(JSON.stringify([...r.headers]), text);
        if (r.status !== 200) throw new Error(`status ${r.status}: ${text}`);
        return { status: r.status, body: JSON.parse(text) as { active: boolean; client: string; echoed: string; path: string } };
      }),
    );
    for (const [i, r] of rs.entries()) {
      expect(r.status).toBe(200);
      expect(r.body.active).toBe(true);
      expect(r.body.client).toBe(CC_CLIENT.id);
      expect(r.body.path).toBe(`/crm/items/${i}`);
      expect(r.body.echoed).toBe("[provider key redacted]");
    }
    expect(srv.tokenRequests.length - before).toBe(1);
    expect(new Set(seen).size).toBe(1);
    expect(seen[0]!.length).toBeGreaterThan(10);
    const all = answers.join("\n");
    expect(all).not.toContain(seen[0]!);
    expect(all).not.toContain(CC_CLIENT.secret);
  });

  it("another identity without an http rule is refused before any token is used", async () => {
    const n = seen.length;
    const r = await t.nodes.agentB.fetch(`${t.gw.url}/v1/connectors/crm/items/1` as never);
    const text = await r.text();
    expect(r.status).toBe(403);
    expect(text).not.toContain(CC_CLIENT.secret);
    expect(seen.length).toBe(n);
  });

  it("renews the token once the upstream refuses it: that call gets the 401, the next carries a new token", async () => {
    const grants = () => srv.tokenRequests.filter((r) => r.grant === "client_credentials").length;
    const before = grants();
    const old = seen.at(-1)!;
    // The authorization server revokes the token (as an admin, or its expiry ahead of time, would).
    const rev = await fetch(srv.revocationUrl, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded", authorization: `Basic ${Buffer.from(`${CC_CLIENT.id}:${CC_CLIENT.secret}`).toString("base64")}` },
      body: new URLSearchParams({ token: old }),
    });
    expect(rev.status).toBe(200);
    const refused = await t.nodes.agentA.fetch(`${t.gw.url}/v1/connectors/crm/items/r1` as never);
    const text = await refused.text();
    expect(refused.status).toBe(401);
    expect(text).not.toContain(old);
    const again = await t.nodes.agentA.fetch(`${t.gw.url}/v1/connectors/crm/items/r2` as never);
    expect(again.status).toBe(200);
    expect(grants()).toBe(before + 1);
    expect(seen.at(-1)).not.toBe(old);
  });
});
