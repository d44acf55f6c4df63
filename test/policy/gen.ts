/**
 * fast-check generators of random policies and requests over a small
 * vocabulary, so that random pairs often match, nearly match, or sit on a
 * boundary (wildcard apex, CIDR edge, window end, DST change, rate limit).
 */

import fc from "fast-check";
import type { DecisionRequest, Principal, Target } from "../../src/policy/types.js";

export const GROUPS: Record<string, string[]> = { "group:g1": ["alice@example.com"], "group:g2": ["bob@", "carol@x.org"] };

const SRC = ["*", "*", "tag:a", "tag:a", "tag:b", "tag:c", "group:g1", "group:g2", "alice@example.com", "bob@", "n1", "n2.tail.ts.net"];
const HOST_PATTERNS = ["*", "a.com", "*.a.com", "*.x.a.com", "b.org", "n1", "10.0.0.0/8", "10.0.0.4/31", "10.0.0.5", "192.168.0.0/16", "fd00::/8", "0.0.0.0/0", "tag:a", "tag:db"];
const HOSTS = ["a.com", "x.a.com", "y.x.a.com", "b.org", "A.com", "a.com.", "n1", "10.0.0.5", "10.0.0.6", "10.0.0.4", "11.0.0.1", "192.168.1.1", "192.169.0.1", "::ffff:10.0.0.7", "fd00::1", "fe00::1", "[fd00::2]"];
const IPS = ["10.0.0.5", "10.0.0.6", "192.168.3.4", "192.169.0.1", "8.8.8.8", "fd00::9", "::ffff:192.168.0.1"];
const PATH_SEGS = ["a", "b", "c", "ab", "cb"];
const PAT_SEGS = ["a", "b", "c", "*", "a*", "*b", "?", ":id"];
const FLAT_VALUES = ["a", "ab", "abc", "b", "ba", "x-1", "p/m", "p/mm", "q/m"];
const FLAT_GLOBS = ["*", "a", "a*", "*b", "?b", "ab*", "x-?", "p/*", "*/m", "p/m?", "q/*"];
const ZONES = ["UTC", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe", "Europe/London"];
const HOURS = ["09:00-17:00", "00:00-24:00", "22:00-06:00", "01:30-03:00", "02:00-02:30", "17:00-09:00", "06:00-07:00"];
const DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"] as const;
const DNS_NAME_PATTERNS = ["*", "a.com", "*.a.com", "b.org", "_s._tcp.a.com"];
const DNS_NAMES = ["a.com", "x.a.com", "A.com.", "b.org", "_s._tcp.a.com", "c.net"];
const RRTYPES = ["A", "AAAA", "TXT", "SRV"];
const SERVER_PATTERNS = ["system", "system", "*", "10.0.0.53", "10.0.0.0/8:5353", "127.0.0.1:5353", "fd00::/8"];
const SERVERS = ["10.0.0.53", "10.1.2.3:5353", "10.0.0.53:5353", "127.0.0.1:5353", "127.0.0.1", "fd00::1", "[fd00::1]:5353"];

const sub = <T>(xs: readonly T[], min = 1, max = 3) => fc.uniqueArray(fc.constantFrom(...xs), { minLength: min, maxLength: max, comparator: "SameValueZero" });
/** maybe is `arb` with probability `p`, else undefined. */
const maybe = <T>(arb: fc.Arbitrary<T>, p = 0.5): fc.Arbitrary<T | undefined> =>
  fc.oneof({ arbitrary: fc.constant(undefined), weight: Math.round((1 - p) * 100) }, { arbitrary: arb, weight: Math.round(p * 100) });

const pathPattern = fc
  .tuple(fc.array(fc.constantFrom(...PAT_SEGS), { minLength: 0, maxLength: 3 }), fc.boolean())
  .map(([segs, globstar]) => (segs.length === 0 && !globstar ? "/" : "/" + [...segs, ...(globstar ? ["**"] : [])].join("/")));
const path = fc
  .tuple(fc.array(fc.constantFrom(...PATH_SEGS), { minLength: 0, maxLength: 4 }), fc.boolean())
  .map(([segs, slash]) => "/" + segs.join("/") + (slash && segs.length ? "/" : ""));

const when = (effect: string, kind: string) =>
  fc
    .record(
      {
        hours: maybe(fc.oneof(fc.constantFrom(...HOURS), sub(HOURS, 1, 2)), 0.5),
        weekdays: maybe(sub(DAYS, 2, 5), 0.3),
        timeZone: fc.constantFrom(...ZONES),
        headers: kind === "http" ? maybe(fc.dictionary(fc.constantFrom("x-env", "X-Team"), fc.constantFrom(...FLAT_GLOBS), { maxKeys: 1 }), 0.2) : fc.constant(undefined),
        maxBodyBytes: kind === "http" && effect !== "deny" ? maybe(fc.constantFrom(0, 100, 1000), 0.25) : fc.constant(undefined),
        rate: effect !== "deny" ? maybe(fc.record({ perMinute: fc.constantFrom(1, 2, 3) }), 0.4) : fc.constant(undefined),
      },
      { requiredKeys: [] },
    )
    .map((w) => {
      const out: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(w)) if (v !== undefined) out[k] = v;
      if (out.hours === undefined && out.weekdays === undefined) delete out.timeZone;
      return out;
    });

