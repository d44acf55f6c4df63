/**
 * Opening the gateway's parts from its config: the store (SQLite), the
 * quota manager over it (reservations left by a previous process settled
 * first), the hook runner, sessions, prices and access. A part a caller
 * injects (GatewayOptions.parts) is used instead of the configured one.
 *
 * Every part that holds a resource registers its close on `cleanup`, which
 * startGateway runs in reverse order: hooks deliver their queued usage
 * events, then the store flushes and closes.
 */

import { ErrorCode, MeshguardError } from "../errors.js";
import type { Policy } from "../policy/load.js";
import { bucketRoutes } from "./buckets-api.js";
import { policyAccess } from "./caller.js";
import type { GatewayConfig } from "./config.js";
import { createHookRunner, type HookFailedError } from "./hooks.js";
import { logRoutes } from "./logs-api.js";
import { usageRoutes } from "./usage-api.js";
import { maxOutputTokensOf, priceOf } from "./prices.js";
import { createQuotaManager, type LevelReport } from "./quotas/manager.js";
import { SessionTracker, SharedSessions } from "./sessions.js";
import type { GatewayParts } from "./start.js";
import { openStore, parseDuration, toRetention } from "./store/index.js";
import type { Caller, Retention } from "./types.js";

export async function openParts(
  cfg: GatewayConfig,
  injected: Partial<GatewayParts>,
  secrets: readonly string[],
  policy: { current: Policy | undefined },
  chains: WeakMap<Caller, string[][]>,
  warn: (err: unknown) => void,
  cleanup: Array<() => Promise<unknown>>,
  obs?: PartsObserver,
  /** Where storage.urlEnv is read: the gateway's `env` option, as for the provider keys. */
  env?: NodeJS.ProcessEnv,
): Promise<GatewayParts> {
  const retention: Retention = injected.retention ?? toRetention(cfg.retention ?? { mode: "full" });
  const quotas = cfg.quotas ?? {};
  checkBuckets(policy.current, quotas);

  // The store keeps logs and quota buckets; with nothing to keep it is not opened.
  const needStore = retention.mode !== "none" || Object.keys(quotas).length > 0 || (policy.current?.gateway?.buckets.length ?? 0) > 0;
  let store = injected.store;
  if (store === undefined && needStore) {
    const pruneEvery = cfg.retention?.pruneEvery;
    store = await openStore(cfg.storage ?? {}, {
      dataDir: cfg.dataDir,
      retention,
      secrets,
      onError: warn,
      ...(env !== undefined ? { env } : {}),
      ...(pruneEvery !== undefined ? { pruneEveryMs: parseDuration(pruneEvery)! } : {}),
      ...(obs ? { onPruned: obs.pruned } : {}),
    });
    const s = store;
    cleanup.push(() => s.flush().finally(() => s.close()));
  }

  let qm = injected.quotas;
  let bucketApi: ReturnType<typeof bucketRoutes> = [];
  if (qm === undefined && store !== undefined) {
    const handle = createQuotaManager(store, quotas, (caller) => chains.get(caller) ?? policyAccess(caller, policy.current).chains, obs ? { onLevels: obs.bucketLevels } : {});
    const recovered = await handle.recover();
    if (recovered > 0) warn(new MeshguardError(ErrorCode.STORE_FAILED, `settled ${recovered} quota reservation(s) left by a previous gateway process, each charged in full`));
    qm = handle;
    // The buckets upstreams name, each a chain: a caller's instances of them show in its own listing.
    const upstream = [...Object.values(cfg.connectors?.http ?? {}), ...Object.values(cfg.mcp?.servers ?? {})].flatMap((u) => u.quotas ?? []);
    bucketApi = bucketRoutes(handle, quotas, [...new Set(upstream)].map((h) => [h]));
  }

  let hooks = injected.hooks;
  if (hooks === undefined && cfg.hooks !== undefined) {
    const h = createHookRunner(cfg.hooks, {
      onError: (err: HookFailedError) => {
        obs?.hookFailed(err);
        warn(err);
      },
    });
    hooks = h;
    cleanup.push(() => h.close());
  }

  const idleGap = cfg.sessions ? { idleGapMs: parseDuration(cfg.sessions.idleGap)! } : {};
  // A store shared by several instances (PostgreSQL) keeps the sessions too, so every instance names them alike.
  const shared = store?.assignSession && store.forgetSessions ? new SharedSessions({ assignSession: store.assignSession.bind(store), forgetSessions: store.forgetSessions.bind(store) }, { ...idleGap, onError: warn }) : undefined;
  const tracker = shared ?? new SessionTracker(idleGap);
  // Runs first on close (cleanup runs in reverse): records waiting for their session reach the hooks and the store before those close.
  if (shared) cleanup.push(() => shared.drain());
  return {
    store,
    quotas: qm,
    hooks,
    retention,
    sessions: injected.sessions ?? { sessionOf: (c, sid, time) => tracker.assign(c, sid, time) },
    prices: injected.prices ?? { priceOf, maxOutputTokensOf },
    access: injected.access ?? policyAccess,
    adminRoutes: injected.adminRoutes ?? [...(store ? [...logRoutes(store), ...usageRoutes(store)] : []), ...bucketApi],
  };
}

/** What the parts tell the gateway's observability (./obs/): hook failures, bucket levels, retention runs. */
export interface PartsObserver {
  hookFailed(err: HookFailedError): void;
  bucketLevels(levels: LevelReport[]): void;
  pruned(deleted: number, before: number): void;
}

/** checkBuckets: every bucket the policy's gateway section names must be configured (else every request of those callers would be refused). */
function checkBuckets(policy: Policy | undefined, quotas: Record<string, unknown>): void {
  const missing = (policy?.gateway?.buckets ?? []).filter((b) => !Object.hasOwn(quotas, b));
  if (missing.length === 0) return;
  throw new MeshguardError(ErrorCode.GATEWAY_CONFIG_INVALID, `the policy ${policy!.file ?? ""} names quota bucket(s) ${missing.map((b) => JSON.stringify(b)).join(", ")} that the gateway config does not define`, {
    hint: 'define them under "quotas" in the gateway config, or remove them from the policy\'s gateway.roles',
  });
}
