// A real PostgreSQL for the tests and the bench, from Debian's `postgresql`
// package, started and stopped by the tests themselves:
//
//   - findPostgres() looks for the server binaries (/usr/lib/postgresql/*/bin,
//     newest first; MESHGUARD_PG_BIN overrides);
//   - installPostgres() runs `apt-get update && apt-get install -y postgresql`
//     (root only, and only outside the tests' network namespace, which has
//     no network: `npm test` runs `node test/gateway/pg-server.ts install`
//     before entering it);
//   - startPostgres() runs initdb into a fresh temporary directory and starts
//     a server on 127.0.0.1 on a free port (its unix socket in that
//     directory), with a superuser whose password is random (so the URL the
//     tests pass carries a password, as a real one does); stop() ends it and
//     removes the directory, and so does the exit of this process (and, by
//     the parent-death signal, its SIGKILL).
//
// initdb and postgres refuse to run as root: as root they run as the
// `postgres` system user the Debian package creates (setpriv), owning the
// temporary directory.
//
// This file imports only node: built-ins, `pg` and bench/lib/apt.mjs, so Node runs it as is:
//   node test/gateway/pg-server.ts install
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { aptInstall } from "../../bench/lib/apt.mjs";

const progress = (m: string) => process.stderr.write(`[pg-server] ${m}\n`);

export interface PostgresBinaries {
  bin: string;
  version: string;
}

/** The newest installed PostgreSQL server binaries, or undefined. */
export function findPostgres(): PostgresBinaries | undefined {
  const override = process.env.MESHGUARD_PG_BIN;
  if (override) return existsSync(join(override, "postgres")) ? { bin: override, version: "custom" } : undefined;
  const root = "/usr/lib/postgresql";
  if (!existsSync(root)) return undefined;
  const versions = readdirSync(root)
    .filter((v) => existsSync(join(root, v, "bin", "postgres")) && existsSync(join(root, v, "bin", "initdb")))
    .sort((a, b) => Number.parseFloat(b) - Number.parseFloat(a));
  return versions[0] === undefined ? undefined : { bin: join(root, versions[0], "bin"), version: versions[0] };
}

const isRoot = () => typeof process.getuid === "function" && process.getuid() === 0;
const inNetns = () => process.env.MESHGUARD_NETNS === "1";

/** installPostgres installs Debian's postgresql when it is missing; returns the binaries, or why there are none. */
export function installPostgres(): PostgresBinaries | { skip: string } {
  const found = findPostgres();
  if (found) return found;
  if (!isRoot()) return { skip: "PostgreSQL is not installed and this process is not root: install Debian's postgresql (apt-get install postgresql) to run the PostgreSQL store tests" };
  if (inNetns()) return { skip: "PostgreSQL is not installed, and this network namespace has no network to install it: run `node test/gateway/pg-server.ts install` (npm test does) first" };
  progress("PostgreSQL is not installed: apt-get update && apt-get install -y postgresql (a minute or two)");
  const failed = aptInstall("postgresql", { update: "first" });
  if (failed) return { skip: `${failed}: install Debian's postgresql by hand` };
  const after = findPostgres();
  return after ?? { skip: "apt-get installed postgresql, but no server binaries are under /usr/lib/postgresql/*/bin" };
}

/** Why the PostgreSQL tests cannot run here, or undefined when they can (binaries installed, or installable now). */
export function postgresUnavailable(): string | undefined {
  if (findPostgres()) return undefined;
  const r = installPostgres();
  return "skip" in r ? r.skip : undefined;
}

