// The agent side against the real issuer, on a real tailnet: an agent whose
// MeshNode.fetch calls carry tokens without agent code, tasks whose tokens
// die with them, release, refresh, redirects, token exchange, and a service
// that verifies it all (and jose, from the discovery document alone).
import http from "node:http";
import { createRemoteJWKSet, customFetch, jwtVerify } from "jose";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { ErrorCode, isMeshguardError, type MeshNode } from "../../src/index.js";
import { loadPolicy } from "../../src/policy/index.js";
import { createTokenClient, createVerifier, currentTask, startTokenIssuer, withTask, type TokenClient, type TokenIssuer, type TokenVerifier } from "../../src/tokens/index.js";
import { billingService, countingNode, eventually, startTokensTailnet, TestClock, type TokensTailnet } from "./fixtures.js";

let tn: TokensTailnet;
let tokensNode: MeshNode;
let billing: MeshNode;
let agentA: MeshNode;
let agentB: MeshNode;
let issuer: TokenIssuer;
let verifier: TokenVerifier;
/** Headers the second origin (tokens:8081) received: a token must never be among them. */
const elsewhere: http.IncomingHttpHeaders[] = [];
const clients: TokenClient[] = [];

const POLICY = {
  version: 4,
  rules: [
    {
      id: "a-billing",
      src: ["tag:agent-a"],
      token: { audience: ["http://billing"], actions: [{ methods: ["GET"], locations: ["http://billing/v2/**"] }, "http:GET:billing/v2/**", "http:POST:billing/v2/reports"], maxTtl: "10m" },
    },
    { id: "b-billing", src: ["tag:agent-b"], token: { audience: ["http://billing"], actions: ["http:GET:billing/v2/transactions/*"] } },
  ],
};

beforeAll(async () => {
  tn = await startTokensTailnet();
  [tokensNode, billing, agentA, agentB] = await Promise.all([tn.start("tokens", "tag:tokens"), tn.start("billing", "tag:billing"), tn.start("agent-a", "tag:agent-a"), tn.start("agent-b", "tag:agent-b")]);
  issuer = await startTokenIssuer({ node: tokensNode, policy: loadPolicy(JSON.stringify(POLICY)) });
  const other = http.createServer((req, res) => {
    elsewhere.push(req.headers);
    res.end("{}");
  });
  await tokensNode.listen(8081, other);
  verifier = createVerifier({ issuer: "http://tokens", audience: "http://billing", node: billing, revocations: { pollMs: 250, maxStalenessMs: 10_000 } });
  await verifier.ready;
  const server = billingService(verifier, { "/v2/redirect-out": "http://tokens:8081/landing", "/v2/redirect-in": "/v2/transactions/7" });
  await billing.listen(80, server);
});

afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.close()));
});

afterAll(async () => {
  await verifier?.close();
  await issuer?.close();
  await Promise.all([agentA, agentB, billing, tokensNode].map((n) => n?.close()));
  await tn?.control.close();
});

/** client makes a tokens client for a node; `calls` counts its requests to the issuer. */
function client(node: MeshNode, opts: Partial<Parameters<typeof createTokenClient>[0]> = {}): TokenClient & { calls: string[] } {
  const calls: string[] = [];
  const counting = countingNode(node, calls, false);
  const c = Object.assign(createTokenClient({ node: counting, issuer: "http://tokens", ...opts }), { calls });
  clients.push(c);
  return c;
}

interface Seen {
  status: number;
  body: { sub?: string; jti?: string; task?: string | null; code?: string; error_description?: string; details?: { actions: string[]; locations: string[] }[] };
}

async function get(from: MeshNode, path: string, init: RequestInit = {}): Promise<Seen> {
  const res = await from.fetch(`http://billing${path}`, init as never);
  return { status: res.status, body: (await res.json()) as Seen["body"] };
}

/** withToken calls the service with a token given by hand (to see whether the service still accepts it). */
const withToken = (from: MeshNode, token: string, path = "/v2/transactions/1") => get(from, path, { headers: { authorization: `Bearer ${token}` } });

