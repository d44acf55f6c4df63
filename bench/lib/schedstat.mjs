// How long a thread waited for a CPU: Linux's per-thread scheduler
// statistics. Used by bench/gateway-trace to tell a request that was slow
// because a process was runnable but not running (the machine's other load)
// from one slow because of work of its own.
import { openSync, readSync } from 'node:fs';

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
