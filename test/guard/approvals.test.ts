// Approve rules: the call is held until a human (callback or webhook)
// answers; a refusal, a timeout or a broken approver means deny.
import http from "node:http";
import net, { type AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ApprovalRequest } from "../../src/guard/index.js";
import { countingServer, denied, guard, httpGet, policyOf, tcpServer, type Counting } from "./helpers.js";

let srv: Counting;
beforeAll(async () => {
  srv = await countingServer();
});
afterAll(() => srv.close());

const approveRule = { id: "pay-needs-human", src: ["tag:agent"], effect: "approve", http: { host: ["127.0.0.1"], path: ["/pay"] } };

describe("approvals through a callback", () => {
  it("an approved call goes through after the answer, and only then", async () => {
    let asked: ApprovalRequest | undefined;
    let release!: (v: boolean) => void;
    guard({
      rules: [approveRule],
      approvals: {
        callback: (req) => {
          asked = req;
          return new Promise<boolean>((r) => (release = r));
        },
      },
    });
    const hits = srv.hits;
    const p = fetch(`${srv.url}/pay`, { method: "POST", body: "42" });
    await new Promise((r) => setTimeout(r, 50));
    expect(asked?.ruleId).toBe("pay-needs-human");
    expect(asked?.target).toMatchObject({ kind: "http", path: "/pay" });
    expect(asked?.request).toBe(`POST ${srv.url}/pay`);
    expect(srv.hits).toBe(hits); // held
    release(true);
    expect((await p).status).toBe(200);
    expect(srv.hits).toBe(hits + 1);
  });

  it("an approval granted after setPolicy removed the rule grants nothing: the new policy decides", async () => {
    // Raw TCP: the connect check is the only one, so the approval's own outcome is what is seen.
    const tcp = await tcpServer();
    let release!: (v: boolean) => void;
    const g = guard({
      rules: [{ id: "db", src: ["tag:agent"], effect: "approve", tcp: { host: ["127.0.0.1"], port: [tcp.port] } }],
      approvals: { callback: () => new Promise<boolean>((r) => (release = r)) },
    });
    const connect = () => new Promise<net.Socket>((resolve, reject) => net.connect(tcp.port, "127.0.0.1").on("connect", function (this: net.Socket) { resolve(this); }).on("error", reject));
    const p = denied(connect());
    await new Promise((r) => setTimeout(r, 50));
    g.setPolicy(policyOf([])); // nothing allowed any more
    release(true);
    const err = await p;
    expect(err.message).toMatch(/policy changed while the approval was pending and now denies it/);
    expect(tcp.conns).toBe(0);
    // Positive control: under a new policy that still allows it, the approved connection is made.
    g.setPolicy(policyOf([{ id: "db", src: ["tag:agent"], effect: "approve", tcp: { host: ["127.0.0.1"], port: [tcp.port] } }]));
    const p2 = connect();
    await new Promise((r) => setTimeout(r, 50));
    g.setPolicy(policyOf([{ id: "db2", src: ["tag:agent"], tcp: { host: ["127.0.0.1"], port: [tcp.port] } }]));
    release(true);
    (await p2).destroy();
    expect(tcp.conns).toBe(1);
    await tcp.close();
  });

  it("a refused call throws PolicyDeniedError and sends nothing", async () => {
    guard({ rules: [approveRule], approvals: { callback: () => ({ approved: false, reason: "not today", by: "alice@" }) } });
    const [hits, conns] = [srv.hits, srv.conns];
    const err = await denied(fetch(`${srv.url}/pay`, { method: "POST" }));
    expect(err.message).toContain("not today");
    expect(srv.hits).toBe(hits);
    expect(srv.conns).toBe(conns);
  });

  it("no answer within the timeout means deny", async () => {
    guard({ rules: [approveRule], approvals: { callback: () => new Promise<boolean>(() => {}), timeoutMs: 150 } });
    const hits = srv.hits;
    const t0 = Date.now();
    const err = await denied(fetch(`${srv.url}/pay`));
    expect(Date.now() - t0).toBeGreaterThanOrEqual(140);
    expect(err.message).toMatch(/no answer within 150 ms/);
    expect(srv.hits).toBe(hits);
  });

  it("an approver that throws or answers nonsense means deny", async () => {
    guard({ rules: [approveRule], approvals: { callback: () => { throw new Error("approver down"); } } });
    const hits = srv.hits;
    await denied(fetch(`${srv.url}/pay`));
    expect(srv.hits).toBe(hits);
  });

  it("an approver answering something other than a boolean or { approved } means deny", async () => {
    guard({ rules: [approveRule], approvals: { callback: () => "yes" as unknown as boolean } });
    expect((await denied(fetch(`${srv.url}/pay`))).message).toMatch(/not true\/false/);
  });

  it("without an approver an approve rule denies", async () => {
    guard({ rules: [approveRule] });
    const err = await denied(fetch(`${srv.url}/pay`));
    expect(err.message).toMatch(/no approver is configured/);
  });

  it("node:http requests are held too (the connection waits for the answer)", async () => {
    let release!: (v: boolean) => void;
    guard({ rules: [approveRule], approvals: { callback: () => new Promise<boolean>((r) => (release = r)) } });
    const conns = srv.conns;
    const p = httpGet(`${srv.url}/pay`, { agent: false });
    await new Promise((r) => setTimeout(r, 50));
    expect(srv.conns).toBe(conns);
    release(true);
    expect((await p).body).toBe("ok");
    expect(srv.conns).toBe(conns + 1);
  });

  it("raw TCP held for approval connects once approved, and never when refused", async () => {
    const tcp = await tcpServer();
    let answer = true;
    guard({ rules: [{ id: "db", src: ["tag:agent"], effect: "approve", tcp: { host: ["127.0.0.1"], port: [tcp.port] } }], approvals: { callback: async () => answer } });
    await new Promise<void>((resolve, reject) => net.connect(tcp.port, "127.0.0.1").on("connect", function (this: net.Socket) { this.destroy(); resolve(); }).on("error", reject));
    expect(tcp.conns).toBe(1);
    answer = false;
    await denied(new Promise((resolve, reject) => net.connect(tcp.port, "127.0.0.1").on("connect", resolve).on("error", reject)));
    expect(tcp.conns).toBe(1);
    await tcp.close();
  });
});

