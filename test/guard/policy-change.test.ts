// setPolicy (and so every reload) drops what the guard remembered under the
// old policy at once: nothing granted — or refused — by the old policy is
// used under the new one. One test per place the guard remembers a
// decision, each with a positive control showing the memory is there.
import http from "node:http";
import net from "node:net";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { current } from "../../src/guard/state.js";
import { countingServer, guard, policyOf, tcpServer, type Counting } from "./helpers.js";

let llm: Counting;
beforeAll(async () => {
  llm = await countingServer((_req, res, body) => {
    const b = JSON.parse(body || "{}") as { model?: string };
    res.setHeader("content-type", "application/json");
    res.end(JSON.stringify({ id: "c1", object: "chat.completion", created: 1, model: b.model, choices: [{ index: 0, message: { role: "assistant", content: "hi" }, finish_reason: "stop" }], usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 } }));
  });
});
afterAll(() => llm.close());

const endpoint = () => ({ id: "llm-endpoint", src: ["tag:agent"], http: { host: ["127.0.0.1"], port: [llm.port], method: ["POST"] } });
const model = (effect = "allow") => ({ id: "mini", src: ["tag:agent"], effect, llm: { model: ["openai/gpt-4o-mini"] } });
const providers = () => ({ [`127.0.0.1:${llm.port}`]: "openai" });
const ask = (c: OpenAI) => c.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "hi" }] });
const outcome = (p: Promise<unknown>) => p.then(() => "ok", (e: unknown) => e);

describe("setPolicy drops every cached decision", () => {
  // (The HTTP origin cache this file once checked no longer exists: the guard
  // keeps no per-origin grant; an undici connection is matched one-shot to the
  // request it judged — test/guard/net-hardening.test.ts.)

  it("an LLM SDK call decided at the SDK layer is judged again by the dispatcher when the policy changed before it was sent", async () => {
    const run = async (change: boolean) => {
      const g = guard({ rules: [endpoint(), model()], llm: { providers: providers() }, intercept: { sdk: true } });
      let entered!: () => void;
      const inFetch = new Promise<void>((r) => (entered = r));
      let release!: () => void;
      const gate = new Promise<void>((r) => (release = r));
      const client = new OpenAI({
        baseURL: `${llm.url}/v1`,
        apiKey: "test",
        maxRetries: 0,
        // Between the SDK layer's decision and the request reaching fetch.
        fetch: async (url, init) => {
          entered();
          await gate;
          return fetch(url, init);
        },
      });
      const hits = llm.hits;
      const p = outcome(ask(client));
      await inFetch;
      // The new policy still allows the model, but no longer the endpoint.
      if (change) g.setPolicy(policyOf([model()]));
      release();
      const r = await p;
      g.uninstall();
      return { r, sent: llm.hits - hits };
    };
    const control = await run(false);
    expect(control).toEqual({ r: "ok", sent: 1 });
    const changed = await run(true);
    expect(changed.r).not.toBe("ok");
    expect(changed.sent).toBe(0);
  });

  it("an approval the SDK layer remembers as refused (for the SDK's retries) is forgotten", async () => {
    let asked = 0;
    const g = guard({
      rules: [endpoint(), model("approve")],
      llm: { providers: providers() },
      intercept: { sdk: true },
      approvals: {
        callback: () => {
          asked++;
          return false;
        },
      },
    });
    const client = new OpenAI({ baseURL: `${llm.url}/v1`, apiKey: "test", maxRetries: 0 });
    const hits = llm.hits;
    expect(await outcome(ask(client))).not.toBe("ok");
    expect(await outcome(ask(client))).not.toBe("ok");
    expect(asked).toBe(1); // control: the refusal is remembered, not asked again
    g.setPolicy(policyOf([endpoint(), model()]));
    expect(await outcome(ask(client))).toBe("ok");
    expect(llm.hits).toBe(hits + 1);
  });
});

describe("setPolicy closes open raw connections the new policy denies", () => {
  const connect = (port: number, host = "127.0.0.1") =>
    new Promise<net.Socket>((resolve, reject) => {
      const s = net.connect(port, host);
      s.once("connect", () => resolve(s)).once("error", reject);
    });
  const echo = async (s: net.Socket, text: string) => {
    const got = new Promise<string>((r) => s.once("data", (d) => r(String(d))));
    s.write(text);
    expect(await got).toBe(text);
  };
  const tcpRule = (port: number) => ({ id: "db", src: ["tag:agent"], tcp: { host: ["127.0.0.1"], port: [port] } });

  it("a raw TCP connection (by address and by name) is closed when the new policy denies it; kept when it still allows it", async () => {
    const srv = await tcpServer();
    try {
      const g = guard({ rules: [tcpRule(srv.port), { id: "db-by-name", src: ["tag:agent"], tcp: { host: ["localhost"], port: [srv.port] } }] });
      const byAddr = await connect(srv.port);
      const byName = await connect(srv.port, "localhost");
      await echo(byAddr, "a");
      await echo(byName, "b");
      // Positive control: a new policy that still allows both leaves them open.
      g.setPolicy(policyOf([tcpRule(srv.port), { id: "db-by-name", src: ["tag:agent"], tcp: { host: ["localhost"], port: [srv.port] } }]));
      await echo(byAddr, "c");
      await echo(byName, "d");
      const errors: unknown[] = [];
      const closed = [byAddr, byName].map((s) => new Promise<void>((r) => s.on("error", (e) => errors.push(e)).once("close", () => r())));
      g.setPolicy(policyOf([]));
      const bound = new Promise<string>((r) => setTimeout(() => r("still open 5 s after setPolicy"), 5_000).unref());
      expect(await Promise.race([Promise.all(closed).then(() => "closed"), bound])).toBe("closed");
      expect(errors).toHaveLength(2);
      for (const e of errors) expect(String((e as Error).message)).toMatch(/no longer allows this open connection/);
    } finally {
      await srv.close();
    }
  });

  it("a keep-alive node:http socket is not closed by a policy that still allows the HTTP call (it is judged per request)", async () => {
    const agent = new http.Agent({ keepAlive: true });
    const g = guard({ rules: [endpoint()] });
    const get = () =>
      new Promise<http.IncomingMessage>((resolve, reject) => {
        const req = http.request({ host: "127.0.0.1", port: llm.port, method: "POST", path: "/keepalive", agent }, resolve).on("error", reject);
        req.end("{}");
      });
    const r1 = await get();
    r1.resume();
    await new Promise((r) => r1.on("end", r));
    const conns = llm.conns;
    g.setPolicy(policyOf([endpoint()]));
    const r2 = await get();
    r2.resume();
    expect(llm.conns, "the kept-alive socket was reused").toBe(conns);
    agent.destroy();
  });
});
