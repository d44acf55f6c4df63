/**
 * Learn mode: from a log of observed calls (DecisionEvents, JSON lines),
 * propose the least-privilege policy that allows exactly what was observed,
 * as readable rules, with `tests` generated from the observations.
 *
 * Readability comes from grouping:
 * - one rule per identity and HTTP origin (scheme, host, port) and set of
 *   methods, listing the path patterns;
 * - path segments that are ids (numbers, UUIDs, long hex or tokens) become
 *   `*`, and so does a position where at least VARIANCE_MIN different values
 *   appear with everything else equal (`/v2/users/alice`, `/v2/users/bob`,
 *   `/v2/users/carol` → `/v2/users/*`);
 * - TCP by host and TLS (ports listed), MCP by server (tools listed), LLM by
 *   provider (models listed; max tokens = the largest observed when every
 *   call declared it), UDP by host (ports listed), DNS by server (names and
 *   record types listed; an address look-up counts as A and AAAA).
 * The file is written in the lowest format version that holds its rules
 * (version 2 only when it has dns or udp rules), so older readers load it.
 * The identity of a rule is the caller's first tag (sorted), else its user,
 * else its node name. Which events count: those whose call went through
 * (`outcome: "allow"`): every "observe" event, and "enforce" events that
 * were allowed or approved.
 */

import { ErrorCode, MeshguardError } from "../errors.js";
import { loadPolicy } from "./load.js";
import { randomUUID } from "node:crypto";
import type { DecisionEvent, DecisionLayer, TargetSummary } from "./event.js";
import { DecisionEventSchema } from "./event-schema.js";
import { parseDnsNamePattern } from "./dns.js";
import type { Principal } from "./types.js";

/** VARIANCE_MIN distinct values at one path position (all else equal) make it a wildcard. */
const VARIANCE_MIN = 3;

export interface LearnOptions {
  /** At most this many generated tests per rule (default 20). */
  maxTestsPerRule?: number;
}

export interface LearnResult {
  /** The proposed policy as HuJSON text (meshguard-only file). */
  text: string;
  rules: number;
  tests: number;
  /** Events used and skipped (denied in enforce mode, or without an identity). */
  used: number;
  skipped: number;
}

/** readDecisionEvents parses a JSON-lines log; blank lines are ignored, a malformed line is an error naming it. */
export function readDecisionEvents(text: string, file = "log"): DecisionEvent[] {
  const out: DecisionEvent[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (!line) continue;
    let ev: unknown;
    try {
      ev = JSON.parse(line);
    } catch (err) {
      throw logError(file, i, `not JSON: ${(err as Error).message}`);
    }
    const why = checkEvent(ev);
    if (why) throw logError(file, i, why);
    out.push((ev as { v: number }).v === 1 ? fromV1(ev as V1Event) : (ev as DecisionEvent));
  }
  return out;
}

function logError(file: string, i: number, why: string): MeshguardError {
  return new MeshguardError(ErrorCode.AUDIT_LOG_INVALID, `${file}:${i + 1}: ${why}`, {
    hint: "the log must be JSON lines of decision events as written by the guard's audit sink (docs/policy.md, \"Audit events\")",
  });
}

function checkEvent(ev: unknown): string | undefined {
  if (typeof ev !== "object" || ev === null) return "not a JSON object";
  const v = (ev as { v?: unknown }).v;
  if (v === 2) {
    const r = DecisionEventSchema.safeParse(ev);
    if (r.success) return undefined;
    const issue = r.error.issues[0]!;
    const where = issue.path.join(".");
    return issue.code === "unrecognized_keys" ? `unknown field ${issue.keys.map((k) => JSON.stringify(where ? `${where}.${k}` : k)).join(", ")}` : `${where || "event"}: ${issue.message}`;
  }
  if (v !== 1) return `unsupported event version ${JSON.stringify(v)} (this meshguard reads versions 1 and 2)`;
  const e = ev as Partial<V1Event>;
  if (typeof e.principal !== "object" || e.principal === null || !Array.isArray(e.principal.tags)) return "principal.tags missing";
  const t = e.target as Partial<TargetSummary> | undefined;
  if (!t || typeof t !== "object") return "target missing";
  const str = (x: unknown) => typeof x === "string" && x.length > 0;
  const ok =
    t.kind === "http"
      ? str(t.host) && typeof t.port === "number" && str(t.method) && typeof t.path === "string" && (t.scheme === "http" || t.scheme === "https")
      : t.kind === "tcp"
        ? str(t.host) && typeof t.port === "number"
        : t.kind === "mcp"
          ? str(t.server) && str(t.tool)
          : t.kind === "llm"
            ? str(t.provider) && typeof t.model === "string"
            : false;
  if (!ok) return `target of kind ${JSON.stringify(t.kind)} is incomplete`;
  if (e.effect !== "allow" && e.effect !== "deny" && e.effect !== "approve") return "effect must be allow, deny or approve";
  return undefined;
}

