/**
 * Small process and port helpers for the control-server manager. Internal:
 * nothing here is re-exported from `meshguard/control`.
 */

import { spawn } from "node:child_process";
import { createSocket } from "node:dgram";
import { get } from "node:http";
import { createServer } from "node:net";

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** Set when the command could not be started at all (e.g. ENOENT). */
  spawnError?: Error;
  timedOut: boolean;
}

/**
 * runCommand runs a program to completion and collects its output. It never
 * rejects: the caller decides what a failure means and how to report it.
 */
export function runCommand(
  file: string,
  args: readonly string[],
  opts: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number; onLine?: (line: string) => void } = {},
): Promise<RunResult> {
  return new Promise((resolve) => {
    let stdout = "";
    let stderr = "";
    let timedOut = false;
    let spawnError: Error | undefined;
    const child = spawn(file, args, {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let partial = "";
    const feed = (chunk: string): void => {
      if (!opts.onLine) return;
      partial += chunk;
      const lines = partial.split("\n");
      partial = lines.pop() ?? "";
      for (const l of lines) if (l.trim() !== "") opts.onLine(l);
    };
    child.stdout.setEncoding("utf8").on("data", (d: string) => {
      stdout += d;
      feed(d);
    });
    child.stderr.setEncoding("utf8").on("data", (d: string) => {
      stderr += d;
      feed(d);
    });
    const timer =
      opts.timeoutMs === undefined
        ? undefined
        : setTimeout(() => {
            timedOut = true;
            child.kill("SIGKILL");
          }, opts.timeoutMs);
    child.on("error", (err) => {
      spawnError = err;
    });
    child.on("close", (code, signal) => {
      if (timer) clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, timedOut, ...(spawnError ? { spawnError } : {}) });
    });
  });
}

/** freeTcpPort asks the kernel for an unused TCP port on 127.0.0.1. */
export function freeTcpPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/** freeUdpPort asks the kernel for an unused UDP port on 127.0.0.1. */
export function freeUdpPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const sock = createSocket("udp4");
    sock.unref();
    sock.on("error", reject);
    sock.bind(0, "127.0.0.1", () => {
      const port = sock.address().port;
      sock.close(() => resolve(port));
    });
  });
}

/**
 * childEnv is the environment for headscale processes: ours minus every
 * `HEADSCALE_*` variable. headscale's config loader (viper, AutomaticEnv) lets
 * such variables override any config key, so an inherited
 * `HEADSCALE_CLI_ADDRESS` would point our CLI calls at a remote server.
 */
export function childEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("HEADSCALE_")) env[k] = v;
  return env;
}

/** lastLines returns at most `n` trailing non-empty lines of `text`. */
export function lastLines(text: string, n: number): string[] {
  return text
    .split("\n")
    .map((l) => l.trimEnd())
    .filter((l) => l !== "")
    .slice(-n);
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * httpOk reports whether GET `url` answers 2xx within `timeoutMs`. It uses a
 * fresh connection that is closed afterwards: a pooled keep-alive socket (as
 * with fetch) would hold the event loop open for seconds after `close()`.
 */
export function httpOk(url: string, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const req = get(url, { agent: false, timeout: timeoutMs }, (res) => {
      res.resume();
      resolve((res.statusCode ?? 0) >= 200 && (res.statusCode ?? 0) < 300);
    });
    req.on("timeout", () => req.destroy());
    req.on("error", () => resolve(false));
  });
}
