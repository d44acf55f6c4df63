/**
 * `meshguard run [--policy FILE] [--observe] [--audit FILE] -- node agent.js`:
 * the hardened launch mode. Starts Node with meshguard's preload required
 * first (the guard is installed before any application code, from the
 * MESHGUARD_* variables) and under Node's permission model, which closes what
 * an in-process guard cannot: child processes, `process.binding` of raw
 * socket bindings, WASI, native addons, the inspector, and file-system access
 * outside what the agent needs. What each Node version actually closes is
 * measured (test/guard/fixtures/permission-probe.mjs) and tabled in
 * docs/guard.md, "Hardened launch mode".
 *
 * The exit status is the child's (128 + N when signal N ended it); the
 * signals meshguard run receives are passed on to the child.
 */

import { spawn, spawnSync, type StdioOptions } from "node:child_process";
import { closeSync, existsSync, openSync, realpathSync, statSync } from "node:fs";
import { constants } from "node:os";
import { dirname, join, resolve, sep } from "node:path";

import { ErrorCode, MeshguardError } from "../index.js";
import { preloadPath } from "../guard/index.js";
import { describePrincipal, loadPolicy, parsePrincipal } from "../policy/index.js";
import type { Command, Context } from "./command.js";

/** Node options the permission model reads: `meshguard run` sets them, the command line may not. */
const PERMISSION_OPTION = /^--(permission|experimental-permission|no-permission|no-experimental-permission|permission-audit|allow-[a-z-]+)(=|$)/;
/** Node options whose value is the next argument (to find where the script is). */
const TAKES_VALUE = new Set(["-r", "--require", "--import", "--loader", "--experimental-loader", "-C", "--conditions", "--env-file", "--env-file-if-exists", "--input-type", "--title", "--inspect-port", "--watch-path", "--disable-warning", "--stack-trace-limit"]);
/** Options that make Node run code without a script file. */
const NO_SCRIPT = new Set(["-e", "--eval", "-p", "--print", "-i", "--interactive"]);
/** Signals passed on to the child. SIGINT from a terminal reaches both (same process group): Node's default handling of a second one is the same. */
const FORWARDED = ["SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR2"] as const;

/** Permissions is what the child is allowed, as --json reports it. */
export interface Permissions {
  flag: "--permission" | "--experimental-permission";
  fsRead: string[];
  fsWrite: string[];
  childProcess: false;
  wasi: false;
  workers: boolean;
  addons: boolean;
}

/** NodeInfo: the binary that will run the agent. */
interface NodeInfo {
  version: string;
  path: string;
}

function nodeInfo(ctx: Context, bin: string): NodeInfo {
  const r = spawnSync(bin, ["-p", "JSON.stringify([process.versions.node, process.execPath])"], { encoding: "utf8", timeout: 30_000, env: { ...process.env, NODE_OPTIONS: "" } });
  let info: NodeInfo | undefined;
  if (!r.error && r.status === 0) {
    try {
      const [version, path] = JSON.parse(r.stdout) as [string, string];
      if (typeof version === "string" && typeof path === "string") info = { version, path };
    } catch {
      // not Node
    }
  }
  if (info === undefined) throw ctx.usage(`${JSON.stringify(bin)} is not a Node binary that can be run (${r.error ? ((r.error as NodeJS.ErrnoException).code ?? r.error.message) : `it answered status ${r.status}`}): meshguard run launches Node, e.g. -- node agent.js`);
  const major = Number(info.version.split(".")[0]);
  if (major < 22) {
    throw new MeshguardError(ErrorCode.INVALID_OPTIONS, `${bin} is Node ${info.version}; meshguard run needs Node 22 or later (its permission model)`, { hint: "run it with a newer node: meshguard run -- /path/to/node agent.js" });
  }
  return info;
}

