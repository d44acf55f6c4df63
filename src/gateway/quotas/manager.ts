/**
 * The quota manager: reserve the most a request can cost before it goes
 * upstream, settle the real cost after. Every change is one
 * `store.bucketTx` over all the bucket instances a caller's chains touch, so
 * concurrent requests see each other's holds and cannot overspend; holds are
 * stored as reservations, so a crash between reserve and settle loses no
 * spending (`recover`).
 *
 * A chain is a list of buckets following `overdraft`: a request takes what
 * it can from the first and the rest from the next. Every chain of a caller
 * must cover the request (a daily and a monthly budget both apply).
 */

import { randomUUID } from "node:crypto";

import { producesOutput } from "../facts.js";
import { costOf, maxOutputTokensOf } from "../prices.js";
import type { BucketState, Caller, CallFacts, GatewayStore, ModelPrice, QuotaManager, QuotaVerdict, Reservation, ReserveOptions, Usage } from "../types.js";
import { refillPerMs, type BucketConfig, type QuotasConfig } from "./config.js";
import { instanceKeys, parseKey } from "./keys.js";
import { EPSILON, levelAt, waitMs, type Rate } from "./level.js";

export interface QuotaManagerOptions {
  /** Clock in epoch ms (tests). */
  now?: () => number;
  /** Output tokens to reserve when neither the request nor the model table says (default 4096). */
  defaultMaxOutputTokens?: number;
  /**
   * Told the levels of the buckets a settle left, and of the chain that
   * refused a request (`refused`): what bucket alerts watch. Called after the
   * transaction, never inside it; a throwing listener is ignored.
   */
  onLevels?: (levels: LevelReport[]) => void;
}

/** A bucket instance's level after a quota transaction. */
export interface LevelReport {
  key: string;
  bucket: string;
  unit: BucketConfig["unit"];
  level: number;
  capacity: number;
  refused?: boolean;
}

/** A bucket instance as the API shows it. */
export interface BucketView {
  key: string;
  bucket: string;
  unit: BucketConfig["unit"];
  capacity: number;
  refill: string;
  /** What is left to spend now (refilled up to now; negative after a request cost more than it reserved). */
  level: number;
  /** Held by requests in flight (included in the spending that `level` already shows). */
  reserved: number;
  /** Seconds until full at the refill rate; null when it never refills by itself. */
  fullInS: number | null;
}

export interface QuotaManagerHandle extends QuotaManager {
  /** The state of one instance key, or undefined when the key names no configured bucket. */
  state(key: string): Promise<BucketView | undefined>;
  /** Adds `amount` (default: up to capacity) to an instance; never above capacity. Undefined for an unknown key. */
  refill(key: string, amount?: number): Promise<BucketView | undefined>;
  /** Every instance the store knows (and those used since start), sorted by key. */
  list(): Promise<BucketView[]>;
  /** The instance keys `caller`'s chains touch (a user's "own" buckets), and those of `extra` chains (the upstreams' own buckets) for this caller. */
  keysOf(caller: Caller, extra?: ReserveOptions["chains"]): string[];
  /**
   * Settles the reservations of requests that died with a previous process,
   * charging each in full, and returns how many. Full, because the upstream
   * may have answered (and billed) before the process died and nothing
   * recorded how much: charging the reservation — the most the request could
   * cost — never under-counts spending. Call it at start, before serving;
   * with several gateway instances on one store it takes only the
   * reservations of instances that are gone (the store's
   * recoverableReservations), so it may also be called again while serving,
   * to settle those of an instance that died since.
   */
  recover(): Promise<number>;
}

interface Link {
  key: string;
  bucket: string;
  cfg: BucketConfig;
  rate: Rate;
}

/** A chain with its instance keys resolved; `chain` numbers it in the reservation. */
type KeyChain = Link[];

const DEFAULT_MAX_OUTPUT = 4096;

/**
 * Reservations made in this process on a store and not yet settled, shared by
 * every manager of that store (a manager re-created on a config reload settles
 * the requests of the one before). Settling anything else is a no-op, so a
 * reservation is refunded at most once: one a restart already recovered, or
 * one settled twice.
 */
const openByStore = new WeakMap<GatewayStore, Set<string>>();
function openReservations(store: GatewayStore): Set<string> {
  let s = openByStore.get(store);
  if (!s) openByStore.set(store, (s = new Set()));
  return s;
}