export interface PgServer {
  readonly port: number;
  readonly user: string;
  readonly password: string;
  readonly version: string;
  /** The server's binaries (pg_dump, psql, ...). */
  readonly bin: string;
  /** The data directory (its files hold every table and the WAL). */
  readonly dataDir: string;
  /** The connection URL of `database` (default "postgres"), password included. */
  url(database?: string): string;
  /** Creates a database (a fresh name when none is given) and returns its URL. */
  createDatabase(name?: string): Promise<string>;
  /** Runs one SQL statement as the superuser on `database`. */
  sql<R extends Record<string, unknown> = Record<string, unknown>>(database: string, text: string, params?: unknown[]): Promise<R[]>;
  /** Stops the server and removes its directory. Idempotent. */
  stop(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

export interface StartOptions {
  /** Extra server settings (`-c name=value`). */
  settings?: Record<string, string | number>;
}

/** The uid and gid of a system user, from /etc/passwd. */
function userIds(name: string): { uid: number; gid: number } {
  const line = readFileSync("/etc/passwd", "utf8")
    .split("\n")
    .find((l) => l.startsWith(`${name}:`));
  if (!line) throw new Error(`there is no "${name}" system user to run PostgreSQL as (the postgresql package creates it)`);
  const f = line.split(":");
  return { uid: Number(f[2]), gid: Number(f[3]) };
}

/** A command run as the postgres user when this process is root (initdb and postgres refuse root), with SIGINT (fast shutdown) when this process dies. */
function asServerUser(cmd: string, args: string[]): [string, string[]] {
  const base = ["--pdeathsig", "SIGINT"];
  if (isRoot()) return ["setpriv", ["--reuid=postgres", "--regid=postgres", "--init-groups", ...base, "--", cmd, ...args]];
  return ["setpriv", [...base, "--", cmd, ...args]];
}

async function freePort(): Promise<number> {
  return await new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/** Every server this process started and has not stopped: ended when it exits, however it exits. */
const running = new Set<{ child: ChildProcess; dir: string }>();
let exitHook = false;
function onExit(): void {
  if (exitHook) return;
  exitHook = true;
  process.once("exit", () => {
    for (const r of running) {
      r.child.kill("SIGKILL");
      rmSync(r.dir, { recursive: true, force: true });
    }
  });
}

/**
 * Removes the directories of servers whose process was SIGKILLed (the
 * server itself got its parent-death signal and stopped; nothing could
 * remove its directory): those an hour old with no live postmaster.
 */
function sweepLeftovers(): void {
  for (const name of readdirSync(tmpdir()).filter((n) => n.startsWith(PREFIX))) {
    const dir = join(tmpdir(), name);
    try {
      if (Date.now() - statSync(dir).mtimeMs < 3_600_000) continue;
      const pidFile = join(dir, "data", "postmaster.pid");
      const pid = existsSync(pidFile) ? Number(readFileSync(pidFile, "utf8").split("\n")[0]) : 0;
      if (pid > 0 && alive(pid)) continue;
      rmSync(dir, { recursive: true, force: true });
    } catch {
      // another process's directory, going away meanwhile: not ours to worry about
    }
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

const PREFIX = "mg-pg-";

/** startPostgres initialises and starts a fresh server; see the module comment. */
export async function startPostgres(opts: StartOptions = {}): Promise<PgServer> {
  const found = installPostgres();
  if ("skip" in found) throw new Error(found.skip);
  sweepLeftovers();
  const dir = mkdtempSync(join(tmpdir(), PREFIX));
  const data = join(dir, "data");
  const user = "meshguard";
  const password = randomBytes(18).toString("base64url");
  const pwfile = join(dir, "pw");
  writeFileSync(pwfile, `${password}\n`, { mode: 0o600 });
  if (isRoot()) {
    const { uid, gid } = userIds("postgres");
    chownSync(dir, uid, gid);
    chownSync(pwfile, uid, gid);
  }
  try {
    const t0 = performance.now();
    const [cmd, args] = asServerUser(join(found.bin, "initdb"), [
      "-D", data, "-U", user, `--pwfile=${pwfile}`, "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions",
    ]);
    const init = spawnSync(cmd, args, { encoding: "utf8" });
    if (init.status !== 0) throw new Error(`initdb failed (exit ${init.status ?? init.signal}): ${init.stderr || init.stdout}`);
    rmSync(pwfile);
    for (let attempt = 1; ; attempt++) {
      const port = await freePort();
      try {
        const child = await launch(found.bin, data, dir, port, opts.settings ?? {});
        const entry = { child, dir };
        running.add(entry);
        onExit();
        progress(`PostgreSQL ${found.version} on 127.0.0.1:${port} (${Math.round(performance.now() - t0)} ms)`);
        return server(entry, port, user, password, found);
      } catch (err) {
        // Another process took the free port in between: try another.
        if (attempt < 3 && /could not bind|could not create any TCP\/IP sockets/.test(String(err))) continue;
        throw err;
      }
    }
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}

/** Starts postgres and resolves once it accepts connections; rejects with its log when it exits first. */
async function launch(bin: string, data: string, dir: string, port: number, settings: Record<string, string | number>): Promise<ChildProcess> {
  const all: Record<string, string | number> = { listen_addresses: "127.0.0.1", port, unix_socket_directories: dir, max_connections: 200, ...settings };
  const [cmd, args] = asServerUser(join(bin, "postgres"), ["-D", data, ...Object.entries(all).flatMap(([k, v]) => ["-c", `${k}=${v}`])]);
  const child = spawn(cmd, args, { stdio: ["ignore", "ignore", "pipe"] });
  let log = "";
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`PostgreSQL did not start within 30 s: ${log}`));
    }, 30_000);
    child.stderr!.on("data", (d: Buffer) => {
      log += d.toString();
      if (log.includes("ready to accept connections")) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once("exit", (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`PostgreSQL exited (${code ?? signal}) before accepting connections: ${log}`));
    });
  });
  // Keep draining its log, or a full pipe would stall the server.
  child.stderr!.resume();
  return child;
}