const httpMatch = fc.record(
  {
    scheme: maybe(sub(["http", "https"] as const, 1, 1), 0.3),
    host: sub(HOST_PATTERNS, 1, 3),
    port: maybe(sub([80, 443, 8080, "8000-8100", "*"] as const, 1, 2), 0.4),
    method: maybe(sub(["GET", "post", "PUT", "*"], 1, 2), 0.4),
    path: maybe(fc.array(pathPattern, { minLength: 1, maxLength: 2 }), 0.5),
    query: maybe(fc.dictionary(fc.constantFrom("q", "page"), fc.constantFrom(...FLAT_GLOBS), { minKeys: 1, maxKeys: 1 }), 0.2),
  },
  { requiredKeys: ["host"] },
);
const tcpMatch = fc.record(
  { host: sub(HOST_PATTERNS, 1, 3), port: sub([5432, 443, "5000-6000", "*"] as const, 1, 2), tls: maybe(fc.boolean(), 0.4), tailnet: maybe(fc.boolean(), 0.2) },
  { requiredKeys: ["host", "port"] },
);
const udpMatch = fc.record({ host: sub(HOST_PATTERNS, 1, 3), port: sub([53, 8125, "5000-6000", "*"] as const, 1, 2) });
const dnsMatch = fc.record(
  { name: sub(DNS_NAME_PATTERNS, 1, 2), rrtype: maybe(sub(RRTYPES, 1, 3), 0.4), server: maybe(sub(SERVER_PATTERNS, 1, 2), 0.5) },
  { requiredKeys: ["name"] },
);
const argC = fc.oneof(
  fc.constantFrom(...FLAT_GLOBS),
  fc.record({ in: fc.constant(["a", 1, true]) }),
  fc.record({ min: fc.constant(1), max: fc.constant(5) }),
  fc.record({ maxLength: fc.constantFrom(1, 3) }),
  fc.record({ glob: fc.constantFrom(...FLAT_GLOBS), maxLength: fc.constant(2) }),
);
const mcpMatch = fc.record(
  { server: sub(["gh", "fs", "*", "g?"], 1, 2), tool: sub(FLAT_GLOBS, 1, 2), args: maybe(fc.dictionary(fc.constantFrom("repo", "n"), argC, { minKeys: 1, maxKeys: 2 }), 0.3) },
  { requiredKeys: ["server", "tool"] },
);
const llmMatch = (effect: string) =>
  fc.record(
    { model: sub(["p/*", "p/m", "q/*", "*", "p/m?", "*/m"], 1, 2), maxTokens: effect === "deny" ? fc.constant(undefined) : maybe(fc.constantFrom(100, 1000), 0.4) },
    { requiredKeys: ["model"] },
  );

const rule = fc
  .tuple(fc.constantFrom("allow", "allow", "allow", "deny", "deny", "approve"), fc.constantFrom("http", "http", "http", "tcp", "mcp", "llm", "dns", "udp"), fc.boolean())
  .chain(([effect, kind, withId]) =>
    fc
      .record({
        src: sub(SRC, 1, 2),
        target: kind === "http" ? httpMatch : kind === "tcp" ? tcpMatch : kind === "mcp" ? mcpMatch : kind === "dns" ? dnsMatch : kind === "udp" ? udpMatch : llmMatch(effect),
        when: maybe(when(effect, kind), 0.5),
      })
      .map(({ src, target, when: w }) => {
        const r: Record<string, unknown> = { src, effect, [kind]: clean(target) };
        if (w && Object.keys(w).length) r.when = w;
        return { r, withId };
      }),
  );