/** A version-1 audit line (meshguard before the unified event): no id, layer or outcome; peer tags flat. */
type V1Event = Omit<DecisionEvent, "v" | "id" | "layer" | "outcome" | "target"> & { v: 1; target: TargetSummary & { peerTags?: string[] } };

// Version-1 lines predate dns, udp and token targets; those entries only complete the map.
const V1_LAYER: Record<TargetSummary["kind"], DecisionLayer> = { http: "http", tcp: "net", mcp: "mcp", llm: "llm-sdk", dns: "dns", udp: "udp", token: "tokens", sql: "sql" };

/** fromV1 reads a version-1 line as a version-2 event (the outcome follows from mode and effect, as v1 readers assumed). */
function fromV1(e: V1Event): DecisionEvent {
  const { peerTags, ...target } = e.target;
  if (peerTags?.length && (target.kind === "http" || target.kind === "tcp")) target.peer = { tags: peerTags };
  return {
    ...e,
    v: 2,
    id: randomUUID(),
    layer: V1_LAYER[target.kind],
    outcome: e.mode === "observe" || e.effect !== "deny" ? "allow" : "deny",
    target,
  };
}

function srcOf(p: Principal): string | undefined {
  if (p.tags.length) return [...p.tags].sort()[0];
  if (p.user) return p.user;
  return p.node || undefined;
}

function asOf(p: Principal): string | string[] {
  const parts = [...p.tags];
  if (p.user) parts.push(p.user);
  if (p.node) parts.push(`node:${p.node}`);
  return parts.length === 1 ? parts[0]! : parts;
}

const ID_SEGMENT = [/^\d+$/, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i, /^[0-9a-f]{12,}$/i, /^(?=.*\d)[A-Za-z0-9_-]{16,}$/];
const GLOB_SPECIAL = /[*?[\]{}()!+@\\]/g;

/** literalSegment makes an observed path segment safe to use as a glob (special characters escaped). */
function literalSegment(s: string): string {
  if (/^:[A-Za-z_]/.test(s)) return "*"; // would read as a named segment
  return s.replace(GLOB_SPECIAL, (c) => `\\${c}`);
}

/** generalize turns observed paths into patterns: ids to "*", then high-variance positions to "*". */
export function generalizePaths(paths: string[]): Map<string, string> {
  const pattern = new Map<string, string[]>();
  for (const p of new Set(paths)) pattern.set(p, p.split("/").map((s) => (s !== "" && ID_SEGMENT.some((re) => re.test(s)) ? "*" : literalSegment(s))));
  for (let changed = true; changed; ) {
    changed = false;
    const segs = [...new Set([...pattern.values()].map((s) => s.join("/")))].map((s) => s.split("/"));
    for (const s of segs) {
      for (let pos = 1; pos < s.length; pos++) {
        if (s[pos] === "*" || s[pos] === "") continue;
        const same = segs.filter((o) => o.length === s.length && o.every((v, i) => i === pos || v === s[i]));
        const values = new Set(same.map((o) => o[pos]));
        if (values.size >= VARIANCE_MIN && !values.has("*")) {
          for (const segsOfPath of pattern.values()) {
            if (segsOfPath.length === s.length && segsOfPath.every((v, i) => i === pos || v === s[i])) segsOfPath[pos] = "*";
          }
          changed = true;
          break;
        }
      }
      if (changed) break;
    }
  }
  return new Map([...pattern].map(([p, s]) => [p, s.join("/")]));
}

interface Draft {
  id: string;
  src: string;
  body: Record<string, unknown>;
  calls: number;
  tests: Array<{ as: string | string[]; request: string }>;
}

