// The address readers of connect: what each accepts, how it reads it, and
// which listen addresses count as loopback (only this machine can reach them).
import { describe, expect, it } from "vitest";
import { isLoopback, parseListen, parseTarget, urlHost } from "./address.js";
import { defaultHostname } from "./options.js";

describe("parseTarget", () => {
  it.each([
    ["gateway:80", { host: "gateway", port: 80 }],
    ["gateway.tail1234.ts.net:443", { host: "gateway.tail1234.ts.net", port: 443 }],
    ["100.64.0.7:8080", { host: "100.64.0.7", port: 8080 }],
    ["[fd7a:115c:a1e0::7]:80", { host: "fd7a:115c:a1e0::7", port: 80 }],
  ])("%s", (text, want) => expect(parseTarget(text)).toEqual(want));

  it.each(["gateway", "gateway:", ":80", "gateway:0", "gateway:65536", "fd7a::7:80", "a b:80", "-x:80", "http://gateway:80"])("refuses %s with a sentence", (text) => {
    expect(typeof parseTarget(text)).toBe("string");
  });
});

describe("parseListen", () => {
  it.each([
    ["4000", { host: "127.0.0.1", port: 4000 }],
    ["127.0.0.1:0", { host: "127.0.0.1", port: 0 }],
    ["localhost:4000", { host: "127.0.0.1", port: 4000 }],
    ["[::1]:4000", { host: "::1", port: 4000 }],
    ["0.0.0.0:4000", { host: "0.0.0.0", port: 4000 }],
  ])("%s", (text, want) => expect(parseListen(text)).toEqual(want));

  it.each(["laptop.local:4000", "127.0.0.1", "127.0.0.1:99999", "::1:4000", ""])("refuses %s with a sentence", (text) => {
    expect(typeof parseListen(text)).toBe("string");
  });
});

describe("isLoopback", () => {
  it.each(["127.0.0.1", "127.8.9.10", "::1", "0:0:0:0:0:0:0:1", "::ffff:127.0.0.1"])("%s is loopback", (ip) => expect(isLoopback(ip)).toBe(true));
  it.each(["0.0.0.0", "::", "10.0.0.1", "192.168.1.2", "100.64.0.1", "::ffff:10.0.0.1", "fe80::1", "localhost", "not an ip"])("%s is not", (ip) => expect(isLoopback(ip)).toBe(false));
});

it("a wildcard bind is reached at loopback; IPv6 hosts are bracketed in URLs", () => {
  expect(urlHost("0.0.0.0")).toBe("127.0.0.1");
  expect(urlHost("::")).toBe("[::1]");
  expect(urlHost("::1")).toBe("[::1]");
  expect(urlHost("127.0.0.2")).toBe("127.0.0.2");
});

it("the default node name is a DNS label made from the machine's name", () => {
  expect(defaultHostname("Alice-MacBook-Pro.local")).toBe("connect-alice-macbook-pro");
  expect(defaultHostname("build_box 7")).toBe("connect-build-box-7");
  expect(defaultHostname("---")).toBe("connect");
  expect(defaultHostname("x".repeat(100))).toHaveLength(63);
});
