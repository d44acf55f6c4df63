/**
 * Reloading the guard's policy while the agent runs: from a file (watched),
 * or from a policy server on the tailnet (long poll with ETags, signed
 * bundles verified before use).
 *
 * Every reload either applies a policy that loaded completely (parsed,
 * validated, compiled, its tests passing, and for a bundle: signature, hash
 * and version checked) or changes nothing: the last good policy stays in
 * force and the guard emits "reloadError" with the reason. A guard that
 * never received a good policy denies everything (fail closed).
 *
 * Events on the guard: "reload" ({ source, hash, version? }) and
 * "reloadError" (a MeshguardError).
 *
 * Given a `node`, a reloader also hands the policy's tailnet identity part
 * (tagOwners, groups) to node.setTailnetIdentity on every good reload, so
 * whois names the owners of tagged peers from the same policy source.
 */

import { watch, type FSWatcher } from "node:fs";
import { access, readFile } from "node:fs/promises";
import { constants as fsConstants } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { basename, dirname } from "node:path";
import type { TailnetIdentity } from "../config.js";
import { ErrorCode, MeshguardError } from "../errors.js";
import { internalRequest, type Dialer } from "../guard/internal.js";
import type { ReloadEvent } from "../guard/types.js";
import { verifyBundle, type KeyInput } from "./bundle.js";
import { loadPolicy, type Policy } from "../policy/load.js";
import { POLICY_PATH } from "./server.js";
import type { Decision, DecisionRequest } from "../policy/types.js";

export type { ReloadEvent } from "../guard/types.js";

/** What a reloader needs of the guard (a GuardHandle is one). */
export interface ReloadTarget {
  setPolicy(policy: { evaluate(req: DecisionRequest): Decision } | undefined): void;
  emit(event: "reload", ev: ReloadEvent): boolean;
  emit(event: "reloadError", err: MeshguardError): boolean;
  emit(event: "warning", err: Error): boolean;
}

/** What a reloader needs of a node to give it the policy's tailnet identity (a MeshNode is one). */
export interface IdentityTarget {
  setTailnetIdentity(identity: TailnetIdentity): void;
}

interface Applier {
  current: Policy | undefined;
  version: number | undefined;
  closed: boolean;
  apply(text: string, source: string, version?: number): boolean;
  fail(err: unknown, source: string, code: ErrorCode): void;
}

/**
 * identityOf is the identity part of a loaded policy: the tailnet part's
 * tagOwners and groups, merged with those of meshguard's part (a
 * meshguard-only file may carry them too).
 */
export function identityOf(p: Policy): Required<TailnetIdentity> {
  const root = p.document.root as { tagOwners?: Record<string, string[]> };
  return { tagOwners: { ...(root.tagOwners ?? {}), ...(p.document.part.tagOwners ?? {}) }, groups: { ...p.document.groups } };
}