/** createQuotaManager binds bucket configs to a store; `chainsOf` says which chains (heads, or heads with links) apply to a caller. */
export function createQuotaManager(
  store: GatewayStore,
  buckets: QuotasConfig,
  chainsOf: (caller: Caller) => string[][],
  opts: QuotaManagerOptions = {},
): QuotaManagerHandle {
  const now = opts.now ?? Date.now;
  const rates = new Map<string, Rate>();
  for (const [name, b] of Object.entries(buckets)) rates.set(name, { capacity: b.capacity, perMs: refillPerMs(b.refill) ?? 0 });
  const open = openReservations(store);
  /** Keys used since start, for list() when the store cannot enumerate buckets. */
  const seen = new Set<string>();

  const bucketOf = (name: string): BucketConfig | undefined => (Object.hasOwn(buckets, name) ? buckets[name] : undefined);

  /** The bucket names of a chain: as given, then following overdraft from the last (a loop was rejected by the config). */
  function names(chain: readonly string[]): string[] {
    const out = [...chain];
    for (let next = bucketOf(out[out.length - 1] ?? "")?.overdraft; next !== undefined && !out.includes(next); next = bucketOf(next)?.overdraft) out.push(next);
    return out;
  }

  /** Resolves a caller's chains into key chains (a per-tag or per-group bucket gives one chain per tag or group), or a refusal. */
  function resolve(caller: Caller, extra?: ReserveOptions["chains"]): KeyChain[] | { bucket: string; reason: string } {
    // A chain named by the caller's grants and by the upstream too is one chain, charged once.
    return resolveList(caller, extra === undefined || extra.length === 0 ? chainsOf(caller) : [...new Map([...chainsOf(caller), ...extra].map((c) => [JSON.stringify(c), [...c]])).values()]);
  }

  function resolveList(caller: Caller, all: readonly (readonly string[])[]): KeyChain[] | { bucket: string; reason: string } {
    const out: KeyChain[] = [];
    for (const chain of all) {
      if (!chain.length) continue;
      let variants: KeyChain[] = [[]];
      for (const name of names(chain)) {
        const cfg = bucketOf(name);
        if (!cfg) return { bucket: name, reason: `quota bucket "${name}" is not configured (it is named by the policy or the caller's capability): define it under "quotas" in the gateway config` };
        const keys = instanceKeys(name, cfg, caller);
        if (!keys.length) return { bucket: name, reason: `quota bucket "${name}" has one instance per ${cfg.per}, and this caller has no ${cfg.per}${cfg.per === "user" ? " (no accountable user: tag owners or a user-owned node)" : ""}` };
        variants = variants.flatMap((v) => keys.map((key) => [...v, { key, bucket: name, cfg, rate: rates.get(name)! }]));
      }
      out.push(...variants);
    }
    return out;
  }

  async function reserve(caller: Caller, facts: CallFacts, estimate: { inputTokens: number; maxOutputTokens: number }, price: ModelPrice | undefined, ro?: ReserveOptions): Promise<QuotaVerdict> {
    const chains = resolve(caller, ro?.chains);
    if (!Array.isArray(chains)) return { ok: false, bucket: chains.bucket, retryAfterS: 0, reason: chains.reason, permanent: true };
    if (!chains.length) return { ok: true, reservation: undefined };
    // An MCP call (a tool, a resource, a prompt) or a connector call costs no tokens and no dollars: only "calls" buckets count it.
    const tool = facts.operation.startsWith("mcp.") || facts.operation === "connector.call";
    // An embedding or a token count produces no output: its max tokens bound its input, not an answer.
    const maxOut = tool || !producesOutput(facts.operation)
      ? 0
      : (facts.maxTokens ?? (estimate.maxOutputTokens > 0 ? estimate.maxOutputTokens : undefined) ?? maxOutputTokensOf(facts.provider, facts.model) ?? opts.defaultMaxOutputTokens ?? DEFAULT_MAX_OUTPUT);
    const input = tool ? 0 : Math.max(0, estimate.inputTokens);
    const need = { tokens: input + maxOut, usd: tool ? 0 : price ? costOf({ inputTokens: input, outputTokens: maxOut }, price) : undefined };
    if (need.usd === undefined) {
      const usd = chains.flat().find((l) => l.cfg.unit === "usd");
      if (usd) {
        return {
          ok: false,
          bucket: usd.key,
          retryAfterS: 0,
          permanent: true,
          reason: `no price is known for ${facts.provider}/${facts.model}, so the dollar bucket "${usd.bucket}" cannot be charged: add a price for this model to the provider in the gateway config`,
        };
      }
    }
    const keys = [...new Set(chains.flat().map((l) => l.key))];
    const id = randomUUID();
    const t = now();
    let refusedLevels: LevelReport[] | undefined;
    const verdict = await store.bucketTx<QuotaVerdict>(keys, (states) => {
      refusedLevels = undefined;
      const levels = new Map<string, number>();
      const rateOf = new Map<string, Rate>();
      for (const c of chains) for (const l of c) if (!levels.has(l.key)) (levels.set(l.key, levelAt(states.get(l.key), l.rate, t)), rateOf.set(l.key, l.rate));
      const holds: Reservation["holds"] = [];
      for (const [ci, chain] of chains.entries()) {
        const unit = chain[0]!.cfg.unit;
        const amount = unit === "usd" ? need.usd! : unit === "calls" ? 1 : need.tokens;
        const avail = chain.reduce((s, l) => s + Math.max(0, levels.get(l.key)!), 0);
        if (avail + EPSILON < amount) {
          // A request larger than the chain can ever hold says nothing about how spent the bucket is.
          const fits = chain.reduce((sum, l) => sum + l.rate.capacity, 0) + EPSILON >= amount;
          if (opts.onLevels && fits) refusedLevels = chain.map((l) => ({ key: l.key, bucket: l.bucket, unit: l.cfg.unit, level: levels.get(l.key)!, capacity: l.rate.capacity, refused: true }));
          return { states: [], result: refusal(chain, levels, amount, facts) };
        }
        let rest = amount;
        for (const l of chain) {
          const take = Math.min(rest, Math.max(0, levels.get(l.key)!));
          holds.push({ key: l.key, amount: take, chain: ci });
          levels.set(l.key, levels.get(l.key)! - take);
          rest -= take;
          if (rest <= EPSILON) break;
        }
      }
      const reservation: Reservation = { id, holds, time: t };
      return { states: [...levels].map(([key, level]) => ({ key, level, updatedAt: t })), add: reservation, result: { ok: true, reservation } };
    });
    for (const k of keys) seen.add(k);
    if (verdict.ok && verdict.reservation) open.add(verdict.reservation.id);
    if (refusedLevels) report(refusedLevels);
    return verdict;
  }

  function refusal(chain: KeyChain, levels: Map<string, number>, amount: number, facts: CallFacts): QuotaVerdict {
    const unit = chain[0]!.cfg.unit;
    const show = (n: number) => (unit === "usd" ? `$${n.toFixed(4)}` : unit === "calls" ? `${Math.ceil(n)} call${Math.ceil(n) === 1 ? "" : "s"}` : `${Math.ceil(n)} tokens`);
    const head = chain[0]!;
    const names = chain.map((l) => `"${l.key}"`).join(" → ");
    const ms = waitMs(
      chain.map((l) => levels.get(l.key)!),
      chain.map((l) => l.rate),
      amount,
    );
    const capacity = chain.reduce((s, l) => s + l.rate.capacity, 0);
    if (ms === undefined) {
      const why =
        capacity + EPSILON < amount
          ? `this request can cost up to ${show(amount)}, more than ${names} can ever hold (${show(capacity)}): lower max tokens${facts.maxTokens === undefined ? " (the request sets none, so the model's maximum output is reserved)" : ""}`
          : `${names} ${chain.length > 1 ? "are" : "is"} exhausted and do${chain.length > 1 ? "" : "es"} not refill by itself: an admin can refill it`;
      return { ok: false, bucket: head.key, retryAfterS: 0, reason: why, permanent: true };
    }
    const retryAfterS = Math.max(1, Math.ceil(ms / 1000 - 1e-9)); // float noise must not add a second
    return { ok: false, bucket: head.key, retryAfterS, reason: `quota ${names} cannot cover this request (up to ${show(amount)}); it refills enough in ${retryAfterS} s` };
  }

  async function settle(reservation: Reservation, usage: Usage, costUsd: number | undefined, so?: { sent?: boolean }): Promise<void> {
    const sent = so?.sent !== false;
    if (!open.delete(reservation.id)) return;
    const keys = [...new Set(reservation.holds.map((h) => h.key))];
    const tokens = usage.inputTokens + usage.outputTokens + (usage.cacheReadTokens ?? 0) + (usage.cacheWriteTokens ?? 0);
    const t = now();
    let after: Map<string, number> | undefined;
    await store.bucketTx(keys, (states) => {
      const levels = new Map<string, number>();
      after = levels;
      const rateOf = (key: string) => {
        const name = parseKey(key)?.bucket;
        return (name !== undefined && rates.get(name)) || undefined;
      };
      const chains = new Map<number, Reservation["holds"]>();
      for (const h of reservation.holds) {
        const c = chains.get(h.chain ?? 0) ?? [];
        c.push(h);
        chains.set(h.chain ?? 0, c);
      }
      for (const holds of chains.values()) {
        const held = holds.reduce((s, h) => s + h.amount, 0);
        const cfg = bucketOf(parseKey(holds[0]!.key)?.bucket ?? "");
        // A bucket gone from the config (changed since the reservation) keeps the full hold: nothing to refund to.
        // A call is a call whatever it cost: the one held is spent — unless it never reached the upstream.
        const real = !cfg ? held : cfg.unit === "calls" ? (sent ? held : 0) : cfg.unit === "usd" ? (costUsd ?? held) : tokens;
        let rest = real;
        holds.forEach((h, i) => {
          const rate = rateOf(h.key);
          if (!rate) return;
          const charge = i === holds.length - 1 ? rest : Math.min(rest, h.amount);
          rest -= charge;
          const level = levels.get(h.key) ?? levelAt(states.get(h.key), rate, t);
          // Refund what was held beyond the charge; a charge beyond the hold (the estimate was low) is spent too.
          levels.set(h.key, Math.min(rate.capacity, level + h.amount - charge));
        });
      }
      return { states: [...levels].map(([key, level]) => ({ key, level, updatedAt: t })), remove: reservation.id, result: undefined };
    });
    if (opts.onLevels && after) {
      const out: LevelReport[] = [];
      for (const [key, level] of after) {
        const name = parseKey(key)?.bucket;
        const cfg = name === undefined ? undefined : bucketOf(name);
        if (cfg) out.push({ key, bucket: name!, unit: cfg.unit, level, capacity: cfg.capacity });
      }
      report(out);
    }
  }

  function report(levels: LevelReport[]): void {
    try {
      if (levels.length > 0) opts.onLevels?.(levels);
    } catch {
      // Alerts are a listener's business: a failing one must not fail a quota transaction.
    }
  }

  function view(key: string, state: BucketState | undefined, reserved: number, t: number): BucketView | undefined {
    const k = parseKey(key);
    const cfg = k && bucketOf(k.bucket);
    if (!k || !cfg || cfg.per !== k.per) return undefined;
    const rate = rates.get(k.bucket)!;
    const level = levelAt(state, rate, t);
    const fullInS = level >= rate.capacity ? 0 : rate.perMs > 0 ? Math.ceil((rate.capacity - level) / rate.perMs / 1000) : null;
    return { key, bucket: k.bucket, unit: cfg.unit, capacity: cfg.capacity, refill: cfg.refill, level, reserved, fullInS };
  }

  async function reservedByKey(): Promise<Map<string, number>> {
    const m = new Map<string, number>();
    for (const r of await store.reservations()) for (const h of r.holds) m.set(h.key, (m.get(h.key) ?? 0) + h.amount);
    return m;
  }

  async function state(key: string): Promise<BucketView | undefined> {
    if (!view(key, undefined, 0, 0)) return undefined;
    const t = now();
    const st = await store.bucketTx([key], (states) => ({ states: [], result: states.get(key) }));
    return view(key, st, (await reservedByKey()).get(key) ?? 0, t);
  }

  async function refill(key: string, amount?: number): Promise<BucketView | undefined> {
    const k = parseKey(key);
    const cfg = k && bucketOf(k.bucket);
    if (!k || !cfg || cfg.per !== k.per) return undefined;
    const rate = rates.get(k.bucket)!;
    const t = now();
    await store.bucketTx([key], (states) => {
      const level = levelAt(states.get(key), rate, t);
      return { states: [{ key, level: amount === undefined ? rate.capacity : Math.min(rate.capacity, level + amount), updatedAt: t }], result: undefined };
    });
    seen.add(key);
    return state(key);
  }

  async function list(): Promise<BucketView[]> {
    const t = now();
    const reserved = await reservedByKey();
    const stored = store.listBuckets ? await store.listBuckets() : [];
    const byKey = new Map<string, BucketState | undefined>(stored.map((s) => [s.key, s]));
    for (const k of [...seen, ...reserved.keys()]) if (!byKey.has(k)) byKey.set(k, undefined);
    const missing = [...byKey].filter(([, s]) => s === undefined).map(([k]) => k);
    if (missing.length) {
      const got = await store.bucketTx(missing, (states) => ({ states: [], result: states }));
      for (const k of missing) byKey.set(k, got.get(k));
    }
    return [...byKey]
      .map(([k, s]) => view(k, s, reserved.get(k) ?? 0, t))
      .filter((v): v is BucketView => v !== undefined)
      .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  function keysOf(caller: Caller, extra?: ReserveOptions["chains"]): string[] {
    // Each extra chain on its own: one this caller has no instance of (a per-user bucket, a tagged caller) hides no other.
    const out = new Set<string>();
    for (const r of [resolve(caller), ...(extra ?? []).map((c) => resolveList(caller, [c]))]) if (Array.isArray(r)) for (const l of r.flat()) out.add(l.key);
    return [...out];
  }

  async function recover(): Promise<number> {
    let n = 0;
    // A shared store names only the reservations of instances that are gone; this process's own are never taken.
    const gone = store.recoverableReservations ? await store.recoverableReservations() : await store.reservations();
    for (const r of gone) {
      if (open.has(r.id)) continue;
      // The holds already left the buckets at reserve: settling in full only forgets the reservation.
      await store.bucketTx(
        r.holds.map((h) => h.key),
        () => ({ states: [], remove: r.id, result: undefined }),
      );
      n++;
    }
    return n;
  }

  return { reserve, settle, state, refill, list, keysOf, recover };
}
