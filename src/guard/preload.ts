/**
 * meshguard/preload: installs the guard before any application code runs.
 *
 *   node --require <meshguard/preload's file> agent.js
 *
 * (`meshguard run` does this, under Node's permission model; the path is
 * `preloadPath()` from meshguard/guard.) `--require`, not `--import`: Node
 * runs `--require` preloads first, so no other preload runs before the guard.
 *
 * In the main thread the guard is configured from the environment:
 *   MESHGUARD_POLICY  the policy file (absent: no policy, every call denied)
 *   MESHGUARD_MODE    "enforce" (default) or "observe"
 *   MESHGUARD_AUDIT   a JSON-lines audit file (appended to)
 *   MESHGUARD_AS      who the process is, as `policy explain --as` reads it ("tag:agent")
 * Anything wrong (an unreadable or invalid policy, a bad value) throws, and
 * the process ends before the application starts: fail closed.
 *
 * In a worker thread it installs the guard of the thread that started the
 * worker, from the setup message that thread's Worker constructor posted
 * first (./worker.ts), and keeps it current through the setup's private port.
 */

import { readFileSync } from "node:fs";
import { isMainThread, parentPort, receiveMessageOnPort, type MessagePort } from "node:worker_threads";

import { ErrorCode, MeshguardError } from "../errors.js";
import type { AuditSink } from "../policy/audit.js";
import type { DecisionEvent } from "../policy/event.js";
import { parsePrincipal } from "../policy/identity.js";
import { loadPolicy, type Policy } from "../policy/load.js";
import { sqlParserLoaded, sqlParserReady } from "../policy/sql.js";
import { jsonLinesSink } from "../policy/sinks.js";
import { installGuard, type GuardHandle } from "./install.js";
import { current } from "./state.js";
import type { ApprovalAnswer, ApprovalOptions, GuardMode, GuardOptions } from "./types.js";
import { SETUP_KEY, SETUP_VERSION, unguarded, type FromWorker, type ToWorker, type WorkerSetup } from "./worker.js";

/** How long a worker waits for its setup message (posted right after the thread was created). */
const SETUP_WAIT_MS = 10_000;

if (isMainThread) installFromEnv();
else bootWorker();

