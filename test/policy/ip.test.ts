// The one IP classifier (src/policy/ip.ts): literals as Node's connection
// path reads them, ranges with IPv4-mapped IPv6 folded onto IPv4.
import { isIP } from "node:net";
import { describe, expect, it } from "vitest";
import { cidrContains, ipRange, isIpLiteral, parseCidr } from "../../src/policy/ip.js";
import { loadPolicy } from "../../src/policy/index.js";

describe("ip", () => {
  it("a literal is exactly what net.isIP accepts: shorthand and leading zeros are names, not addresses", () => {
    for (const s of ["127.0.0.1", "::1", "::ffff:127.0.0.1", "fe80::1%eth0", "FD7A:115C:A1E0::1"]) expect(isIpLiteral(s), s).toBe(true);
    for (const s of ["127.1", "0x7f.0.0.1", "2130706433", "010.0.0.1", "[::1]", "localhost", ""]) expect(isIpLiteral(s), s).toBe(false);
    for (const s of ["127.1", "::1", "1.2.3.04", "::ffff:1.2.3.4"]) expect(isIpLiteral(s)).toBe(isIP(s) !== 0);
  });

  it("classifies loopback, link-local (cloud metadata), unspecified, tailnet, private, including IPv4-mapped forms", () => {
    expect(ipRange("127.0.0.1")).toBe("loopback");
    expect(ipRange("::1")).toBe("loopback");
    expect(ipRange("::ffff:127.0.0.1")).toBe("loopback");
    expect(ipRange("::ffff:7f00:1")).toBe("loopback");
    expect(ipRange("169.254.169.254")).toBe("linkLocal");
    expect(ipRange("::ffff:169.254.169.254")).toBe("linkLocal");
    expect(ipRange("fe80::1%eth0")).toBe("linkLocal");
    expect(ipRange("0.0.0.0")).toBe("unspecified");
    expect(ipRange("::")).toBe("unspecified");
    expect(ipRange("100.100.1.2")).toBe("tailnet");
    expect(ipRange("fd7a:115c:a1e0::5")).toBe("tailnet");
    expect(ipRange("10.1.2.3")).toBe("private");
    expect(ipRange("fd00::1")).toBe("private");
    expect(ipRange("8.8.8.8")).toBe("public");
    expect(ipRange("example.com")).toBeUndefined();
  });

  it("CIDR membership folds IPv4-mapped IPv6 onto IPv4, and refuses bad ranges", () => {
    const c = parseCidr("10.0.0.0/8")!;
    expect(cidrContains(c, "10.200.0.1")).toBe(true);
    expect(cidrContains(c, "::ffff:10.200.0.1")).toBe(true);
    expect(cidrContains(c, "::ffff:a0a:101")).toBe(true);
    expect(cidrContains(c, "11.0.0.1")).toBe(false);
    expect(cidrContains(c, "10.1")).toBe(false); // not a literal
    expect(cidrContains(parseCidr("fd7a:115c:a1e0::/48")!, "fd7a:115c:a1e0:ab12::1")).toBe(true);
    for (const bad of ["10.0.0.0/33", "010.0.0.0/8", "::/129", "10.0.0/8", "fe80::1%eth0"]) expect(parseCidr(bad), bad).toBeUndefined();
  });

  it("a CIDR deny rule cannot be sidestepped by writing the address in IPv6", () => {
    const p = loadPolicy(JSON.stringify({ version: 1, rules: [{ id: "all", src: ["*"], tcp: { host: ["*"], port: [80] } }, { id: "no-metadata", src: ["*"], effect: "deny", tcp: { host: ["169.254.0.0/16"], port: [80] } }] }));
    const d = (host: string) => p.evaluate({ principal: { tags: ["tag:a"] }, target: { kind: "tcp", tls: false, host, port: 80 } });
    expect(d("169.254.169.254").ruleId).toBe("no-metadata");
    expect(d("::ffff:169.254.169.254").ruleId).toBe("no-metadata");
    expect(d("::ffff:a9fe:a9fe").ruleId).toBe("no-metadata");
    expect(d("1.2.3.4").effect).toBe("allow");
  });
});
