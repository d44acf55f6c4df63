/**
 * Where the SQLite store's log writes and reads run. The preferred place is
 * a worker thread with its own connection to the same file: log inserts and
 * their commits, WAL checkpoints (the only step that fsyncs under
 * synchronous=NORMAL, and that can take tens of milliseconds on a busy
 * disk), prunes, and the queries of the logs API (an admin listing sessions
 * over a large table) then never hold up the gateway's event loop. The
 * main connection keeps only what must be synchronous with a request:
 * bucket transactions. It leaves checkpointing to the thread.
 *
 * When no worker can be used (a ":memory:" database, a guard that refuses
 * workers, a worker that died), the inline runner does the same on the main
 * connection, with SQLite's automatic checkpoints.
 *
 * Reads see every committed write of either connection (WAL: each statement
 * outside a transaction reads the latest commit).
 */
import type { DatabaseSync, SQLInputValue, StatementSync } from "node:sqlite";
import { Worker } from "node:worker_threads";
import type { LogRow } from "./record.js";

export const INSERT_LOG_SQL = `INSERT OR IGNORE INTO logs (id, time, user, node, session_id, model, input_tokens, output_tokens, cost_usd, meta, request_headers, request_body, response_body)
  VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`;

/** How long the worker waits for another connection's write lock (it blocks only itself). */
const WORKER_BUSY_TIMEOUT_MS = 2_000;
/** How often the worker checkpoints the WAL into the database file (PASSIVE: never waits for readers or writers). */
const CHECKPOINT_EVERY_MS = 1_000;
/**
 * The worker's young generation, in MB. Left to V8, it doubles under a steady
 * stream of batches up to 64 MB semi-spaces (Node builds without pointer
 * compression), all of it resident; the worker keeps nothing between
 * batches, so a small one only means more, cheaper scavenges.
 */
const WORKER_YOUNG_GENERATION_MB = 8;
/**
 * How much nicer than the gateway's own thread the worker runs (Linux: the
 * nice value is per thread). The worker's inserts are never waited on by a
 * request, but they are CPU work (~80 µs a row at full retention): at the
 * same priority, a batch written while a request is in flight takes a core
 * from the gateway's event loop, the provider or the client on a machine
 * with few cores. A nicer worker yields to them and runs in their gaps; the
 * flush interval is still met unless the machine is saturated, in which
 * case the worker still gets its share (nice 10 is ~10 % of a contended
 * core, not nothing), and nothing is dropped: rows wait in the batcher.
 */
const WORKER_NICENESS = 10;

export type Row = Record<string, SQLInputValue>;

export interface SqlRunner {
  readonly kind: "worker" | "inline";
  /** Inserts log rows in one transaction, all or nothing. */
  writeLogs(rows: LogRow[]): Promise<void>;
  /** The rows of a query. */
  all(sql: string, params: SQLInputValue[]): Promise<Row[]>;
  /** Runs a statement; resolves to the number of rows it changed. */
  run(sql: string, params: SQLInputValue[]): Promise<number>;
  /** Stops the runner; the worker's connection is closed before this resolves. */
  close(): Promise<void>;
}

/** The insert parameters of a row, in INSERT_LOG_SQL's order. */
function rowParams(r: LogRow): SQLInputValue[] {
  return [r.id, r.time, r.user, r.node, r.sessionId, r.model, r.inputTokens, r.outputTokens, r.costUsd, r.meta, r.requestHeaders, r.requestBody, r.responseBody];
}

/** inlineRunner runs everything on `db`, the main connection; `stmt` is its statement cache. */
export function inlineRunner(db: DatabaseSync, stmt: (sql: string) => StatementSync): SqlRunner {
  return {
    kind: "inline",
    async writeLogs(rows) {
      const insert = stmt(INSERT_LOG_SQL);
      db.exec("BEGIN IMMEDIATE");
      try {
        for (const r of rows) insert.run(...rowParams(r));
        db.exec("COMMIT");
      } catch (err) {
        db.exec("ROLLBACK");
        throw err;
      }
    },
    async all(sql, params) {
      return stmt(sql).all(...params) as Row[];
    },
    async run(sql, params) {
      return Number(stmt(sql).run(...params).changes);
    },
    async close() {},
  };
}

