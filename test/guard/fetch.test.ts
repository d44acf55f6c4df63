// Global fetch (Node's bundled undici) and the npm undici package under the guard.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Agent, fetch as undiciFetch, getGlobalDispatcher, request as undiciRequest, setGlobalDispatcher, type Dispatcher } from "undici";
import { PolicyDeniedError } from "../../src/guard/index.js";
import { AGENT, allowHttp, countingServer, denied, guard, type Counting } from "./helpers.js";

let srv: Counting;
beforeAll(async () => {
  srv = await countingServer();
});
afterAll(() => srv.close());

describe("global fetch", () => {
  it("lets an allowed request through", async () => {
    guard({ rules: [allowHttp("127.0.0.1", { path: ["/ok"] })] });
    const before = srv.hits;
    const res = await fetch(`${srv.url}/ok`);
    expect(await res.text()).toBe("ok");
    expect(srv.hits).toBe(before + 1);
  });

  it("throws PolicyDeniedError for a denied request and nothing reaches the server", async () => {
    guard({ rules: [allowHttp("127.0.0.1", { path: ["/ok"] })] });
    const [hits, conns] = [srv.hits, srv.conns];
    const err = await denied(fetch(`${srv.url}/secret`));
    expect(err).toBeInstanceOf(PolicyDeniedError);
    expect((err as PolicyDeniedError).target).toMatchObject({ kind: "http", host: "127.0.0.1", path: "/secret", method: "GET" });
    expect(srv.hits).toBe(hits);
    expect(srv.conns).toBe(conns);
  });

  it("names the deciding rule of an explicit deny", async () => {
    guard({ rules: [allowHttp("127.0.0.1"), { id: "no-admin", src: ["*"], effect: "deny", http: { host: ["127.0.0.1"], path: ["/admin/**"] } }] });
    const err = (await denied(fetch(`${srv.url}/admin/x`))) as PolicyDeniedError;
    expect(err.ruleId).toBe("no-admin");
    expect(err.reason).toBeTruthy();
  });

  it("denies everything when no policy is loaded (fail closed)", async () => {
    guard({});
    const hits = srv.hits;
    await denied(fetch(`${srv.url}/ok`));
    expect(srv.hits).toBe(hits);
  });

  it("denies when the evaluator throws (fail closed)", async () => {
    guard({ policy: { evaluate: () => { throw new Error("boom"); } } });
    const hits = srv.hits;
    const err = (await denied(fetch(`${srv.url}/ok`))) as PolicyDeniedError;
    expect(err.reason).toMatch(/evaluator failed/);
    expect(srv.hits).toBe(hits);
  });

  it("uninstall restores unguarded fetch", async () => {
    const g = guard({});
    g.uninstall();
    const res = await fetch(`${srv.url}/ok`);
    expect(res.status).toBe(200);
  });
});

describe("npm undici", () => {
  it("undici.fetch and undici.request go through the guarded global dispatcher", async () => {
    guard({ rules: [allowHttp("127.0.0.1", { path: ["/ok"] })] });
    const hits = srv.hits;
    expect((await undiciFetch(`${srv.url}/ok`)).status).toBe(200);
    await denied(undiciFetch(`${srv.url}/no`));
    await denied(undiciRequest(`${srv.url}/no`));
    expect(srv.hits).toBe(hits + 1);
  });

  it("a request through an explicit Agent (not the global dispatcher) is judged too", async () => {
    guard({ rules: [allowHttp("127.0.0.1", { path: ["/ok"] })] });
    const agent = new Agent();
    const hits = srv.hits;
    expect((await undiciRequest(`${srv.url}/ok`, { dispatcher: agent })).statusCode).toBe(200);
    await denied(undiciRequest(`${srv.url}/no`, { dispatcher: agent }));
    await denied(fetch(`${srv.url}/no`, { dispatcher: agent } as RequestInit));
    expect(srv.hits).toBe(hits + 1);
    await agent.close();
  });
});

describe("Node's bundled undici and the npm package share the global dispatcher", () => {
  it("a dispatcher set with npm undici's setGlobalDispatcher is used by the built-in global fetch", async () => {
    // The fact the guard relies on: both read Symbol.for("undici.globalDispatcher.1").
    const previous = getGlobalDispatcher();
    let seen = 0;
    const counting = Object.assign(Object.create(previous) as Dispatcher, {
      dispatch(opts: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler) {
        seen++;
        return previous.dispatch(opts, handler);
      },
    });
    setGlobalDispatcher(counting);
    try {
      expect((await fetch(`${srv.url}/ok`)).status).toBe(200);
      expect(seen).toBe(1);
    } finally {
      setGlobalDispatcher(previous);
    }
  });
});

describe("identity", () => {
  it("decides as the given principal", async () => {
    guard({ identity: { node: "other", tags: ["tag:other"] }, rules: [allowHttp("127.0.0.1")] });
    await denied(fetch(`${srv.url}/ok`));
    expect(AGENT.tags).toEqual(["tag:agent"]);
  });
});
