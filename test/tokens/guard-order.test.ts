// Regression (issue 10, "token request before the guard"): with the guard
// installed and a tokens client attached, a tailnet call the guard denies
// used to ask the issuer for a token first — the caller got
// MESHGUARD_TOKEN_REQUEST_FAILED (or a token was issued for nothing) and
// the issuer learnt the method and path of a call that was never allowed.
// The guard now judges first: a denied call never reaches the token layer,
// and a call held for approval gets its token only once approved. Real
// nodes, the real issuer (its audit trail is the witness), MeshNode.fetch
// and node:http over MeshNode.dial.
import http from "node:http";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { MeshNode } from "../../src/index.js";
import { installGuard, memorySink, PolicyDeniedError, type ApprovalRequest, type GuardHandle } from "../../src/guard/index.js";
import { loadPolicy, type DecisionEvent } from "../../src/policy/index.js";
import { createTokenClient, createVerifier, sendTokenError, startTokenIssuer, TokenVerifyError, type ClientNode, type TokenClient, type TokenIssuer, type TokenVerifier } from "../../src/tokens/index.js";
import { startTokensTailnet, type TokensTailnet } from "./fixtures.js";

let tn: TokensTailnet;
let tokensNode: MeshNode;
let billing: MeshNode;
let agent: MeshNode;
let issuer: TokenIssuer;
let verifier: TokenVerifier;
/** The issuer's audit trail: one event per token it was asked for. */
const issued = memorySink();
let guard: GuardHandle | undefined;
let tokens: (TokenClient & { calls: string[] }) | undefined;
/** The approver's answer, and what the issuer had been asked when it was asked. */
let answer = true;
let asked: { request: string; issuerEvents: number; clientCalls: number }[] = [];

const TOKEN_RULES = {
  version: 4,
  rules: [{ id: "agent-billing", src: ["tag:agent-a"], token: { audience: ["http://billing"], actions: ["http:GET:billing/v2/**", "http:POST:billing/v2/reports"] } }],
};

/** What the guard lets this process do: billing's transactions (reports need a human), the issuer, and tailnet dials to both. */
const GUARD_RULES = {
  version: 1,
  rules: [
    { id: "issuer", src: ["tag:agent-a"], http: { host: ["tokens"] } },
    { id: "dials", src: ["tag:agent-a"], tcp: { host: ["billing", "tokens"], port: [80], tailnet: true } },
    { id: "transactions", src: ["tag:agent-a"], http: { host: ["billing"], method: ["GET"], path: ["/v2/transactions/*"] } },
    { id: "reports", src: ["tag:agent-a"], effect: "approve", http: { host: ["billing"], method: ["POST"], path: ["/v2/reports"] } },
  ],
};

beforeAll(async () => {
  tn = await startTokensTailnet();
  [tokensNode, billing, agent] = await Promise.all([tn.start("tokens", "tag:tokens"), tn.start("billing", "tag:billing"), tn.start("agent-a", "tag:agent-a")]);
  issuer = await startTokenIssuer({ node: tokensNode, policy: loadPolicy(JSON.stringify(TOKEN_RULES)), audit: issued });
  verifier = createVerifier({ issuer: "http://tokens", audience: "http://billing", node: billing, revocations: { pollMs: 250, maxStalenessMs: 10_000 } });
  await verifier.ready;
  await billing.listen(
    80,
    http.createServer((req, res) => {
      req.resume();
      verifier.verifyRequest(req).then(
        (t) => res.end(JSON.stringify({ sub: t.sub, path: req.url })),
        (err: unknown) => (err instanceof TokenVerifyError ? sendTokenError(res, err) : ((res.statusCode = 500), res.end(String(err)))),
      );
    }),
  );
});

beforeEach(() => {
  answer = true;
  asked = [];
  guard = installGuard({
    identity: { node: "agent-a", tags: ["tag:agent-a"] },
    policy: loadPolicy(JSON.stringify(GUARD_RULES)),
    audit: memorySink(),
    intercept: { sdk: false, worker: false },
    approvals: {
      callback: (req: ApprovalRequest) => {
        asked.push({ request: req.request, issuerEvents: issuerEventsFor(agent).length, clientCalls: tokens?.calls.length ?? -1 });
        return answer;
      },
    },
  });
  // A token per request (no actions named): every call that reaches the token layer asks the issuer.
  tokens = client(agent);
});

afterEach(async () => {
  await tokens?.close();
  guard?.uninstall();
  guard = undefined;
});

