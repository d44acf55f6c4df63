/**
 * A plain reference evaluator for the property test. It shares NO matching
 * code with src/policy: globs, host wildcards, IP ranges, time windows, rate
 * buckets and precedence are written again here, as directly as possible
 * (loops over every rule, string recursion for globs, bit strings for CIDRs,
 * Intl for every time check). Only the validated document types are shared.
 *
 * Globs are implemented for the subset the property test generates: `*`,
 * `?`, a trailing `**` path segment, `:name` segments and literals.
 */

import type { MeshguardPart, Rule } from "../../src/policy/schema.js";
import type { Decision, DecisionRequest, Principal, Target } from "../../src/policy/types.js";

type Verdict = "no" | "yes" | "unknown";

// ---------- globs ----------

/** Match `s` against a glob where `*` is any run of characters (slashes included) and `?` one non-slash character. */
function globFlatRec(p: string, s: string): boolean {
  if (p === "") return s === "";
  const c = p[0]!;
  if (c === "*") {
    for (let i = 0; i <= s.length; i++) if (globFlatRec(p.slice(1), s.slice(i))) return true;
    return false;
  }
  if (s === "") return false;
  if (c === "?") return s[0] !== "/" && globFlatRec(p.slice(1), s.slice(1));
  return c === s[0] && globFlatRec(p.slice(1), s.slice(1));
}

export function refFlat(p: string, s: string): boolean {
  if (p === "*") return true;
  return globFlatRec(p, s);
}

function segMatch(p: string, s: string): boolean {
  if (/^:[A-Za-z_]\w*$/.test(p)) p = "*";
  if (p === "*") return s !== "";
  return globFlatRec(p, s) && !s.includes("/");
}

export function refPath(p: string, s: string): boolean {
  if (p === "**") return true;
  const ps = p.split("/");
  const ss = s.split("/");
  if (ps[ps.length - 1] === "**") {
    const head = ps.slice(0, -1);
    if (ss.length < ps.length) return false;
    return head.every((seg, i) => (i === 0 ? seg === ss[0] : segMatch(seg, ss[i]!)));
  }
  if (ps.length !== ss.length) return false;
  return ps.every((seg, i) => (i === 0 ? seg === ss[0] : segMatch(seg, ss[i]!)));
}

// ---------- IP ranges as bit strings ----------

