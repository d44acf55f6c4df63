/**
 * installGuard: one call that puts the policy guard around every outbound
 * call of this process (see docs/guard.md for each interception point).
 */

import dc from "node:diagnostics_channel";
import { EventEmitter } from "node:events";
import { dirname } from "node:path";
import { z } from "zod";
import { parseWith } from "../config.js";
import { CONNECTION_CHANNEL, DIAL_CHANNEL, type ConnectionMessage, type DialMessage } from "../dial-channel.js";
import { ErrorCode, MeshguardError } from "../errors.js";
import type { PeerInfo, Principal, TcpTarget } from "../policy/types.js";
import { GuardCore } from "./core.js";
import { ConnectionTracker, hostConnections } from "./revoke.js";
import { PolicyDeniedError } from "./errors.js";
import { isInternalDial } from "./internal.js";
import { peerTable } from "./peers.js";
import { installHttpPatch, uninstallHttpPatch } from "./http.js";
import { installNetPatch, uninstallNetPatch } from "./net.js";
import { SECRET_HEADERS } from "./approvals.js";
import { configureMcp, registerMcpServer } from "./mcp.js";
import { GatewaySpecSchema, parseGateway, registerGateways, type GatewaySpec } from "./gateways.js";
import { forgetSdkDecisions, instrumentInstalledSdks, instrumentSdkClass, unpatchSdks } from "./sdk.js";
import { claimProcess, current, releaseProcess, setCurrent } from "./state.js";
import { installDnsPatch, uninstallDnsPatch } from "./dns.js";
import { installDgramPatch, uninstallDgramPatch } from "./dgram.js";
import { normalizeHost } from "../policy/hosts.js";
import type { AuditSink } from "../policy/audit.js";
import type { Evaluator, GuardEvents, GuardMode, GuardOptions } from "./types.js";
import { installUndici, takeUndiciConnect, uninstallUndici } from "./undici.js";
import type { Resolver } from "./resolve.js";
import { guardWorkers, type WorkerHub } from "./worker.js";
import { subscribeInspect } from "./inspect.js";

const fn = (what: string) => z.custom<(...a: never[]) => unknown>((v) => typeof v === "function", `must be a function (${what})`);
const evaluatorSchema = z.custom<Evaluator>((v) => typeof v === "object" && v !== null && typeof (v as Evaluator).evaluate === "function", "must have an evaluate(request) method (a loaded Policy or an Evaluator)");

const GuardOptionsSchema = z
  .object({
    policy: evaluatorSchema.optional(),
    identity: z.custom<GuardOptions["identity"]>(
      (v) => typeof v === "object" && v !== null && (Array.isArray((v as Principal).tags) || typeof (v as { whois?: unknown }).whois === "function"),
      "must be a MeshNode or a Principal { node?, tags: string[], user? }",
    ),
    mode: z.enum(["enforce", "observe"]).default("enforce"),
    audit: z.custom<AuditSink>((v) => typeof v === "object" && v !== null && typeof (v as AuditSink).write === "function", "must be an audit sink with a write(event) method, e.g. jsonLinesSink(file)").optional(),
    sampleAllows: z.number().min(0).max(1).default(1),
    reveal: z
      .object({
        query: z.boolean(),
        headers: z.array(
          z
            .string()
            .min(1)
            .refine((h) => !SECRET_HEADERS.includes(h.toLowerCase()), (h) => ({ message: `"${h}" carries credentials and is never revealed (${SECRET_HEADERS.join(", ")} are refused)` })),
        ),
        mcpArgs: z.boolean(),
      })
      .partial()
      .strict()
      .optional(),
    approvals: z
      .object({
        callback: fn("(request, signal) => boolean | { approved }").optional(),
        webhook: z.string().url("must be an http(s) URL").optional(),
        headers: z.record(z.string()).optional(),
        timeoutMs: z.number().int().positive().max(24 * 3600_000).optional(),
      })
      .strict()
      .optional(),
    llm: z.object({ providers: z.record(z.string().min(1)).optional() }).strict().optional(),
    mcp: z
      .object({
        servers: z.record(
          z.string().regex(/^\S+$/, "a server name is a word without spaces"),
          z.union([
            z.string().url().refine((u) => /^(https?|wss?):/i.test(u), "must be an http(s) or ws(s) URL, or { command, args? }"),
            z.object({ command: z.string().min(1), args: z.array(z.string()).optional() }).strict(),
          ]),
        ),
      })
      .strict()
      .optional(),
    gateways: z.array(GatewaySpecSchema).optional(),
    maxBodyBytes: z.number().int().positive().default(8 << 20),
    allowIpc: z.array(z.string().min(1)).default([]),
    allowResolved: fn("(host, ip) => boolean").optional(),
    resolver: fn("(hostname, { family }) => Promise<{ address, family }[]>").optional(),
    intercept: z.object({ fetch: z.boolean(), http: z.boolean(), net: z.boolean(), dial: z.boolean(), sdk: z.boolean(), worker: z.boolean(), dns: z.boolean(), dgram: z.boolean() }).partial().strict().default({}),
    sdkSearchPaths: z.array(z.string()).optional(),
  })
  .strict();