/** permissionFlag: `--permission` from Node 22.13 on (the only name from 23.5); before, `--experimental-permission`. */
function permissionFlag(version: string): Permissions["flag"] {
  const [major, minor] = version.split(".").map(Number) as [number, number];
  return major > 22 || minor >= 13 ? "--permission" : "--experimental-permission";
}

/** scriptOf finds the script in `node [options] script [args]`: the first argument that is not an option or an option's value. */
function scriptOf(args: readonly string[]): { script: string | undefined; options: string[] } {
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === "--") return { script: args[i + 1], options: args.slice(0, i) };
    if (NO_SCRIPT.has(a)) return { script: undefined, options: args.slice(0, i + 1) };
    if (!a.startsWith("-") || a === "-") return { script: a === "-" ? undefined : a, options: args.slice(0, i) };
    if (TAKES_VALUE.has(a)) i++;
  }
  return { script: undefined, options: [...args] };
}

/** packageDirOf is the directory of the nearest package.json above `file` (its app), else the file's directory. */
function packageDirOf(file: string): string {
  const start = dirname(file);
  for (let dir = start; ; dir = dirname(dir)) {
    if (existsSync(join(dir, "package.json"))) return dir;
    if (dirname(dir) === dir) return start;
  }
}

/** nodeModulesAbove: every node_modules directory module resolution from `dir` may read, as real paths. */
function nodeModulesAbove(dir: string): string[] {
  const out: string[] = [];
  for (let d = dir; ; d = dirname(d)) {
    const nm = join(d, "node_modules");
    if (existsSync(nm)) out.push(realpathSync(nm));
    if (dirname(d) === d) return out;
  }
}

const real = (p: string) => (existsSync(p) ? realpathSync(p) : resolve(p));
/** minimal drops duplicates and paths inside another one of the list (a directory grant covers what is below it). */
function minimal(xs: string[]): string[] {
  const all = [...new Set(xs)];
  return all.filter((p) => !all.some((q) => q !== p && p.startsWith(q.endsWith(sep) ? q : q + sep)));
}

