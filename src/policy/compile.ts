/**
 * Compiling validated rules into matchers and indexes, once per policy load.
 *
 * Index: per target kind, rules are filed first by host key — an exact-host
 * hash map, a map of wildcard suffixes ("*.example.com" under "example.com",
 * looked up with each parent suffix of the request host), and a short list of
 * rules whose host needs a real check (`*`, CIDR, peer tag) — then, inside
 * each host bucket, by principal: tag, user (groups expanded), node name, or
 * `*`. A request therefore visits only the rules that name its host and its
 * identity. DNS rules are filed the same way by the names they allow (a
 * name pattern is `*`, exact or a wildcard suffix), UDP rules by host as
 * TCP rules are. MCP rules are filed by exact server name, LLM rules by the
 * literal provider of their model globs.
 *
 * Everything a decision returns is built here, once: each rule's Decision
 * objects are frozen and shared, so deciding by a rule allocates nothing.
 */

import {
  argCondition,
  bodySizeCondition,
  headerCondition,
  maxTokensCondition,
  methodCondition,
  modelCondition,
  mcpItemCondition, nameCondition,
  pathCondition,
  portCondition,
  queryCondition,
  rrtypeCondition,
  serverCondition,
  schemeCondition,
  sqlColumnsCondition,
  sqlDatabaseCondition,
  sqlObjectCondition,
  sqlOperationCondition,
  sqlRowsCondition,
  tcpFlagCondition,
  windowCondition,
  type AnyTarget,
  type Condition,
} from "./conditions.js";
import { cidrContains, type Cidr } from "./ip.js";
import { parseDnsNamePattern, parseServerPattern, type ServerPattern } from "./dns.js";
import { hasGlob } from "./glob.js";
import { parseHostPattern, type HostPattern } from "./hosts.js";
import { nodeNames, resolveSrc, type SrcSet } from "./identity.js";
import { compileWindow, type ZoneClock } from "./time.js";
import { actionsCondition, audienceCondition, ACTIONS_WHAT } from "./token-conditions.js";
import { normalizeAudience, parseAction, parseScope, type TokenAction } from "./token-actions.js";
import type { Rule, TokenMatch } from "./schema.js";
import type { Decision, DnsTarget, Effect, HttpTarget, TcpTarget, UdpTarget } from "./types.js";

export type Kind = "http" | "tcp" | "mcp" | "llm" | "dns" | "udp" | "token" | "sql";

/** The targets a rule's host patterns apply to: a DNS target's "host" is the name it looks up. */
export type HostTarget = HttpTarget | TcpTarget | UdpTarget | DnsTarget;

export interface CompileOptions {
  /** Groups from the file (tailnet and meshguard ones merged). */
  groups?: Record<string, string[]>;
}

/** A rule ready for evaluation. */
export interface CompiledRule {
  index: number;
  id: string;
  effect: Effect;
  kind: Kind;
  src: SrcSet;
  /** Host patterns (http, tcp, udp; the name patterns of dns); undefined for kinds without a host. */
  hosts?: HostPattern[];
  /** The full host check: used for the index's "other" bucket and by explain. */
  hostMatches(t: HostTarget): boolean;
  conds: Array<Condition<AnyTarget>>;
  /** Calls per minute per agent, if limited. */
  perMinute?: number;
  /** Precomputed decision reasons (no string building on the hot path). */
  reason: string;
  /** What evaluate returns when this rule decides: built once, frozen, shared by every call. */
  decision: Readonly<Decision>;
  /**
   * The deny returned when the rule would match but a condition needs a fact
   * the request lacks, by that condition's `what` (allow and approve rules
   * only: a deny rule denies with `decision` either way).
   */
  unknown: Readonly<Record<string, Readonly<Decision>>>;
}

/** Words for the facts a body-dependent condition needs (a condition can be UNKNOWN only for these). */
const NEEDS: Readonly<Record<string, string>> = {
  "when.maxBodyBytes": "the body size",
  model: "the model",
  maxTokens: "the declared max tokens",
  [ACTIONS_WHAT]: "a readable location whose containment can be decided",
  database: "the database name",
};

