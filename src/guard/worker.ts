/**
 * Worker threads under the guard. A worker is a second JavaScript thread
 * with its own copy of every module: the patches installed in this thread do
 * not exist there. So the guard replaces `worker_threads.Worker` with a
 * constructor that starts every worker with meshguard's preload
 * (`--require`, ./preload.ts) running before any of the worker's code, and
 * hands the preload, as the worker's first message, what it needs to install
 * the same guard: the policy text, the principal, the options, and a private
 * MessagePort. Through that port the worker receives setPolicy (reloads),
 * the principal once whois knows it, and close; it sends back audit events,
 * decision events, warnings and approval requests.
 *
 * A worker that cannot be guarded that way is not started: the constructor
 * throws MESHGUARD_GUARD_WORKER_UNGUARDED (see `prepare` for the cases).
 *
 * Why `--require` and where it goes: Node runs `--require` preloads before
 * `--import` ones, NODE_OPTIONS' before execArgv's (measured on Node 22 and
 * 24), and a worker given `env` or `execArgv` re-reads NODE_OPTIONS. So the
 * preload goes first in the worker's NODE_OPTIONS; nothing the caller passes
 * can run before it. `--require` preloads also run for `eval: true` workers,
 * which `--import` ones do not.
 */

import { existsSync, readFileSync, realpathSync } from "node:fs";
import { createRequire, syncBuiltinESMExports } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { MessagePort, WorkerOptions } from "node:worker_threads";
import type { EventEmitter } from "node:events";

import { ErrorCode, MeshguardError } from "../errors.js";
import type { AuditSink } from "../policy/audit.js";
import type { DecisionEvent } from "../policy/event.js";
import { Policy } from "../policy/load.js";
import type { Reveal } from "../policy/request.js";
import { fileSinkOf, type FileSinkSpec } from "../policy/sinks.js";
import type { Principal } from "../policy/types.js";
import type { GuardCore } from "./core.js";
import { gatewaySpecs, type GatewaySpec } from "./gateways.js";
import { isInternalWorker } from "./internal.js";
import type { ApprovalAnswer, ApprovalRequest, Evaluator, GuardEvents, GuardMode } from "./types.js";

// The CommonJS exports object: the one `import { Worker }` (after
// syncBuiltinESMExports), `require` and process.getBuiltinModule all read.
const require = createRequire(import.meta.url);
const wt = require("node:worker_threads") as typeof import("node:worker_threads");

/** The brand of the setup message (the first message a guarded worker receives). */
export const SETUP_KEY = "meshguard.worker.setup";
export const SETUP_VERSION = 1;

/** WorkerSetup is everything a worker's guard is installed from; structured-cloneable. */
export interface WorkerSetup {
  [SETUP_KEY]: typeof SETUP_VERSION;
  port: MessagePort;
  /** The policy text (a loaded Policy's), or null: no policy, every call denied. */
  policy: string | null;
  policyFile?: string;
  principal: Principal;
  mode: GuardMode;
  sampleAllows: number;
  reveal?: Reveal;
  llmProviders: Record<string, string>;
  /** The AI gateways registered when the worker started (./gateways.ts). */
  gateways?: GatewaySpec[];
  maxBodyBytes: number;
  allowIpc: string[];
  intercept: Record<string, boolean>;
  sdkSearchPaths?: string[];
  /** The parent's audit sink: the same file (O_APPEND: safe to share), or events forwarded over the port. */
  audit?: { file: FileSinkSpec } | { forward: true };
  /** A webhook the worker calls itself, or a callback in the parent the worker asks over the port. */
  approvals?: { webhook?: string; headers?: Record<string, string>; timeoutMs?: number; forward: boolean };
  /** The parent has `decision` listeners: forward decision events. */
  listen: boolean;
  /** NODE_OPTIONS as the caller meant it (meshguard prepended its preload): the worker restores it. null: untouched. */
  nodeOptions: string | null;
}

/** Parent → worker, on the private port. */
export type ToWorker =
  | { t: "policy"; text: string | null; file?: string }
  | { t: "principal"; principal: Principal }
  | { t: "listen"; on: boolean }
  | { t: "answer"; id: number; answer?: ApprovalAnswer; error?: string }
  | { t: "close" };