/**
 * GuardHandle is the installed guard. Events (typed by GuardEvents):
 * `decision`, `warning`, and from reloaders `reload` / `reloadError`.
 */
export interface GuardHandle extends EventEmitter<GuardEvents>, AsyncDisposable {
  readonly mode: GuardMode;
  /** The identity calls are made as (tags filled in from whois when given a MeshNode). */
  readonly principal: Principal;
  /** Resolves once the identity is known (a MeshNode's tags come from whois); calls made before see no tags. */
  readonly ready: Promise<void>;
  /** What was instrumented, e.g. ["fetch", "http", "net", "dial", "openai (esm)"]. */
  readonly instrumented: readonly string[];
  /** The evaluator in force (undefined: every call is denied). */
  readonly policy: Evaluator | undefined;
  /** setPolicy swaps the evaluator atomically (reloaders call it); undefined denies everything. */
  setPolicy(policy: Evaluator | undefined): void;
  /** instrument patches an SDK class the guard did not find by itself (an openai/Anthropic client class, the MCP Client or an MCP transport class). */
  instrument(cls: { prototype: object }): boolean;
  /**
   * registerMcpServer names the MCP server behind one connection — an MCP
   * `Client` or a Transport — for `mcp` rules' `server`, when the
   * `mcp.servers` option cannot (an in-memory or custom transport). The
   * name holds for the endpoint the transport had when registered.
   */
  registerMcpServer(name: string, connection: object): void;
  /**
   * registerGateway registers an AI gateway (as the `gateways` option
   * does): calls to its MCP endpoint and connector prefix are judged from
   * now on as the gateway judges them. `await gatewayLayout(url)` gives
   * the registration from the gateway itself.
   */
  registerGateway(gateway: GatewaySpec): void;
  /**
   * close removes every interception; the process's calls are no longer
   * checked and another guard may be installed. Idempotent. `await using`
   * calls it too.
   */
  close(): Promise<void>;
  /** uninstall is close, synchronously (the interceptions are gone when it returns). */
  uninstall(): void;
}

/**
 * installGuard installs enforcement for the whole process and returns its
 * handle. A denied call throws (or emits) PolicyDeniedError and nothing of
 * it reaches the network. One guard per process: close the previous one
 * first (a second copy of meshguard in the process shares it too).
 */
