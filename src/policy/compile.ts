/**
 * Compiling validated rules into matchers and indexes, once per policy load.
 *
 * Index: per target kind, rules are filed first by host key — an exact-host
 * hash map, a map of wildcard suffixes ("*.example.com" under "example.com",
 * looked up with each parent suffix of the request host), and a short list of
 * rules whose host needs a real check (`*`, CIDR, peer tag) — then, inside
 * each host bucket, by principal: tag, user (groups expanded), node name, or
 * `*`. A request therefore visits only the rules that name its host and its
 * identity. MCP rules are filed by exact server name, LLM rules by the
 * literal provider of their model globs.
 */

import {
  argCondition,
  bodySizeCondition,
  headerCondition,
  maxTokensCondition,
  methodCondition,
  modelCondition,
  nameCondition,
  pathCondition,
  portCondition,
  queryCondition,
  schemeCondition,
  tcpFlagCondition,
  windowCondition,
  type AnyTarget,
  type Condition,
} from "./conditions.js";
import { cidrContains, parseCidr, type Cidr } from "./ip.js";
import { hasGlob, type Matcher } from "./glob.js";
import { parseHostPattern, type HostPattern } from "./hosts.js";
import { resolveSrc, type SrcSet } from "./identity.js";
import { compileWindow, inWindow, type TimeWindow, type ZoneClock } from "./time.js";
import type { Rule } from "./schema.js";
import type { Effect, HttpTarget, TcpTarget } from "./types.js";

export type Kind = "http" | "tcp" | "mcp" | "llm";

/**
 * Mutation deliberately breaks the compiled evaluator in one place. It exists
 * only so the property test can prove it notices a wrong evaluator; nothing
 * outside the tests may set it.
 */
export type Mutation = "suffix-matches-apex" | "window-end-inclusive" | "allow-beats-deny" | "cidr-prefix-short" | "path-prefix-only";

export interface CompileOptions {
  /** Groups from the file (tailnet and meshguard ones merged). */
  groups?: Record<string, string[]>;
  /** Test-only: see Mutation. */
  mutation?: Mutation;
}

/** A rule ready for evaluation. */
export interface CompiledRule {
  index: number;
  id: string;
  effect: Effect;
  kind: Kind;
  src: SrcSet;
  /** Host patterns (http, tcp); undefined for kinds without a host. */
  hosts?: HostPattern[];
  /** The full host check: used for the index's "other" bucket and by explain. */
  hostMatches(t: HttpTarget | TcpTarget): boolean;
  conds: Array<Condition<AnyTarget>>;
  /** Calls per minute per agent, if limited. */
  perMinute?: number;
  /** Precomputed decision reasons (no string building on the hot path). */
  reason: string;
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

/** The index of one target kind. */
export class KindIndex {
  readonly exact = new Map<string, PrincipalBucket>();
  readonly suffix = new Map<string, PrincipalBucket>();
  /** Rules that need hostMatches (http/tcp), or any rule without an indexable key (mcp/llm). */
  readonly other = new PrincipalBucket();
  hasSuffixes = false;