/** Worker → parent. */
export type FromWorker =
  | { t: "audit"; ev: DecisionEvent }
  | { t: "decision"; ev: DecisionEvent }
  | { t: "warning"; code?: string; message: string }
  | { t: "approve"; id: number; req: ApprovalRequest };

/** What installGuard passes that the core does not keep. */
export interface WorkerGuardOptions {
  audit: AuditSink | undefined;
  intercept: Record<string, boolean | undefined>;
  sdkSearchPaths: string[] | undefined;
}

/** WorkerHub is the guard's side of its workers. */
export interface WorkerHub {
  /** setPolicy sends the new policy to every live worker (a reload). */
  setPolicy(p: Evaluator | undefined): void;
  /** setPrincipal sends the identity (whois resolved). */
  setPrincipal(p: Principal): void;
  /** close restores the Worker constructor and uninstalls the workers' guards. */
  close(): void;
}

export function unguarded(message: string, hint: string, cause?: unknown): MeshguardError {
  return new MeshguardError(ErrorCode.GUARD_WORKER_UNGUARDED, `new Worker: ${message}; the worker was not started`, { hint, ...(cause !== undefined ? { cause } : {}) });
}

/**
 * policyText is what crosses to a worker: a loaded Policy's text, null for
 * no policy, undefined for an Evaluator that is not a Policy (an object
 * with its own code cannot be copied to another thread).
 */
function policyText(ev: Evaluator | undefined): { text: string | null; file?: string } | undefined {
  if (ev === undefined) return { text: null };
  if (ev instanceof Policy) return { text: ev.text, ...(ev.file !== undefined ? { file: ev.file } : {}) };
  return undefined;
}

let preload: string | undefined;

/**
 * preloadPath is the file of meshguard's preload entry (dist/guard/preload.js,
 * the package's "./preload" export), from the package's own package.json.
 * `node --require <it>` installs the guard before any application code
 * (configured by MESHGUARD_POLICY, ..., see docs/guard.md); `meshguard run`
 * uses it. Throws MESHGUARD_GUARD_WORKER_UNGUARDED when meshguard is bundled
 * into another file or not built.
 */
export function preloadPath(): string {
  if (preload !== undefined) return preload;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++, dir = dirname(dir)) {
    const pj = join(dir, "package.json");
    if (!existsSync(pj)) continue;
    let meta: { name?: string; exports?: Record<string, { default?: string } | undefined> };
    try {
      meta = JSON.parse(readFileSync(pj, "utf8")) as typeof meta;
    } catch {
      continue;
    }
    if (meta.name !== "meshguard") continue;
    const rel = meta.exports?.["./preload"]?.default;
    const file = rel !== undefined ? join(dir, rel) : undefined;
    if (file !== undefined && existsSync(file)) return (preload = realpathSync(file));
    break;
  }
  throw unguarded("cannot find meshguard's preload (the package's \"./preload\" export, dist/guard/preload.js)", "build meshguard (npm run build); a copy of meshguard bundled into another file cannot start guarded workers");
}

// ---------------------------------------------------------------------------
// Which Node options a worker may be given.

/** Options that weaken Node's permission model or run code that could replace the preload. */
const WEAKENING = /^--(allow-[a-z-]+|no-permission|no-experimental-permission|permission-audit|loader|experimental-loader|experimental-config-file|experimental-default-config-file)(=|$)/;
/** Options that run code; only a problem where they run before the preload (a shared environment's NODE_OPTIONS). */
const PRELOADS = /^(-r|--require|--import)(=|$)/;
/** The permission model's own options, copied onto a worker given its own execArgv (Node would drop them). */
const PERMISSION = /^--(permission|experimental-permission|allow-[a-z-]+)(=|$)/;

/** nodeOptionTokens splits NODE_OPTIONS as Node does: on spaces, with double quotes and backslash escapes inside them. */
export function nodeOptionTokens(s: string | undefined): string[] {
  const out: string[] = [];
  if (!s) return out;
  let cur = "";
  let has = false;
  let quoted = false;
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (quoted && c === "\\" && i + 1 < s.length) cur += s[++i];
    else if (c === '"') {
      quoted = !quoted;
      has = true;
    } else if (c === " " && !quoted) {
      if (has || cur) out.push(cur);
      cur = "";
      has = false;
    } else cur += c;
  }
  if (has || cur) out.push(cur);
  return out;
}

const quote = (s: string) => `"${s.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`;