describe("tokens client: calls carry tokens without agent code", () => {
  it("a plain MeshNode.fetch to the service carries a token for exactly that request; the service sees the agent", async () => {
    client(agentA, { targets: [{ audience: "http://billing" }] });
    const r = await get(agentA, "/v2/transactions/1?expand=1");
    expect(r.status).toBe(200);
    expect(r.body.sub).toBe(agentA.id);
    expect(r.body.details).toEqual([{ type: "meshguard.dev/http", actions: ["GET"], locations: ["http://billing/v2/transactions/1"] }]);
    // Without a client nothing is attached: the same call is refused.
    await Promise.all(clients.splice(0).map((c) => c.close()));
    expect((await get(agentA, "/v2/transactions/1")).body.code).toBe(ErrorCode.TOKEN_MISSING);
  });

  it("a target's token is fetched ahead, reused for every call it covers, and a call it does not cover gets its own", async () => {
    const c = client(agentA, { targets: [{ audience: "http://billing", actions: [{ methods: ["GET"], locations: ["http://billing/v2/transactions/*"] }] }] });
    await c.ready;
    expect(c.calls).toHaveLength(1); // fetched ahead
    const a = await get(agentA, "/v2/transactions/1");
    const b = await get(agentA, "/v2/transactions/2");
    expect([a.status, b.status]).toEqual([200, 200]);
    expect(a.body.jti).toBe(b.body.jti);
    expect(c.calls).toHaveLength(1); // no wait, no new request
    const report = await get(agentA, "/v2/reports", { method: "POST" });
    expect(report.status).toBe(200);
    expect(report.body.jti).not.toBe(a.body.jti);
    expect(report.body.details![0]!.locations).toEqual(["http://billing/v2/reports"]);
  });

  it("the service's full MagicDNS name is the same target", async () => {
    client(agentA, { targets: [{ audience: "http://billing" }] });
    const res = await agentA.fetch(`http://${billing.name.replace(/\.$/, "")}/v2/transactions/3`);
    expect(res.status).toBe(200);
  });

  it("a call the policy does not grant fails before it is sent, with the issuer's reason", async () => {
    client(agentB, { targets: [{ audience: "http://billing" }] });
    const err = await agentB.fetch("http://billing/v2/reports", { method: "POST" }).then(() => undefined, (e: unknown) => e);
    expect(isMeshguardError(err, ErrorCode.TOKEN_REQUEST_FAILED)).toBe(true);
    expect((err as Error).message).toMatch(/the token issuer refused a token for http:\/\/billing: access_denied: /);
    expect((await get(agentB, "/v2/transactions/9")).status).toBe(200);
  });

  it("an Authorization header the agent set itself is left alone", async () => {
    const c = client(agentA, { targets: [{ audience: "http://billing" }] });
    const r = await get(agentA, "/v2/transactions/1", { headers: { authorization: "Bearer not-a-token" } });
    expect(r.body.code).toBe(ErrorCode.TOKEN_INVALID);
    expect(c.calls).toHaveLength(0);
  });

  it("a token is never sent on a redirect to another origin; a same-origin redirect keeps it", async () => {
    client(agentA, { targets: [{ audience: "http://billing", actions: ["http:GET:billing/v2/**"] }] });
    elsewhere.length = 0;
    const out = await agentA.fetch("http://billing/v2/redirect-out");
    expect(out.status).toBe(200);
    expect(out.url).toBe("http://tokens:8081/landing");
    expect(elsewhere).toHaveLength(1);
    expect(elsewhere[0]!.authorization).toBeUndefined();
    // The token for the first hop was attached (the service would otherwise not be asked for a token here): same origin keeps it.
    const inside = await agentA.fetch("http://billing/v2/redirect-in");
    expect(inside.status).toBe(200);
    expect(((await inside.json()) as Seen["body"]).sub).toBe(agentA.id);
  });

  it("HTTP written over MeshNode.dial gets its header from authorization(): the same token a fetch would carry", async () => {
    const c = client(agentA, { targets: [{ audience: "http://billing", actions: ["http:GET:billing/v2/transactions/*"] }] });
    const auth = await c.authorization("http://billing/v2/transactions/8");
    expect(auth).toMatch(/^Bearer ey/);
    expect(await c.authorization("http://elsewhere/x")).toBeUndefined();
    const body = await new Promise<string>((resolve, reject) => {
      const req = http.request(
        {
          host: "billing",
          path: "/v2/transactions/8",
          headers: { authorization: auth! },
          createConnection: (_o: unknown, cb: (err: Error | null, s?: import("node:net").Socket) => void) => void agentA.dial("billing", 80).then((s) => cb(null, s), cb),
        } as http.RequestOptions,
        (res) => {
          let b = "";
          res.on("data", (d: Buffer) => (b += d));
          res.on("end", () => resolve(b));
        },
      );
      req.on("error", reject);
      req.end();
    });
    expect(JSON.parse(body)).toMatchObject({ sub: agentA.id });
  });

  it("a cached token is renewed in the background after 3/4 of its life, and never handed out in its last seconds", async () => {
    const clock = new TestClock();
    const c = client(agentA, { now: clock.now, ttl: 100, targets: [{ audience: "http://billing", actions: ["http:GET:billing/v2/transactions/*"] }] });
    await c.ready;
    const first = await get(agentA, "/v2/transactions/1");
    clock.ms += 80_000; // past 3/4 of 100 s: this call still gets the token, and a renewal starts
    const second = await get(agentA, "/v2/transactions/1");
    expect(second.body.jti).toBe(first.body.jti);
    const { value: renewed } = await eventually(async () => {
      const r = await get(agentA, "/v2/transactions/1");
      if (r.body.jti === first.body.jti) throw new Error("not renewed yet");
      return r;
    }, 5_000);
    expect(renewed.status).toBe(200);
    expect(c.calls).toHaveLength(2);
    clock.ms += 96_000; // the renewed token has < 5 s left: the call waits for a new one
    const third = await get(agentA, "/v2/transactions/1");
    expect(third.body.jti).not.toBe(renewed.body.jti);
    expect(c.calls).toHaveLength(3);
  });

  it("release() revokes a token: the service refuses it within a bound", async () => {
    const c = client(agentA, { attach: false });
    const t = await c.token({ audience: "http://billing", actions: ["http:GET:billing/v2/transactions/*"] });
    expect((await withToken(agentA, t.value)).status).toBe(200);
    await t.release();
    expect(t.released).toBe(true);
    const { ms } = await eventually(async () => expect((await withToken(agentA, t.value)).body.code).toBe(ErrorCode.TOKEN_REVOKED), 3_000);
    expect(ms).toBeLessThan(3_000);
    // The client does not hand out a released token.
    expect((await c.token({ audience: "http://billing", actions: ["http:GET:billing/v2/transactions/*"] })).jti).not.toBe(t.jti);
  });

  it("an agent revoked at the issuer: every token it holds is refused; a new one works", async () => {
    const c = client(agentB, { attach: false });
    const t = await c.token({ audience: "http://billing", actions: ["http:GET:billing/v2/transactions/*"] });
    expect((await withToken(agentB, t.value)).status).toBe(200);
    issuer.revoke({ sub: agentB.id });
    await eventually(async () => expect((await withToken(agentB, t.value)).body.code).toBe(ErrorCode.TOKEN_REVOKED), 3_000);
    await new Promise((r) => setTimeout(r, 1_100)); // tokens issued from the next second on are not covered
    const fresh = await client(agentB, { attach: false }).token({ audience: "http://billing", actions: ["http:GET:billing/v2/transactions/*"] });
    expect((await withToken(agentB, fresh.value)).status).toBe(200);
  });
});