function installFromEnv(): void {
  const env = process.env;
  const file = env.MESHGUARD_POLICY || undefined;
  let text: string | undefined;
  if (file !== undefined) {
    try {
      text = readFileSync(file, "utf8");
    } catch (err) {
      throw new MeshguardError(ErrorCode.POLICY_FILE_UNREADABLE, `meshguard preload: cannot read MESHGUARD_POLICY ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
    }
  }
  const mode = env.MESHGUARD_MODE || "enforce";
  if (mode !== "enforce" && mode !== "observe") throw new MeshguardError(ErrorCode.INVALID_OPTIONS, `meshguard preload: MESHGUARD_MODE must be "enforce" or "observe", got ${JSON.stringify(mode)}`);
  const opts: GuardOptions = {
    identity: env.MESHGUARD_AS ? parsePrincipal(env.MESHGUARD_AS) : { tags: [] },
    mode: mode as GuardMode,
  };
  // PostgreSQL's parser loads asynchronously (src/policy/sql.ts): a policy's
  // tests run now if it is loaded, else as soon as it is, and a failure then
  // takes the policy away (everything denied, fail closed) with a warning.
  const testNow = sqlParserLoaded();
  if (text !== undefined) opts.policy = loadPolicy(text, { file: file!, runTests: testNow });
  if (env.MESHGUARD_AUDIT) opts.audit = jsonLinesSink(env.MESHGUARD_AUDIT);
  // The handle stays here: the application gets no way to close or change its guard.
  const g = installGuard(opts);
  const policy = opts.policy as Policy | undefined;
  if (!testNow && policy !== undefined)
    void sqlParserReady().then(() => {
      const failed = policy.runTests().filter((r) => !r.pass);
      if (!failed.length) return;
      g.setPolicy(undefined);
      process.emitWarning(
        `meshguard preload: ${failed.length} test(s) of ${file} failed (first: ${JSON.stringify(failed[0]!.request)} expected ${failed[0]!.expect}, got ${failed[0]!.got.effect}): the policy is withdrawn and every call is denied`,
        { code: ErrorCode.POLICY_TESTS_FAILED },
      );
    });
}

/** receiveSetup takes the worker's first message synchronously: no worker code may run before the guard. */
function receiveSetup(): WorkerSetup {
  const port = parentPort;
  if (port === null) throw unguarded("no parent port", "meshguard's preload runs in the main thread or in a worker");
  const nap = new Int32Array(new SharedArrayBuffer(4));
  const deadline = Date.now() + SETUP_WAIT_MS;
  for (;;) {
    // The parent posts the setup right after creating the thread; it may still be on its way.
    const r = receiveMessageOnPort(port as unknown as MessagePort);
    if (r !== undefined) {
      const m = r.message as Partial<WorkerSetup> | undefined;
      if (m?.[SETUP_KEY] === SETUP_VERSION) return m as WorkerSetup;
      break;
    }
    if (Date.now() > deadline) break;
    Atomics.wait(nap, 0, 0, 1);
  }
  throw unguarded(
    "this worker was started with meshguard's preload but not by a guarded Worker constructor (no setup message)",
    "start workers after installGuard, through worker_threads.Worker; a process started with the preload guards every worker it starts",
  );
}

function bootWorker(): void {
  const setup = receiveSetup();
  if (setup.nodeOptions !== null) {
    // The preload was prepended to NODE_OPTIONS only to start this thread.
    if (setup.nodeOptions === "") delete process.env.NODE_OPTIONS;
    else process.env.NODE_OPTIONS = setup.nodeOptions;
  }
  const port = setup.port;
  const post = (m: FromWorker): void => {
    try {
      port.postMessage(m);
    } catch {
      // the parent is gone
    }
  };
  const load = (text: string | null, file?: string) => (text === null ? undefined : loadPolicy(text, { runTests: false, ...(file !== undefined ? { file } : {}) }));

  let audit: AuditSink | undefined;
  if (setup.audit && "file" in setup.audit) {
    const f = setup.audit.file;
    audit = jsonLinesSink(f.path, { ...f.options, onError: (err) => post({ t: "warning", code: err.code, message: err.message }) });
  } else if (setup.audit) {
    audit = { write: (ev) => post({ t: "audit", ev }) };
  }

  // Approvals asked through the parent's callback: the port holds the worker alive while one is pending.
  const pending = new Map<number, { resolve: (a: ApprovalAnswer) => void; reject: (e: Error) => void }>();
  let nextId = 0;
  const settle = (id: number) => {
    const p = pending.get(id);
    pending.delete(id);
    if (pending.size === 0) port.unref();
    return p;
  };
  let approvals: ApprovalOptions | undefined;
  if (setup.approvals) {
    const a = setup.approvals;
    approvals = { ...(a.timeoutMs !== undefined ? { timeoutMs: a.timeoutMs } : {}) };
    if (a.forward) {
      approvals.callback = (req, signal) =>
        new Promise<ApprovalAnswer>((resolve, reject) => {
          const id = ++nextId;
          pending.set(id, { resolve, reject });
          port.ref();
          signal.addEventListener("abort", () => settle(id)?.reject(new Error("the approval timed out")), { once: true });
          post({ t: "approve", id, req });
        });
    } else if (a.webhook !== undefined) {
      approvals.webhook = a.webhook;
      if (a.headers) approvals.headers = a.headers;
    }
  }

  const guard: GuardHandle = installGuard({
    identity: setup.principal,
    mode: setup.mode,
    sampleAllows: setup.sampleAllows,
    llm: { providers: setup.llmProviders },
    ...(setup.gateways ? { gateways: setup.gateways } : {}),
    maxBodyBytes: setup.maxBodyBytes,
    allowIpc: setup.allowIpc,
    intercept: setup.intercept,
    ...(setup.policy !== null ? { policy: load(setup.policy, setup.policyFile)! } : {}),
    ...(setup.reveal ? { reveal: setup.reveal } : {}),
    ...(setup.sdkSearchPaths ? { sdkSearchPaths: setup.sdkSearchPaths } : {}),
    ...(audit ? { audit } : {}),
    ...(approvals ? { approvals } : {}),
  });
  const forward = (ev: DecisionEvent) => post({ t: "decision", ev });
  if (setup.listen) guard.on("decision", forward);
  guard.on("warning", (err: Error) => post({ t: "warning", code: (err as MeshguardError).code, message: err.message }));

  port.on("message", (m: ToWorker) => {
    switch (m?.t) {
      case "policy":
        try {
          guard.setPolicy(load(m.text, m.file));
        } catch (err) {
          // Fail closed: a policy this thread cannot load denies everything.
          guard.setPolicy(undefined);
          post({ t: "warning", code: (err as MeshguardError).code, message: `the new policy did not load (every call is denied): ${(err as Error).message}` });
        }
        return;
      case "principal": {
        const core = current();
        if (core) core.principal = m.principal;
        return;
      }
      case "listen":
        guard.off("decision", forward);
        if (m.on) guard.on("decision", forward);
        return;
      case "answer": {
        const p = settle(m.id);
        if (m.error !== undefined) p?.reject(new Error(m.error));
        else p?.resolve(m.answer!);
        return;
      }
      case "close":
        guard.uninstall();
        port.close();
        return;
    }
  });
  port.unref();
}
