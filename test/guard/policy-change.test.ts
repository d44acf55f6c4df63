// setPolicy (and so every reload) drops what the guard remembered under the
// old policy at once: nothing granted — or refused — by the old policy is
// used under the new one. One test per place the guard remembers a
// decision, each with a positive control showing the memory is there.
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { current } from "../../src/guard/state.js";
import { countingServer, guard, policyOf, type Counting } from "./helpers.js";

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