/** learnPolicy proposes a policy from observed events. The result loads with loadPolicy and its tests pass. */
export function learnPolicy(events: DecisionEvent[], opts: LearnOptions = {}): LearnResult {
  const maxTests = opts.maxTestsPerRule ?? 20;
  let skipped = 0;
  const used: DecisionEvent[] = [];
  for (const e of events) {
    // A looked-up name that is not a plain name ("*" in it, say) cannot be written as a rule that allows only it.
    const unwritable = e.target.kind === "dns" && (parseDnsNamePattern(e.target.name) as { kind?: string }).kind !== "exact";
    if (e.outcome === "allow" && srcOf(e.principal) !== undefined && !unwritable) used.push(e);
    else skipped++;
  }
  const drafts: Draft[] = [];
  const bySrc = groupBy(used, (e) => srcOf(e.principal)!);
  for (const [src, evs] of [...bySrc].sort(([a], [b]) => a.localeCompare(b))) {
    const test = (e: DecisionEvent) => ({ as: asOf(e.principal), request: e.request });
    // HTTP: per origin, generalize paths, then one rule per set of methods.
    const http = evs.filter((e) => e.target.kind === "http");
    for (const [origin, oevs] of groupBy(http, (e) => { const t = e.target as Extract<TargetSummary, { kind: "http" }>; return `${t.scheme}|${t.host}|${t.port}`; })) {
      const [scheme, host, port] = origin.split("|") as [string, string, string];
      const gen = generalizePaths(oevs.map((e) => (e.target as { path: string }).path));
      const methodsByPattern = new Map<string, Set<string>>();
      for (const e of oevs) {
        const t = e.target as Extract<TargetSummary, { kind: "http" }>;
        const pat = gen.get(t.path)!;
        if (!methodsByPattern.has(pat)) methodsByPattern.set(pat, new Set());
        methodsByPattern.get(pat)!.add(t.method.toUpperCase());
      }
      const byMethods = groupBy([...methodsByPattern], ([, ms]) => [...ms].sort().join(","));
      for (const [methods, pats] of [...byMethods].sort(([a], [b]) => a.localeCompare(b))) {
        const paths = pats.map(([p]) => p).sort();
        const mset = new Set(methods.split(","));
        const pset = new Set(paths);
        const mine = oevs.filter((e) => { const t = e.target as { method: string; path: string }; return mset.has(t.method.toUpperCase()) && pset.has(gen.get(t.path)!); });
        drafts.push({
          id: `${slug(src)}-${slug(host)}${byMethods.size > 1 ? `-${slug(methods)}` : ""}`,
          src,
          body: { http: { scheme: [scheme], host: [host], port: [Number(port)], method: methods.split(","), path: paths } },
          calls: mine.length,
          tests: mine.map(test),
        });
      }
    }
    const tcp = evs.filter((e) => e.target.kind === "tcp");
    for (const [key, tevs] of groupBy(tcp, (e) => { const t = e.target as Extract<TargetSummary, { kind: "tcp" }>; return `${t.host}|${t.tls}|${Boolean(t.tailnet)}`; })) {
      const [host, tls, tailnet] = key.split("|") as [string, string, string];
      const ports = [...new Set(tevs.map((e) => (e.target as { port: number }).port))].sort((a, b) => a - b);
      const match: Record<string, unknown> = { host: [host], port: ports, tls: tls === "true" };
      if (tailnet === "true") match.tailnet = true;
      drafts.push({ id: `${slug(src)}-${tls === "true" ? "tls" : "tcp"}-${slug(host)}`, src, body: { tcp: match }, calls: tevs.length, tests: tevs.map(test) });
    }
    // Tool calls: resource reads and prompt gets (format version 6, the gateway's MCP endpoint) are not learned yet.
    const mcp = evs.filter((e) => e.target.kind === "mcp" && (e.target as { tool: string }).tool !== "");
    for (const [server, mevs] of groupBy(mcp, (e) => (e.target as { server: string }).server)) {
      const tools = [...new Set(mevs.map((e) => (e.target as { tool: string }).tool))].sort();
      drafts.push({ id: `${slug(src)}-mcp-${slug(server)}`, src, body: { mcp: { server: [escapeFlat(server)], tool: tools.map(escapeFlat) } }, calls: mevs.length, tests: mevs.map(test) });
    }
    const llm = evs.filter((e) => e.target.kind === "llm" && (e.target as { model: string }).model !== "");
    for (const [provider, levs] of groupBy(llm, (e) => (e.target as { provider: string }).provider)) {
      const models = [...new Set(levs.map((e) => `${provider}/${(e.target as { model: string }).model}`))].sort();
      const toks = levs.map((e) => (e.target as { maxTokens?: number }).maxTokens);
      const match: Record<string, unknown> = { model: models.map(escapeFlat) };
      if (toks.every((n) => typeof n === "number")) match.maxTokens = Math.max(...(toks as number[]));
      drafts.push({ id: `${slug(src)}-llm-${slug(provider)}`, src, body: { llm: match }, calls: levs.length, tests: levs.map(test) });
    }
    const udp = evs.filter((e) => e.target.kind === "udp");
    for (const [host, uevs] of groupBy(udp, (e) => (e.target as { host: string }).host)) {
      const ports = [...new Set(uevs.map((e) => (e.target as { port: number }).port))].sort((a, b) => a - b);
      drafts.push({ id: `${slug(src)}-udp-${slug(host)}`, src, body: { udp: { host: [host], port: ports } }, calls: uevs.length, tests: uevs.map(test) });
    }
    const dns = evs.filter((e) => e.target.kind === "dns");
    for (const [server, devs] of groupBy(dns, (e) => (e.target as { server?: string }).server ?? "")) {
      const names = [...new Set(devs.map((e) => (e.target as { name: string }).name))].sort();
      // An address look-up (no record type) asks for A and AAAA.
      const types = [...new Set(devs.flatMap((e) => { const rr = (e.target as { rrtype?: string }).rrtype; return rr === undefined ? ["A", "AAAA"] : [rr]; }))].sort();
      const match: Record<string, unknown> = { name: names, rrtype: types };
      if (server) match.server = [server];
      drafts.push({ id: `${slug(src)}-dns${server ? `-${slug(server)}` : ""}`, src, body: { dns: match }, calls: devs.length, tests: devs.map(test) });
    }
  }
  uniqueIds(drafts);
  const text = render(drafts, used, maxTests);
  const policy = loadPolicy(text, { file: "learned policy" }); // proves the proposal loads and its tests pass
  return { text, rules: policy.rules.length, tests: policy.document.part.tests?.length ?? 0, used: used.length, skipped };
}

