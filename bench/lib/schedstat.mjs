// How long a thread waited for a CPU: Linux's per-thread scheduler
// statistics. Used by bench/gateway-trace to tell a request that was slow
// because a process was runnable but not running (the machine's other load)
// from one slow because of work of its own.
import { openSync, readdirSync, readFileSync, readSync } from 'node:fs';

/**
 * schedstatReader returns a function giving the calling thread's total run-queue
 * wait so far (ms): the second field of /proc/thread-self/schedstat, read
 * again from offset 0 each call (a few microseconds). -1 without procfs.
 */
export function schedstatReader() {
  let fd;
  try {
    fd = openSync('/proc/thread-self/schedstat', 'r');
  } catch {
    return () => -1;
  }
  const buf = Buffer.alloc(128);
  return () => {
    const n = readSync(fd, buf, 0, buf.length, 0);
    const s = buf.toString('latin1', 0, n);
    const a = s.indexOf(' ');
    return Number(s.slice(a + 1, s.indexOf(' ', a + 1))) / 1e6;
  };
}

/**
 * threadCpuMs returns the CPU time each thread of process `pid` has used so
 * far (ms), summed by thread name (/proc/PID/task/TID/comm: "node" for the
 * main thread, "WorkerThread"-like names for worker threads, "V8 ..." for
 * V8's helpers); an empty map without procfs. Threads that ended are not in
 * it: take it while the process runs.
 */
export function threadCpuMs(pid) {
  const out = new Map();
  let tids;
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tids) {
    try {
      const name = readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim();
      const cpu = Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]) / 1e6;
      out.set(name, (out.get(name) ?? 0) + cpu);
    } catch {
      // the thread ended meanwhile
    }
  }
  return out;
}
