// The agent side over node:http on a real tailnet: HTTP an agent writes over
// MeshNode.dial (createConnection, an Agent built on dial, node.httpAgent)
// carries the right token with no token code in the agent, and never to
// another origin; and a client given the policy fetches the tokens its rules
// name ahead, the first call waiting for the fetch in flight.
import { EventEmitter } from "node:events";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import http from "node:http";
import https from "node:https";
import type net from "node:net";
import tls from "node:tls";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { ErrorCode, isMeshguardError, type MeshNode } from "../../src/index.js";
import { installGuard, memorySink, PolicyDeniedError } from "../../src/guard/index.js";
import { loadPolicy } from "../../src/policy/index.js";
import { watchPolicyFile } from "../../src/distribution/index.js";
import { createTokenClient, createVerifier, sendTokenError, startTokenIssuer, TokenVerifyError, withTask, type TokenClient, type TokenIssuer, type TokenVerifier } from "../../src/tokens/index.js";
import { billingService, countingNode, startTokensTailnet, type TokensTailnet } from "./fixtures.js";

let tn: TokensTailnet;
let tokensNode: MeshNode;
let billing: MeshNode;
let agentA: MeshNode;
let agentB: MeshNode;
let issuer: TokenIssuer;
let verifier: TokenVerifier;
/** Requests the second origin (tokens:8081) received: a token must never be among their headers. */
const elsewhere: http.IncomingHttpHeaders[] = [];
const clients: TokenClient[] = [];

const POLICY = {
  version: 4,
  rules: [
    { id: "a-billing", src: ["tag:agent-a"], token: { audience: ["http://billing"], actions: ["http:GET:billing/v2/transactions/*", "http:POST:billing/v2/reports"], maxTtl: "10m" } },
    { id: "a-billing-accounts", src: ["tag:agent-a"], token: { audience: ["http://billing"], actions: ["http:GET:billing/v2/accounts/*"] } },
    { id: "b-billing", src: ["tag:agent-b"], token: { audience: ["http://billing"], actions: ["http:GET:billing/v2/**"] } },
    { id: "a-any", src: ["tag:agent-a"], token: { audience: ["http://*"], actions: ["http:GET:billing/v2/misc/*"] } },
    { id: "a-service", src: ["tag:agent-a"], token: { audience: ["https://service"], actions: ["http:GET:https://service/v1/*"] } },
  ],
};