  bucket(map: Map<string, PrincipalBucket>, key: string): PrincipalBucket {
    let b = map.get(key);
    if (!b) map.set(key, (b = new PrincipalBucket()));
    return b;
  }
}

export interface CompiledRules {
  rules: CompiledRule[];
  index: Record<Kind, KindIndex>;
  mutation?: Mutation;
}

/** ruleId is a rule's id, or its position when it has none: "rules[3]". */
export function ruleId(r: Rule, i: number): string {
  return r.id ?? `rules[${i}]`;
}

/** ruleKind is the target kind a (validated) rule is about. */
export function ruleKind(r: Rule): Kind {
  return r.http ? "http" : r.tcp ? "tcp" : r.mcp ? "mcp" : "llm";
}

/** compile turns validated rules into matchers and indexes. Rules must have passed validation (one kind each, valid hosts). */
export function compile(rules: readonly Rule[], opts: CompileOptions = {}): CompiledRules {
  const clocks = new Map<string, ZoneClock>();
  const index: Record<Kind, KindIndex> = { http: new KindIndex(), tcp: new KindIndex(), mcp: new KindIndex(), llm: new KindIndex() };
  const out: CompiledRule[] = [];
  const mut = opts.mutation;
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
      if (r.http.path) add(pathCondition(r.http.path, mut === "path-prefix-only" ? pathPrefixMutation : undefined));
      if (r.http.query && Object.keys(r.http.query).length) add(queryCondition(r.http.query));
      if (r.when?.headers && Object.keys(r.when.headers).length) add(headerCondition(r.when.headers));
    } else if (r.tcp) {
      hosts = r.tcp.host.map((h) => parseHostPattern(h) as HostPattern);
      add(portCondition(r.tcp.port));
      if (r.tcp.tls !== undefined) add(tcpFlagCondition("tls", r.tcp.tls));
      if (r.tcp.tailnet !== undefined) add(tcpFlagCondition("tailnet", r.tcp.tailnet));
    } else if (r.mcp) {
      add(nameCondition("server", r.mcp.server));
      add(nameCondition("tool", r.mcp.tool));
      for (const [name, c] of Object.entries(r.mcp.args ?? {})) add(argCondition(name, c));
    } else if (r.llm) {
      add(modelCondition(r.llm.model));
      if (r.llm.maxTokens !== undefined) add(maxTokensCondition(r.llm.maxTokens));
    }
    if (r.when && (r.when.hours !== undefined || r.when.weekdays !== undefined)) {
      const w = compileWindow(r.when.hours, r.when.weekdays, r.when.timeZone ?? "UTC", clocks);
      add(windowCondition(w, mut === "window-end-inclusive" ? inclusiveEndMutation : undefined));
    }
    // Body-dependent conditions go last: a rule is UNKNOWN only if all else matches.
    if (r.http && r.when?.maxBodyBytes !== undefined) add(bodySizeCondition(r.when.maxBodyBytes));
    const hostMatches = hosts ? hostMatcher(hosts, mut) : () => true;
    const verb = r.effect === "allow" ? "allowed by" : r.effect === "deny" ? "denied by" : "needs approval: matched";
    const cr: CompiledRule = { index: i, id, effect: r.effect, kind, src, conds, hostMatches, reason: `${verb} rule "${id}"${r.description ? ` (${r.description})` : ""}` };
    if (hosts) cr.hosts = hosts;
    if (r.when?.rate) cr.perMinute = r.when.rate.perMinute;
    out.push(cr);
    file(index[kind], cr, r);
  });
  const res: CompiledRules = { rules: out, index };
  if (mut) res.mutation = mut;
  return res;
}

/** file places a rule in its kind's index under every host key it has. */
function file(idx: KindIndex, r: CompiledRule, rule: Rule): void {
  if (r.hosts) {
    let other = false;
    for (const h of r.hosts) {
      if (h.kind === "exact") idx.bucket(idx.exact, h.host).add(r);
      else if (h.kind === "suffix") {
        idx.bucket(idx.suffix, h.suffix).add(r);
        idx.hasSuffixes = true;
      } else other = true;
    }
    if (other) idx.other.add(r);
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

/** hostMatcher is the full host check of a rule: exact, suffix, CIDR (host literal or resolved address), peer tag. */
function hostMatcher(hosts: HostPattern[], mut?: Mutation): (t: HttpTarget | TcpTarget) => boolean {
  const exact = new Set<string>();
  const suffixes: string[] = [];
  const cidrs: Cidr[] = [];
  const tags: string[] = [];
  for (const h of hosts) {
    if (h.kind === "any") return () => true;
    if (h.kind === "exact") exact.add(h.host);
    else if (h.kind === "suffix") suffixes.push(`.${h.suffix}`);
    else if (h.kind === "cidr") cidrs.push(mut === "cidr-prefix-short" ? (parseCidr(`${h.cidr.address}/${Math.max(0, h.cidr.prefix - 1)}`) ?? h.cidr) : h.cidr);
    else tags.push(h.tag);
  }
  const peerName = (t: HttpTarget | TcpTarget) => t.peer?.name?.toLowerCase().replace(/\.$/, "");
  return (t) => {
    const host = t.host;
    if (exact.has(host)) return true;
    const pn = peerName(t);
    if (pn !== undefined && (exact.has(pn) || exact.has(pn.split(".")[0]!))) return true;
    for (const s of suffixes) if (host.endsWith(s) || (mut === "suffix-matches-apex" && host === s.slice(1))) return true;
    if (cidrs.length) {
      // The host when it is a literal, and the address it resolved to when the guard knows it.
      const r = t.resolvedIp;
      for (const c of cidrs) if (cidrContains(c, host) || (r !== undefined && cidrContains(c, r))) return true;
    }
    if (tags.length && t.peer?.tags) for (const tag of tags) if (t.peer.tags.includes(tag)) return true;
    return false;
  };
}

// --- test-only mutations (see Mutation) ---

function inclusiveEndMutation(w: TimeWindow, ms: number): boolean {
  if (inWindow(w, ms)) return true;
  return inWindow(w, ms - 60_000); // also accepts the end minute
}

function pathPrefixMutation(m: Matcher, pattern: string): Matcher {
  const lit = pattern.replace(/[*?[{].*$/, "");
  return (s) => m(s) || (lit.length > 1 && s.startsWith(lit));
}