export function installGuard(options: GuardOptions): GuardHandle {
  const o = parseWith(GuardOptionsSchema, options, "installGuard options");
  const events = new EventEmitter<GuardEvents>();
  const identity = o.identity as GuardOptions["identity"];
  const isNode = !Array.isArray((identity as Principal).tags);
  const principal: Principal = isNode ? { node: (identity as { hostname: string }).hostname, tags: [] } : { ...(identity as Principal), tags: [...(identity as Principal).tags] };
  const audit = o.audit as AuditSink | undefined;
  const core = new GuardCore(
    {
      evaluator: o.policy as Evaluator | undefined,
      principal,
      mode: o.mode,
      audit,
      sampleAllows: o.sampleAllows,
      approvals: o.approvals as GuardOptions["approvals"],
      reveal: o.reveal,
      llmProviders: o.llm?.providers ?? {},
      maxBodyBytes: o.maxBodyBytes,
      allowIpc: o.allowIpc,
      allowResolved: o.allowResolved as GuardOptions["allowResolved"],
      resolver: o.resolver as Resolver | undefined,
    },
    events,
  );

  // Checked (and a duplicate address refused) before anything is installed.
  registerGateways(core, (o.gateways ?? []).map((g, i) => parseGateway(g, `installGuard options: gateways.${i}`)));

  // One guard per process, whichever copy of meshguard installed it: a second copy installs nothing.
  const slot = current() === undefined ? claimProcess() : undefined;
  if (slot === undefined) {
    throw new MeshguardError(ErrorCode.GUARD_ALREADY_INSTALLED, "installGuard: a guard is already installed in this process", { hint: "close() the existing guard's handle first" });
  }
  configureMcp(core, o.mcp?.servers ?? {});

  const on = (k: keyof typeof o.intercept) => o.intercept[k] !== false;
  const instrumented: string[] = [];
  const undo: (() => void)[] = [];
  let workers: WorkerHub | undefined;
  try {
    if (on("net")) {
      installNetPatch();
      undo.push(uninstallNetPatch);
      instrumented.push("net");
    }
    if (on("dns")) {
      installDnsPatch();
      undo.push(uninstallDnsPatch);
      instrumented.push("dns");
    }
    if (on("dgram")) {
      installDgramPatch();
      undo.push(uninstallDgramPatch);
      instrumented.push("dgram");
    }
    if (on("http")) {
      installHttpPatch();
      undo.push(uninstallHttpPatch);
      instrumented.push("http");
    }
    if (on("fetch")) {
      installUndici();
      undo.push(uninstallUndici);
      instrumented.push("fetch");
    }
    if (on("dial")) {
      dc.subscribe(DIAL_CHANNEL, onDial);
      dc.subscribe(CONNECTION_CHANNEL, onConnection);
      undo.push(() => {
        dc.unsubscribe(DIAL_CHANNEL, onDial);
        dc.unsubscribe(CONNECTION_CHANNEL, onConnection);
        tracker.clear();
        judgedDials.clear();
      });
      instrumented.push("dial");
    }
    if (on("sdk")) {
      undo.push(unpatchSdks);
      const dirs = o.sdkSearchPaths ?? [process.cwd(), ...(process.argv[1] ? [dirname(process.argv[1])] : [])];
      instrumented.push(...instrumentInstalledSdks(dirs, (e) => core.warn(e)));
    }
    if (on("worker")) {
      const hub = guardWorkers(core, events, { audit, intercept: o.intercept, sdkSearchPaths: o.sdkSearchPaths });
      workers = hub;
      undo.push(() => hub.close());
      instrumented.push("worker");
    }
  } catch (err) {
    for (const u of undo.reverse()) u();
    releaseProcess(slot);
    throw new MeshguardError(ErrorCode.INTERNAL, `installGuard: could not intercept: ${(err as Error).message}`, { cause: err });
  }
  setCurrent(core);
  // A node's control socket asks the guard in force (status, policy explain).
  undo.push(subscribeInspect());

  const ready = isNode ? learnIdentity(identity as { ips: readonly string[]; whois(a: string): Promise<{ node: { tags: string[] }; user: { login: string }; tagged: boolean }> }, core) : Promise.resolve();
  // Workers started before whois answered get the tags now.
  if (isNode) void ready.then(() => workers?.setPrincipal(core.principal));
  let uninstalled = false;
  const uninstall = () => {
    if (uninstalled) return;
    uninstalled = true;
    if (current() === core) setCurrent(undefined);
    for (const u of undo.reverse()) u();
    releaseProcess(slot);
  };
  // defineProperties, not Object.assign: assign would copy the getters' values once.
  const handle = Object.defineProperties(events, {
    mode: { value: o.mode, enumerable: true },
    principal: { get: () => core.principal, enumerable: true },
    ready: { value: ready },
    instrumented: { value: instrumented, enumerable: true },
    policy: { get: () => core.evaluator },
    setPolicy: {
      value: (p: Evaluator | undefined) => {
        core.evaluator = p;
        // Nothing allowed (or refused) under the old policy is reused under the new one.
        forgetSdkDecisions();
        workers?.setPolicy(p);
        // Open raw connections (tailnet and host) are judged again: one the new policy denies is closed now.
        if (current() === core) {
          tracker.recheck(core);
          hostConnections.recheck(core);
        }
      },
    },
    instrument: { value: (cls: { prototype: object }) => instrumentSdkClass(cls) },
    registerMcpServer: { value: (name: string, connection: object) => registerMcpServer(core, name, connection) },
    registerGateway: { value: (gateway: GatewaySpec) => registerGateways(core, [parseGateway(gateway, "registerGateway")]) },
    uninstall: { value: uninstall },
    close: {
      value: () => {
        uninstall();
        return Promise.resolve();
      },
    },
    [Symbol.asyncDispose]: {
      value: () => {
        uninstall();
        return Promise.resolve();
      },
    },
  }) as GuardHandle;
  return handle;
}

/** A MeshNode's tags (and owning user) come from the tailnet: whois of its own address. */
async function learnIdentity(node: { ips: readonly string[]; whois(a: string): Promise<{ node: { tags: string[] }; user: { login: string }; tagged: boolean }> }, core: GuardCore): Promise<void> {
  const ip = node.ips[0];
  if (ip === undefined) return;
  try {
    const w = await node.whois(ip);
    const p: Principal = { ...core.principal, tags: [...w.node.tags] };
    if (!w.tagged && w.user.login) p.user = w.user.login;
    core.principal = p;
  } catch (err) {
    core.warn(new MeshguardError(ErrorCode.WHOIS_NOT_FOUND, `installGuard: could not read this node's own tags (calls are judged without them): ${(err as Error).message}`, { cause: err }));
  }
}