/** Why a fact can be missing, per condition (default: a streamed or unparsed body). */
const MISSING: Readonly<Record<string, string>> = {
  database: "the driver does not tell which database its connection is to (postgres.js): name the database \"*\" in rules for such agents, or connect them through the database gateway",
};

/** unknownDecision is the deny of a rule that needs the fact `what` (built at compile time for the conditions in NEEDS). */
export function unknownDecision(id: string, what: string): Readonly<Decision> {
  return Object.freeze({
    effect: "deny" as const,
    ruleId: id,
    reason: `rule "${id}" needs ${NEEDS[what] ?? what}, which the request does not carry (${MISSING[what] ?? "streamed or unparsed body"}), so the call is denied (fails closed)`,
  });
}

/**
 * SMALL_BUCKET: a bucket with at most this many rules is scanned with a
 * direct who-check instead of looked up through its maps; with thousands of
 * hosts, most buckets hold a rule or two, and a short scan beats three map
 * lookups (and keeps the maps of idle buckets out of the CPU cache).
 */
const SMALL_BUCKET = 8;

/** A bucket of rules for one host key, filed by principal (maps made only when the bucket outgrows SMALL_BUCKET). */
export class PrincipalBucket {
  readonly star: CompiledRule[] = [];
  byTag = NO_RULES;
  byUser = NO_RULES;
  byNode = NO_RULES;
  /** Every rule of the bucket in file order, while the bucket is small (scanned, not looked up). */
  small: CompiledRule[] | undefined = [];
  private readonly all: CompiledRule[] = [];

  add(r: CompiledRule): void {
    this.all.push(r);
    if (this.small && this.all.length <= SMALL_BUCKET) {
      this.small.push(r);
      return;
    }
    if (this.small) {
      // Outgrew the scan: build the maps from every rule so far.
      this.small = undefined;
      this.byTag = new Map();
      this.byUser = new Map();
      this.byNode = new Map();
      for (const x of this.all) this.file(x);
    } else this.file(r);
  }

  private file(r: CompiledRule): void {
    if (r.src.star) {
      this.star.push(r);
      return;
    }
    const put = (m: Map<string, CompiledRule[]>, k: string) => {
      const l = m.get(k);
      if (l) l.push(r);
      else m.set(k, [r]);
    };
    for (const t of r.src.tags) put(this.byTag, t);
    for (const u of r.src.users) put(this.byUser, u);
    for (const n of r.src.nodes) put(this.byNode, n);
  }
}

const NO_RULES: Map<string, CompiledRule[]> = new Map();

/** One wildcard suffix of an index, in a chain of suffixes with the same hash. */
export interface SuffixSlot {
  suffix: string;
  bucket: PrincipalBucket;
  next: SuffixSlot | undefined;
}

/**
 * hashStep extends the hash of a string's tail by the character before it.
 * The index files each wildcard suffix under the hash of its whole text
 * (suffixHash); the engine hashes the request host from its end and looks up
 * the hash at every dot, so it finds each parent suffix without slicing the
 * host into new strings.
 */
export function hashStep(h: number, c: number): number {
  return (Math.imul(h, 31) + c) | 0;
}

/** SUFFIX_HASH_MASK keeps a hash within the small-integer range (a Map key that needs no boxing). */
export const SUFFIX_HASH_MASK = 0x3fffffff;

/** suffixHash is the key of a suffix in KindIndex.suffixByHash. */
export function suffixHash(suffix: string): number {
  let h = 0;
  for (let i = suffix.length - 1; i >= 0; i--) h = hashStep(h, suffix.charCodeAt(i));
  return h & SUFFIX_HASH_MASK;
}

/** The index of one target kind. */
export class KindIndex {
  readonly exact = new Map<string, PrincipalBucket>();
  /** Wildcard suffixes by name ("example.com" for "*.example.com"). */
  readonly suffix = new Map<string, PrincipalBucket>();
  /** The same buckets by suffixHash: what the engine looks up. */
  readonly suffixByHash = new Map<number, SuffixSlot>();
  /** Rules that need hostMatches (http/tcp/udp/dns), or any rule without an indexable key (mcp/llm). */
  readonly other = new PrincipalBucket();
  hasSuffixes = false;

