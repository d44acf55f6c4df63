/**
 * LocalControl: a headscale control server on 127.0.0.1 for development,
 * tests, the demo and the benchmarks, with typed wrappers over its CLI.
 *
 * Facts about headscale v0.29.2 this file relies on (checked against its
 * source and a running binary):
 * - the CLI talks gRPC over the unix socket when `cli.address` is empty;
 *   with `-o json` it prints protobuf messages with snake_case keys, omits
 *   zero values (`online: false` is absent, an empty list is `null`), turns
 *   off its logging, and prints a failure to stderr as `{"error": "..."}`
 *   with exit status 1;
 * - every config key can be overridden by a `HEADSCALE_*` variable (viper
 *   AutomaticEnv), so children get an environment without them;
 * - an auth key must be tagged or owned by a user (tags need no user); tags
 *   must start with `tag:` but need not exist in the policy when the key is made;
 * - `policy get` fails with "acl policy not found" until a policy is set;
 * - a policy that compiles to no filter rule at all makes it show revoked
 *   peers again on the next incremental update: every stored policy carries
 *   an anchor grant (anchor.ts, docs/revocation.md).
 */

import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { rmSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";

import { ErrorCode, MeshguardError } from "../errors.js";
import { progressReporter, type ProgressListener } from "../progress.js";
import { anchorPolicy, unanchorPolicy } from "./anchor.js";
import { ensureHeadscale } from "./build.js";
import { offlineConfig, type Layout } from "./config.js";
import { childEnv, freeTcpPort, freeUdpPort, httpOk, lastLines, runCommand, sleep } from "./proc.js";

export { HEADSCALE_VERSION, ensureHeadscale, headscaleCacheDir, type EnsureHeadscaleOptions } from "./build.js";

export interface LocalControlOptions {
  /** State directory (config, keys, SQLite). Default: a fresh temp dir that `close()` removes. A given dir is kept, so its tailnet persists. */
  dir?: string;
  /** headscale binary. Default: `ensureHeadscale()`. */
  binary?: string;
  /** Policy applied once the server is up: HuJSON text or a JSON object. Default: none (headscale then allows all). */
  policy?: string | object;
  /** Progress: ensureHeadscale's phases when it builds, then "starting" and "running". */
  onProgress?: ProgressListener;
  /** Every line headscale prints. */
  log?: (line: string) => void;
  /** headscale `log.level` (default "info"). */
  logLevel?: string;
  /** How long an ephemeral node may stay disconnected before removal (Go duration, > 65s; default "70s"). */
  ephemeralInactivityTimeout?: string;
  /** How long to wait for `/health` (default 20 s). */
  startTimeoutMs?: number;
}

/** ControlUser is a headscale user. */
export interface ControlUser {
  id: number;
  name: string;
  displayName?: string;
  email?: string;
}

export interface AuthKeyOptions {
  /** Owning user: a number is an id, a string a name. Optional for tagged keys. */
  user?: number | string;
  /** Tags the node gets (each `tag:...`). Tagged nodes have no owning user. */
  tags?: string[];
  reusable?: boolean;
  ephemeral?: boolean;
  /** Lifetime such as "30m", "24h", "90d" (headscale's default: "1h"). */
  expiration?: string;
  /**
   * false returns a key that headscale checks by plain comparison instead of
   * bcrypt: the key is kept in headscale's database (`db.sqlite` in the
   * state directory) as it is, in headscale's legacy plaintext column, which
   * v0.29 still accepts. headscale spends ~60 ms of CPU on bcrypt for every
   * node that registers with a hashed key (over half of its CPU time while
   * 100 nodes come up, docs/core.md); an unhashed key costs nothing. The
   * price: whoever can read the state directory can read the key (it already
   * holds headscale's private Noise and DERP keys, i.e. can impersonate the
   * control server). Default true (hashed, headscale's own format).
   */
  hashed?: boolean;
}

/** ControlNode is a node as the control server sees it. */
export interface ControlNode {
  id: number;
  /** Hostname the node reported. */
  name: string;
  /** Name in the tailnet (MagicDNS label). */
  givenName: string;
  ips: string[];
  tags: string[];
  /** Owning user's name; absent for tagged nodes. */
  user?: string;
  online: boolean;
  /** Whether the node registered with an ephemeral key (absent when unknown). */
  ephemeral?: boolean;
  lastSeen?: Date;
}

export interface RestartOptions {
  /** How headscale is stopped: "SIGTERM" (default) or "SIGKILL", as in a crash. */
  signal?: "SIGTERM" | "SIGKILL";
  /** How long it stays down before it is started again (default 0). */
  downMs?: number;
}

export interface ControlExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** True when `close()` asked for it. */
  expected: boolean;
}

