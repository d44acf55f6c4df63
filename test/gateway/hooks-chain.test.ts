// Guardrail hooks (pre and post) against real webhook servers on 127.0.0.1:
// what each hook is sent, what its answers do to the request, and what a
// hook that fails does under failure "open" and "closed".
import { afterEach, describe, expect, it } from "vitest";
import { createHookRunner, HookFailedError, type HooksConfig } from "../../src/gateway/hooks.js";
import type { HookRequest } from "../../src/gateway/types.js";
import { deadUrl, hookServer, type Answer, type HookServer } from "./hook-server.js";

const servers: HookServer[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

async function hook(handler: Answer | ((body: any, n: number) => Answer | Promise<Answer>)): Promise<HookServer> {
  const s = await hookServer((r, n) => (typeof handler === "function" ? handler(r.body, n) : handler));
  servers.push(s);
  return s;
}

function request(over: Partial<HookRequest> = {}): HookRequest {
  return {
    id: "req-1",
    caller: { node: "research-agent", user: "alice@example.com", tags: ["tag:research"], role: "user" },
    facts: { operation: "openai.chat", format: "openai", provider: "openai", model: "gpt-4o-mini", stream: false, maxTokens: 100 },
    headers: { "content-type": "application/json", authorization: "Bearer sk-client-secret", "x-api-key": "sk-ant-secret", "x-goog-api-key": "g-secret", "openai-beta": "assistants=v2" },
    body: { model: "gpt-4o-mini", messages: [{ role: "user", content: "my card is 4111 1111 1111 1111" }], max_tokens: 100 },
    ...over,
  };
}

function runner(cfg: HooksConfig) {
  const errors: HookFailedError[] = [];
  const r = createHookRunner(cfg, { onError: (e) => errors.push(e) });
  return { r, errors };
}

describe("pre hooks", () => {
  it("a hook is sent the request without credentials, with the hook's own configured headers", async () => {
    const h = await hook({ json: { action: "allow" } });
    process.env.TEST_HOOK_TOKEN = "hook-token-1";
    const { r } = runner({ pre: [{ name: "audit", url: h.url, headers: { Authorization: "env:TEST_HOOK_TOKEN", "x-team": "sec" } }] });
    expect(r.hasPre).toBe(true);
    expect(r.hasPost).toBe(false);
    expect(await r.pre(request())).toEqual({ action: "allow" });
    expect(h.received).toHaveLength(1);
    const got = h.received[0]!;
    expect(got.body).toEqual({
      version: 1,
      phase: "pre",
      hook: "audit",
      request: {
        id: "req-1",
        caller: { node: "research-agent", user: "alice@example.com", tags: ["tag:research"], role: "user" },
        facts: request().facts,
        headers: { "content-type": "application/json", "openai-beta": "assistants=v2" },
        body: request().body,
      },
    });
    expect(got.headers.authorization).toBe("hook-token-1");
    expect(got.headers["x-team"]).toBe("sec");
    expect(got.headers["x-meshguard-hook"]).toBe("audit");
    expect(got.headers["x-meshguard-request-id"]).toBe("req-1");
    expect(JSON.stringify(got)).not.toMatch(/sk-client-secret|sk-ant-secret|g-secret/);
  });

  it("hooks run in config order, each seeing the body the previous one modified; the result is the last body", async () => {
    const order: string[] = [];
    const a = await hook((b) => {
      order.push("a");
      return { json: { action: "modify", body: { ...b.request.body, messages: [{ role: "user", content: "my card is [REDACTED]" }] } } };
    });
    const b = await hook((b) => {
      order.push("b");
      return { json: { action: "allow" } };
    });
    const c = await hook((b) => {
      order.push("c");
      return { json: { action: "modify", body: { ...b.request.body, max_tokens: 50 } } };
    });
    const { r } = runner({ pre: [{ name: "redact", url: a.url }, { name: "look", url: b.url }, { name: "cap", url: c.url }] });
    const res = await r.pre(request());
    expect(order).toEqual(["a", "b", "c"]);
    expect(b.received[0]!.body.request.body.messages[0].content).toBe("my card is [REDACTED]");
    expect(c.received[0]!.body.request.body.messages[0].content).toBe("my card is [REDACTED]");
    expect(res).toEqual({ action: "modify", body: { model: "gpt-4o-mini", messages: [{ role: "user", content: "my card is [REDACTED]" }], max_tokens: 50 } });
  });

  it("the first block ends the chain with its status and message; later hooks are not called", async () => {
    const a = await hook({ json: { action: "allow" } });
    const b = await hook({ json: { action: "block", status: 422, message: "credit card number in prompt" } });
    const c = await hook({ json: { action: "allow" } });
    const { r, errors } = runner({ pre: [{ name: "a", url: a.url }, { name: "pii", url: b.url }, { name: "c", url: c.url }] });
    expect(await r.pre(request())).toEqual({ action: "block", status: 422, message: "credit card number in prompt", hook: "pii" });
    expect(a.received).toHaveLength(1);
    expect(c.received).toHaveLength(0);
    expect(errors).toEqual([]);
  });

  it("a block without status or message is a 403 naming the hook", async () => {
    const b = await hook({ json: { action: "block" } });
    const { r } = runner({ pre: [{ name: "policy-x", url: b.url }] });
    expect(await r.pre(request())).toEqual({ action: "block", status: 403, message: 'blocked by hook "policy-x"', hook: "policy-x" });
  });

  it("models globs over provider/model choose the requests a hook runs for", async () => {
    const h = await hook({ json: { action: "block", message: "no" } });
    const { r } = runner({ pre: [{ name: "openai-only", url: h.url, models: ["openai/gpt-4o*", "*/o3"] }] });
    const facts = request().facts;
    expect((await r.pre(request())).action).toBe("block");
    expect((await r.pre(request({ facts: { ...facts, provider: "anthropic", model: "claude-sonnet-4" } }))).action).toBe("allow");
    expect((await r.pre(request({ facts: { ...facts, provider: "azure", model: "o3" } }))).action).toBe("block");
    expect((await r.pre(request({ facts: { ...facts, model: "gpt-3.5-turbo" } }))).action).toBe("allow");
    expect(h.received).toHaveLength(2);
  });

  it("no hooks: allow at once, and no call", async () => {
    const { r } = runner({});
    expect(r.hasPre).toBe(false);
    expect(await r.pre(request())).toEqual({ action: "allow" });
  });
});

describe("hook failures", () => {
  it("a hook that never answers: closed blocks with 503 after the timeout, naming the hook", async () => {
    const h = await hook({ hang: true });
    const after = await hook({ json: { action: "allow" } });
    const { r, errors } = runner({ pre: [{ name: "slow", url: h.url, timeout: "150ms" }, { name: "after", url: after.url }] });
    const t0 = Date.now();
    const res = await r.pre(request());
    const took = Date.now() - t0;
    expect(res).toMatchObject({ action: "block", status: 503, hook: "slow" });
    expect(res.action === "block" && res.message).toMatch(/pre hook "slow" did not answer within 150 ms/);
    expect(took).toBeGreaterThanOrEqual(140);
    expect(took).toBeLessThan(2_000);
    expect(after.received).toHaveLength(0);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toBeInstanceOf(HookFailedError);
    expect(errors[0]).toMatchObject({ code: "MESHGUARD_HOOK_FAILED", hook: "slow", phase: "pre", failure: "timeout" });
  });

  it("a hook that never answers: open skips it after the timeout and the chain goes on", async () => {
    const h = await hook({ hang: true });
    const after = await hook({ json: { action: "modify", body: { changed: true } } });
    const { r, errors } = runner({ pre: [{ name: "slow", url: h.url, timeout: 150, failure: "open" }, { name: "after", url: after.url }] });
    const t0 = Date.now();
    expect(await r.pre(request())).toEqual({ action: "modify", body: { changed: true } });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(140);
    expect(after.received).toHaveLength(1);
    expect(errors.map((e) => [e.hook, e.failure])).toEqual([["slow", "timeout"]]);
  });

  it("a hook that sends headers and then stalls times out too", async () => {
    const h = await hook({ stallAfterHeaders: true });
    const { r, errors } = runner({ pre: [{ name: "stall", url: h.url, timeout: "200ms" }] });
    expect(await r.pre(request())).toMatchObject({ action: "block", status: 503, hook: "stall" });
    expect(errors[0]!.failure).toBe("timeout");
  });

  it("the default timeout is 5 s", async () => {
    const h = await hook({ hang: true });
    const { r } = runner({ pre: [{ name: "slow", url: h.url }] });
    const t0 = Date.now();
    const res = await r.pre(request());
    expect(res.action === "block" && res.message).toMatch(/within 5000 ms/);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(4_900);
  }, 15_000);

  it("a hook nobody listens on: closed is a 503, open is skipped", async () => {
    const url = await deadUrl();
    const closed = runner({ pre: [{ name: "gone", url }] });
    const res = await closed.r.pre(request());
    expect(res).toMatchObject({ action: "block", status: 503, hook: "gone" });
    expect(res.action === "block" && res.message).toMatch(/pre hook "gone" could not be reached \(ECONNREFUSED\)/);
    const open = runner({ pre: [{ name: "gone", url, failure: "open" }] });
    expect(await open.r.pre(request())).toEqual({ action: "allow" });
    expect(open.errors[0]!.failure).toBe("unreachable");
  });

  it("a non-2xx answer: closed is a 502 naming the hook and status, open is skipped", async () => {
    const h = await hook({ json: { action: "allow" }, status: 500 });
    const closed = runner({ pre: [{ name: "broken", url: h.url }] });
    const res = await closed.r.pre(request());
    expect(res).toMatchObject({ action: "block", status: 502, hook: "broken" });
    expect(res.action === "block" && res.message).toMatch(/pre hook "broken" answered HTTP 500/);
    expect(closed.errors[0]).toMatchObject({ failure: "status", status: 500 });
    const open = runner({ pre: [{ name: "broken", url: h.url, failure: "open" }] });
    expect(await open.r.pre(request())).toEqual({ action: "allow" });
  });

  it("a redirect is not followed: it is a non-2xx answer", async () => {
    const target = await hook({ json: { action: "allow" } });
    const h = await hook({ status: 302, location: target.url });
    const { r } = runner({ pre: [{ name: "moved", url: h.url }] });
    expect(await r.pre(request())).toMatchObject({ action: "block", status: 502, hook: "moved" });
    expect(target.received).toHaveLength(0);
  });

  const malformed: [string, Answer, RegExp][] = [
    ["not JSON", { raw: "OK" }, /not JSON/],
    ["an empty body", { raw: "" }, /must be a JSON object with an action/],
    ["a JSON array", { json: ["allow"] }, /must be a JSON object with an action/],
    ["no action", { json: { allow: true } }, /action must be "allow", "block" or "modify"/],
    ["an unknown action", { json: { action: "maybe" } }, /action must be "allow", "block" or "modify"/],
    ["a post action", { json: { action: "redact", body: {} } }, /action must be "allow", "block" or "modify"/],
    ["a block with a 5xx status", { json: { action: "block", status: 500 } }, /status: must be a 4xx status/],
    ["a modify without body", { json: { action: "modify" } }, /body: is required/],
  ];
  it.each(malformed)("a malformed answer (%s): closed is a 502 saying what is wrong, open is skipped", async (_what, answer, why) => {
    const h = await hook(answer);
    const closed = runner({ pre: [{ name: "odd", url: h.url }] });
    const res = await closed.r.pre(request());
    expect(res).toMatchObject({ action: "block", status: 502, hook: "odd" });
    expect(res.action === "block" && res.message).toMatch(why);
    expect(closed.errors[0]).toMatchObject({ failure: "malformed", hook: "odd" });
    const next = await hook({ json: { action: "block", status: 451, message: "next ran" } });
    const open = runner({ pre: [{ name: "odd", url: h.url, failure: "open" }, { name: "next", url: next.url }] });
    expect(await open.r.pre(request())).toEqual({ action: "block", status: 451, message: "next ran", hook: "next" });
  });

  it("a throwing onError does not change the outcome", async () => {
    const url = await deadUrl();
    const r = createHookRunner({ pre: [{ name: "gone", url, failure: "open" }] }, { onError: () => {
      throw new Error("reporter broke");
    } });
    expect(await r.pre(request())).toEqual({ action: "allow" });
  });
});

describe("post hooks", () => {
  const response = { status: 200, body: { id: "chatcmpl-1", choices: [{ message: { role: "assistant", content: "the password is hunter2" } }] } };

  it("a hook is sent the request and the answer; record leaves the answer as it is", async () => {
    const h = await hook({ json: { action: "record" } });
    const { r } = runner({ post: [{ name: "log", url: h.url }] });
    expect(r.hasPost).toBe(true);
    expect(await r.post(request(), response)).toEqual({ action: "record" });
    const got = h.received[0]!;
    expect(got.body).toMatchObject({ version: 1, phase: "post", hook: "log", request: { id: "req-1", body: request().body }, response });
    expect(got.headers["x-meshguard-phase"]).toBe("post");
    expect(JSON.stringify(got.body)).not.toMatch(/sk-client-secret|sk-ant-secret/);
  });

  it("redact replaces the answer; later hooks see the redacted answer", async () => {
    const redacted = { ...response.body, choices: [{ message: { role: "assistant", content: "the password is [REDACTED]" } }] };
    const a = await hook({ json: { action: "redact", body: redacted } });
    const b = await hook({ json: { action: "record" } });
    const { r } = runner({ post: [{ name: "secrets", url: a.url }, { name: "log", url: b.url }] });
    expect(await r.post(request(), response)).toEqual({ action: "redact", body: redacted });
    expect(b.received[0]!.body.response).toEqual({ status: 200, body: redacted });
  });

  it("block replaces the answer with an error and ends the chain", async () => {
    const a = await hook({ json: { action: "block", status: 451, message: "answer withheld" } });
    const b = await hook({ json: { action: "record" } });
    const { r } = runner({ post: [{ name: "withhold", url: a.url }, { name: "log", url: b.url }] });
    expect(await r.post(request(), response)).toEqual({ action: "block", status: 451, message: "answer withheld", hook: "withhold" });
    expect(b.received).toHaveLength(0);
  });

  it("a post hook that fails: closed blocks the answer, open keeps it", async () => {
    const h = await hook({ json: { action: "modify", body: {} } });
    const closed = runner({ post: [{ name: "bad", url: h.url }] });
    const res = await closed.r.post(request(), response);
    expect(res).toMatchObject({ action: "block", status: 502, hook: "bad" });
    expect(res.action === "block" && res.message).toMatch(/post hook "bad" answered something that is not a hook answer: action must be "record", "block" or "redact"/);
    const open = runner({ post: [{ name: "bad", url: h.url, failure: "open" }] });
    expect(await open.r.post(request(), response)).toEqual({ action: "record" });
  });
});