// What the process was started with is the operator's choice, not the
// agent's: those options are allowed again on a worker.
const STARTUP = new Set([...process.execArgv, ...nodeOptionTokens(process.env.NODE_OPTIONS)]);

function vet(tokens: readonly string[], where: string, bad: RegExp[]): void {
  for (const t of tokens) {
    if (STARTUP.has(t)) continue;
    if (bad.some((re) => re.test(t))) {
      throw unguarded(
        `${where} holds ${JSON.stringify(t)}, which could run code before meshguard's guard or lift the permission model in the worker`,
        "start the worker without it; options the process itself was started with are allowed",
      );
    }
  }
}

/** permissionFlags are the permission model's options in `argv`, with the value of a space-separated --allow-fs-*. */
function permissionFlags(argv: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (!PERMISSION.test(a)) continue;
    out.push(a);
    if ((a === "--allow-fs-read" || a === "--allow-fs-write") && i + 1 < argv.length) out.push(argv[++i]!);
  }
  return out;
}

/** hasPreload: `argv` requires meshguard's preload, so a worker inheriting the options inherits it. */
function hasPreload(argv: readonly string[], file: string): boolean {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if ((a === "--require" || a === "-r") && argv[i + 1] === file) return true;
    if (a === `--require=${file}`) return true;
  }
  return false;
}

// ---------------------------------------------------------------------------
// The parent side.

interface Installed {
  hub: Hub;
  original: typeof wt.Worker;
}
let installed: Installed | undefined;

class Hub implements WorkerHub {
  private readonly links = new Set<MessagePort>();
  private readonly onNewListener = (name: string | symbol) => {
    if (name === "decision" && this.events.listenerCount("decision") === 0) this.broadcast({ t: "listen", on: true });
  };
  private readonly onRemoveListener = (name: string | symbol) => {
    if (name === "decision" && this.events.listenerCount("decision") === 0) this.broadcast({ t: "listen", on: false });
  };
  private readonly core: GuardCore;
  private readonly events: EventEmitter<GuardEvents>;
  private readonly opts: WorkerGuardOptions;

  constructor(
    core: GuardCore,
    events: EventEmitter<GuardEvents>,
    opts: WorkerGuardOptions,
  ) {
    this.core = core;
    this.events = events;
    this.opts = opts;
    // The meta-events of EventEmitter are not in GuardEvents.
    (events as EventEmitter).on("newListener", this.onNewListener);
    (events as EventEmitter).on("removeListener", this.onRemoveListener);
  }