async function run(ctx: Context): Promise<number> {
  const [bin, ...rest] = ctx.positionals as [string, ...string[]];
  const { script, options: nodeOptions } = scriptOf(rest);
  for (const a of nodeOptions) {
    if (PERMISSION_OPTION.test(a)) throw ctx.usage(`${a}: meshguard run sets Node's permission options itself; use --allow-fs-read, --allow-fs-write, --allow-workers or --allow-addons`);
  }

  // Everything that can be wrong is checked here, before the agent starts.
  const policyFile = ctx.str("policy");
  let policyPath: string | undefined;
  if (policyFile === "-") throw ctx.usage("--policy needs a file: the agent's guard reads it at launch");
  if (policyFile !== undefined) {
    loadPolicy(await ctx.read(policyFile, ErrorCode.POLICY_FILE_UNREADABLE), { file: policyFile });
    policyPath = realpathSync(policyFile);
  }
  const as = ctx.str("as");
  const principal = as !== undefined ? parsePrincipal(as) : { tags: [] };
  const mode = ctx.flag("observe") ? "observe" : "enforce";
  const auditFile = ctx.str("audit");
  let auditPath: string | undefined;
  if (auditFile !== undefined) {
    // Created here: the agent may append to the file, not create files beside it.
    try {
      closeSync(openSync(auditFile, "a"));
      auditPath = realpathSync(auditFile);
    } catch (err) {
      throw new MeshguardError(ErrorCode.AUDIT_WRITE_FAILED, `--audit ${auditFile}: cannot open it for appending: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
    }
  }
  const info = nodeInfo(ctx, bin);
  const preload = preloadPath();
  const meshguardRoot = dirname(dirname(dirname(preload)));

  const scriptPath = script !== undefined && existsSync(resolve(script)) ? realpathSync(resolve(script)) : undefined;
  const fsRead = minimal([
    realpathSync(process.cwd()),
    ...(scriptPath !== undefined && statSync(scriptPath).isFile() ? [packageDirOf(scriptPath), ...nodeModulesAbove(packageDirOf(scriptPath))] : []),
    ...nodeModulesAbove(realpathSync(process.cwd())),
    meshguardRoot,
    ...nodeModulesAbove(meshguardRoot),
    ...(policyPath !== undefined ? [policyPath] : []),
    ...ctx.list("allow-fs-read").map(real),
  ]);
  const fsWrite = minimal([...(auditPath !== undefined ? [auditPath] : []), ...ctx.list("allow-fs-write").map(real)]);
  const permissions: Permissions = {
    flag: permissionFlag(info.version),
    fsRead,
    fsWrite,
    childProcess: false,
    wasi: false,
    workers: ctx.flag("allow-workers"),
    addons: ctx.flag("allow-addons"),
  };
  const argv = [
    permissions.flag,
    ...fsRead.map((p) => `--allow-fs-read=${p}`),
    ...fsWrite.map((p) => `--allow-fs-write=${p}`),
    ...(permissions.workers ? ["--allow-worker"] : []),
    ...(permissions.addons ? ["--allow-addons"] : []),
    // First of all preloads: nothing the command line requires or imports runs before the guard.
    "--require",
    preload,
    ...rest,
  ];

  const env: NodeJS.ProcessEnv = { ...process.env };
  // NODE_OPTIONS could lift the permission model or preload code before the guard.
  const removed = env.NODE_OPTIONS !== undefined ? ["NODE_OPTIONS"] : [];
  delete env.NODE_OPTIONS;
  for (const k of ["MESHGUARD_POLICY", "MESHGUARD_MODE", "MESHGUARD_AUDIT", "MESHGUARD_AS"]) delete env[k];
  env.MESHGUARD_MODE = mode;
  if (policyPath !== undefined) env.MESHGUARD_POLICY = policyPath;
  if (auditPath !== undefined) env.MESHGUARD_AUDIT = auditPath;
  if (as !== undefined) env.MESHGUARD_AS = as;

  // The child writes straight to the terminal when this process does (isTTY, colours); otherwise through the given streams.
  const direct = (s: NodeJS.WritableStream, fd: 1 | 2) => s === (fd === 1 ? process.stdout : process.stderr);
  const stdio: StdioOptions = ["inherit", direct(ctx.stdout, 1) ? "inherit" : "pipe", direct(ctx.stderr, 2) ? "inherit" : "pipe"];
  // Printed before the agent starts: it is the first line of standard output, whatever the agent prints.
  ctx.result(
    {
      launched: {
        argv: [bin, ...argv],
        node: info,
        policy: policyPath ?? null,
        mode,
        audit: auditPath ?? null,
        principal,
        permissions,
        envRemoved: removed,
      },
    },
    "",
  );
  if (as === undefined && policyPath !== undefined) ctx.progress(`no --as: the agent calls as ${describePrincipal(principal)} (only rules for "*" apply)`);
  const child = spawn(bin, argv, { env, stdio });
  const spawned = await new Promise<Error | undefined>((res) => {
    child.once("spawn", () => res(undefined));
    child.once("error", (err) => res(err));
  });
  if (spawned) throw new MeshguardError(ErrorCode.INVALID_OPTIONS, `cannot start ${bin}: ${(spawned as NodeJS.ErrnoException).code ?? spawned.message}`, { cause: spawned });
  child.stdout?.pipe(ctx.stdout, { end: false });
  child.stderr?.pipe(ctx.stderr, { end: false });

  const forward = (sig: NodeJS.Signals) => () => void child.kill(sig);
  const handlers = FORWARDED.map((sig) => [sig, forward(sig)] as const);
  for (const [sig, h] of handlers) process.on(sig, h);
  // CliIO.signal (embedding, tests) stops the agent as SIGTERM would; the signals themselves are forwarded above.
  const stop = ctx.stopper();
  void stop.stopped.then((why) => {
    if (why === "abort") child.kill("SIGTERM");
  });
  try {
    // "close": the exit, and the child's output fully passed on.
    const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((res) => child.once("close", (c, s) => res([c, s])));
    if (signal !== null) return 128 + (constants.signals[signal] ?? 0);
    return code ?? 1;
  } finally {
    for (const [sig, h] of handlers) process.off(sig, h);
  }
}

export const runHardenedCommand: Command = {
  name: "run",
  summary: "launch a Node agent with the guard preloaded, under Node's permission model",
  usage: ["[--policy FILE] [--as WHO] [--observe] [--audit FILE] [--allow-fs-read PATH] [--allow-fs-write PATH] [--allow-workers] [--allow-addons] [--json] -- node [node-options] agent.js [args]"],
  description: `Starts Node with meshguard's guard installed before any application code
(\`--require\` of meshguard/preload, first of all preloads) and under Node's
permission model, which closes what an in-process guard cannot: child
processes (also process.execve and process.binding('spawn_sync')), raw socket
bindings (process.binding('tcp_wrap'), 'udp_wrap'), WASI, native addons, the
inspector, and the file system outside what the agent needs:

  read   the working directory, the script's package directory and the
         node_modules above it, meshguard's own package, the policy file
  write  the audit file only

Worker threads are closed unless --allow-workers. With it each worker is
guarded like the main thread and keeps the permission options, but code that
means to escape can start a thread outside both (measured). Native addons are closed
unless --allow-addons; the MeshNode of this package is a native addon, so
without it the agent cannot be a tailnet node until the wasm backend exists.
The policy is read once, at launch; the agent cannot rewrite it. NODE_OPTIONS
is removed from the agent's environment. The exit status is the agent's.
See docs/guard.md, "Hardened launch mode", for what each Node version closes.`,
  args: ["COMMAND"],
  variadic: true,
  options: {
    policy: { type: "string", arg: "FILE", help: "the meshguard policy (checked before launch; default: none, every call is denied)" },
    as: { type: "string", arg: "WHO", help: 'who the agent is for the policy: "tag:agent", "node:name", "alice@", or a comma-separated list (default: no tags, no user)' },
    observe: { type: "boolean", help: "observe mode: let every call through and record the policy's verdict (with --audit, the input of `meshguard policy learn`)" },
    audit: { type: "string", arg: "FILE", help: "append every decision to FILE as JSON lines (the agent's process writes it, so the agent can write it too)" },
    "allow-fs-read": { type: "string", arg: "PATH", multiple: true, help: "let the agent read PATH (a file, or a directory and everything in it)" },
    "allow-fs-write": { type: "string", arg: "PATH", multiple: true, help: "let the agent write PATH" },
    "allow-workers": { type: "boolean", help: "allow worker threads (each one guarded like the main thread)" },
    "allow-addons": { type: "boolean", help: "allow native addons (needed for MeshNode's native backend; an addon runs outside both the guard and the permission model)" },
  },
  json: "print one line before the agent starts: { launched: { argv, node: { version, path }, policy, mode, audit, principal, permissions: { flag, fsRead, fsWrite, childProcess, wasi, workers, addons }, envRemoved } }",
  examples: [
    { cmd: "run --policy policy.hujson --as tag:agent -- node agent.js", about: "run an agent under its policy, hardened" },
    { cmd: "run --observe --audit observed.jsonl --as tag:agent -- node agent.js", about: "record what an agent calls, to learn a policy from (`meshguard policy learn observed.jsonl`)" },
    { cmd: "run --policy policy.hujson --allow-fs-write /tmp/agent-work -- node --enable-source-maps dist/agent.js --task x", about: "with a scratch directory, Node options and the agent's own arguments" },
  ],
  exits: {
    0: "the agent exited with 0; once the agent runs, every status is the agent's own (128 + N when signal N ended it)",
    1: "meshguard run failed before launching (the policy is invalid, the audit file cannot be opened, the command cannot be started)",
    2: "usage error (also: COMMAND is not a Node binary, or it gives permission options itself)",
  },
  run,
};