/** policyDoc is a random valid meshguard part (as a plain object). */
export const policyDoc = fc.array(rule, { minLength: 1, maxLength: 12 }).map((rs) => ({
  version: 2,
  groups: GROUPS,
  rules: rs.map(({ r, withId }, i) => (withId ? { id: `r${i}`, ...r } : r)),
}));

function clean<T extends Record<string, unknown>>(o: T): T {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(o)) if (v !== undefined) out[k] = v;
  return out as T;
}

// A small cast of callers, so identities (and their rate buckets) recur.
const PRINCIPALS: Principal[] = [
  { tags: ["tag:a"] },
  { tags: ["tag:b", "tag:a"] },
  { tags: ["tag:c"], node: "n2.tail.ts.net" },
  { tags: [], user: "Alice@Example.com" },
  { tags: [], user: "bob", node: "n1" },
  { tags: [], user: "carol@x.org" },
  { tags: [], node: "N2" },
  { tags: [] },
];
const principal: fc.Arbitrary<Principal> = fc.constantFrom(...PRINCIPALS).map((p) => ({ ...p, tags: [...p.tags] }));

// Decision times: 30-minute boundaries ±1 minute around the 2026 DST changes (US, EU, Lord Howe) and ordinary days.
const BASES = [Date.UTC(2026, 2, 8, 4), Date.UTC(2026, 10, 1, 4), Date.UTC(2026, 2, 29, 0), Date.UTC(2026, 3, 4, 14), Date.UTC(2026, 0, 15, 8), Date.UTC(2026, 5, 3, 20)];
const time = fc.tuple(fc.constantFrom(...BASES), fc.integer({ min: -48, max: 48 }), fc.constantFrom(0, -60_000, 60_000, 30_000, 59_999)).map(([b, halfHours, d]) => b + halfHours * 1_800_000 + d);

const httpTarget = fc
  .record({
    scheme: fc.constantFrom("http", "https") as fc.Arbitrary<"http" | "https">,
    host: fc.constantFrom(...HOSTS),
    port: fc.constantFrom(80, 443, 8080, 8050, 9000),
    method: fc.constantFrom("GET", "POST", "put", "DELETE"),
    path,
    query: fc.constantFrom("", "q=a", "q=ab&page=p/m", "q=a&q=zz", "page=x-1"),
    headers: fc.dictionary(fc.constantFrom("x-env", "x-team"), fc.constantFrom(...FLAT_VALUES), { maxKeys: 2 }),
    bodySize: maybe(fc.constantFrom(0, 50, 100, 101, 5000), 0.8),
    resolvedIp: maybe(fc.constantFrom(...IPS), 0.4),
    peer: maybe(fc.record({ name: maybe(fc.constantFrom("n1", "n1.tail.ts.net", "zz")), tags: maybe(sub(["tag:a", "tag:db"], 1, 2)) }), 0.3),
  })
  .map((t) => ({ kind: "http" as const, ...clean(t) }) as Target);
const tcpTarget = fc
  .record({
    tls: fc.boolean(),
    host: fc.constantFrom(...HOSTS),
    port: fc.constantFrom(5432, 443, 5999, 6001),
    tailnet: maybe(fc.boolean()),
    resolvedIp: maybe(fc.constantFrom(...IPS), 0.4),
    peer: maybe(fc.record({ name: maybe(fc.constantFrom("n1", "zz")), tags: maybe(sub(["tag:a", "tag:db"], 1, 2)) }), 0.3),
  })
  .map((t) => ({ kind: "tcp" as const, ...clean(t) }) as Target);
const mcpTarget = fc
  .record({
    server: fc.constantFrom("gh", "fs", "gx", "other"),
    tool: fc.constantFrom(...FLAT_VALUES),
    args: fc.dictionary(fc.constantFrom("repo", "n", "x"), fc.oneof(fc.constantFrom(...FLAT_VALUES), fc.integer({ min: 0, max: 6 }), fc.boolean(), fc.constant(null)), { maxKeys: 3 }),
  })
  .map((t) => ({ kind: "mcp" as const, ...t }) as Target);
const llmTarget = fc
  .record({ provider: fc.constantFrom("p", "q", "r"), model: fc.constantFrom("m", "mm", "m1", "", "x"), maxTokens: maybe(fc.constantFrom(50, 100, 101, 5000), 0.7) })
  .map((t) => ({ kind: "llm" as const, ...clean(t) }) as Target);

const udpTarget = fc
  .record({
    host: fc.constantFrom(...HOSTS),
    port: fc.constantFrom(53, 8125, 5999, 6001),
    resolvedIp: maybe(fc.constantFrom(...IPS), 0.4),
    peer: maybe(fc.record({ name: maybe(fc.constantFrom("n1", "zz")), tags: maybe(sub(["tag:a", "tag:db"], 1, 2)) }), 0.3),
  })
  .map((t) => ({ kind: "udp" as const, ...clean(t) }) as Target);