  /**
   * prepare turns the caller's options into ones that start the worker with
   * the preload first, and builds its setup. Throws for a worker that cannot
   * be guarded:
   *  - the guard's policy is an Evaluator that is not a loaded Policy;
   *  - its execArgv or NODE_OPTIONS holds an option that weakens the
   *    permission model or registers module hooks (allowed when the process
   *    itself was started with it);
   *  - with SHARE_ENV, NODE_OPTIONS holds a preload (it would run first);
   *  - meshguard's preload file cannot be found (a bundled copy).
   */
  prepare(options: WorkerOptions | undefined): { options: WorkerOptions; setup: WorkerSetup; port: MessagePort; changed: boolean } {
    const o: WorkerOptions = options ?? {};
    const policy = policyText(this.core.evaluator);
    if (policy === undefined) {
      throw unguarded(
        "the guard's policy is an Evaluator object, not a Policy from loadPolicy, and a worker thread cannot run another thread's objects",
        "give installGuard a Policy from loadPolicy (a worker loads the same text); a custom Evaluator can only guard the thread it lives in",
      );
    }
    const file = preloadPath();
    const out: WorkerOptions = { ...o };
    let nodeOptions: string | null = null;
    let changed = true;
    const execArgv = Array.isArray(o.execArgv) ? o.execArgv.map(String) : undefined;
    if (execArgv) vet(execArgv, "its execArgv", [WEAKENING]);
    if (o.env === wt.SHARE_ENV) {
      // The environment is the process's own: NODE_OPTIONS cannot be given the
      // preload, so it goes first in execArgv, and whatever NODE_OPTIONS would
      // run before it must not be there.
      vet(nodeOptionTokens(process.env.NODE_OPTIONS), "NODE_OPTIONS (shared with the worker)", [WEAKENING, PRELOADS]);
      out.execArgv = ["--require", file, ...(execArgv ? [...permissionFlags(process.execArgv), ...execArgv] : process.execArgv)];
    } else if (o.env === undefined && execArgv === undefined && hasPreload(process.execArgv, file)) {
      // The process was started with the preload (meshguard run): the worker
      // inherits every option, the preload and the permission model included.
      changed = false;
    } else {
      const env = { ...((o.env as Record<string, string | undefined> | undefined) ?? process.env) };
      const prev = env.NODE_OPTIONS;
      vet(nodeOptionTokens(prev), "NODE_OPTIONS", [WEAKENING]);
      env.NODE_OPTIONS = `--require ${quote(file)}${prev ? ` ${prev}` : ""}`;
      nodeOptions = prev ?? "";
      out.env = env;
      // A worker given execArgv starts from those alone: without the process's
      // permission options it would run outside the permission model (measured).
      if (execArgv) out.execArgv = [...permissionFlags(process.execArgv), ...execArgv];
    }

    const { port1, port2 } = new wt.MessageChannel();
    const approvals = this.core.approvals;
    const sink = this.opts.audit;
    const spec = fileSinkOf(sink);
    const setup: WorkerSetup = {
      [SETUP_KEY]: SETUP_VERSION,
      port: port2,
      policy: policy.text,
      ...(policy.file !== undefined ? { policyFile: policy.file } : {}),
      principal: structuredClone(this.core.principal),
      mode: this.core.mode,
      sampleAllows: this.core.sampleAllows,
      ...(this.core.reveal ? { reveal: this.core.reveal } : {}),
      llmProviders: Object.fromEntries(this.core.llmProviders),
      ...(gatewaySpecs(this.core).length > 0 ? { gateways: gatewaySpecs(this.core) } : {}),
      maxBodyBytes: this.core.maxBodyBytes,
      allowIpc: [...this.core.allowIpc],
      intercept: Object.fromEntries(Object.entries(this.opts.intercept).filter((e): e is [string, boolean] => typeof e[1] === "boolean")),
      ...(this.opts.sdkSearchPaths ? { sdkSearchPaths: [...this.opts.sdkSearchPaths] } : {}),
      ...(sink ? { audit: spec ? { file: spec } : { forward: true as const } } : {}),
      ...(approvals && (approvals.callback || approvals.webhook)
        ? {
            approvals: {
              forward: approvals.callback !== undefined,
              ...(approvals.webhook !== undefined ? { webhook: approvals.webhook } : {}),
              ...(approvals.headers !== undefined ? { headers: { ...approvals.headers } } : {}),
              ...(approvals.timeoutMs !== undefined ? { timeoutMs: approvals.timeoutMs } : {}),
            },
          }
        : {}),
      listen: this.events.listenerCount("decision") > 0,
      nodeOptions,
    };
    return { options: out, setup, port: port1, changed };
  }

  attach(port: MessagePort): void {
    this.links.add(port);
    port.on("message", (m: FromWorker) => this.onMessage(port, m));
    port.on("close", () => this.links.delete(port));
    // The link must not keep this process alive; the worker does that itself.
    port.unref();
  }

  private onMessage(port: MessagePort, m: FromWorker): void {
    try {
      switch (m?.t) {
        case "audit":
          // The worker sampled already: write as is.
          this.opts.audit?.write(m.ev);
          return;
        case "decision":
          if (this.events.listenerCount("decision") > 0) this.events.emit("decision", m.ev);
          return;
        case "warning": {
          const code = Object.values(ErrorCode).includes(m.code as ErrorCode) ? (m.code as ErrorCode) : ErrorCode.INTERNAL;
          this.core.warn(new MeshguardError(code, `in a worker thread: ${String(m.message)}`));
          return;
        }
        case "approve":
          this.approve(port, m.id, m.req);
          return;
      }
    } catch (err) {
      this.core.warn(err);
    }
  }