function ipBits(ip: string): string | undefined {
  const four = /^(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(ip);
  if (four) {
    const bytes = four.slice(1).map(Number);
    if (bytes.some((b) => b > 255)) return undefined;
    return "0".repeat(80) + "1".repeat(16) + bytes.map((b) => b.toString(2).padStart(8, "0")).join("");
  }
  if (!ip.includes(":")) return undefined;
  let s = ip;
  const embedded = /(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  if (embedded) {
    const b = embedded[1]!.split(".").map(Number);
    s = s.slice(0, -embedded[1]!.length) + ((b[0]! << 8) | b[1]!).toString(16) + ":" + ((b[2]! << 8) | b[3]!).toString(16);
  }
  let groups: string[];
  if (s.includes("::")) {
    const [a, b] = s.split("::");
    const ha = a ? a.split(":") : [];
    const hb = b ? b.split(":") : [];
    groups = [...ha, ...Array(8 - ha.length - hb.length).fill("0"), ...hb];
  } else groups = s.split(":");
  if (groups.length !== 8) return undefined;
  return groups.map((g) => parseInt(g, 16).toString(2).padStart(16, "0")).join("");
}

/** inCidr tells whether `ip` is in `cidr`; `shorten` drops that many bits of the prefix (the property test's broken evaluators). */
export function inCidr(cidr: string, ip: string, shorten = 0): boolean {
  const [addr, len] = cidr.split("/");
  const a = ipBits(addr!);
  const b = ipBits(ip);
  if (!a || !b) return false;
  const v4 = addr!.includes(".") && !addr!.includes(":");
  const n = Math.max(0, (len === undefined ? 128 : (v4 ? 96 : 0) + Number(len)) - shorten);
  return a.slice(0, n) === b.slice(0, n);
}

// ---------- hosts ----------

export function looksLikeAddress(p: string): boolean {
  return /^[\d.]+(\/\d+)?$/.test(p) || p.includes(":");
}

function hostOk(patterns: string[], t: Extract<Target, { kind: "http" | "tcp" | "udp" }>): boolean {
  let host = t.host.toLowerCase();
  if (host.startsWith("[") && host.endsWith("]")) host = host.slice(1, -1);
  if (host.endsWith(".")) host = host.slice(0, -1);
  const peerName = t.peer?.name?.toLowerCase().replace(/\.$/, "");
  for (const p of patterns) {
    if (p === "*") return true;
    if (p.startsWith("tag:")) {
      if (t.peer?.tags?.includes(p)) return true;
    } else if (looksLikeAddress(p)) {
      if (ipBits(host) && inCidr(p, host)) return true;
      if (t.resolvedIp && inCidr(p, t.resolvedIp)) return true;
    } else if (p.startsWith("*.")) {
      const suffix = p.slice(1);
      if (host.length > suffix.length && host.endsWith(suffix)) return true;
    } else {
      if (host === p) return true;
      if (peerName && (peerName === p || peerName.split(".")[0] === p)) return true;
    }
  }
  return false;
}

// ---------- DNS names and servers ----------

function nameOk(patterns: string[], name: string): boolean {
  const n = name.toLowerCase().replace(/\.$/, "");
  return patterns.some((p) => p === "*" || (p.startsWith("*.") ? n.length > p.length - 1 && n.endsWith(p.slice(1)) : n === p));
}

/** "ip" (port 53), "ip:port", "[ip]:port"; the address part may be a CIDR range in a pattern. */
function splitServer(s: string): [string, number] {
  const b = /^\[(.+)\]:(\d+)$/.exec(s);
  if (b) return [b[1]!, Number(b[2])];
  const v4 = /^([\d./]+):(\d+)$/.exec(s);
  if (v4) return [v4[1]!, Number(v4[2])];
  return [s, 53];
}

function serverOk(patterns: string[] | undefined, server: string | undefined): boolean {
  return (patterns ?? ["system"]).some((p) => {
    if (p === "*") return true;
    if (p === "system") return server === undefined;
    if (server === undefined) return false;
    const [range, port] = splitServer(p);
    const [ip, sport] = splitServer(server);
    return port === sport && inCidr(range, ip);
  });
}

/** A look-up without a record type asks for A and AAAA: a rule that lists types must list both. */
function rrtypeOk(types: string[] | undefined, rrtype: string | undefined): boolean {
  if (!types) return true;
  if (rrtype === undefined) return types.includes("A") && types.includes("AAAA");
  return types.includes(rrtype.toUpperCase());
}

// ---------- who ----------

function srcOk(src: string[], groups: Record<string, string[]>, p: Principal): boolean {
  const user = p.user?.toLowerCase().replace(/@$/, "");
  const node = p.node?.toLowerCase();
  for (const s of src) {
    if (s === "*") return true;
    if (s.startsWith("tag:")) {
      if (p.tags.includes(s)) return true;
    } else if (s.startsWith("group:")) {
      if (user !== undefined && (groups[s] ?? []).some((m) => m.toLowerCase().replace(/@$/, "") === user)) return true;
    } else if (s.includes("@")) {
      if (user !== undefined && s.toLowerCase().replace(/@$/, "") === user) return true;
    } else if (node !== undefined && (node === s.toLowerCase() || node.split(".")[0] === s.toLowerCase())) return true;
  }
  return false;
}

// ---------- time ----------

const DAY_NAMES = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];

function timeOk(rule: Rule, now: Date): boolean {
  const w = rule.when;
  if (!w || (w.hours === undefined && w.weekdays === undefined)) return true;
  const parts = new Intl.DateTimeFormat("en-US", { timeZone: w.timeZone ?? "UTC", weekday: "short", hour: "2-digit", minute: "2-digit", hourCycle: "h23" }).formatToParts(now);
  const get = (type: string) => parts.find((x) => x.type === type)!.value;
  const minute = Number(get("hour")) * 60 + Number(get("minute"));
  const day = DAY_NAMES.indexOf(get("weekday"));
  if (w.weekdays && !w.weekdays.includes(["sun", "mon", "tue", "wed", "thu", "fri", "sat"][day] as never)) return false;
  if (w.hours === undefined) return true;
  const list = typeof w.hours === "string" ? [w.hours] : w.hours;
  return list.some((h) => {
    const [a, b] = h.split("-");
    const start = Number(a!.slice(0, 2)) * 60 + Number(a!.slice(3));
    const end = Number(b!.slice(0, 2)) * 60 + Number(b!.slice(3));
    if (start < end) return minute >= start && minute < end;
    return minute >= start || minute < end;
  });
}

// ---------- per-kind target checks ----------

function portOk(ports: Array<number | string> | undefined, port: number): boolean {
  if (!ports) return true;
  return ports.some((p) => {
    if (p === "*") return true;
    if (typeof p === "number") return p === port;
    if (p.includes("-")) {
      const [lo, hi] = p.split("-").map(Number);
      return port >= lo! && port <= hi!;
    }
    return Number(p) === port;
  });
}

function targetVerdict(rule: Rule, t: Target): Verdict {
  if (rule.http) {
    if (t.kind !== "http") return "no";
    const m = rule.http;
    if (!hostOk(m.host, t)) return "no";
    if (m.scheme && !m.scheme.includes(t.scheme)) return "no";
    if (!portOk(m.port, t.port)) return "no";
    if (m.method && !m.method.includes("*") && !m.method.some((x) => x.toUpperCase() === t.method.toUpperCase())) return "no";
    const path = t.path.split("/").filter((seg, i, all) => seg !== "" || i === 0 || i === all.length - 1).join("/");
    if (m.path && !m.path.some((p) => refPath(p, path === "" ? "/" : path))) return "no";
    if (m.query) {
      const params = new URLSearchParams(t.query);
      for (const [name, glob] of Object.entries(m.query)) {
        const values = params.getAll(name);
        if (values.length === 0 || !values.every((v) => refFlat(glob, v))) return "no";
      }
    }
    for (const [name, glob] of Object.entries(rule.when?.headers ?? {})) {
      const v = t.headers[name.toLowerCase()];
      if (v === undefined || !refFlat(glob, v)) return "no";
    }
    return "yes";
  }
  if (rule.tcp) {
    if (t.kind !== "tcp") return "no";
    const m = rule.tcp;
    if (!hostOk(m.host, t) || !portOk(m.port, t.port)) return "no";
    if (m.tls !== undefined && m.tls !== t.tls) return "no";
    if (m.tailnet !== undefined && m.tailnet !== Boolean(t.tailnet)) return "no";
    return "yes";
  }
  if (rule.mcp) {
    if (t.kind !== "mcp") return "no";
    const m = rule.mcp;
    if (!m.server.some((g) => refFlat(g, t.server))) return "no";
    // Exactly one of tool, resource, prompt names what the rule is about (format version 6), and the target asks for one of them.
    const asked = typeof t.resource === "string" ? "resource" : typeof t.prompt === "string" ? "prompt" : "tool";
    const about = m.resource !== undefined ? "resource" : m.prompt !== undefined ? "prompt" : "tool";
    if (asked !== about) return "no";
    const value = asked === "resource" ? t.resource! : asked === "prompt" ? t.prompt! : t.tool;
    if (!(m[about] ?? []).some((g) => refFlat(g, value))) return "no";
    for (const [name, c] of Object.entries(m.args ?? {})) {
      if (!(name in t.args) || !Object.prototype.hasOwnProperty.call(t.args, name)) return "no";
      const v = t.args[name];
      const spec = typeof c === "string" ? { glob: c } : c;
      if (spec.glob !== undefined && (typeof v !== "string" || !refFlat(spec.glob, v))) return "no";
      if (spec.in && !spec.in.includes(v as never)) return "no";
      if (spec.min !== undefined && (typeof v !== "number" || v < spec.min)) return "no";
      if (spec.max !== undefined && (typeof v !== "number" || v > spec.max)) return "no";
      if (spec.maxLength !== undefined && !((typeof v === "string" || Array.isArray(v)) && v.length <= spec.maxLength)) return "no";
    }
    return "yes";
  }
  if (rule.llm) {
    if (t.kind !== "llm") return "no";
    return "yes";
  }
  if (rule.udp) {
    if (t.kind !== "udp") return "no";
    return hostOk(rule.udp.host, t) && portOk(rule.udp.port, t.port) ? "yes" : "no";
  }
  if (rule.dns) {
    if (t.kind !== "dns") return "no";
    const m = rule.dns;
    return nameOk(m.name, t.name) && rrtypeOk(m.rrtype, t.rrtype) && serverOk(m.server, t.server) ? "yes" : "no";
  }
  return "no";
}

/** The facts a rule needs from the body: checked after everything else. */
function bodyVerdict(rule: Rule, t: Target): Verdict {
  let v: Verdict = "yes";
  if (rule.llm && t.kind === "llm") {
    if (!rule.llm.model.includes("*")) {
      if (!t.model) {
        const providerParts = rule.llm.model.map((g) => (g.includes("/") ? g.split("/")[0]! : "*"));
        if (!providerParts.some((g) => refFlat(g, t.provider))) return "no";
        v = "unknown";
      }
      else if (!rule.llm.model.some((g) => refFlat(g, `${t.provider}/${t.model}`))) return "no";
    }
    if (rule.llm.maxTokens !== undefined) {
      if (t.maxTokens === undefined) v = "unknown";
      else if (t.maxTokens > rule.llm.maxTokens) return "no";
    }
  }
  if (rule.http && t.kind === "http" && rule.when?.maxBodyBytes !== undefined) {
    if (t.bodySize === undefined) v = "unknown";
    else if (t.bodySize > rule.when.maxBodyBytes) return "no";
  }
  return v;
}

// ---------- the evaluator ----------

export class ReferenceEvaluator {
  private readonly buckets: Record<string, { tokens: number; at: number }> = {};
  private readonly part: MeshguardPart;
  private readonly groups: Record<string, string[]>;

  constructor(
    part: MeshguardPart,
    groups: Record<string, string[]>,
  ) {
    this.part = part;
    this.groups = groups;
  }

  evaluate(req: DecisionRequest): Decision {
    const now = req.now!;
    const matched: Array<{ i: number; rule: Rule; verdict: Verdict }> = [];
    this.part.rules.forEach((rule, i) => {
      if (!srcOk(rule.src, this.groups, req.principal)) return;
      if (targetVerdict(rule, req.target) !== "yes") return;
      const body = bodyVerdict(rule, req.target);
      if (body === "no") return;
      if (!timeOk(rule, now)) return;
      matched.push({ i, rule, verdict: body });
    });
    const id = (m: { i: number; rule: Rule }) => m.rule.id ?? `rules[${m.i}]`;
    const deny = matched.find((m) => m.rule.effect === "deny" || m.verdict === "unknown");
    if (deny) return { effect: "deny", ruleId: id(deny), reason: "reference: deny" };
    let limited: (typeof matched)[number] | undefined;
    for (const effect of ["approve", "allow"] as const) {
      for (const m of matched.filter((x) => x.rule.effect === effect)) {
        const per = m.rule.when?.rate?.perMinute;
        if (per !== undefined && !this.spend(m.i, req.principal, per, now.getTime())) {
          limited = limited ?? m;
          continue;
        }
        return { effect, ruleId: id(m), reason: "reference" };
      }
    }
    if (limited) return { effect: "deny", ruleId: id(limited), reason: "reference: rate" };
    return { effect: "deny", reason: "reference: default" };
  }

  private spend(i: number, p: Principal, perMinute: number, ms: number): boolean {
    const who = p.node ? "n:" + p.node.toLowerCase() : p.user ? "u:" + p.user.toLowerCase() : "t:" + [...p.tags].sort().join(",");
    const key = i + "|" + who;
    const b = this.buckets[key] ?? (this.buckets[key] = { tokens: perMinute, at: ms });
    const refilled = Math.min(perMinute, b.tokens + (Math.max(0, ms - b.at) * perMinute) / 60_000);
    b.at = Math.max(b.at, ms);
    if (refilled < 1) {
      b.tokens = refilled;
      return false;
    }
    b.tokens = refilled - 1;
    return true;
  }
}