const dnsTarget = fc
  .record({ name: fc.constantFrom(...DNS_NAMES), rrtype: maybe(fc.constantFrom(...RRTYPES, "MX", "txt"), 0.6), server: maybe(fc.constantFrom(...SERVERS), 0.5) })
  .map((t) => ({ kind: "dns" as const, ...clean(t) }) as Target);

/** anyTarget is a random target of any kind. */
const anyTarget = fc.oneof(
  { weight: 5, arbitrary: httpTarget },
  { weight: 2, arbitrary: tcpTarget },
  { weight: 1, arbitrary: mcpTarget },
  { weight: 1, arbitrary: llmTarget },
  { weight: 1, arbitrary: dnsTarget },
  { weight: 1, arbitrary: udpTarget },
);

/** requests is a sequence with non-decreasing time (rates see time move forward, sometimes in bursts). */
export const requests = fc
  .array(fc.record({ principal, target: anyTarget, t: time, burst: fc.boolean() }), {
    minLength: 40,
    maxLength: 40,
  })
  .map((rs) => {
    let last = -Infinity;
    return rs.map(({ principal: p, target, t, burst }): DecisionRequest => {
      const ms = burst && Number.isFinite(last) ? last + 1000 : Math.max(t, last);
      last = ms;
      return { principal: p, target, now: new Date(ms) };
    });
  });

// ---- requests aimed at a policy's rules, so that most pairs match something ----

const HOST_FOR: Record<string, string[]> = {
  "*": HOSTS,
  "a.com": ["a.com", "A.com"],
  "*.a.com": ["x.a.com", "y.x.a.com", "a.com"],
  "*.x.a.com": ["y.x.a.com", "x.a.com"],
  "b.org": ["b.org", "b.org."],
  n1: ["n1"],
  "10.0.0.0/8": ["10.0.0.5", "11.0.0.1"],
  "10.0.0.4/31": ["10.0.0.4", "10.0.0.5", "10.0.0.6"],
  "10.0.0.5": ["10.0.0.5", "::ffff:10.0.0.5"],
  "192.168.0.0/16": ["192.168.1.1", "192.169.0.1"],
  "fd00::/8": ["fd00::1", "[fd00::2]", "fe00::1"],
  "0.0.0.0/0": ["8.8.8.8", "fd00::1"],
};
const SRC_PRINCIPAL: Record<string, Principal> = {
  "group:g1": { tags: [], user: "alice@example.com" },
  "group:g2": { tags: [], user: "carol@x.org" },
  "alice@example.com": { tags: [], user: "Alice@Example.com" },
  "bob@": { tags: [], user: "bob" },
  n1: { tags: [], node: "n1.tail.ts.net" },
  "n2.tail.ts.net": { tags: [], node: "n2.tail.ts.net" },
};

/** instantiate turns a glob into a value it (usually) matches; `pick` chooses among options. */
function instantiate(glob: string, pick: (n: number) => number): string {
  return glob.replace(/\*\*|\*|\?|:id/g, (m) => (m === "**" ? ["b/c", "", "a"][pick(3)]! : m === "?" ? "b" : ["", "a", "ab"][pick(3)]!));
}

type Doc = { rules: Array<Record<string, any>> };