  bucket(map: Map<string, PrincipalBucket>, key: string): PrincipalBucket {
    let b = map.get(key);
    if (!b) map.set(key, (b = new PrincipalBucket()));
    return b;
  }

  suffixBucket(suffix: string): PrincipalBucket {
    let b = this.suffix.get(suffix);
    if (!b) {
      this.suffix.set(suffix, (b = new PrincipalBucket()));
      const h = suffixHash(suffix);
      this.suffixByHash.set(h, { suffix, bucket: b, next: this.suffixByHash.get(h) });
      this.hasSuffixes = true;
    }
    return b;
  }
}

export interface CompiledRules {
  rules: CompiledRule[];
  index: Record<Kind, KindIndex>;
}

/** ruleId is a rule's id, or its position when it has none: "rules[3]". */
export function ruleId(r: Rule, i: number): string {
  return r.id ?? `rules[${i}]`;
}

/** ruleKind is the target kind a (validated) rule is about. */
export function ruleKind(r: Rule): Kind {
  return r.http ? "http" : r.tcp ? "tcp" : r.mcp ? "mcp" : r.llm ? "llm" : r.dns ? "dns" : r.token ? "token" : r.sql ? "sql" : "udp";
}

/** compile turns validated rules into matchers and indexes. Rules must have passed validation (one kind each, valid hosts). */
export function compile(rules: readonly Rule[], opts: CompileOptions = {}): CompiledRules {
  const clocks = new Map<string, ZoneClock>();
  const index: Record<Kind, KindIndex> = { http: new KindIndex(), tcp: new KindIndex(), mcp: new KindIndex(), llm: new KindIndex(), dns: new KindIndex(), udp: new KindIndex(), token: new KindIndex(), sql: new KindIndex() };
  const out: CompiledRule[] = [];
  rules.forEach((r, i) => {
    const kind = ruleKind(r);
    const id = ruleId(r, i);
    const src = resolveSrc(r.src, opts.groups ?? {});
    const conds: Array<Condition<AnyTarget>> = [];
    const add = <T>(c: Condition<T> | undefined) => c && conds.push(c as unknown as Condition<AnyTarget>);
    let hosts: HostPattern[] | undefined;
    if (r.http) {
      hosts = r.http.host.map((h) => parseHostPattern(h) as HostPattern);
      if (r.http.scheme) add(schemeCondition(r.http.scheme));
      if (r.http.port) add(portCondition(r.http.port));
      if (r.http.method) add(methodCondition(r.http.method));
      if (r.http.path) add(pathCondition(r.http.path));
      if (r.http.query && Object.keys(r.http.query).length) add(queryCondition(r.http.query));
      if (r.when?.headers && Object.keys(r.when.headers).length) add(headerCondition(r.when.headers));
    } else if (r.tcp) {
      hosts = r.tcp.host.map((h) => parseHostPattern(h) as HostPattern);
      add(portCondition(r.tcp.port));
      if (r.tcp.tls !== undefined) add(tcpFlagCondition("tls", r.tcp.tls));
      if (r.tcp.tailnet !== undefined) add(tcpFlagCondition("tailnet", r.tcp.tailnet));
    } else if (r.mcp) {
      add(nameCondition("server", r.mcp.server));
      // The item kind first: a tool rule, even "tool": ["*"], never matches a resource read or a prompt get.
      const item = r.mcp.resource !== undefined ? "resource" : r.mcp.prompt !== undefined ? "prompt" : "tool";
      add(mcpItemCondition(item));
      add(nameCondition(item, r.mcp[item] ?? ["*"]));
      for (const [name, c] of Object.entries(r.mcp.args ?? {})) add(argCondition(name, c));
    } else if (r.llm) {
      add(modelCondition(r.llm.model));
      if (r.llm.maxTokens !== undefined) add(maxTokensCondition(r.llm.maxTokens));
    } else if (r.dns) {
      hosts = r.dns.name.map((n) => parseDnsNamePattern(n) as HostPattern);
      if (r.dns.rrtype) add(rrtypeCondition(r.dns.rrtype));
      // No server list means the system's resolver only: a custom server must be named.
      const servers = r.dns.server ?? ["system"];
      if (!servers.includes("*")) add(serverCondition(servers.map((x) => parseServerPattern(x) as ServerPattern), servers));
    } else if (r.udp) {
      hosts = r.udp.host.map((h) => parseHostPattern(h) as HostPattern);
      add(portCondition(r.udp.port));
    } else if (r.token) {
      add(audienceCondition(r.token.audience));
      add(actionsCondition(tokenActions(r.token), r.effect));
    } else if (r.sql) {
      add(sqlOperationCondition(r.sql.operation));
      add(sqlObjectCondition(r.sql.table));
      add(sqlDatabaseCondition(r.sql.database));
      if (r.sql.columns) add(sqlColumnsCondition(r.sql.columns));
    }
    if (r.when && (r.when.hours !== undefined || r.when.weekdays !== undefined)) {
      const w = compileWindow(r.when.hours, r.when.weekdays, r.when.timeZone ?? "UTC", clocks);
      add(windowCondition(w));
    }
    // Body-dependent conditions go last: a rule is UNKNOWN only if all else matches.
    if (r.http && r.when?.maxBodyBytes !== undefined) add(bodySizeCondition(r.when.maxBodyBytes));
    // The row filter goes very last: the engine names the rule when only it failed (engine.ts, rowsOnly).
    if (r.sql?.rows !== undefined) add(sqlRowsCondition(r.sql.rows));
    const hostMatches = hosts ? hostMatcher(hosts) : () => true;
    const verb = r.effect === "allow" ? "allowed by" : r.effect === "deny" ? "denied by" : "needs approval: matched";
    const reason = `${verb} rule "${id}"${r.description ? ` (${r.description})` : ""}`;
    const unknown: Record<string, Readonly<Decision>> = {};
    if (r.effect !== "deny") for (const c of conds) if (Object.hasOwn(NEEDS, c.what)) unknown[c.what] = unknownDecision(id, c.what);
    const decision = Object.freeze({ effect: r.effect, ruleId: id, reason });
    const cr: CompiledRule = { index: i, id, effect: r.effect, kind, src, conds, hostMatches, reason, decision, unknown: Object.freeze(unknown) };
    if (hosts) cr.hosts = hosts;
    if (r.when?.rate) cr.perMinute = r.when.rate.perMinute;
    out.push(cr);
    file(index[kind], cr, r);
  });
  return { rules: out, index };
}

