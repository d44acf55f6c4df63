/**
 * Reloading the guard's policy while the agent runs: from a file (watched),
 * or from a policy server on the tailnet (long poll with ETags, signed
 * bundles verified before use).
 *
 * Every reload either applies a policy that loaded completely (parsed,
 * validated, compiled, its tests passing, and for a bundle: signature, hash
 * and version checked) or changes nothing: the last good policy stays in
 * force and the guard emits "reload-error" with the reason. A guard that
 * never received a good policy denies everything (fail closed).
 *
 * Events on the guard: "reload" ({ source, hash, version? }) and
 * "reload-error" (a MeshguardError).
 */

import { watch, type FSWatcher } from "node:fs";
import { readFile } from "node:fs/promises";
import type net from "node:net";
import { basename, dirname } from "node:path";
import { ErrorCode, MeshguardError } from "../errors.js";
import { withoutDialGuard } from "../guard/dial-hook.js";
import { internalRequest } from "../guard/internal.js";
import { verifyBundle, type KeyInput } from "./bundle.js";
import { loadPolicy, type Policy } from "../policy/load.js";
import { POLICY_PATH } from "./server.js";
import type { Decision, DecisionRequest } from "../policy/types.js";

/** What a reloader needs of the guard (a GuardHandle is one). */
export interface ReloadTarget {
  setPolicy(policy: { evaluate(req: DecisionRequest): Decision } | undefined): void;
  emit(event: string, ...args: unknown[]): boolean;
}

export interface ReloadEvent {
  source: string;
  /** SHA-256 of the policy text now in force. */
  hash: string;
  /** The bundle version, for signed bundles. */
  version?: number;
}

interface Applier {
  current: Policy | undefined;
  version: number | undefined;
  apply(text: string, source: string, version?: number): boolean;
  fail(err: unknown, source: string): void;
}

function applier(guard: ReloadTarget, clock: (() => Date) | undefined): Applier {
  const a: Applier = {
    current: undefined,
    version: undefined,
    apply(text, source, version) {
      let p: Policy;
      try {
        p = loadPolicy(text, { file: source, ...(clock ? { clock } : {}) });
      } catch (err) {
        a.fail(err, source);
        return false;
      }
      if (a.current?.hash === p.hash && a.version === version) return true;
      guard.setPolicy(p);
      a.current = p;
      if (version !== undefined) a.version = version;
      const ev: ReloadEvent = { source, hash: p.hash, ...(version !== undefined ? { version } : {}) };
      guard.emit("reload", ev);
      return true;
    },
    fail(err, source) {
      const e = err instanceof MeshguardError ? err : new MeshguardError(ErrorCode.POLICY_BUNDLE_INVALID, `policy reload from ${source} failed: ${(err as Error)?.message ?? String(err)}`, { cause: err });
      guard.emit("reload-error", e);
    },
  };
  return a;
}

export interface WatchPolicyFileOptions {
  /** When given, the file must be a signed bundle (JSON) verified with one of these keys. */
  publicKeys?: KeyInput[];
  /** The time source of the loaded policies (time windows, rates). */
  clock?: () => Date;
  /** Wait this long after a change before reading (editors write in steps; default 100 ms). */
  debounceMs?: number;
}

export interface FileReloader {
  /** Resolves after the first load (true if a policy is in force). */
  readonly ready: Promise<boolean>;
  /** The policy in force from this file. */
  readonly current: Policy | undefined;
  /** reload reads the file now. */
  reload(): Promise<boolean>;
  close(): void;
}

/** watchPolicyFile loads a policy file into the guard and reloads it on every change. */
export function watchPolicyFile(guard: ReloadTarget, file: string, opts: WatchPolicyFileOptions = {}): FileReloader {
  const a = applier(guard, opts.clock);
  const reload = async (): Promise<boolean> => {
    let text: string;
    try {
      text = await readFile(file, "utf8");
    } catch (err) {
      a.fail(new MeshguardError(ErrorCode.POLICY_FILE_UNREADABLE, `cannot read the policy file ${file}: ${(err as Error).message}`, { cause: err }), file);
      return false;
    }
    if (opts.publicKeys === undefined) return a.apply(text, file);
    try {
      const b = verifyBundle(text, opts.publicKeys, a.version !== undefined ? { minVersion: a.version } : {});
      return a.apply(b.policy, file, b.version);
    } catch (err) {
      a.fail(err, file);
      return false;
    }
  };
  let timer: NodeJS.Timeout | undefined;
  // The directory, not the file: editors and `mv` replace the file's inode.
  const watcher: FSWatcher = watch(dirname(file), (_ev, name) => {
    if (name !== null && name !== basename(file)) return;
    clearTimeout(timer);
    timer = setTimeout(() => void reload(), opts.debounceMs ?? 100);
  });
  watcher.on("error", (err) => a.fail(err, file));
  return {
    ready: reload(),
    get current() {
      return a.current;
    },
    reload,
    close() {
      clearTimeout(timer);
      watcher.close();
    },
  };
}