  /** approve asks this thread's approval callback on a worker's behalf; the worker keeps its own deadline. */
  private approve(port: MessagePort, id: number, req: ApprovalRequest): void {
    const cb = this.core.approvals?.callback;
    const reply = (msg: ToWorker) => {
      try {
        port.postMessage(msg);
      } catch {
        // the worker is gone: nobody waits for the answer
      }
    };
    if (cb === undefined) return reply({ t: "answer", id, error: "no approval callback in the thread that started the worker" });
    const ac = new AbortController();
    const timer = setTimeout(() => ac.abort(), Math.max(0, Date.parse(req.deadline) - Date.now()));
    timer.unref();
    Promise.resolve()
      .then(() => cb(req, ac.signal))
      .then(
        (answer) => reply({ t: "answer", id, answer }),
        (err: unknown) => reply({ t: "answer", id, error: (err as Error)?.message ?? String(err) }),
      )
      .finally(() => clearTimeout(timer));
  }

  private broadcast(msg: ToWorker): void {
    for (const port of this.links) {
      try {
        port.postMessage(msg);
      } catch (err) {
        this.core.warn(err);
      }
    }
  }

  setPolicy(p: Evaluator | undefined): void {
    if (this.links.size === 0) return;
    const policy = policyText(p);
    if (policy === undefined) {
      this.core.warn(
        new MeshguardError(ErrorCode.GUARD_WORKER_UNGUARDED, "setPolicy: worker threads cannot load an Evaluator that is not a Policy from loadPolicy; they deny every call until one is set", {
          hint: "pass a Policy from loadPolicy to setPolicy",
        }),
      );
    }
    this.broadcast({ t: "policy", text: policy?.text ?? null, ...(policy?.file !== undefined ? { file: policy.file } : {}) });
  }

  setPrincipal(p: Principal): void {
    this.broadcast({ t: "principal", principal: structuredClone(p) });
  }

  close(): void {
    this.broadcast({ t: "close" });
    for (const port of this.links) port.close();
    this.links.clear();
    (this.events as EventEmitter).off("newListener", this.onNewListener);
    (this.events as EventEmitter).off("removeListener", this.onRemoveListener);
    if (installed?.hub === this) {
      restore(installed.original);
      installed = undefined;
    }
  }
}

/**
 * guardWorkers replaces `worker_threads.Worker` for as long as the guard is
 * installed: every worker started meanwhile is guarded (see the file comment).
 */
export function guardWorkers(core: GuardCore, events: EventEmitter<GuardEvents>, opts: WorkerGuardOptions): WorkerHub {
  const hub = new Hub(core, events, opts);
  const original = installed?.original ?? wt.Worker;
  installed = { hub, original };
  const Original = original;
  // A function, not a subclass: `Object.getPrototypeOf(Worker)` must not hand out the unguarded constructor.
  const Worker = function Worker(this: unknown, filename: string | URL, options?: WorkerOptions) {
    if (new.target === undefined) throw new TypeError("Class constructor Worker cannot be invoked without 'new'");
    const active = installed?.hub;
    // The library's own thread (the wasm core's): not the agent's code, so not guarded (internal.ts).
    if (active === undefined || isInternalWorker(filename)) return Reflect.construct(Original, [filename, options], new.target) as object;
    const p = active.prepare(options);
    let w: InstanceType<typeof Original>;
    try {
      w = Reflect.construct(Original, [filename, p.options], new.target) as InstanceType<typeof Original>;
    } catch (err) {
      p.port.close();
      if (p.changed && (err as { code?: string })?.code === "ERR_WORKER_INVALID_EXEC_ARGV") {
        throw unguarded(
          `Node refused the worker's options once meshguard's preload was added to them (${(err as Error).message})`,
          "start the process with meshguard's preload (`meshguard run`, or `node --require <preloadPath()>`) so that workers inherit it, or remove the option Node names",
          err,
        );
      }
      throw err;
    }
    // The first message the worker receives, posted before anyone else can post.
    Original.prototype.postMessage.call(w, p.setup, [p.setup.port]);
    active.attach(p.port);
    return w;
  } as unknown as typeof wt.Worker;
  Object.defineProperty(Worker, "name", { value: "Worker" });
  Object.setPrototypeOf(Worker, Object.getPrototypeOf(Original));
  Object.defineProperty(Worker, "prototype", { value: Original.prototype });
  Object.defineProperty(Original.prototype, "constructor", { value: Worker, writable: true, configurable: true, enumerable: false });
  wt.Worker = Worker;
  syncBuiltinESMExports();
  return hub;
}

function restore(original: typeof wt.Worker): void {
  Object.defineProperty(original.prototype, "constructor", { value: original, writable: true, configurable: true, enumerable: false });
  wt.Worker = original;
  syncBuiltinESMExports();
}