/** file places a rule in its kind's index under every host key it has. */
function file(idx: KindIndex, r: CompiledRule, rule: Rule): void {
  if (r.hosts) {
    let other = false;
    for (const h of r.hosts) {
      if (h.kind === "exact") idx.bucket(idx.exact, h.host).add(r);
      else if (h.kind === "suffix") idx.suffixBucket(h.suffix).add(r);
      else other = true;
    }
    if (other) idx.other.add(r);
    return;
  }
  if (rule.token && !rule.token.audience.some((a) => a.includes("*"))) {
    // Filed by audience, as the engine looks a token request up (normalized: "http://Billing/" is "http://billing").
    for (const a of new Set(rule.token.audience.map(canonicalAudience))) idx.bucket(idx.exact, a).add(r);
    return;
  }
  if (rule.mcp && !rule.mcp.server.some(hasGlob)) {
    for (const s of new Set(rule.mcp.server)) idx.bucket(idx.exact, s).add(r);
    return;
  }
  if (rule.llm) {
    const providers = rule.llm.model.map((m) => {
      const slash = m.indexOf("/");
      const p = slash > 0 ? m.slice(0, slash) : undefined;
      return p !== undefined && !hasGlob(p) ? p : undefined;
    });
    if (providers.every((p) => p !== undefined)) {
      for (const p of new Set(providers as string[])) idx.bucket(idx.exact, p).add(r);
      return;
    }
  }
  idx.other.add(r);
}

/** canonicalAudience is an audience as requests carry it (a pattern that is not an audience stays as written). */
function canonicalAudience(a: string): string {
  const n = normalizeAudience(a);
  return typeof n === "string" ? n : a;
}

/**
 * tokenActions parses a validated token rule's actions (objects and scope
 * strings alike). Validation (./semantics.ts) has already reported every
 * entry that does not parse; one that slips through is dropped, which can
 * only grant less.
 */
