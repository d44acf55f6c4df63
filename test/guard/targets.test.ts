// The normal form of targets the guard builds (the contract in src/policy/types.ts).
import { describe, expect, it } from "vitest";
import { headerRecord, httpTarget, llmProviderFor, llmTarget, splitPathQuery } from "../../src/guard/targets.js";
import { normalizeHost } from "../../src/policy/hosts.js";
import { formatTarget } from "../../src/policy/request.js";

describe("targets", () => {
  it("normalizeHost: lower case, no trailing dot, no IPv6 brackets", () => {
    expect(normalizeHost("API.Example.COM.")).toBe("api.example.com");
    expect(normalizeHost("[FD7A::1]")).toBe("fd7a::1");
  });

  it("splitPathQuery splits origin-form and reads absolute-form (proxy) paths", () => {
    expect(splitPathQuery("/a/b?x=1&y=2")).toEqual(["/a/b", "x=1&y=2"]);
    expect(splitPathQuery("")).toEqual(["/", ""]);
    expect(splitPathQuery("http://h:8080/p?q")).toEqual(["/p", "q"]);
  });

  it("headerRecord reads every header shape with lower-case names", () => {
    expect(headerRecord(["Content-Type", "a", "X-A", "1", "x-a", "2"])).toEqual({ "content-type": "a", "x-a": "1, 2" });
    expect(headerRecord([["Host", "h"]])).toEqual({ host: "h" });
    expect(headerRecord(new Headers({ Accept: "*/*" }))).toEqual({ accept: "*/*" });
    expect(headerRecord({ "Set-Cookie": ["a", "b"], n: 5, u: undefined })).toEqual({ "set-cookie": "a, b", n: "5" });
    expect(headerRecord(null)).toEqual({});
  });

  it("httpTarget and formatTarget", () => {
    const t = httpTarget({ scheme: "https", host: "API.x.com", port: 443, method: "post", rawPath: "/v1?a=b", headers: {} });
    expect(t).toMatchObject({ kind: "http", host: "api.x.com", method: "POST", path: "/v1", query: "a=b" });
    expect(formatTarget(t)).toBe("POST https://api.x.com/v1?a=<redacted>");
    expect(formatTarget({ kind: "tcp", tls: true, host: "::1", port: 5432 })).toBe("tls [::1]:5432");
  });

  it("LLM calls: a known provider host, or an LLM API path on any host; model and max tokens from the body", () => {
    const p = new Map([["api.openai.com", "openai"], ["llm.internal:8080", "openai"]]);
    expect(llmProviderFor(p, "api.openai.com", 443, "POST", "/v1/files")).toBe("openai");
    expect(llmProviderFor(p, "llm.internal", 8080, "POST", "/x")).toBe("openai");
    expect(llmProviderFor(p, "llm.internal", 9090, "POST", "/x")).toBeUndefined();
    expect(llmProviderFor(p, "gw.example.com", 443, "POST", "/v1/chat/completions")).toBe("gw.example.com");
    expect(llmProviderFor(p, "api.openai.com", 443, "GET", "/v1/models")).toBeUndefined();
    expect(llmTarget("anthropic", { model: "claude", max_tokens: 10 })).toEqual({ kind: "llm", provider: "anthropic", model: "claude", maxTokens: 10 });
    expect(llmTarget("openai", { model: "o3", max_completion_tokens: 5 })?.maxTokens).toBe(5);
    expect(llmTarget("openai", { messages: [] })).toBeUndefined();
    expect(llmTarget("openai", "text")).toBeUndefined();
  });
});
