/**
 * startDatabaseGateway: the database gateway as a library call. It reads
 * the config, the upstream password and the policy (any of them wrong: the
 * start fails with the reason), joins the tailnet (or uses the node it is
 * given), listens on a tailnet port, and speaks the PostgreSQL wire protocol
 * in front of the upstream server, one upstream connection per client
 * connection (./session.ts). close() stops listening, ends every session and
 * closes the node if it started it.
 */

import { EventEmitter } from "node:events";
import net from "node:net";
import { PolicyHolder, readPolicyFile } from "../distribution/holder.js";
import { watchPolicyFile, type FileReloader } from "../distribution/reload.js";
import { ErrorCode, MeshguardError } from "../errors.js";
import type { ApprovalOptions } from "../guard/types.js";
import { MeshNode } from "../node.js";
import { createAuditor, type AuditSink, type Auditor } from "../policy/audit.js";
import type { DecisionEvent } from "../policy/event.js";
import type { Policy } from "../policy/load.js";
import { jsonLinesSink } from "../policy/sinks.js";
import { sqlParserReady } from "../policy/sql.js";
import { loadDatabaseGatewayConfig, readSecret, validateDatabaseGatewayConfig, type DatabaseGatewayConfig, type DatabaseGatewayConfigInput } from "./config.js";
import { DecisionBatch, DecisionCache } from "./decisions.js";
import { DbSession, type SessionContext } from "./session.js";

export interface DatabaseGatewayOptions {
  /** A config file path (HuJSON), or the config as an object (relative paths against `baseDir`). */
  config: string | DatabaseGatewayConfigInput;
  /** Where relative paths of an object config point from (default: the working directory). */
  baseDir?: string;
  /** Use this node (the gateway does not close it). Else a node is started from `tailnet` or the config's `tailnet`. */
  node?: MeshNode;
  /** Start a node with these settings (overrides the config's `tailnet`). */
  tailnet?: { controlUrl: string; authKey?: string; hostname?: string; dir?: string; ephemeral?: boolean };
  /** Approvals as the guard takes them (a callback is possible here, not in a file); overrides the config's. */
  approvals?: ApprovalOptions;
  /** Where decision events go, besides the `decision` event (overrides the config's `audit.file`). */
  audit?: AuditSink;
  /** The environment the upstream password and auth key are read from (default process.env). */
  env?: NodeJS.ProcessEnv;
  /** Reports what goes wrong off the statement path (a policy reload, a server version the parser does not speak). */
  onWarning?: (err: Error) => void;
  /** Reports start-up steps. */
  onProgress?: (message: string) => void;
}

export interface DatabaseGatewayHandle extends AsyncDisposable {
  /** "postgres://db-gateway:5432": the gateway by MagicDNS name (add the database and, for libpq, any user name). */
  readonly url: string;
  /** The tailnet address: host (first tailnet IP) and port. */
  readonly host: string;
  readonly port: number;
  readonly node: MeshNode;
  readonly config: DatabaseGatewayConfig;
  /** The policy in force. */
  readonly policy: Policy | undefined;
  /** "decision" (a DecisionEvent per statement judged), "warning", "reload". */
  readonly events: EventEmitter;
  /** Client connections open now. */
  readonly connections: number;
  /**
   * close drains the gateway: it stops accepting connections, lets each
   * session finish the statement it has in flight (an idle session ends at
   * once; its client gets FATAL 57P01, as from a PostgreSQL shutting down;
   * an open transaction block is rolled back), and after `timeoutMs`
   * (default: the config's `drainTimeoutMs`, 10 s) ends the sessions still
   * busy. Then it closes the audit sink (every decision recorded) and the
   * node if the gateway started it. Idempotent: a second call returns the
   * first's promise.
   */
  close(opts?: { timeoutMs?: number }): Promise<void>;
}