describe("tokens client: task scope", () => {
  it("tokens obtained inside a task carry its id, are its own, and are revoked when the task settles", async () => {
    client(agentA, { targets: [{ audience: "http://billing" }] });
    let seen: Seen | undefined;
    let tokens: string[] = [];
    const out = await withTask({ id: "invoice-42" }, async (task) => {
      expect(currentTask()).toBe(task);
      seen = await get(agentA, "/v2/transactions/42");
      tokens = task.jtis;
      return "done";
    });
    expect(out).toBe("done");
    expect(seen!.status).toBe(200);
    expect(seen!.body.task).toBe("invoice-42");
    expect(tokens).toEqual([seen!.body.jti]);
    // Outside the task the same call gets a token of its own (not the task's).
    const after = await get(agentA, "/v2/transactions/42");
    expect(after.status).toBe(200);
    expect(after.body.task).toBeNull();
    expect(after.body.jti).not.toBe(seen!.body.jti);
  });

  it("task ended: the task's token is refused by the service within a bound, and a straggler call of the task fails", async () => {
    const c = client(agentA, { targets: [{ audience: "http://billing" }] });
    let value = "";
    let straggler: Promise<unknown> | undefined;
    await withTask({}, async () => {
      await get(agentA, "/v2/transactions/5");
      value = (await c.token({ audience: "http://billing", actions: [{ methods: ["GET"], locations: ["http://billing/v2/transactions/*"] }] })).value;
      expect((await withToken(agentA, value)).status).toBe(200);
      // Started in the task, runs after it ended.
      straggler = new Promise((r) => setTimeout(r, 300)).then(() => get(agentA, "/v2/transactions/6"));
      straggler.catch(() => {});
    });
    await eventually(async () => expect((await withToken(agentA, value)).body.code).toBe(ErrorCode.TOKEN_REVOKED), 3_000);
    const err = await straggler!.then(() => undefined, (e: unknown) => e);
    expect(isMeshguardError(err, ErrorCode.TOKEN_TASK_ENDED)).toBe(true);
  });

  it("a task that throws still revokes its tokens, and the error is the task's", async () => {
    const c = client(agentA, { attach: false });
    let value = "";
    const err = await withTask({}, async () => {
      value = (await c.token({ audience: "http://billing", actions: ["http:GET:billing/v2/transactions/*"] })).value;
      throw new Error("the agent failed");
    }).catch((e: Error) => e);
    expect((err as Error).message).toBe("the agent failed");
    await eventually(async () => expect((await withToken(agentA, value)).body.code).toBe(ErrorCode.TOKEN_REVOKED), 3_000);
  });

  it("a task's TTL caps its tokens' lifetime, and once it has passed no token is obtained for it", async () => {
    const c = client(agentA, { attach: false });
    await withTask({ ttl: 2 }, async (task) => {
      const t = await c.token({ audience: "http://billing", actions: ["http:GET:billing/v2/transactions/*"] });
      expect(t.claims.exp - t.claims.iat).toBeLessThanOrEqual(2);
      await new Promise((r) => setTimeout(r, 2_100));
      expect(task.ended).toBe(true);
      const late = await c.token({ audience: "http://billing", actions: ["http:GET:billing/v2/accounts/*"] }).then(() => undefined, (e: unknown) => e);
      expect(isMeshguardError(late, ErrorCode.TOKEN_TASK_ENDED)).toBe(true);
    });
  });
});