export interface PollPolicyServerOptions {
  /** The policy server, e.g. "http://policy:8080" (the path /v1/policy is added when absent). */
  url: string;
  /** Trusted Ed25519 public keys; a bundle signed otherwise is refused. */
  publicKeys: KeyInput[];
  /** Reach the server over the tailnet through this node (its dial is not subject to the guard). Without it, the host network. */
  node?: { dial(host: string, port: number): Promise<net.Socket> };
  /** Long-poll wait asked of the server, in seconds (default 25). */
  waitSeconds?: number;
  /** First retry delay after a failure (default 1000 ms; doubles up to 30 s). */
  retryMs?: number;
  clock?: () => Date;
}

export interface PolicyServerClient {
  /** Resolves after the first answer or failure (true if a policy is in force). */
  readonly ready: Promise<boolean>;
  readonly current: Policy | undefined;
  /** The applied bundle version. */
  readonly version: number | undefined;
  close(): void;
}

/** pollPolicyServer keeps the guard's policy in step with a policy server. */
export function pollPolicyServer(guard: ReloadTarget, opts: PollPolicyServerOptions): PolicyServerClient {
  const a = applier(guard, opts.clock);
  const base = new URL(opts.url);
  if (base.pathname === "/" || base.pathname === "") base.pathname = POLICY_PATH;
  const wait = opts.waitSeconds ?? 25;
  const ac = new AbortController();
  let etag: string | undefined;
  let signalReady!: (ok: boolean) => void;
  const ready = new Promise<boolean>((r) => (signalReady = r));
  const source = base.toString();

  const once = async (waitNow: number): Promise<void> => {
    const u = new URL(base);
    if (waitNow > 0) u.searchParams.set("wait", String(waitNow));
    const port = Number(u.port) || (u.protocol === "https:" ? 443 : 80);
    let sock: net.Socket | undefined;
    if (opts.node) sock = await withoutDialGuard(() => opts.node!.dial(u.hostname, port));
    const timeout = AbortSignal.timeout((waitNow + 15) * 1000);
    const res = await internalRequest(u.toString(), {
      headers: etag ? { "if-none-match": etag } : {},
      signal: AbortSignal.any([ac.signal, timeout]),
      maxBytes: 16 << 20,
      ...(sock ? { socket: () => sock! } : {}),
    });
    if (res.status === 304) return;
    if (res.status !== 200) throw new MeshguardError(ErrorCode.POLICY_SERVER_UNREACHABLE, `the policy server ${source} answered HTTP ${res.status}`);
    // A refused bundle's ETag is remembered too: the next poll waits for a
    // change instead of fetching the same bad bundle again at once.
    etag = typeof res.headers.etag === "string" ? res.headers.etag : undefined;
    let b: ReturnType<typeof verifyBundle>;
    try {
      b = verifyBundle(res.body.toString("utf8"), opts.publicKeys, a.version !== undefined ? { minVersion: a.version } : {});
    } catch (err) {
      a.fail(err, source);
      return;
    }
    a.apply(b.policy, source, b.version);
  };

  void (async () => {
    let delay = opts.retryMs ?? 1000;
    let first = true;
    while (!ac.signal.aborted) {
      try {
        await once(first ? 0 : wait);
        delay = opts.retryMs ?? 1000;
      } catch (err) {
        if (ac.signal.aborted) break;
        a.fail(err, source);
        await new Promise((r) => setTimeout(r, delay).unref());
        delay = Math.min(delay * 2, 30_000);
      }
      if (first) {
        first = false;
        signalReady(a.current !== undefined);
      }
    }
    signalReady(a.current !== undefined);
  })();

  return {
    ready,
    get current() {
      return a.current;
    },
    get version() {
      return a.version;
    },
    close() {
      ac.abort();
    },
  };
}