// The worker's code: plain JavaScript importing nothing of ours, run with
// `eval: true`, so it needs no file of its own next to the bundled library.
const WORKER_SOURCE = `
const { parentPort, workerData } = process.getBuiltinModule("node:worker_threads");
const { DatabaseSync } = process.getBuiltinModule("node:sqlite");
// This thread's own nice value (see WORKER_NICENESS): Linux names a thread by its id, /proc/thread-self.
// Where that is not so (another OS, no /proc), the worker runs at the process's priority.
try {
  const os = process.getBuiltinModule("node:os");
  const tid = Number(process.getBuiltinModule("node:fs").readlinkSync("/proc/thread-self").split("/").pop());
  if (tid > 0 && tid !== process.pid) os.setPriority(tid, Math.min(19, os.getPriority(tid) + workerData.niceness));
} catch {}
const db = new DatabaseSync(workerData.path, { timeout: workerData.busyTimeoutMs });
db.exec("PRAGMA synchronous = NORMAL");
const stmts = new Map();
const stmt = (sql) => {
  let s = stmts.get(sql);
  if (!s) stmts.set(sql, (s = db.prepare(sql)));
  return s;
};
const checkpoint = setInterval(() => {
  try { db.exec("PRAGMA wal_checkpoint(PASSIVE)"); } catch {}
}, workerData.checkpointMs);
function handle(m) {
  switch (m.type) {
    case "write": {
      const insert = stmt(workerData.insertSql);
      db.exec("BEGIN IMMEDIATE");
      try {
        for (const params of m.rows) insert.run(...params);
        db.exec("COMMIT");
      } catch (err) {
        db.exec("ROLLBACK");
        throw err;
      }
      return undefined;
    }
    case "all":
      return stmt(m.sql).all(...m.params);
    case "run":
      return Number(stmt(m.sql).run(...m.params).changes);
  }
}
parentPort.on("message", (m) => {
  if (m.type === "close") {
    clearInterval(checkpoint);
    stmts.clear();
    db.close();
    parentPort.postMessage({ id: m.id });
    parentPort.close();
    return;
  }
  try {
    parentPort.postMessage({ id: m.id, result: handle(m) });
  } catch (err) {
    parentPort.postMessage({ id: m.id, error: String((err && err.message) || err) });
  }
});
parentPort.postMessage({ ready: true });
`;

interface Reply {
  id?: number;
  ready?: true;
  result?: unknown;
  error?: string;
}

type Message = { type: "write"; rows: SQLInputValue[][] } | { type: "all" | "run"; sql: string; params: SQLInputValue[] } | { type: "close" };

/**
 * workerRunner starts the worker on the database at `path`; it resolves to
 * undefined when a worker cannot be used here (the caller then runs
 * inline). `onExit` is told when the thread stops unasked.
 */
export async function workerRunner(path: string, onExit: (err: Error) => void): Promise<SqlRunner | undefined> {
  if (path === ":memory:") return undefined;
  let worker: Worker;
  try {
    worker = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: { path, insertSql: INSERT_LOG_SQL, checkpointMs: CHECKPOINT_EVERY_MS, busyTimeoutMs: WORKER_BUSY_TIMEOUT_MS, niceness: WORKER_NICENESS },
      resourceLimits: { maxYoungGenerationSizeMb: WORKER_YOUNG_GENERATION_MB },
    });
  } catch {
    // e.g. MESHGUARD_GUARD_WORKER_UNGUARDED: this process's guard starts no worker it cannot guard.
    return undefined;
  }
  const ready = await new Promise<boolean>((resolve) => {
    worker.once("message", (m: Reply) => resolve(m.ready === true));
    worker.once("error", () => resolve(false));
    worker.once("exit", () => resolve(false));
  });
  if (!ready) {
    await worker.terminate();
    return undefined;
  }

  const waiting = new Map<number, { resolve(v: unknown): void; reject(err: Error): void }>();
  let nextId = 0;
  let closing = false;
  let dead: Error | undefined;
  worker.on("message", (m: Reply) => {
    const w = m.id === undefined ? undefined : waiting.get(m.id);
    if (!w) return;
    waiting.delete(m.id!);
    if (waiting.size === 0) worker.unref();
    if (m.error === undefined) w.resolve(m.result);
    else w.reject(new Error(m.error));
  });
  const fail = (err: Error) => {
    dead ??= err;
    for (const w of waiting.values()) w.reject(err);
    waiting.clear();
  };
  worker.on("error", fail);
  worker.on("exit", (code) => {
    const err = new Error(`the store's worker thread exited (code ${code})`);
    fail(err);
    if (!closing) onExit(err);
  });
  // An idle worker does not keep the process alive; one with work in flight does.
  worker.unref();

  const send = (msg: Message) =>
    new Promise<unknown>((resolve, reject) => {
      if (dead) return reject(dead);
      const id = nextId++;
      waiting.set(id, { resolve, reject });
      worker.ref();
      worker.postMessage({ ...msg, id });
    });

  return {
    kind: "worker",
    writeLogs: async (rows) => void (await send({ type: "write", rows: rows.map(rowParams) })),
    all: async (sql, params) => (await send({ type: "all", sql, params })) as Row[],
    run: async (sql, params) => (await send({ type: "run", sql, params })) as number,
    async close() {
      if (closing) return;
      closing = true;
      await send({ type: "close" }).catch(() => {});
      await worker.terminate();
    },
  };
}