afterAll(async () => {
  guard?.uninstall();
  await verifier?.close();
  await issuer?.close();
  await Promise.all([agent, billing, tokensNode].map((n) => n?.close()));
  await tn?.control.close();
});

/** client makes a tokens client for a node; `calls` lists its requests to the issuer. */
function client(node: MeshNode): TokenClient & { calls: string[] } {
  const calls: string[] = [];
  const counting: ClientNode = {
    id: node.id,
    name: node.name,
    fetch: (url, init) => {
      calls.push(`${init?.method ?? "GET"} ${url}`);
      return node.fetch(url, init);
    },
  };
  return Object.assign(createTokenClient({ node: counting, issuer: "http://tokens", targets: [{ audience: "http://billing" }] }), { calls });
}

/** The issuer's decisions on token requests from `node`, as `METHOD location` of what was asked. */
function issuerEventsFor(node: MeshNode): string[] {
  return issued.events
    .filter((e: DecisionEvent) => e.layer === "tokens" && e.target.kind === "token" && JSON.stringify(e.principal).includes(node.name.split(".")[0]!))
    .map((e) => (e.target.kind === "token" ? `${e.target.method} ${e.target.location}` : ""));
}

interface Answer {
  status: number;
  body: { sub?: string; path?: string; code?: string };
}

async function viaFetch(method: string, path: string): Promise<Answer> {
  const res = await agent.fetch(`http://billing${path}`, { method, ...(method === "POST" ? { body: "{}", headers: { "content-type": "application/json" } } : {}) });
  return { status: res.status, body: (await res.json()) as Answer["body"] };
}

function viaDial(method: string, path: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: "billing", method, path, agent: agent.httpAgent }, (res) => {
      let b = "";
      res.on("data", (d: Buffer) => (b += d));
      res.on("end", () => resolve({ status: res.statusCode!, body: b ? (JSON.parse(b) as Answer["body"]) : {} }));
    });
    req.on("error", reject);
    if (method === "POST") req.end("{}");
    else req.end();
  });
}

describe.each([
  ["MeshNode.fetch", viaFetch],
  ["node:http over MeshNode.dial (node.httpAgent)", viaDial],
] as const)("the guard judges before the token layer: %s", (_name, call) => {
  it("a denied call fails with PolicyDeniedError at once; the issuer is never asked", async () => {
    const before = issuerEventsFor(agent).length;
    // Allowed by the issuer's token rule (GET billing/v2/**), denied by the guard (no rule for /v2/accounts).
    const err = await call("GET", "/v2/accounts/1").then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(PolicyDeniedError);
    expect(tokens!.calls).toEqual([]);
    expect(issuerEventsFor(agent).slice(before)).toEqual([]);
  });

  it("an allowed call carries its token as before: one token, for exactly that request", async () => {
    const before = issuerEventsFor(agent).length;
    const ok = await call("GET", "/v2/transactions/7");
    expect([ok.status, ok.body.sub, ok.body.path]).toEqual([200, agent.id, "/v2/transactions/7"]);
    expect(tokens!.calls).toHaveLength(1);
    expect(issuerEventsFor(agent).slice(before)).toEqual(["GET http://billing/v2/transactions/7"]);
    // Over the kept-alive connection (node:http): a denied call is still never at the issuer, an allowed one gets its own token.
    await expect(call("GET", "/v2/accounts/2")).rejects.toBeInstanceOf(PolicyDeniedError);
    expect(tokens!.calls).toHaveLength(1);
    const again = await call("GET", "/v2/transactions/8");
    expect([again.status, again.body.path]).toEqual([200, "/v2/transactions/8"]);
    expect(issuerEventsFor(agent).slice(before)).toEqual(["GET http://billing/v2/transactions/7", "GET http://billing/v2/transactions/8"]);
  });

  it("a call held for approval gets its token only once approved; a refused one never", async () => {
    const before = issuerEventsFor(agent).length;
    const ok = await call("POST", "/v2/reports");
    expect([ok.status, ok.body.sub]).toEqual([200, agent.id]);
    expect(asked).toHaveLength(1);
    expect(asked[0]).toMatchObject({ issuerEvents: before, clientCalls: 0 });
    expect(issuerEventsFor(agent).slice(before)).toEqual(["POST http://billing/v2/reports"]);

    answer = false;
    const err = await call("POST", "/v2/reports").then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(PolicyDeniedError);
    expect(asked).toHaveLength(2);
    expect(tokens!.calls).toHaveLength(1);
    expect(issuerEventsFor(agent).slice(before)).toHaveLength(1);
  });
});
