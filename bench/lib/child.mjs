// A child process that reports on standard output in JSON lines, one object
// per line, each with an "event" field; "error" events carry a "message".
// Used by loopback.mjs (the Node loopback server) and gopeer.mjs (tsnetbench).

import { spawn } from 'node:child_process';

const STDERR_TAIL = 4000;

/**
 * startJsonChild spawns `cmd args` with stdin as a pipe (closing it is the
 * child's signal to stop), and returns a handle:
 *
 *   t0            performance.now() just before spawn
 *   next(event, timeoutMs) → the next line whose event is `event`, stamped
 *                 with `at` (performance.now() when it was read); rejects on
 *                 an "error" line, on exit, or on timeout
 *   stop(timeoutMs) → closes stdin and waits for exit; returns the lines seen
 *                 after the call (e.g. a "stopped" report); kills the child
 *                 (SIGKILL, this child only) if it outlives the timeout
 *   kill()        SIGKILL this child if still running
 *   stderr()      the last few KiB of its standard error, for messages
 */
export function startJsonChild(name, cmd, args, { env, cwd } = {}) {
  const t0 = performance.now();
  const child = spawn(cmd, args, { env, cwd, stdio: ['pipe', 'pipe', 'pipe'] });
  let errTail = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (s) => {
    errTail = (errTail + s).slice(-STDERR_TAIL);
  });
  // A child that exits early makes writes to its stdin fail; the exit is
  // what we report, so the EPIPE is not interesting.
  child.stdin.on('error', () => {});

  const lines = []; // unread parsed lines
  let waiter = null; // { resolve } woken on every new line or exit
  let exited = null; // { code, signal }
  let spawnError = null;
  const wake = () => {
    const w = waiter;
    waiter = null;
    w?.resolve();
  };

  let buf = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (s) => {
    buf += s;
    let nl;
    while ((nl = buf.indexOf('\n')) !== -1) {
      const text = buf.slice(0, nl).trim();
      buf = buf.slice(nl + 1);
      if (!text) continue;
      let obj;
      try {
        obj = JSON.parse(text);
      } catch {
        obj = { event: 'error', message: `${name}: non-JSON line on stdout: ${text.slice(0, 200)}` };
      }
      obj.at = performance.now();
      lines.push(obj);
    }
    wake();
  });
  child.on('error', (err) => {
    spawnError = err;
    wake();
  });
  // 'close' (not 'exit'): stdout has been fully read by then.
  child.on('close', (code, signal) => {
    exited = { code, signal };
    wake();
  });

  const describeExit = () => {
    const how = exited.signal ? `signal ${exited.signal}` : `status ${exited.code}`;
    const tail = errTail.trim() ? `; stderr:\n${errTail.trim()}` : '';
    return `${name} exited (${how})${tail}`;
  };

  async function next(event, timeoutMs) {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      while (lines.length) {
        const obj = lines.shift();
        if (obj.event === 'error') {
          throw new Error(`${name}: ${obj.message}`, { cause: errTail.trim() || undefined });
        }
        if (obj.event === event) return obj;
      }
      if (spawnError) throw new Error(`${name}: cannot start ${cmd}: ${spawnError.message}`, { cause: spawnError });
      if (exited) throw new Error(`${name}: waiting for "${event}": ${describeExit()}`);
      const left = deadline - performance.now();
      if (left <= 0) throw new Error(`${name}: no "${event}" within ${timeoutMs} ms${errTail.trim() ? `; stderr:\n${errTail.trim()}` : ''}`);
      await new Promise((resolve) => {
        const t = setTimeout(resolve, left);
        waiter = {
          resolve: () => {
            clearTimeout(t);
            resolve();
          },
        };
      });
    }
  }

  async function stop(timeoutMs = 10_000) {
    child.stdin.end();
    if (!exited && !spawnError) {
      await new Promise((resolve) => {
        const t = setTimeout(() => {
          child.kill('SIGKILL');
        }, timeoutMs);
        child.once('close', () => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    const seen = lines.splice(0);
    const err = seen.find((l) => l.event === 'error');
    if (err) throw new Error(`${name}: ${err.message}`);
    return { exit: exited, lines: seen };
  }

  function kill() {
    if (!exited && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }

  return { t0, pid: child.pid, next, stop, kill, stderr: () => errTail };
}