function aimed(rule: Record<string, any>, pick: (n: number) => number): Pick<DecisionRequest, "principal" | "target"> {
  const choose = <T>(xs: readonly T[]): T => xs[pick(xs.length)]!;
  const src: string = choose(rule.src);
  const principal: Principal = src === "*" ? { ...choose(PRINCIPALS) } : src.startsWith("tag:") ? { tags: [src] } : { ...SRC_PRINCIPAL[src]! };
  principal.tags = [...principal.tags];
  const hostAndPeer = (patterns: string[]) => {
    const p = choose(patterns);
    if (p.startsWith("tag:")) return { host: "peer.internal", peer: { tags: [p] } };
    return { host: choose(HOST_FOR[p] ?? [p]) };
  };
  const port = (ports?: Array<number | string>) => {
    const p = ports ? choose(ports) : choose([80, 443, 8080]);
    return typeof p === "number" ? p : p === "*" ? 9000 : Number(p.split("-")[choose([0, 1])]) + choose([0, 1, -1]);
  };
  if (rule.http) {
    const m = rule.http;
    const query = m.query ? Object.entries(m.query as Record<string, string>).map(([k, g]) => `${k}=${encodeURIComponent(instantiate(g, pick))}`).join("&") : choose(["", "q=a"]);
    const headers: Record<string, string> = {};
    for (const [k, g] of Object.entries((rule.when?.headers ?? {}) as Record<string, string>)) if (pick(5)) headers[k.toLowerCase()] = instantiate(g, pick);
    const target: Target = {
      kind: "http",
      scheme: m.scheme ? choose(m.scheme) : choose(["http", "https"] as const),
      ...hostAndPeer(m.host),
      port: port(m.port),
      method: m.method ? String(choose(m.method)).replace("*", "PATCH") : choose(["GET", "POST"]),
      path: m.path ? instantiate(choose(m.path as string[]), pick) || "/" : choose(["/", "/a/b"]),
      query,
      headers,
    };
    if (pick(4)) target.bodySize = choose([0, 50, 100, 101, 5000]);
    return { principal, target };
  }
  if (rule.tcp) {
    const m = rule.tcp;
    const target: Target = { kind: "tcp", tls: m.tls ?? choose([true, false]), ...hostAndPeer(m.host), port: port(m.port) };
    if (m.tailnet !== undefined) target.tailnet = m.tailnet;
    return { principal, target };
  }
  if (rule.udp) {
    const target: Target = { kind: "udp", ...hostAndPeer(rule.udp.host), port: port(rule.udp.port) };
    return { principal, target };
  }
  if (rule.dns) {
    const m = rule.dns;
    const name = String(choose(m.name as string[])).replace(/^\*$/, choose(DNS_NAMES)).replace(/^\*\./, choose(["x.", "", "y.x."]));
    const target: Target = { kind: "dns", name };
    // Mostly a type and a server the rule names (or none); sometimes others, to sit on the boundary.
    const types: string[] = m.rrtype ?? RRTYPES;
    if (pick(4)) target.rrtype = choose(types);
    const servers: string[] = m.server ?? ["system"];
    const s = pick(4) ? choose(servers) : choose(SERVERS);
    const concrete = s === "system" ? undefined : s === "*" ? choose(SERVERS) : s.includes("/") ? choose(SERVERS) : s;
    if (concrete !== undefined) target.server = concrete;
    return { principal, target };
  }
  if (rule.mcp) {
    const m = rule.mcp;
    const args: Record<string, unknown> = {};
    for (const [k, c] of Object.entries((m.args ?? {}) as Record<string, any>)) {
      if (!pick(6)) continue;
      args[k] = typeof c === "string" ? instantiate(c, pick) : c.in ? choose(c.in) : c.min !== undefined ? choose([0, 1, 3, 5, 6]) : c.glob !== undefined ? instantiate(c.glob, pick) : choose(["a", "abcd"]);
    }
    return { principal, target: { kind: "mcp", server: instantiate(choose(m.server), pick) || "gh", tool: instantiate(choose(m.tool), pick), args } };
  }
  const m = rule.llm;
  const [provider, model] = (instantiate(choose(m.model as string[]), pick) || "p/m").split("/");
  const target: Target = { kind: "llm", provider: provider || "p", model: pick(8) ? (model ?? "m") : "" };
  if (pick(5)) target.maxTokens = choose([50, 100, 101, 5000]);
  return { principal, target };
}

/** requestsFor is a time-ordered request sequence for `doc`: 2 in 3 aimed at one of its rules, the rest random. */
export function requestsFor(doc: Doc): fc.Arbitrary<DecisionRequest[]> {
  const one = fc.record({
    aim: fc.integer({ min: 0, max: 2 }),
    ruleIndex: fc.nat(),
    picks: fc.array(fc.nat(), { minLength: 32, maxLength: 32 }),
    random: fc.record({ principal, target: anyTarget }),
    t: time,
    burst: fc.constantFrom(0, 1, 1),
  });
  return fc.array(one, { minLength: 40, maxLength: 40 }).map((rs) => {
    let last = -Infinity;
    return rs.map((r): DecisionRequest => {
      let k = 0;
      const pick = (n: number) => r.picks[k++ % r.picks.length]! % n;
      const base = r.aim > 0 ? aimed(doc.rules[r.ruleIndex % doc.rules.length]!, pick) : r.random;
      const ms = r.burst && Number.isFinite(last) ? last + 1000 : Math.max(r.t, last);
      last = ms;
      return { principal: base.principal, target: base.target, now: new Date(ms) };
    });
  });
}