export async function startDatabaseGateway(opts: DatabaseGatewayOptions): Promise<DatabaseGatewayHandle> {
  const progress = opts.onProgress ?? (() => {});
  const events = new EventEmitter();
  const warn = (err: Error) => {
    if (opts.onWarning) opts.onWarning(err);
    else if (events.listenerCount("warning") > 0) events.emit("warning", err);
  };
  const env = opts.env ?? process.env;
  const cfg = typeof opts.config === "string" ? await loadDatabaseGatewayConfig(opts.config) : validateDatabaseGatewayConfig(opts.config, opts.baseDir ?? process.cwd());
  const password = cfg.upstream.password ? await readSecret(cfg.upstream.password, "the upstream database password", env) : undefined;
  const cleanup: Array<() => Promise<unknown>> = [];
  const undo = async () => {
    for (const f of cleanup.reverse()) await f().catch(() => {});
  };
  try {
    await sqlParserReady();
    const holder = new PolicyHolder();
    holder.current = await readPolicyFile(cfg.policy, "the database gateway's");
    progress(`policy ${cfg.policy} loaded (${holder.current.rules.length} rules)`);

    let auditor: Auditor | undefined;
    const sink = opts.audit ?? (cfg.audit ? jsonLinesSink(cfg.audit.file) : undefined);
    if (sink) {
      auditor = createAuditor({ sink, ...(cfg.audit?.sampleAllows !== undefined ? { sampleAllows: cfg.audit.sampleAllows } : {}), onError: warn });
      const a = auditor;
      cleanup.push(() => a.close());
    }

    let node = opts.node;
    const tn = opts.tailnet ?? (cfg.tailnet ? { ...cfg.tailnet, authKey: cfg.tailnet.authKey ? await readSecret(cfg.tailnet.authKey, "the tailnet auth key", env) : undefined } : undefined);
    if (node === undefined) {
      if (tn === undefined)
        throw new MeshguardError(ErrorCode.INVALID_OPTIONS, "startDatabaseGateway: nothing to listen on: give a node or tailnet settings (option or config \"tailnet\")", {
          hint: 'add "tailnet": { "controlUrl": ..., "authKey": { "env": "TS_AUTHKEY" } } to the config',
        });
      progress(`joining the tailnet at ${tn.controlUrl} as ${tn.hostname ?? "db-gateway"}`);
      node = await MeshNode.start({
        controlUrl: tn.controlUrl,
        hostname: tn.hostname ?? "db-gateway",
        ...(tn.authKey !== undefined ? { authKey: tn.authKey } : {}),
        ...(tn.dir !== undefined ? { dir: tn.dir } : {}),
        ephemeral: tn.ephemeral ?? false,
        onProgress: (ev) => progress(ev.message),
      });
      const n = node;
      cleanup.push(() => n.close());
    }
    const meshNode = node;

    const reloader: FileReloader = watchPolicyFile(holder, cfg.policy, { node: meshNode });
    cleanup.push(() => reloader.close());
    holder.on("reloadError", (err: Error) => warn(err));
    holder.on("warning", (err: Error) => {
      if ((err as MeshguardError).code !== ErrorCode.POLICY_FILE_UNPROTECTED) warn(err);
    });
    holder.on("reload", (ev) => events.emit("reload", ev));
    await reloader.ready;

    const reveal = cfg.audit?.revealSql ? { sql: true } : undefined;
    const batch = new DecisionBatch(
      (ev: DecisionEvent) => {
        auditor?.record(ev);
        if (events.listenerCount("decision") > 0) events.emit("decision", ev);
      },
      reveal,
      warn,
    );
    // Whatever is still batched goes to the sinks before they close.
    cleanup.push(async () => batch.flush());
    let versionWarned = false;
    const ctx: SessionContext = {
      upstream: { host: cfg.upstream.host, port: cfg.upstream.port, user: cfg.upstream.user, password, ssl: cfg.upstream.ssl, connectTimeoutMs: cfg.upstream.connectTimeoutMs },
      policy: () => holder.current,
      approvals: opts.approvals ?? cfg.approvals,
      whois: (sock) => meshNode.whois(sock),
      recording: () => auditor !== undefined || events.listenerCount("decision") > 0,
      batch,
      decisions: new DecisionCache(),
      reveal,
      cancels: new Map(),
      warn: (err) => {
        // The server's version does not change between sessions: said once.
        if (/the SQL parser speaks/.test(err.message)) {
          if (versionWarned) return;
          versionWarned = true;
        }
        warn(err);
      },
    };

    const sessions = new Set<DbSession>();
    /** While closing: called when the last session has ended. */
    let allClosed: (() => void) | undefined;
    const srv = net.createServer((sock) => {
      const s = new DbSession(ctx, sock, () => {
        sessions.delete(s);
        if (sessions.size === 0) allClosed?.();
      });
      sessions.add(s);
    });
    await meshNode.listen(cfg.listen, srv);
    cleanup.push(
      () =>
        new Promise<void>((resolve) => {
          srv.close(() => resolve());
        }),
    );
    const url = `postgres://${meshNode.hostname}${cfg.listen === 5432 ? "" : `:${cfg.listen}`}`;
    progress(`listening on the tailnet at ${url} (${meshNode.ips[0] ?? "?"}:${cfg.listen}), upstream ${cfg.upstream.host}:${cfg.upstream.port} as ${cfg.upstream.user}`);

    let closing: Promise<void> | undefined;
    const close = (o: { timeoutMs?: number } = {}): Promise<void> =>
      (closing ??= (async () => {
        // Stop accepting, then let every session finish the statement it has in flight (bounded).
        await new Promise<void>((resolve) => srv.close(() => resolve()));
        if (sessions.size > 0) {
          await new Promise<void>((resolve) => {
            const timer = setTimeout(resolve, o.timeoutMs ?? cfg.drainTimeoutMs);
            allClosed = () => {
              clearTimeout(timer);
              resolve();
            };
            for (const s of [...sessions]) s.drain();
          });
        }
        allClosed = undefined;
        for (const s of [...sessions]) s.close();
        await undo();
      })());
    return {
      url,
      host: meshNode.ips[0] ?? "",
      port: cfg.listen,
      node: meshNode,
      config: cfg,
      get policy() {
        return holder.current;
      },
      events,
      get connections() {
        return sessions.size;
      },
      close,
      [Symbol.asyncDispose]: () => close(),
    };
  } catch (err) {
    await undo();
    throw err;
  }
}

