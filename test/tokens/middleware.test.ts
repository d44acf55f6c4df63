// The verifier's middlewares in the frameworks they are for — express 5 and
// hono on @hono/node-server (both in node_modules as dependencies of the MCP
// SDK) — served on a tailnet node and called by agents over the tailnet.
import { createAdaptorServer } from "@hono/node-server";
// @ts-expect-error express ships no types and @types/express is not installed: the test types what it uses.
import express from "express";
import http from "node:http";
import { Hono } from "hono";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorCode, type MeshNode } from "../../src/index.js";
import { createVerifier, type TokenVerifier, type VerifiedToken } from "../../src/tokens/index.js";
import { FixtureIssuer, startTokensTailnet, type TokensTailnet } from "./fixtures.js";

let tn: TokensTailnet;
let tokensNode: MeshNode;
let billing: MeshNode;
let agentA: MeshNode;
let agentB: MeshNode;
let verifier: TokenVerifier;
const issuer = new FixtureIssuer();

beforeAll(async () => {
  tn = await startTokensTailnet();
  [tokensNode, billing, agentA, agentB] = await Promise.all([tn.start("tokens", "tag:tokens"), tn.start("billing", "tag:billing"), tn.start("agent-a", "tag:agent-a"), tn.start("agent-b", "tag:agent-b")]);
  await issuer.serve(tokensNode);
  verifier = createVerifier({ issuer: "http://tokens", audience: "http://billing", node: billing });
  await verifier.ready;

  const app = express();
  app.use(verifier.express());
  type Req = http.IncomingMessage & { token: VerifiedToken; params: Record<string, string> };
  type Res = http.ServerResponse & { json(body: unknown): void; locals: Record<string, unknown> };
  app.get("/v2/transactions/:id", (req: Req, res: Res) => {
    const t = req.token;
    res.json({ sub: t.sub, caller: t.caller?.node.id, id: req.params.id, locals: (res.locals.token as VerifiedToken).jti === t.jti });
  });
  await billing.listen(81, http.createServer(app));

  const hono = new Hono<{ Variables: { token: VerifiedToken } }>();
  hono.use("/v2/*", verifier.hono());
  hono.get("/v2/transactions/:id", (c) => c.json({ sub: c.get("token").sub, caller: c.get("token").caller?.node.id, id: c.req.param("id") }));
  await billing.listen(82, createAdaptorServer({ fetch: hono.fetch }) as never);
});

afterAll(async () => {
  await verifier?.close();
  issuer.close();
  await Promise.all([agentA, agentB, billing, tokensNode].map((n) => n?.close()));
  await tn?.control.close();
});

describe.each([
  ["express", 81],
  ["hono", 82],
])("%s middleware", (_name, port) => {
  const call = async (from: MeshNode, token: string | undefined, path = "/v2/transactions/42") => {
    const res = await from.fetch(`http://billing:${port}${path}`, { headers: token ? { authorization: `Bearer ${token}` } : {} });
    return { status: res.status, www: res.headers.get("www-authenticate"), body: (await res.json()) as Record<string, unknown> };
  };
  // The service's origin is http://billing (port 80): these ports serve the same API, so locations name port 80.

  it("a valid token reaches the handler with the verified token and the caller", async () => {
    const r = await call(agentA, issuer.sign(issuer.claims(agentA.id)));
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ sub: agentA.id, caller: agentA.id, id: "42" });
  });

  it("no token: 401 and the Bearer challenge; the handler does not run", async () => {
    const r = await call(agentA, undefined);
    expect([r.status, r.body.code, r.www]).toEqual([401, ErrorCode.TOKEN_MISSING, 'Bearer realm="http://billing"']);
    expect(r.body.sub).toBeUndefined();
  });

  it("a token replayed from another node: 401 invalid_token", async () => {
    const r = await call(agentB, issuer.sign(issuer.claims(agentA.id)));
    expect([r.status, r.body.code, r.body.error]).toEqual([401, ErrorCode.TOKEN_WRONG_NODE, "invalid_token"]);
    expect(r.www).toMatch(/error="invalid_token"/);
  });

  it("a path the token does not cover: 403 insufficient_scope", async () => {
    const r = await call(agentA, issuer.sign(issuer.claims(agentA.id)), "/v2/transactions/42/refund");
    expect([r.status, r.body.code, r.body.error]).toEqual([403, ErrorCode.TOKEN_INSUFFICIENT_SCOPE, "insufficient_scope"]);
  });
});