const RECENT_LINES = 200;
// sun_path is 108 bytes on Linux (104 on macOS), including the NUL.
const MAX_SOCKET_PATH = 100;
const CLI_TIMEOUT_MS = 30_000;

/** A running headscale process and what we know about it. */
interface Launched {
  child: ChildProcess;
  /** Last output lines, oldest first. */
  recent: string[];
  exit: Promise<ControlExit>;
  /** Directories removed when the process is stopped or the parent exits. */
  cleanup: string[];
  stopRequested: boolean;
}

// One process-wide 'exit' hook kills every child still running, so headscale
// never outlives the process that started it. It must be synchronous. (A
// parent killed by an unhandled signal runs no hook; `meshguard dev` handles
// SIGINT/SIGTERM itself, and an interactive ^C reaches the whole process group.)
const live = new Set<Launched>();
let exitHookInstalled = false;
function track(proc: Launched): void {
  live.add(proc);
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on("exit", () => {
    for (const p of live) {
      try {
        p.child.kill("SIGKILL");
      } catch {
        /* already gone */
      }
      for (const d of p.cleanup) rmSync(d, { recursive: true, force: true });
    }
  });
}

/** What `launch` needs; kept by LocalControl so `restart` starts the same server again. */
interface LaunchSpec {
  binary: string;
  layout: Layout;
  url: string;
  cleanup: string[];
  timeoutMs: number;
  log: ((line: string) => void) | undefined;
}

/** launch spawns `headscale serve` and waits until `/health` answers. `recent` carries output across restarts. */
async function launch({ binary, layout, url, cleanup, timeoutMs, log }: LaunchSpec, recent: string[] = []): Promise<Launched> {
  const child = spawn(binary, ["serve", "-c", layout.configPath], {
    cwd: layout.dir,
    env: childEnv(),
    stdio: ["ignore", "pipe", "pipe"],
  });
  const onLine = (line: string): void => {
    recent.push(line);
    if (recent.length > RECENT_LINES) recent.shift();
    log?.(line);
  };
  createInterface({ input: child.stdout }).on("line", onLine);
  createInterface({ input: child.stderr }).on("line", onLine);

  let spawnError: Error | undefined;
  let exited: ControlExit | undefined;
  const proc: Launched = { child, recent, cleanup, stopRequested: false, exit: undefined as unknown as Promise<ControlExit> };
  proc.exit = new Promise<ControlExit>((resolve) => {
    const done = (code: number | null, signal: NodeJS.Signals | null): void => {
      exited = { code, signal, expected: proc.stopRequested };
      live.delete(proc);
      resolve(exited);
    };
    child.on("error", (err) => {
      spawnError = err;
      if (child.pid === undefined) done(null, null); // ENOENT/EACCES: no 'exit' follows
    });
    child.on("exit", done);
  });
  track(proc);

  const fail = async (why: string): Promise<never> => {
    if (!exited) {
      child.kill("SIGKILL");
      await proc.exit;
    }
    await sleep(20); // let readline deliver the last lines
    const tail = recent
      .slice(-20)
      .map((l) => `    ${l}`)
      .join("\n");
    throw new MeshguardError(ErrorCode.CONTROL_UNAVAILABLE, `headscale did not start: ${why}${tail ? `\n  last output:\n${tail}` : ""}`, {
      hint: cleanup.includes(layout.dir)
        ? "pass { dir } to keep the configuration and state for inspection, or { log } to see every line"
        : `its configuration is ${layout.configPath}`,
      ...(spawnError ? { cause: spawnError } : {}),
    });
  };

  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (exited) {
      await fail(spawnError ? `could not run ${binary}: ${spawnError.message}` : `it exited (${exited.signal ?? `code ${exited.code}`})`);
    }
    if (await httpOk(`${url}/health`, 1000)) return proc;
    if (Date.now() > deadline) await fail(`${url}/health did not answer within ${timeoutMs} ms`);
    await Promise.race([sleep(100), proc.exit]);
  }
}