function render(drafts: Draft[], used: DecisionEvent[], maxTests: number): string {
  const times = used.map((e) => e.time).sort();
  const head = [
    `// Proposed by \`meshguard policy learn\` from ${used.length} observed calls${times.length ? ` (${times[0]} .. ${times.at(-1)})` : ""}.`,
    "// Review before use: each rule allows what was observed; path segments that",
    '// looked like ids, or varied a lot, are generalized to "*".',
  ];
  const ind = (s: string, n: number) => s.split("\n").map((l) => " ".repeat(n) + l).join("\n");
  const rules = drafts.map((d) => `${ind(`// ${d.calls} ${d.calls === 1 ? "call" : "calls"}`, 4)}\n${ind(compactJson({ id: d.id, src: [d.src], ...d.body }), 4)},`);
  const tests: string[] = [];
  const seen = new Set<string>();
  for (const d of drafts) {
    let n = 0;
    for (const t of d.tests) {
      const k = JSON.stringify(t);
      if (seen.has(k) || n >= maxTests) continue;
      seen.add(k);
      n++;
      tests.push(`    ${JSON.stringify({ as: t.as, request: t.request, expect: "allow" })},`);
    }
  }
  // One negative case per identity: something never observed stays denied.
  for (const src of [...new Set(drafts.map((d) => d.src))]) tests.push(`    ${JSON.stringify({ as: src, request: "GET https://unobserved.invalid/", expect: "deny" })},`);
  const version = drafts.some((d) => "dns" in d.body || "udp" in d.body) ? 2 : 1;
  return `${head.join("\n")}\n{\n  "version": ${version},\n  "rules": [\n${rules.join("\n")}\n  ],\n  "tests": [\n${tests.join("\n")}\n  ],\n}\n`;
}

/** compactJson indents objects but keeps lists of plain values on one line: `"method": ["GET", "POST"]`. */
function compactJson(v: unknown, indent = ""): string {
  if (Array.isArray(v) && v.every((x) => x === null || typeof x !== "object")) return `[${v.map((x) => JSON.stringify(x)).join(", ")}]`;
  if (v === null || typeof v !== "object") return JSON.stringify(v);
  const inner = indent + "  ";
  const items = Array.isArray(v) ? v.map((x) => inner + compactJson(x, inner)) : Object.entries(v).map(([k, x]) => `${inner}${JSON.stringify(k)}: ${compactJson(x, inner)}`);
  const [open, close] = Array.isArray(v) ? ["[", "]"] : ["{", "}"];
  return items.length ? `${open}\n${items.join(",\n")}\n${indent}${close}` : `${open}${close}`;
}

function groupBy<T>(xs: T[], key: (x: T) => string): Map<string, T[]> {
  const m = new Map<string, T[]>();
  for (const x of xs) {
    const k = key(x);
    const l = m.get(k);
    if (l) l.push(x);
    else m.set(k, [x]);
  }
  return m;
}

function slug(s: string): string {
  return s.replace(/^tag:/, "").replace(/[^A-Za-z0-9]+/g, "-").replace(/^-+|-+$/g, "").toLowerCase().slice(0, 40) || "x";
}

function escapeFlat(s: string): string {
  return s.replace(GLOB_SPECIAL, (c) => `\\${c}`);
}

function uniqueIds(drafts: Draft[]): void {
  const seen = new Map<string, number>();
  for (const d of drafts) {
    const n = seen.get(d.id) ?? 0;
    seen.set(d.id, n + 1);
    if (n > 0) d.id = `${d.id}-${n + 1}`;
  }
}