/**
 * onDial is the guard's subscriber on the tailnet dial channel (MeshNode.dial
 * of this or any other copy of meshguard in the process). It never throws:
 * diagnostics_channel would report the throw as an uncaught exception and
 * the dial would go ahead, so a failure to judge is a deny.
 */
function onDial(msg: unknown): void {
  let deny: ((err: unknown) => void) | undefined;
  let hold: ((p: Promise<unknown>) => void) | undefined;
  try {
    const verdict = (msg as { verdict?: unknown } | null)?.verdict as { deny?: unknown; hold?: unknown } | undefined;
    // Not a DialMessage (something else published on the name): nothing to judge or deny.
    if (typeof verdict?.deny !== "function") return;
    const v = verdict;
    deny = (err) => (v.deny as (e: unknown) => void).call(v, err);
    hold = typeof v.hold === "function" ? (p) => (v.hold as (p: unknown) => void).call(v, p) : undefined;
  } catch (err) {
    current()?.warn(err);
    return;
  }
  try {
    if (isInternalDial()) return; // the guard's own call (a policy server poll)
    const m = msg as DialMessage;
    const held = dialVerdict(m.node, m.host, m.port);
    if (held !== undefined) {
      if (hold === undefined) throw new Error("the dial message has no hold()");
      hold(held);
    }
  } catch (err) {
    try {
      deny(err);
    } catch (e) {
      // a verdict that cannot even be denied is not the guard's to rescue; say so
      current()?.warn(e);
    }
  }
}

/** The tailnet connections this process's guard let MeshNode.dial open (see ./revoke.ts). */
const tracker = new ConnectionTracker();

/**
 * Dials the guard judged as tailnet TCP and allowed, by node|host|port, until
 * their connection is announced: only those are followed (MeshNode.fetch's
 * connections belong to HTTP requests, each judged on its own).
 */
const judgedDials = new Map<string, { count: number; target: TcpTarget }>();
const dialKey = (node: { hostname?: string }, host: string, port: number) => `${String(node?.hostname)}|${normalizeHost(host)}|${port}`;

function noteJudged(node: { hostname?: string }, host: string, port: number, target: TcpTarget): void {
  const k = dialKey(node, host, port);
  // A dial that then failed leaves its entry behind: keep the table bounded.
  if (judgedDials.size >= 1024 && !judgedDials.has(k)) judgedDials.delete(judgedDials.keys().next().value!);
  const e = judgedDials.get(k);
  if (e) {
    e.count++;
    e.target = target;
  } else judgedDials.set(k, { count: 1, target });
}

/** onConnection follows an open connection whose dial the guard allowed. Never throws. */
function onConnection(msg: unknown): void {
  try {
    const m = msg as ConnectionMessage;
    if (typeof m?.socket?.destroy !== "function" || typeof m.host !== "string") return;
    const k = dialKey(m.node, m.host, m.port);
    const e = judgedDials.get(k);
    if (e === undefined) return;
    if (--e.count <= 0) judgedDials.delete(k);
    tracker.add(m.socket, e.target);
  } catch (err) {
    current()?.warn(err);
  }
}

/**
 * dialVerdict judges MeshNode.dial; MeshNode.fetch's own connection is
 * attributed to its (already judged) request. The target names the peer
 * (name, tags) from the node's netmap.
 */
function dialVerdict(node: unknown, host: unknown, port: unknown): undefined | Promise<void> {
  const core = current();
  if (core === undefined) return undefined;
  if (typeof host !== "string" || host === "" || typeof port !== "number" || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw new PolicyDeniedError({ kind: "tcp", tls: false, host: typeof host === "string" ? host : "(unreadable)", port: typeof port === "number" ? port : 0, tailnet: true }, "a tailnet dial to a host or port the guard cannot read is refused");
  }
  const h = normalizeHost(host);
  // The connection undici (MeshNode.fetch) just announced for a request the guard allowed: that request was judged.
  if (takeUndiciConnect(h, port)) return undefined;
  const who = (typeof node === "object" && node !== null ? node : {}) as { hostname?: string };
  const decide = (peers: Map<string, PeerInfo> | undefined): undefined | Promise<void> => {
    const t: TcpTarget = { kind: "tcp", tls: false, host: h, port, tailnet: true };
    const peer = peers?.get(h);
    if (peer !== undefined) t.peer = peer;
    const v = core.check(t, "dial");
    if (v === undefined) {
      noteJudged(who, host, port, t);
      return undefined;
    }
    if (v instanceof PolicyDeniedError) throw v;
    return v.then(() => noteJudged(who, host, port, t));
  };
  const table = typeof node === "object" && node !== null ? peerTable(node) : undefined;
  if (table instanceof Promise) return table.then((m) => decide(m));
  return decide(table);
}
