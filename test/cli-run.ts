// runCliCaptured: `meshguard ARGV` in-process, with the files it may read
// given as a map, and its stdout and stderr captured (the CLI tests share it).
import { spawn, type ChildProcess } from "node:child_process";
import { PassThrough } from "node:stream";
import { fileURLToPath } from "node:url";
import { runCli } from "../src/cli/run.js";

export async function runCliCaptured(argv: string[], files: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = new PassThrough();
  const err = new PassThrough();
  let stdout = "";
  let stderr = "";
  out.on("data", (c) => (stdout += c));
  err.on("data", (c) => (stderr += c));
  const code = await runCli(argv, {
    stdout: out,
    stderr: err,
    readText: async (p: string) => {
      if (!(p in files)) throw Object.assign(new Error(`ENOENT ${p}`), { code: "ENOENT" });
      return files[p]!;
    },
  });
  return { code, stdout, stderr };
}

/** A `meshguard` CLI child process (the built dist/cli/main.js): its output so far, its first JSON line, its exit. */
export interface CliProcess {
  child: ChildProcess;
  stdout: string;
  stderr: string;
  /** Resolves with the first JSON line on stdout. */
  ready: Promise<Record<string, any>>;
  exited: Promise<number | null>;
}

const CLI = fileURLToPath(new URL("../dist/cli/main.js", import.meta.url));

/** spawnCli runs the built CLI as a child process (the commands that serve until stopped). */
export function spawnCli(args: string[], env: NodeJS.ProcessEnv): CliProcess {
  const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  const p = { child, stdout: "", stderr: "" } as CliProcess;
  p.ready = new Promise((resolve, reject) => {
    child.stdout!.on("data", (d: Buffer) => {
      p.stdout += d;
      const nl = p.stdout.indexOf("\n");
      if (nl >= 0) resolve(JSON.parse(p.stdout.slice(0, nl)));
    });
    child.once("exit", (code) => reject(new Error(`exited ${code} before ready:\n${p.stderr}\n${p.stdout}`)));
  });
  child.stderr!.on("data", (d: Buffer) => (p.stderr += d));
  p.exited = new Promise((resolve) => child.once("exit", (code) => resolve(code)));
  return p;
}