describe("token exchange and interop", () => {
  it("an exchange narrows a token (the narrow one is accepted only for what it names); one that widens is refused", async () => {
    const c = client(agentA, { attach: false });
    const wide = await c.token({ audience: "http://billing", actions: ["http:GET:billing/v2/**"] });
    const narrow = await c.exchange(wide, { actions: ["http:GET:billing/v2/transactions/1"] });
    expect(narrow.claims.act).toEqual({ sub: agentA.id });
    expect((await withToken(agentA, narrow.value, "/v2/transactions/1")).status).toBe(200);
    const other = await withToken(agentA, narrow.value, "/v2/transactions/2");
    expect([other.status, other.body.code]).toEqual([403, ErrorCode.TOKEN_INSUFFICIENT_SCOPE]);
    const err = await c.exchange(narrow, { actions: ["http:GET:billing/v2/**"] }).then(() => undefined, (e: unknown) => e);
    expect(isMeshguardError(err, ErrorCode.TOKEN_REQUEST_FAILED)).toBe(true);
    expect((err as Error).message).toMatch(/invalid_scope: an exchange can only narrow/);
  });

  it("jose verifies an issued token using only the issuer's discovery document", async () => {
    const c = client(agentA, { attach: false });
    const t = await c.token({ audience: "http://billing", actions: ["http:GET:billing/v2/transactions/*"] });
    const overTailnet = ((url: string, init: RequestInit) => agentA.fetch(url, init as never)) as unknown as typeof fetch;
    const discovery = (await (await agentA.fetch("http://tokens/.well-known/openid-configuration")).json()) as { issuer: string; jwks_uri: string; id_token_signing_alg_values_supported: string[] };
    const jwks = createRemoteJWKSet(new URL(discovery.jwks_uri), { [customFetch]: overTailnet });
    const { payload, protectedHeader } = await jwtVerify(t.value, jwks, { issuer: discovery.issuer, audience: "http://billing", algorithms: discovery.id_token_signing_alg_values_supported, typ: "at+jwt" });
    expect(protectedHeader.alg).toBe("EdDSA");
    expect(payload.sub).toBe(agentA.id);
    expect(payload.cnf).toEqual({ "meshguard.dev/node": agentA.id });
  });
});