/**
 * LocalControl is a running headscale on 127.0.0.1 with an offline
 * configuration, and typed wrappers over its CLI for users, auth keys,
 * policy and nodes.
 *
 * ```ts
 * await using control = await LocalControl.start();
 * const key = await control.createAuthKey({ tags: ["tag:agent"], ephemeral: true });
 * // start a node with controlURL: control.url, authKey: key
 * ```
 */
export class LocalControl implements AsyncDisposable {
  /** url is the control server URL (`http://127.0.0.1:PORT`); it also serves the embedded DERP. */
  readonly url: string;
  /** dir is the state directory (config, keys, SQLite). */
  readonly dir: string;
  /** configPath is headscale's config file: `headscale -c <configPath> nodes list` inspects the tailnet by hand. */
  readonly configPath: string;
  /** stunPort is the UDP port of the embedded STUN server. */
  readonly stunPort: number;

  readonly #spec: LaunchSpec;
  readonly #progress: (msg: string) => void;
  #proc: Launched;
  #stopping: Promise<void> | undefined;
  #restarting: Promise<void> | undefined;
  #seq = 0;

  private constructor(spec: LaunchSpec, stunPort: number, proc: Launched, progress: (msg: string) => void) {
    this.url = spec.url;
    this.dir = spec.layout.dir;
    this.configPath = spec.layout.configPath;
    this.stunPort = stunPort;
    this.#spec = spec;
    this.#progress = progress;
    this.#proc = proc;
  }

  /** pid is the process id of the running headscale (a new one after `restart`). */
  get pid(): number {
    return this.#proc.child.pid ?? -1;
  }

  /** start launches headscale and resolves once it answers `/health`. */
  static async start(opts: LocalControlOptions = {}): Promise<LocalControl> {
    const progress = progressReporter(opts.onProgress);
    // ensureHeadscale's events are re-stamped so elapsedMs counts from this start.
    const binary = opts.binary ?? (await ensureHeadscale({ onProgress: (ev) => progress(ev.phase, ev.message) }));
    const cleanup: string[] = [];
    let dir: string;
    if (opts.dir) {
      dir = opts.dir;
      await mkdir(dir, { recursive: true, mode: 0o700 });
    } else {
      dir = await mkdtemp(join(tmpdir(), "meshguard-hs-"));
      cleanup.push(dir);
    }
    let socketPath = join(dir, "headscale.sock");
    if (Buffer.byteLength(socketPath) > MAX_SOCKET_PATH) {
      const base = Buffer.byteLength(tmpdir()) < 60 ? tmpdir() : "/tmp";
      const sockDir = await mkdtemp(join(base, "mg-"));
      cleanup.push(sockDir);
      socketPath = join(sockDir, "hs.sock");
    }
    const layout: Layout = { dir, configPath: join(dir, "config.yaml"), socketPath };

    try {
      // The ports are free when picked but may be taken before headscale binds
      // them; a bind failure is retried with fresh ports.
      for (let attempt = 1; ; attempt++) {
        const ports = { http: await freeTcpPort(), grpc: await freeTcpPort(), stun: await freeUdpPort() };
        const url = `http://127.0.0.1:${ports.http}`;
        const config = offlineConfig(layout, {
          ...ports,
          logLevel: opts.logLevel ?? "info",
          ephemeral: opts.ephemeralInactivityTimeout ?? "70s",
        });
        await writeFile(layout.configPath, JSON.stringify(config, null, 2) + "\n", { mode: 0o600 });
        progress("starting", `starting headscale on ${url}...`);
        const spec: LaunchSpec = { binary, layout, url, cleanup, timeoutMs: opts.startTimeoutMs ?? 20_000, log: opts.log };
        let proc: Launched;
        try {
          proc = await launch(spec);
        } catch (err) {
          if (err instanceof MeshguardError && /address already in use/i.test(err.message) && attempt < 3) continue;
          throw err;
        }
        const control = new LocalControl(spec, ports.stun, proc, (msg) => progress("running", msg));
        try {
          if (opts.policy !== undefined) await control.setPolicy(opts.policy);
          else if (opts.dir) await control.#anchorStoredPolicy();
        } catch (err) {
          await control.close();
          throw err;
        }
        progress("running", `headscale is running on ${url} (pid ${control.pid})`);
        return control;
      }
    } catch (err) {
      for (const d of cleanup) await rm(d, { recursive: true, force: true });
      throw err;
    }
  }