export function tokenActions(m: TokenMatch): TokenAction[] {
  const out: TokenAction[] = [];
  for (const a of m.actions) {
    const p = typeof a === "string" ? parseScope(a) : parseAction(a.methods, a.locations);
    if (typeof p !== "string") out.push(p);
  }
  return out;
}

/**
 * NameMemo remembers the node names (nodeNames) of the last name it was
 * asked about: a process mostly decides for one principal and calls few
 * peers, so the common call allocates nothing.
 */
export class NameMemo {
  private raw: string | undefined;
  private names: readonly string[] = [];

  of(name: string): readonly string[] {
    if (name !== this.raw) {
      const names = Object.freeze(nodeNames(name)); // may throw on a malformed name: nothing is remembered then
      this.names = names;
      this.raw = name;
    }
    return this.names;
  }
}

/** The peer-name memo shared by every host check and the engine's index lookup (evaluation is synchronous). */
export const peerNames = new NameMemo();

/**
 * mayBeIp is false for a host that cannot be an IP literal (a character
 * other than hex digits and "."; no ":"), so host names skip the address
 * check, which allocates.
 */
function mayBeIp(s: string): boolean {
  if (s.includes(":")) return true;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i) | 0x20; // ASCII lower case
    if (!((c >= 48 && c <= 57) || c === 46 /* . */ || (c >= 97 && c <= 102) /* a-f */)) return false;
  }
  return true;
}

/** inAny: is the IP literal `ip` in one of the ranges (false for a name). */
function inAny(cidrs: readonly Cidr[], ip: string): boolean {
  if (!mayBeIp(ip)) return false;
  for (let i = 0; i < cidrs.length; i++) if (cidrContains(cidrs[i]!, ip)) return true;
  return false;
}

/** hostMatcher is the full host check of a rule: exact, suffix, CIDR (host literal or resolved address), peer tag. */
function hostMatcher(hosts: HostPattern[]): (t: HostTarget) => boolean {
  const exact = new Set<string>();
  const suffixes: string[] = [];
  const cidrs: Cidr[] = [];
  const tags: string[] = [];
  for (const h of hosts) {
    if (h.kind === "any") return () => true;
    if (h.kind === "exact") exact.add(h.host);
    else if (h.kind === "suffix") suffixes.push(`.${h.suffix}`);
    else if (h.kind === "cidr") cidrs.push(h.cidr);
    else tags.push(h.tag);
  }
  // Node's matcher (BlockList) allocates per check: remember the last address
  // this rule was asked about (a process mostly calls the same few hosts).
  let lastIp: string | undefined;
  let lastIn = false;
  const inRanges = (ip: string): boolean => {
    if (ip !== lastIp) {
      lastIn = inAny(cidrs, ip);
      lastIp = ip;
    }
    return lastIn;
  };
  return (t) => {
    if (t.kind === "dns") return nameMatches(exact, suffixes, t.name);
    const host = t.host;
    if (exact.has(host)) return true;
    const pn = t.peer?.name;
    if (pn && exact.size) {
      // A peer answers to its full name and its first label.
      const names = peerNames.of(pn);
      for (let i = 0; i < names.length; i++) if (exact.has(names[i]!)) return true;
    }
    for (let i = 0; i < suffixes.length; i++) if (host.endsWith(suffixes[i]!)) return true;
    if (cidrs.length) {
      // The host when it is a literal, and the address it resolved to when the guard knows it.
      if (inRanges(host)) return true;
      const r = t.resolvedIp;
      if (r !== undefined && inRanges(r)) return true;
    }
    const peerTags = t.peer?.tags;
    if (tags.length && peerTags) for (let i = 0; i < tags.length; i++) if (peerTags.includes(tags[i]!)) return true;
    return false;
  };
}

/** nameMatches is the host check of a DNS name (its patterns are only exact names and suffixes; `*` returned earlier). */
function nameMatches(exact: ReadonlySet<string>, suffixes: readonly string[], name: string): boolean {
  if (exact.has(name)) return true;
  for (let i = 0; i < suffixes.length; i++) if (name.endsWith(suffixes[i]!)) return true;
  return false;
}