beforeAll(async () => {
  tn = await startTokensTailnet();
  [tokensNode, billing, agentA, agentB] = await Promise.all([tn.start("tokens", "tag:tokens"), tn.start("billing", "tag:billing"), tn.start("agent-a", "tag:agent-a"), tn.start("agent-b", "tag:agent-b")]);
  issuer = await startTokenIssuer({ node: tokensNode, policy: loadPolicy(JSON.stringify(POLICY)) });
  await tokensNode.listen(
    8081,
    http.createServer((req, res) => {
      elsewhere.push(req.headers);
      res.end("{}");
    }),
  );
  verifier = createVerifier({ issuer: "http://tokens", audience: "http://billing", node: billing, revocations: { pollMs: 250, maxStalenessMs: 10_000 } });
  await verifier.ready;
  const server = billingService(verifier, { "/v2/redirect-out": "http://tokens:8081/landing" });
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

/** client makes a tokens client for a node; `calls` lists its requests to the issuer. */
function client(node: MeshNode, opts: Partial<Parameters<typeof createTokenClient>[0]> = {}): TokenClient & { calls: string[] } {
  const calls: string[] = [];
  const counting = countingNode(node, calls, true);
  const c = Object.assign(createTokenClient({ node: counting, issuer: "http://tokens", ...opts }), { calls });
  clients.push(c);
  return c;
}

interface Seen {
  status: number;
  /** The request went over a kept-alive connection. */
  reused?: boolean;
  body: { sub?: string; jti?: string; task?: string | null; code?: string; details?: { actions: string[]; locations: string[] }[] };
}

/** send makes one node:http request and reads the answer (the agent's code: no token in sight). */
function send(opts: http.RequestOptions, body?: string, before?: (req: http.ClientRequest) => void): Promise<Seen> {
  return new Promise((resolve, reject) => {
    const req = http.request(opts, (res) => {
      let b = "";
      res.on("data", (d: Buffer) => (b += d));
      res.on("end", () => resolve({ status: res.statusCode!, reused: req.reusedSocket, body: b ? (JSON.parse(b) as Seen["body"]) : {} }));
    });
    req.on("error", reject);
    before?.(req);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

type Connect = (o: unknown, cb: (err: Error | null, s?: net.Socket) => void) => void;
/** overDial is the createConnection an agent writes to send node:http over its tailnet node. */
const overDial =
  (node: MeshNode, host = "billing", port = 80): Connect =>
  (_o, cb) =>
    void node.dial(host, port).then((s) => cb(null, s), cb);

/** DialAgent is an http.Agent an agent builds on MeshNode.dial (keep-alive). */
class DialAgent extends http.Agent {
  private readonly node: MeshNode;

  constructor(node: MeshNode) {
    super({ keepAlive: true });
    this.node = node;
  }
  override createConnection(o: http.ClientRequestArgs, cb?: (err: Error | null, s: net.Socket) => void): undefined {
    void this.node.dial(o.hostname ?? o.host!, Number(o.port) || 80).then((s) => cb?.(null, s), (e: Error) => cb?.(e, undefined as never));
    return undefined;
  }
}

describe("HTTP over MeshNode.dial carries the token without agent code", () => {
  it("createConnection returning the dialed socket: 200 with a token for exactly that request; without a tokens client 401", async () => {
    const c = client(agentA, { targets: [{ audience: "http://billing" }] });
    const r = await send({ host: "billing", path: "/v2/transactions/1?x=1", createConnection: overDial(agentA) } as http.RequestOptions);
    expect(r.status).toBe(200);
    expect(r.body.sub).toBe(agentA.id);
    expect(r.body.details).toEqual([{ type: "meshguard.dev/http", actions: ["GET"], locations: ["http://billing/v2/transactions/1"] }]);
    // A body written after the request was created goes out behind the token too.
    const post = await send({ host: "billing", method: "POST", path: "/v2/reports", headers: { "content-type": "application/json" }, createConnection: overDial(agentA) } as http.RequestOptions, '{"q":1}');
    expect(post.status).toBe(200);
    expect(c.calls).toHaveLength(2);
    await c.close();
    const none = await send({ host: "billing", path: "/v2/transactions/1", createConnection: overDial(agentA) } as http.RequestOptions);
    expect([none.status, none.body.code]).toEqual([401, ErrorCode.TOKEN_MISSING]);
  });

  it("node.httpAgent (keep-alive: the second call reuses the connection) and an Agent the agent built on dial: 200; without a client 401", async () => {
    const c = client(agentA, { targets: [{ audience: "http://billing", actions: ["http:GET:billing/v2/transactions/*"] }] });
    await c.ready;
    const own = new DialAgent(agentA);
    try {
      const seen: Seen[] = [];
      for (const agent of [agentA.httpAgent, agentA.httpAgent, own, own]) seen.push(await send({ host: "billing", path: "/v2/transactions/2", agent }));
      expect(seen.map((s) => s.status)).toEqual([200, 200, 200, 200]);
      // The target's token fetched ahead serves them all.
      expect(new Set(seen.map((s) => s.body.jti)).size).toBe(1);
      expect(c.calls).toHaveLength(1);
      // https.request through httpsAgent is TLS over the dial: the node's https agent speaks https (no TLS service here, so only its protocol is checked).
      expect((agentA.httpsAgent as unknown as { protocol: string }).protocol).toBe("https:");
      await c.close();
      for (const agent of [agentA.httpAgent, own]) expect((await send({ host: "billing", path: "/v2/transactions/2", agent })).body.code).toBe(ErrorCode.TOKEN_MISSING);
    } finally {
      own.destroy();
    }
  });

  it("a kept-alive connection an Agent the agent wrote hands over at once: the request waits for its own token, body and all", async () => {
    const c = client(agentA, { targets: [{ audience: "http://billing" }] });
    const own = new DialAgent(agentA);
    try {
      const first = await send({ host: "billing", path: "/v2/transactions/11", agent: own });
      const second = await send({ host: "billing", method: "POST", path: "/v2/reports", agent: own, headers: { "content-length": "2" } }, "{}");
      expect([first.status, first.reused, second.status, second.reused]).toEqual([200, false, 200, true]);
      expect(second.body.details![0]!.locations).toEqual(["http://billing/v2/reports"]);
      expect(c.calls).toHaveLength(2); // each request its own token, the second obtained while it waited
      // An Authorization header the agent sets after creating the request is its own, on a kept-alive connection too.
      for (const agent of [own, agentA.httpAgent, agentA.httpAgent]) {
        const mine = await send({ host: "billing", path: "/v2/transactions/13", agent }, undefined, (req) => req.setHeader("authorization", "Bearer mine"));
        expect([mine.status, mine.body.code]).toEqual([401, ErrorCode.TOKEN_INVALID]);
      }
      expect(c.calls).toHaveLength(2);
    } finally {
      own.destroy();
    }
  });

  it("https through node.httpsAgent: TLS over the dial, the token for the https origin", async () => {
    const tlsFile = (f: string) => readFileSync(new URL(`../integration/fixtures/tls/${f}`, import.meta.url));
    // The fixture certificate names "service"; the agent trusts its throwaway CA.
    const [service, trusting] = await Promise.all([tn.start("service", "tag:billing"), tn.start("agent-a-tls", "tag:agent-a", { tls: { ca: tlsFile("ca.pem") } })]);
    const v = createVerifier({ issuer: "http://tokens", audience: "https://service", node: service, revocations: false });
    try {
      await v.ready;
      await service.listen(
        443,
        https.createServer({ key: tlsFile("service.key"), cert: tlsFile("service.pem") }, (req, res) => {
          v.verifyRequest(req).then(
            (t) => res.end(JSON.stringify({ sub: t.sub, details: t.claims.authorization_details })),
            (err: unknown) => (err instanceof TokenVerifyError ? sendTokenError(res, err) : ((res.statusCode = 500), res.end(String(err)))),
          );
        }),
      );
      client(trusting, { targets: [{ audience: "https://service" }] });
      const r = await new Promise<Seen>((resolve, reject) => {
        const req = https.get({ host: "service", path: "/v1/items", agent: trusting.httpsAgent }, (res) => {
          let b = "";
          res.on("data", (d: Buffer) => (b += d));
          res.on("end", () => resolve({ status: res.statusCode!, body: (b.startsWith("{") ? JSON.parse(b) : { code: b }) as Seen["body"] }));
        });
        req.on("error", reject);
      });
      expect([r.status, r.body.sub, r.body.code]).toEqual([200, trusting.id, undefined]);
      expect(r.body.details![0]!.locations).toEqual(["https://service/v1/items"]);
      // TLS the agent wraps around a dial itself (tls.connect({ socket })): the same, for the https origin.
      const own = await new Promise<Seen>((resolve, reject) => {
        const req = https.get(
          {
            host: "service",
            path: "/v1/own-tls",
            createConnection: (_o: unknown, cb: (err: Error | null, s?: net.Socket) => void) =>
              void trusting.dial("service", 443).then((raw) => {
                const t = tls.connect({ socket: raw, servername: "service", ca: tlsFile("ca.pem") });
                t.once("secureConnect", () => cb(null, t));
                t.once("error", cb);
              }, cb),
          } as https.RequestOptions,
          (res) => {
            let b = "";
            res.on("data", (d: Buffer) => (b += d));
            res.on("end", () => resolve({ status: res.statusCode!, body: (b.startsWith("{") ? JSON.parse(b) : { code: b }) as Seen["body"] }));
          },
        );
        req.on("error", reject);
      });
      expect([own.status, own.body.sub, own.body.code]).toEqual([200, trusting.id, undefined]);
      expect(own.body.details![0]!.locations).toEqual(["https://service/v1/own-tls"]);
    } finally {
      await v.close();
      await Promise.all([service.close(), trusting.close()]);
    }
  });

  it("the token follows where the connection goes, never the Host header; a redirect to another origin gets none", async () => {
    const c = client(agentB, { targets: [{ audience: "http://billing" }] });
    elsewhere.length = 0;
    // A request that says it is for billing but whose connection goes to tokens:8081.
    await send({ host: "billing", path: "/v2/transactions/1", createConnection: overDial(agentB, "tokens", 8081) } as http.RequestOptions);
    // Following a redirect by hand: a new request, over a new dial, to where the service sent it.
    const first = await new Promise<http.IncomingMessage>((resolve, reject) => {
      const req = http.request({ host: "billing", path: "/v2/redirect-out", createConnection: overDial(agentB) } as http.RequestOptions, resolve);
      req.on("error", reject);
      req.end();
    });
    first.resume();
    expect(first.statusCode).toBe(302);
    expect(c.calls).toHaveLength(1); // the first hop, to billing, got its token
    const to = new URL(first.headers.location!);
    const landed = await send({ host: to.hostname, port: Number(to.port), path: to.pathname, agent: agentB.httpAgent });
    expect(landed.status).toBe(200);
    expect(elsewhere).toHaveLength(2);
    expect(elsewhere.map((h) => h.authorization)).toEqual([undefined, undefined]);
  });

  it("a request the policy does not grant fails before it is sent, with the issuer's reason; one inside a task carries the task's token", async () => {
    client(agentB, { targets: [{ audience: "http://billing" }] });
    const err = await send({ host: "billing", method: "POST", path: "/v2/reports", agent: agentB.httpAgent }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(isMeshguardError(err, ErrorCode.TOKEN_REQUEST_FAILED)).toBe(true);
    expect((err as Error).message).toMatch(/access_denied/);
    const inTask = await withTask({ id: "dial-task" }, () => send({ host: "billing", path: "/v2/transactions/3", agent: agentB.httpAgent }));
    expect([inTask.status, inTask.body.task]).toEqual([200, "dial-task"]);
  });
});

describe("with the guard installed", () => {
  it("the guard judges HTTP over the dial as the agent wrote it, and an allowed request still carries its token", async () => {
    const sink = memorySink();
    const guard = installGuard({
      identity: { node: "agent-a", tags: ["tag:agent-a"] },
      policy: loadPolicy(
        JSON.stringify({
          version: 1,
          rules: [
            { id: "dial", src: ["tag:agent-a"], tcp: { host: ["billing", "tokens"], port: [80], tailnet: true } },
            { id: "tx", src: ["tag:agent-a"], http: { host: ["billing"], path: ["/v2/transactions/*"] } },
          ],
        }),
      ),
      audit: sink,
      intercept: { sdk: false, fetch: false, worker: false },
    });
    try {
      client(agentA, { targets: [{ audience: "http://billing" }] });
      const ok = await send({ host: "billing", path: "/v2/transactions/12", agent: agentA.httpAgent });
      expect([ok.status, ok.body.sub]).toEqual([200, agentA.id]);
      const denied = await send({ host: "billing", path: "/v2/accounts/1", agent: agentA.httpAgent }).catch((e: unknown) => e);
      expect(denied).toBeInstanceOf(PolicyDeniedError);
      expect(sink.events.filter((e) => e.layer === "http").map((e) => [e.outcome, e.target.kind === "http" ? e.target.path : ""])).toEqual([
        ["allow", "/v2/transactions/12"],
        ["deny", "/v2/accounts/1"],
      ]);
    } finally {
      guard.uninstall();
    }
  });
});

describe("tokens the policy names are fetched ahead", () => {
  const scopes = (call: string) => new URLSearchParams(call.split(" ").slice(2).join(" ")).get("scope");

  it("the client reads the token rules whose src matches this node and fetches each audience's actions ahead", async () => {
    const c = client(agentA, { policy: loadPolicy(JSON.stringify(POLICY)) });
    await c.ready;
    // a-billing, a-billing-accounts and a-service apply to agent-a; b-billing does not; a-any names no origin.
    expect(c.calls.map(scopes).sort()).toEqual(["http:GET:billing/v2/accounts/*", "http:GET:billing/v2/transactions/* http:POST:billing/v2/reports", "http:GET:https://service/v1/*"]);
    const tx = await send({ host: "billing", path: "/v2/transactions/4", agent: agentA.httpAgent });
    const report = await send({ host: "billing", method: "POST", path: "/v2/reports", agent: agentA.httpAgent }, "{}");
    const account = (await agentA.fetch("http://billing/v2/accounts/9")).json() as Promise<Seen["body"]>;
    expect([tx.status, report.status]).toEqual([200, 200]);
    expect(tx.body.jti).toBe(report.body.jti); // one token for the rule's actions
    expect((await account).details![0]!.locations).toContain("http://billing/v2/accounts/*");
    expect(c.calls).toHaveLength(3); // nothing asked for at call time
    // A call no fetched-ahead token covers gets a token for exactly itself (a-any, whose audience is a pattern, grants it).
    const other = await send({ host: "billing", path: "/v2/misc/1", agent: agentA.httpAgent });
    expect([other.status, other.body.details![0]!.locations]).toEqual([200, ["http://billing/v2/misc/1"]]);
    expect(c.calls).toHaveLength(4);
  });

  it("the first call waits for the fetch in flight instead of asking again", async () => {
    const c = client(agentA, { policy: loadPolicy(JSON.stringify(POLICY)) });
    // Called at once, before the client knows which rules apply: it waits, and uses the token fetched ahead.
    const [viaDial, viaFetch] = await Promise.all([
      send({ host: "billing", path: "/v2/transactions/5", agent: agentA.httpAgent }),
      agentA.fetch("http://billing/v2/transactions/6").then(async (r) => ({ status: r.status, body: (await r.json()) as Seen["body"] })),
    ]);
    expect([viaDial.status, viaFetch.status]).toEqual([200, 200]);
    expect(viaDial.body.jti).toBe(viaFetch.body.jti);
    expect(viaDial.body.details![0]!.locations).toContain("http://billing/v2/transactions/*");
    await c.ready;
    expect(c.calls).toHaveLength(3); // one per rule, not one more per call
  });

  it("a client for another node fetches only its own rules'", async () => {
    const c = client(agentB, { policy: loadPolicy(JSON.stringify(POLICY)) });
    await c.ready;
    expect(c.calls.map(scopes)).toEqual(["http:GET:billing/v2/**"]);
  });

  it("a policy rule the issuer refuses falls back to a token per request", async () => {
    // The issuer's policy has no rule for accounts/* any more; the agent's copy still has it.
    const stale = { ...POLICY, rules: [...POLICY.rules, { id: "a-billing-more", src: ["tag:agent-a"], token: { audience: ["http://billing"], actions: ["http:GET:billing/v2/ledger/*"] } }] };
    const warnings: Error[] = [];
    const c = client(agentA, { policy: loadPolicy(JSON.stringify(stale)), onWarning: (e) => warnings.push(e) });
    await c.ready;
    expect(warnings.some((w) => /ledger/.test(w.message))).toBe(true);
    const tx = await send({ host: "billing", path: "/v2/transactions/7", agent: agentA.httpAgent });
    expect(tx.status).toBe(200);
    const calls = c.calls.length;
    const ledger = await send({ host: "billing", path: "/v2/ledger/1", agent: agentA.httpAgent }).catch((e: unknown) => e);
    expect(isMeshguardError(ledger, ErrorCode.TOKEN_REQUEST_FAILED)).toBe(true); // the per-request token is refused too: the issuer decides
    expect(c.calls.length).toBe(calls + 1); // the refused rule is not asked for again at once
  });

  it("a client given a reloader follows the policy file: new rules' tokens are fetched ahead, gone rules' are no longer refreshed", async () => {
    const dir = mkdtempSync(join(tmpdir(), "mg-tokens-follow-"));
    const file = join(dir, "policy.json");
    const only = (ids: string[]) => JSON.stringify({ ...POLICY, rules: POLICY.rules.filter((r) => ids.includes(r.id)) });
    writeFileSync(file, only(["a-billing"]));
    // The reloader's target: what the guard would be (setPolicy + emit); here the tokens client alone follows it.
    const target = Object.assign(new EventEmitter(), { setPolicy: () => {} });
    const reloader = watchPolicyFile(target, file);
    try {
      await reloader.ready;
      const c = client(agentA, { policy: reloader });
      await c.ready;
      expect(c.calls.map(scopes)).toEqual(["http:GET:billing/v2/transactions/* http:POST:billing/v2/reports"]);
      writeFileSync(file, only(["a-billing", "a-billing-accounts"]));
      await reloader.reload();
      // Within a second (the client's own check), the new rule's token is fetched ahead, with no call made.
      await expect.poll(() => c.calls.map(scopes), { timeout: 5_000, interval: 50 }).toContain("http:GET:billing/v2/accounts/*");
      const calls = c.calls.length;
      const account = await send({ host: "billing", path: "/v2/accounts/3", agent: agentA.httpAgent });
      expect(account.status).toBe(200);
      expect(account.body.details![0]!.locations).toContain("http://billing/v2/accounts/*");
      expect(c.calls.length).toBe(calls); // served by the token fetched ahead
      // The rule disappears: the next call to accounts gets a token for exactly itself.
      writeFileSync(file, only(["a-billing"]));
      await reloader.reload();
      const path = "/v2/accounts/4";
      await expect
        .poll(async () => (await send({ host: "billing", path, agent: agentA.httpAgent })).body.details![0]!.locations, { timeout: 5_000, interval: 100 })
        .toContain(`http://billing${path}`);
    } finally {
      await reloader.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("setPolicy refuses what is not a policy, and the constructor says what policy must be", async () => {
    const c = client(agentA, {});
    await expect(c.setPolicy({} as never)).rejects.toThrow(/setPolicy takes a Policy/);
    expect(() => createTokenClient({ node: agentA, issuer: "http://tokens", policy: 42 as never })).toThrow(/policy must be a Policy .* or what keeps one current/);
  });
});