  /** running is true while headscale is up: false once it exits, and during a restart. */
  get running(): boolean {
    return this.#proc.child.exitCode === null && this.#proc.child.signalCode === null;
  }

  /** recentOutput returns headscale's last output lines (at most 200), for diagnostics. */
  recentOutput(): string[] {
    return [...this.#proc.recent];
  }

  /**
   * waitForExit resolves when the running headscale exits, stopped or
   * crashed (lets `meshguard dev` notice a crash). A promise taken before a
   * `restart` resolves, with `expected: true`, when the old process exits.
   */
  waitForExit(): Promise<ControlExit> {
    return this.#proc.exit;
  }

  /**
   * restart stops headscale and starts it again on the same URL, ports,
   * configuration and state, as after a crash (`signal: "SIGKILL"`) or an
   * upgrade; it also brings back a headscale that exited by itself. Nodes reconnect by themselves after their own back-off (some
   * seconds); until then they keep their last netmap, and a policy change
   * reaches them only once they are back. Exported because what a
   * control-server restart does to sessions and revocation is behaviour
   * users depend on and tests must exercise (docs/revocation.md).
   * Fails with MESHGUARD_CONTROL_UNAVAILABLE when stopped, or when headscale
   * does not come back (its ports taken meanwhile, for one).
   */
  restart(opts: RestartOptions = {}): Promise<void> {
    if (this.#stopping) return Promise.reject(this.#notRunning());
    this.#restarting ??= (async () => {
      const old = this.#proc;
      old.stopRequested = true;
      if (old.child.exitCode === null && old.child.signalCode === null) {
        old.child.kill(opts.signal ?? "SIGTERM");
        const escalate = setTimeout(() => old.child.kill("SIGKILL"), 5000);
        await old.exit;
        clearTimeout(escalate);
      }
      if (opts.downMs) await sleep(opts.downMs);
      if (this.#stopping) throw this.#notRunning();
      this.#progress(`restarting headscale on ${this.url}...`);
      this.#proc = await launch(this.#spec, old.recent);
      await this.#anchorStoredPolicy();
    })().finally(() => {
      this.#restarting = undefined;
    });
    return this.#restarting;
  }

  /** createUser adds a user (names are unique). */
  async createUser(name: string, opts: { displayName?: string; email?: string } = {}): Promise<ControlUser> {
    const args = ["users", "create", name];
    if (opts.displayName) args.push("--display-name", opts.displayName);
    if (opts.email) args.push("--email", opts.email);
    return toUser(JSON.parse(await this.#cli(args)) as HsUser);
  }

  /** listUsers returns every user (`meshguard dev --dir` reuses an existing one). */
  async listUsers(): Promise<ControlUser[]> {
    return ((JSON.parse(await this.#cli(["users", "list"])) as HsUser[] | null) ?? []).map(toUser);
  }

  /**
   * createAuthKey returns a pre-auth key. A tagged key needs no user (its
   * nodes are owned by their tags); an untagged key needs one. A user given
   * by name is looked up.
   */
  async createAuthKey(opts: AuthKeyOptions): Promise<string> {
    const tags = opts.tags ?? [];
    if (opts.user === undefined && tags.length === 0) {
      throw new MeshguardError(ErrorCode.INVALID_OPTIONS, "createAuthKey: an auth key needs tags or a user", {
        hint: 'pass { tags: ["tag:agent"] } or { user: "name" }',
      });
    }
    const bad = tags.find((t) => !/^tag:[A-Za-z0-9][A-Za-z0-9_-]*$/.test(t));
    if (bad !== undefined) {
      throw new MeshguardError(ErrorCode.INVALID_OPTIONS, `createAuthKey: invalid tag ${JSON.stringify(bad)}`, {
        hint: 'a tag looks like "tag:agent" (letters, digits, "-" and "_" after "tag:")',
      });
    }
    const args = ["preauthkeys", "create"];
    if (opts.user !== undefined) args.push("--user", String(await this.#userId(opts.user)));
    if (tags.length > 0) args.push("--tags", tags.join(","));
    if (opts.reusable) args.push("--reusable");
    if (opts.ephemeral) args.push("--ephemeral");
    if (opts.expiration) args.push("--expiration", opts.expiration);
    const made = JSON.parse(await this.#cli(args)) as { key?: string; id?: number | string };
    if (!made.key) throw new MeshguardError(ErrorCode.CONTROL_COMMAND_FAILED, "headscale preauthkeys create printed no key");
    if (opts.hashed === false) return this.#unhashedKey(made.key, Number(made.id));
    return made.key;
  }

  /**
   * #unhashedKey gives the key headscale just made (id, `hskey-auth-PREFIX-…`)
   * a second, legacy form: 48 random hex digits in the row's plaintext `key`
   * column, which headscale v0.29 looks up by equality (no bcrypt) for any key
   * without the `hskey-auth-` prefix. Same row, so the same tags, user,
   * expiry, reuse and ephemerality; the hashed form keeps working. Anything
   * unexpected (no such row, a legacy key already set, no node:sqlite) fails:
   * no key is returned that headscale might not accept.
   */
  async #unhashedKey(hashedKey: string, id: number): Promise<string> {
    const prefix = /^hskey-auth-([A-Za-z0-9_-]{12})-/.exec(hashedKey)?.[1];
    if (!Number.isSafeInteger(id) || id <= 0 || prefix === undefined) {
      throw new MeshguardError(ErrorCode.CONTROL_COMMAND_FAILED, "createAuthKey({ hashed: false }): headscale printed a key this version of meshguard does not know (expected hskey-auth-PREFIX-SECRET and an id)");
    }
    let sqlite: typeof import("node:sqlite");
    try {
      sqlite = await import("node:sqlite");
    } catch (err) {
      throw new MeshguardError(ErrorCode.CONTROL_COMMAND_FAILED, "createAuthKey({ hashed: false }) needs node:sqlite (Node 22.13 or later)", { cause: err });
    }
    const plain = randomBytes(24).toString("hex");
    const db = new sqlite.DatabaseSync(join(this.dir, "db.sqlite"));
    try {
      db.exec("PRAGMA busy_timeout = 15000");
      const r = db.prepare("UPDATE pre_auth_keys SET key = ? WHERE id = ? AND prefix = ? AND (key IS NULL OR key = '')").run(plain, id, prefix);
      if (r.changes !== 1) throw new MeshguardError(ErrorCode.CONTROL_COMMAND_FAILED, `createAuthKey({ hashed: false }): pre-auth key ${id} not found in headscale's database`);
    } finally {
      db.close();
    }
    return plain;
  }

  async #userId(user: number | string): Promise<number> {
    if (typeof user === "number") {
      if (!Number.isSafeInteger(user) || user <= 0) {
        throw new MeshguardError(ErrorCode.INVALID_OPTIONS, `createAuthKey: invalid user id ${user}`);
      }
      return user;
    }
    const found = (JSON.parse(await this.#cli(["users", "list", "--name", user])) as HsUser[] | null) ?? [];
    const match = found.find((u) => u.name === user);
    if (!match) {
      throw new MeshguardError(ErrorCode.INVALID_OPTIONS, `createAuthKey: no user named ${JSON.stringify(user)} on the control server`, {
        hint: "create it first with createUser()",
      });
    }
    return match.id;
  }

  /**
   * setPolicy replaces the tailnet policy. A string is sent as is (HuJSON:
   * comments and trailing commas allowed, stored verbatim plus a final
   * newline), an object as JSON.
   * A refusal throws MESHGUARD_CONTROL_POLICY_REJECTED with headscale's reason.
   */
  async setPolicy(policy: string | object): Promise<void> {
    await this.#withPolicyFile(typeof policy === "string" ? policy : JSON.stringify(policy, null, 2), "set", "rejected");
  }

  /**
   * checkPolicy validates a policy against the live users and nodes,
   * running its `tests`, without applying it; throws like `setPolicy`.
   * (Exported because policy tooling wants validation without side effects.)
   */
  async checkPolicy(policy: string | object): Promise<void> {
    await this.#withPolicyFile(typeof policy === "string" ? policy : JSON.stringify(policy, null, 2), "check", "refused");
  }

  /**
   * #anchorStoredPolicy adds the anchor grant to a stored policy that lacks
   * it: one kept from an earlier run in `dir`, or set with headscale's own
   * CLI. Without it a revocation may not hold (anchor.ts). A stored policy
   * headscale now refuses (it only warns at boot) is left as it is.
   */
  async #anchorStoredPolicy(): Promise<void> {
    const stored = await this.#storedPolicy();
    if (stored === null || anchorPolicy(stored) === stored) return;
    try {
      await this.#withPolicyFile(unanchorPolicy(stored), "set", "rejected");
    } catch (err) {
      if (!(err instanceof MeshguardError && err.code === ErrorCode.CONTROL_POLICY_REJECTED)) throw err;
      this.#progress(`warning: the stored policy is refused now (${err.message}); revocations may not hold until a policy is set`);
    }
  }

  async #withPolicyFile(source: string, sub: "set" | "check", verb: string): Promise<void> {
    // What is checked is what would be stored: both carry the anchor grant.
    let text = anchorPolicy(source);
    // hujson rejects a `//` comment that ends the input without a newline
    // ("parsing comment: unexpected EOF"), so the text always ends with one.
    if (!text.endsWith("\n")) text += "\n";
    const file = join(this.dir, `.policy-${process.pid}-${++this.#seq}.hujson`);
    await writeFile(file, text, { mode: 0o600 });
    try {
      await this.#cli(["policy", sub, "--file", file]);
    } catch (err) {
      if (err instanceof MeshguardError && err.code === ErrorCode.CONTROL_COMMAND_FAILED && isRefusal(err.message)) {
        throw new MeshguardError(ErrorCode.CONTROL_POLICY_REJECTED, `headscale ${verb} the policy: ${refusalReason(err.message)}`, {
          hint: "fix the policy; the message names the offending entry",
          cause: err,
        });
      }
      throw err;
    } finally {
      await rm(file, { force: true });
    }
  }

  /**
   * getPolicy returns the policy text as stored (comments and layout kept,
   * trailing newlines dropped), or null when none was set.
   */
  async getPolicy(): Promise<string | null> {
    const stored = await this.#storedPolicy();
    return stored === null ? null : unanchorPolicy(stored);
  }

  /** #storedPolicy is the policy text as headscale holds it (anchor included), or null. */
  async #storedPolicy(): Promise<string | null> {
    try {
      return (await this.#cli(["policy", "get"])).replace(/\n+$/, "");
    } catch (err) {
      if (err instanceof MeshguardError && /acl policy not found/i.test(err.message)) return null;
      throw err;
    }
  }

  /** listNodes returns every registered node. */
  async listNodes(): Promise<ControlNode[]> {
    return ((JSON.parse(await this.#cli(["nodes", "list"])) as HsNode[] | null) ?? []).map(toNode);
  }

  /** deleteNode removes a node from the tailnet. */
  async deleteNode(id: number): Promise<void> {
    await this.#cli(["nodes", "delete", "--identifier", String(id), "--force"]);
  }

  /** close ends headscale (SIGTERM, SIGKILL after 5 s) and removes the temporary state. Idempotent. `await using` calls it too. */
  close(): Promise<void> {
    this.#stopping ??= (async () => {
      // A restart under way finishes (or fails) first, so the process it starts is the one stopped.
      await this.#restarting?.catch(() => {});
      const proc = this.#proc;
      proc.stopRequested = true;
      if (this.running) {
        proc.child.kill("SIGTERM");
        const escalate = setTimeout(() => proc.child.kill("SIGKILL"), 5000);
        await proc.exit;
        clearTimeout(escalate);
      }
      live.delete(proc);
      for (const d of proc.cleanup) await rm(d, { recursive: true, force: true });
    })();
    return this.#stopping;
  }

  #notRunning(): MeshguardError {
    const stopped = this.#stopping !== undefined;
    const restarting = !stopped && this.#restarting !== undefined;
    return new MeshguardError(ErrorCode.CONTROL_UNAVAILABLE, `headscale is not running (${stopped ? "stopped" : restarting ? "restarting" : "it exited"})`, {
      hint: stopped ? "start a new LocalControl" : restarting ? "await restart() first" : `its last output:\n${this.#proc.recent.slice(-10).join("\n")}`,
    });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** #cli runs one headscale CLI command against this server and returns its stdout. */
  async #cli(args: string[]): Promise<string> {
    if (this.#proc.stopRequested || !this.running) throw this.#notRunning();
    // `-o json` also silences headscale's logging and makes errors JSON.
    const r = await runCommand(this.#spec.binary, ["-c", this.configPath, ...args, "-o", "json"], {
      cwd: this.dir,
      env: childEnv(),
      timeoutMs: CLI_TIMEOUT_MS,
    });
    if (r.code === 0 && !r.timedOut) return r.stdout;
    let reason: string;
    try {
      reason = (JSON.parse(r.stderr) as { error: string }).error;
    } catch {
      reason =
        r.spawnError?.message ??
        (r.timedOut ? `timed out after ${CLI_TIMEOUT_MS / 1000} s` : lastLines(r.stderr || r.stdout, 10).join("\n") || `exit ${r.code}`);
    }
    throw new MeshguardError(ErrorCode.CONTROL_COMMAND_FAILED, `headscale ${args.slice(0, 2).join(" ")} failed: ${reason}`, {
      cause: new Error(r.stderr.trim() || r.stdout.trim() || reason),
    });
  }
}

// headscale's `-o json` shapes (protobuf JSON with Go field tags: snake_case, zero values omitted).
interface HsUser {
  id: number;
  name: string;
  display_name?: string;
  email?: string;
}
interface HsNode {
  id: number;
  name?: string;
  given_name?: string;
  ip_addresses?: string[] | null;
  tags?: string[] | null;
  user?: HsUser;
  online?: boolean;
  pre_auth_key?: { ephemeral?: boolean } | null;
  last_seen?: { seconds?: number; nanos?: number } | null;
}

function toUser(u: HsUser): ControlUser {
  return {
    id: u.id,
    name: u.name,
    ...(u.display_name ? { displayName: u.display_name } : {}),
    ...(u.email ? { email: u.email } : {}),
  };
}

function toNode(n: HsNode): ControlNode {
  const tags = n.tags ?? [];
  const node: ControlNode = {
    id: n.id,
    name: n.name ?? "",
    givenName: n.given_name ?? "",
    ips: n.ip_addresses ?? [],
    tags,
    online: n.online ?? false,
  };
  // headscale ≥ 0.28 reports a placeholder user for tagged nodes; they have no owner.
  if (n.user?.name && tags.length === 0) node.user = n.user.name;
  if (n.pre_auth_key) node.ephemeral = n.pre_auth_key.ephemeral ?? false;
  if (n.last_seen?.seconds) node.lastSeen = new Date(n.last_seen.seconds * 1000 + Math.floor((n.last_seen.nanos ?? 0) / 1e6));
  return node;
}

// The CLI wraps the server's refusal: "setting ACL policy: rpc error: code =
// Unknown desc = setting policy: parsing policy: <reason>". Transport
// failures (Unavailable, DeadlineExceeded, connecting) are not refusals.
// Exported for ./policy.ts, which reads the same CLI's answers; not public.
export function isRefusal(message: string): boolean {
  return /rpc error: code = (Unknown|InvalidArgument|FailedPrecondition|Internal) desc = /.test(message);
}

export function refusalReason(message: string): string {
  const desc = message.split("desc = ").at(-1) ?? message;
  return desc.replace(/^setting policy: /, "").trim();
}