describe("what an approver sees", () => {
  it("no credentials, header values, query values or body — only what reveal names", async () => {
    let asked: ApprovalRequest | undefined;
    guard({
      rules: [approveRule],
      reveal: { headers: ["x-request-id"] },
      approvals: {
        callback: (req) => {
          asked = req;
          return false;
        },
      },
    });
    const hits = srv.hits;
    await denied(
      fetch(`${srv.url}/pay?token=SECRET-Q`, {
        method: "POST",
        headers: { authorization: "Bearer SECRET-A", "x-api-key": "SECRET-K", cookie: "sid=SECRET-C", "proxy-authorization": "Basic SECRET-P", "x-request-id": "rid-1" },
        body: "SECRET-BODY",
      }),
    );
    expect(srv.hits).toBe(hits);
    const seen = JSON.stringify(asked);
    expect(seen).not.toMatch(/SECRET/);
    expect(asked?.request).toBe(`POST ${srv.url}/pay?token=<redacted>`);
    expect(asked?.target).toMatchObject({ kind: "http", queryKeys: ["token"], headers: { "x-request-id": "rid-1" } });
  });

  it("reveal may not name a credential header", () => {
    for (const h of ["Authorization", "proxy-authorization", "X-Api-Key", "cookie", "Set-Cookie"]) {
      let err: unknown;
      try {
        guard({ rules: [approveRule], reveal: { headers: ["x-request-id", h] } });
      } catch (e) {
        err = e;
      }
      expect((err as { code?: string })?.code).toBe("MESHGUARD_INVALID_OPTIONS");
      expect((err as Error).message).toMatch(new RegExp(`reveal\.headers\.1: "${h}" carries credentials and is never revealed`));
    }
    // An ordinary header is fine.
    guard({ rules: [approveRule], reveal: { headers: ["x-request-id"] } }).uninstall();
  });
});

describe("approvals through a webhook", () => {
  async function webhook(answer: (body: ApprovalRequest) => { status: number; body: unknown } | undefined) {
    const got: ApprovalRequest[] = [];
    const server = http.createServer((req, res) => {
      let b = "";
      req.on("data", (d) => (b += d));
      req.on("end", () => {
        const r = JSON.parse(b) as ApprovalRequest;
        got.push(r);
        const a = answer(r);
        if (a === undefined) return; // never answers
        res.writeHead(a.status, { "content-type": "application/json" }).end(JSON.stringify(a.body));
      });
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/approve`;
    return { url, got, close: () => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }) };
  }

  it("the webhook is POSTed the request (outside the policy) and its answer decides", async () => {
    const wh = await webhook((r) => ({ status: 200, body: { approved: r.target.kind === "http", by: "bob@" } }));
    // The policy allows nothing but the approve rule: the webhook call itself must not need a rule.
    guard({ rules: [approveRule], approvals: { webhook: wh.url, headers: { authorization: "Bearer t" } } });
    const hits = srv.hits;
    expect((await fetch(`${srv.url}/pay`)).status).toBe(200);
    expect(wh.got).toHaveLength(1);
    expect(wh.got[0]!.ruleId).toBe("pay-needs-human");
    expect(srv.hits).toBe(hits + 1);
    await wh.close();
  });

  it("a webhook refusal means deny", async () => {
    const no = await webhook(() => ({ status: 200, body: { approved: false, reason: "risky" } }));
    const hits = srv.hits;
    guard({ rules: [approveRule], approvals: { webhook: no.url } });
    expect((await denied(fetch(`${srv.url}/pay`))).message).toContain("risky");
    expect(no.got).toHaveLength(1);
    expect(srv.hits).toBe(hits);
    await no.close();
  });

  it("a webhook answering an error status means deny", async () => {
    const broken = await webhook(() => ({ status: 500, body: {} }));
    const hits = srv.hits;
    guard({ rules: [approveRule], approvals: { webhook: broken.url } });
    expect((await denied(fetch(`${srv.url}/pay`))).message).toMatch(/HTTP 500/);
    expect(srv.hits).toBe(hits);
    await broken.close();
  });

  it("a silent webhook means deny at the timeout", async () => {
    const silent = await webhook(() => undefined);
    const hits = srv.hits;
    guard({ rules: [approveRule], approvals: { webhook: silent.url, timeoutMs: 200 } });
    expect((await denied(fetch(`${srv.url}/pay`))).message).toMatch(/no answer within 200 ms/);
    expect(srv.hits).toBe(hits);
    await silent.close();
  });
});