function applier(guard: ReloadTarget, clock: (() => Date) | undefined, node: Partial<IdentityTarget> | undefined): Applier {
  const a: Applier = {
    current: undefined,
    version: undefined,
    closed: false,
    apply(text, source, version) {
      if (a.closed) return false;
      let p: Policy;
      try {
        p = loadPolicy(text, { file: source, ...(clock ? { clock } : {}) });
      } catch (err) {
        a.fail(err, source, ErrorCode.POLICY_INVALID);
        return false;
      }
      if (a.current?.hash === p.hash && a.version === version) return true;
      guard.setPolicy(p);
      a.current = p;
      if (version !== undefined) a.version = version;
      if (typeof node?.setTailnetIdentity === "function") {
        try {
          node.setTailnetIdentity(identityOf(p));
        } catch (err) {
          a.fail(err, source, ErrorCode.POLICY_INVALID);
        }
      }
      const ev: ReloadEvent = { source, hash: p.hash, ...(version !== undefined ? { version } : {}) };
      guard.emit("reload", ev);
      return true;
    },
    fail(err, source, code) {
      if (a.closed) return;
      const e = err instanceof MeshguardError ? err : new MeshguardError(code, `policy reload from ${source} failed: ${(err as Error)?.message ?? String(err)}`, { cause: err });
      guard.emit("reloadError", e);
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
  /** A node (MeshNode) given the policy's tagOwners and groups on every good reload, for whois owners. */
  node?: IdentityTarget;
}

export interface FileReloader extends AsyncDisposable {
  /**
   * Resolves once the first load was tried. It does not say whether a
   * policy is in force (see `current`); a failed load is a `reloadError`
   * event on the guard.
   */
  readonly ready: Promise<void>;
  /** The policy in force from this file. */
  readonly current: Policy | undefined;
  /** reload reads the file now; true when the file's policy is in force afterwards. */
  reload(): Promise<boolean>;
  /** close stops watching (a reload under way finishes first). Idempotent. */
  close(): Promise<void>;
}

/**
 * writableHere tells whether this process could change the file: write it,
 * or replace it in its directory. (Root can always; so can the agent when
 * it runs as the file's owner.)
 */
async function writableHere(file: string): Promise<boolean> {
  for (const p of [file, dirname(file)]) {
    try {
      await access(p, fsConstants.W_OK);
      return true;
    } catch {
      // not writable through this path
    }
  }
  return false;
}

/**
 * The warning of a policy file watched without signature keys that this
 * process could rewrite: the agent the policy restrains could loosen it.
 */
function unsignedWarning(file: string): MeshguardError {
  return new MeshguardError(
    ErrorCode.POLICY_FILE_UNPROTECTED,
    `the policy file ${file} is watched without signature keys and this process can write it (or its directory): the agent could rewrite its own policy`,
    {
      hint: "watch a signed bundle instead (signBundle with a key from `meshguard policy serve --keygen`, then watchPolicyFile(guard, file, { publicKeys })), or make the file and its directory read-only to the agent's user",
    },
  );
}

/** watchPolicyFile loads a policy file into the guard and reloads it on every change. */
export function watchPolicyFile(guard: ReloadTarget, file: string, opts: WatchPolicyFileOptions = {}): FileReloader {
  const a = applier(guard, opts.clock, opts.node);
  let inFlight: Promise<boolean> = Promise.resolve(false);
  // Checked once, on the first read: after the caller had the chance to listen.
  let warned = opts.publicKeys !== undefined;
  const readAndApply = async (): Promise<boolean> => {
    if (!warned) {
      warned = true;
      if (await writableHere(file)) guard.emit("warning", unsignedWarning(file));
    }
    let text: string;
    try {
      text = await readFile(file, "utf8");
    } catch (err) {
      a.fail(new MeshguardError(ErrorCode.POLICY_FILE_UNREADABLE, `cannot read the policy file ${file}: ${(err as Error).message}`, { cause: err }), file, ErrorCode.POLICY_FILE_UNREADABLE);
      return false;
    }
    if (opts.publicKeys === undefined) return a.apply(text, file);
    try {
      const b = verifyBundle(text, opts.publicKeys, a.version !== undefined ? { minVersion: a.version } : {});
      return a.apply(b.policy, file, b.version);
    } catch (err) {
      a.fail(err, file, ErrorCode.POLICY_BUNDLE_INVALID);
      return false;
    }
  };
  // One read at a time, in order: a slow read must not apply after a newer one.
  const reload = (): Promise<boolean> => (inFlight = inFlight.then(readAndApply, readAndApply));
  let timer: NodeJS.Timeout | undefined;
  // The directory, not the file: editors and `mv` replace the file's inode.
  const watcher: FSWatcher = watch(dirname(file), (_ev, name) => {
    if (name !== null && name !== basename(file)) return;
    clearTimeout(timer);
    timer = setTimeout(() => void reload(), opts.debounceMs ?? 100);
  });
  watcher.on("error", (err) => a.fail(new MeshguardError(ErrorCode.POLICY_FILE_UNREADABLE, `watching the policy file ${file} failed: ${err.message}`, { cause: err }), file, ErrorCode.POLICY_FILE_UNREADABLE));
  let closing: Promise<void> | undefined;
  const close = (): Promise<void> =>
    (closing ??= (async () => {
      clearTimeout(timer);
      watcher.close();
      await inFlight.catch(() => {});
      a.closed = true;
    })());
  return {
    ready: reload().then(() => {}),
    get current() {
      return a.current;
    },
    reload: () => (a.closed ? Promise.resolve(false) : reload()),
    close,
    [Symbol.asyncDispose]: close,
  };
}

export interface PollPolicyServerOptions {
  /** The policy server, e.g. "http://policy:8080" (the path /v1/policy is added when absent). */
  url: string;
  /** Trusted Ed25519 public keys; a bundle signed otherwise is refused. */
  publicKeys: KeyInput[];
  /**
   * Reach the server over the tailnet through this node (its dial is not
   * subject to the guard). Without it, the host network. A node with
   * setTailnetIdentity (a MeshNode) also gets the policy's tagOwners and
   * groups on every good reload, for whois owners.
   */
  node?: Dialer & Partial<IdentityTarget>;
  /** Long-poll wait asked of the server, in seconds (default 25). */
  waitSeconds?: number;
  /** First retry delay after a failure (default 1000 ms; doubles up to 30 s). */
  retryMs?: number;
  clock?: () => Date;
}

export interface PolicyServerClient extends AsyncDisposable {
  /**
   * Resolves after the first answer or failure. It does not say whether a
   * policy is in force (see `current`); a failure is a `reloadError` event
   * on the guard.
   */
  readonly ready: Promise<void>;
  readonly current: Policy | undefined;
  /** The applied bundle version. */
  readonly version: number | undefined;
  /** close stops polling and resolves once the poll under way has ended. Idempotent. */
  close(): Promise<void>;
}

/** pollPolicyServer keeps the guard's policy in step with a policy server. */
export function pollPolicyServer(guard: ReloadTarget, opts: PollPolicyServerOptions): PolicyServerClient {
  const a = applier(guard, opts.clock, opts.node);
  const base = new URL(opts.url);
  if (base.pathname === "/" || base.pathname === "") base.pathname = POLICY_PATH;
  const wait = opts.waitSeconds ?? 25;
  const ac = new AbortController();
  let etag: string | undefined;
  let signalReady!: () => void;
  const ready = new Promise<void>((r) => (signalReady = r));
  const source = base.toString();

  const once = async (waitNow: number): Promise<void> => {
    const u = new URL(base);
    if (waitNow > 0) u.searchParams.set("wait", String(waitNow));
    const timeout = AbortSignal.timeout((waitNow + 15) * 1000);
    const res = await internalRequest(u.toString(), {
      headers: etag ? { "if-none-match": etag } : {},
      signal: AbortSignal.any([ac.signal, timeout]),
      maxBytes: 16 << 20,
      ...(opts.node ? { node: opts.node } : {}),
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
      a.fail(err, source, ErrorCode.POLICY_BUNDLE_INVALID);
      return;
    }
    a.apply(b.policy, source, b.version);
  };

  const loop = (async () => {
    let delay = opts.retryMs ?? 1000;
    let first = true;
    while (!ac.signal.aborted) {
      try {
        await once(first ? 0 : wait);
        delay = opts.retryMs ?? 1000;
      } catch (err) {
        if (ac.signal.aborted) break;
        a.fail(err, source, ErrorCode.POLICY_SERVER_UNREACHABLE);
        if (first) {
          first = false;
          signalReady();
        }
        await sleep(delay, undefined, { signal: ac.signal, ref: false }).catch(() => {});
        delay = Math.min(delay * 2, 30_000);
      }
      if (first) {
        first = false;
        signalReady();
      }
    }
    signalReady();
  })();

  let closing: Promise<void> | undefined;
  const close = (): Promise<void> =>
    (closing ??= (async () => {
      ac.abort();
      await loop;
      a.closed = true;
    })());
  return {
    ready,
    get current() {
      return a.current;
    },
    get version() {
      return a.version;
    },
    close,
    [Symbol.asyncDispose]: close,
  };
}