function server(entry: { child: ChildProcess; dir: string }, port: number, user: string, password: string, found: PostgresBinaries): PgServer {
  let dbs = 0;
  let stopping: Promise<void> | undefined;
  const url = (database = "postgres") => `postgres://${user}:${encodeURIComponent(password)}@127.0.0.1:${port}/${database}`;
  async function sql<R extends Record<string, unknown>>(database: string, text: string, params: unknown[] = []): Promise<R[]> {
    const c = new pg.Client({ connectionString: url(database) });
    await c.connect();
    try {
      return (await c.query(text, params)).rows as R[];
    } finally {
      await c.end();
    }
  }
  async function stop(): Promise<void> {
    const { child, dir } = entry;
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGINT"); // fast shutdown: ends sessions, no wait for clients
      const killer = setTimeout(() => child.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(killer);
    }
    running.delete(entry);
    rmSync(dir, { recursive: true, force: true });
  }
  return {
    port,
    user,
    password,
    version: found.version,
    bin: found.bin,
    dataDir: join(entry.dir, "data"),
    url,
    sql,
    async createDatabase(name) {
      const db = name ?? `mg_${process.pid}_${++dbs}`;
      if (!/^[a-z_][a-z0-9_]*$/.test(db)) throw new Error(`createDatabase: ${JSON.stringify(db)} is not a plain lower-case name`);
      await sql("postgres", `CREATE DATABASE ${db} ENCODING 'UTF8' TEMPLATE template0`);
      return url(db);
    },
    stop: () => (stopping ??= stop()),
    [Symbol.asyncDispose]: () => (stopping ??= stop()),
  };
}

if (import.meta.main) {
  const [cmd] = process.argv.slice(2);
  if (cmd === "install") {
    const r = installPostgres();
    if ("skip" in r) {
      progress(`skipped: ${r.skip}`);
    } else progress(`PostgreSQL ${r.version} at ${r.bin}`);
  } else if (cmd === "start") {
    // For trying things by hand: start one, print its URL, stop on Ctrl-C.
    const s = await startPostgres();
    process.stdout.write(`${await s.createDatabase("meshguard")}\n`);
    process.once("SIGINT", () => void s.stop().then(() => process.exit(0)));
  } else {
    process.stderr.write("usage: node test/gateway/pg-server.ts install|start\n");
    process.exitCode = 2;
  }
}
