/**
 * Audit sinks: where decision events go once the Auditor (audit.ts) has
 * decided to keep them.
 *
 * The file sink is the durable one. Its contract:
 *
 * - A must-persist event (a denial, an approval, an observed would-be
 *   denial) is written before `write()` returns, with one `write(2)` on a
 *   descriptor opened with `O_APPEND`. The guard records a decision before it
 *   rejects the call, so the line is in the file (the OS page cache) before
 *   the caller sees the rejection: a SIGKILL right after loses nothing. Only
 *   with `fsync: true` does it also survive a power loss.
 * - One `write(2)` per line (or per batch of whole lines) on an `O_APPEND`
 *   descriptor: the kernel places each write at the end of the file as one
 *   piece, so several threads or processes can share a file and no line is
 *   torn or interleaved with another writer's.
 * - Allows may wait: they are buffered and written together at most `flushMs`
 *   later, when the buffer passes `maxBatchBytes`, on `flush()`/`close()`,
 *   before the next must-persist line (order is kept), and synchronously when
 *   the process exits normally. A SIGKILL can lose at most `flushMs` of allows.
 * - A write error (disk full, a closed descriptor) never reaches the call
 *   being decided: it goes to `onError` as a MeshguardError with code
 *   `MESHGUARD_AUDIT_WRITE_FAILED`, and the denial is still a denial.
 *
 * A stream sink (`jsonLinesSink(writable)`) is best effort: a stream writes
 * asynchronously, so lines still queued when the process dies are lost.
 */

import { closeSync, fdatasyncSync, openSync, writeSync } from "node:fs";
import { resolve as resolvePath } from "node:path";

import { ErrorCode, MeshguardError } from "../errors.js";
import type { AuditSink } from "./audit.js";
import { mustPersist, type DecisionEvent } from "./event.js";

/** An audit sink that holds a resource: flush() and close() always exist. */
export interface ClosableAuditSink extends AuditSink {
  /** Resolves when everything written so far is handed to the OS (and on disk with `fsync: true`). */
  flush(): Promise<void>;
  /** Flushes, then releases the file or ends the owned stream. Idempotent. */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** Options of jsonLinesSink. `flushMs`, `maxBatchBytes` and `fsync` apply to a file only. */
export interface JsonLinesSinkOptions {
  /** Where write errors go (default: process.emitWarning with the error's code). */
  onError?: (err: MeshguardError) => void;
  /** Longest time an allow waits in memory before it is written, in ms (default 100; 0 writes every allow at once). */
  flushMs?: number;
  /** Size of buffered allows, in characters of JSON, that triggers a write (default 64 KiB). */
  maxBatchBytes?: number;
  /**
   * Also `fdatasync(2)` after each must-persist line and each batch, so a
   * line survives a power loss, not only the death of the process. Costs a
   * disk flush per denial (docs/guard.md, "The audit file").
   */
  fsync?: boolean;
}

const DEFAULT_FLUSH_MS = 100;
const DEFAULT_MAX_BATCH = 64 * 1024;

/**
 * jsonLinesSink writes one JSON object per line. Given a path it appends to
 * that file (created if missing) with the durability described in this
 * file's comment; opening the file fails at once with
 * MESHGUARD_AUDIT_WRITE_FAILED. Given a stream it writes to the stream, best
 * effort (no durability: the stream writes asynchronously).
 */
export function jsonLinesSink(dest: string, opts?: JsonLinesSinkOptions): ClosableAuditSink;
export function jsonLinesSink(dest: NodeJS.WritableStream, opts?: Pick<JsonLinesSinkOptions, "onError">): ClosableAuditSink;
export function jsonLinesSink(dest: string | NodeJS.WritableStream, opts: JsonLinesSinkOptions = {}): ClosableAuditSink {
  const onError = opts.onError ?? warn;
  return typeof dest === "string" ? fileSink(dest, opts, onError) : streamSink(dest, onError);
}

/** memorySink keeps events in an array (tests, in-process consumers). */
export function memorySink(): AuditSink & { events: DecisionEvent[] } {
  const events: DecisionEvent[] = [];
  return { events, write: (ev) => void events.push(ev) };
}

/** What a file sink was opened with: a worker thread's guard opens the same file (../guard/worker.ts). */
export interface FileSinkSpec {
  path: string;
  options: Pick<JsonLinesSinkOptions, "flushMs" | "maxBatchBytes" | "fsync">;
}

// Module-private: which sinks are files, and how they were opened.
const fileSinks = new WeakMap<object, FileSinkSpec>();

/** fileSinkOf says whether `sink` is a file sink from jsonLinesSink(path), and how it was opened. */
export function fileSinkOf(sink: unknown): FileSinkSpec | undefined {
  return typeof sink === "object" && sink !== null ? fileSinks.get(sink) : undefined;
}

function warn(err: MeshguardError): void {
  process.emitWarning(err.message, { code: err.code });
}

function writeFailed(dest: string, what: string, cause: unknown): MeshguardError {
  const why = (cause as Error)?.message ?? String(cause);
  return new MeshguardError(ErrorCode.AUDIT_WRITE_FAILED, `audit sink ${dest}: ${what}: ${why}`, {
    cause,
    hint: "the decisions were still enforced; check the disk space and permissions of the audit file",
  });
}

function checkOption(name: string, v: number | undefined, fallback: number): number {
  if (v === undefined) return fallback;
  if (typeof v !== "number" || !Number.isFinite(v) || v < 0) {
    throw new MeshguardError(ErrorCode.INVALID_OPTIONS, `jsonLinesSink: ${name} must be a finite number ≥ 0, got ${String(v)}`);
  }
  return v;
}

// Open file sinks, flushed synchronously on a normal exit. One listener for
// all sinks, so many sinks do not trip the max-listeners warning.
const openFiles = new Set<{ flushSync(): void }>();
let exitHooked = false;
function flushAllOnExit(): void {
  for (const s of openFiles) s.flushSync();
}

function fileSink(path: string, opts: JsonLinesSinkOptions, onError: (err: MeshguardError) => void): ClosableAuditSink {
  const flushMs = checkOption("flushMs", opts.flushMs, DEFAULT_FLUSH_MS);
  const maxBatch = checkOption("maxBatchBytes", opts.maxBatchBytes, DEFAULT_MAX_BATCH);
  const sync = opts.fsync === true;
  let fd: number;
  try {
    // "a" is O_WRONLY|O_CREAT|O_APPEND: every write lands at the current end
    // of the file, whoever else appends to it.
    fd = openSync(path, "a");
  } catch (err) {
    throw writeFailed(path, "cannot open the file", err);
  }
  let closed = false;
  let buffered = "";
  let count = 0;
  let timer: NodeJS.Timeout | undefined;

  // writeOut hands `data` (whole lines) to the kernel in one write(2). It
  // never throws: a failure drops those lines and is reported.
  const writeOut = (data: string, lines: number): void => {
    if (closed) {
      onError(writeFailed(path, `${lines} event(s) written after close() were dropped`, new Error("the sink is closed")));
      return;
    }
    try {
      let done = writeSync(fd, data);
      if (done !== Buffer.byteLength(data)) {
        // Short write (a signal, or a nearly full disk): finish the rest,
        // counting in bytes as write(2) does.
        const bytes = Buffer.from(data, "utf8");
        while (done < bytes.length) done += writeSync(fd, bytes, done, bytes.length - done);
      }
      if (sync) fdatasyncSync(fd);
    } catch (err) {
      onError(writeFailed(path, `${lines} event(s) lost`, err));
    }
  };

  const flushSync = (): void => {
    if (timer !== undefined) {
      clearTimeout(timer);
      timer = undefined;
    }
    if (buffered === "") return;
    const data = buffered;
    const lines = count;
    buffered = "";
    count = 0;
    writeOut(data, lines);
  };

  const sink = {
    flushSync,
    write(ev: DecisionEvent): void {
      let line: string;
      try {
        line = JSON.stringify(ev) + "\n";
      } catch (err) {
        onError(writeFailed(path, "an event could not be serialized", err));
        return;
      }
      if (mustPersist(ev) || flushMs === 0) {
        // Buffered allows go first, in the same write: the file keeps the decisions' order.
        const data = buffered + line;
        const lines = count + 1;
        buffered = "";
        count = 0;
        if (timer !== undefined) {
          clearTimeout(timer);
          timer = undefined;
        }
        writeOut(data, lines);
        return;
      }
      buffered += line;
      count++;
      if (buffered.length >= maxBatch) flushSync();
      else if (timer === undefined) {
        timer = setTimeout(flushSync, flushMs);
        // Buffered audit lines must not keep the process alive: the exit hook writes them.
        timer.unref();
      }
    },
    async flush(): Promise<void> {
      flushSync();
    },
    async close(): Promise<void> {
      if (closed) return;
      flushSync();
      closed = true;
      openFiles.delete(sink);
      try {
        closeSync(fd);
      } catch (err) {
        onError(writeFailed(path, "closing the file failed", err));
      }
    },
    [Symbol.asyncDispose](): Promise<void> {
      return sink.close();
    },
  };
  openFiles.add(sink);
  // Absolute: a worker opening the same file must not depend on a later chdir.
  fileSinks.set(sink, { path: resolvePath(path), options: { flushMs, maxBatchBytes: maxBatch, fsync: sync } });
  if (!exitHooked) {
    exitHooked = true;
    process.on("exit", flushAllOnExit);
  }
  return sink;
}

function streamSink(stream: NodeJS.WritableStream, onError: (err: MeshguardError) => void): ClosableAuditSink {
  const report = (err: unknown) => onError(writeFailed("(stream)", "write failed", err));
  stream.on("error", report);
  let closed = false;
  const drained = () =>
    new Promise<void>((resolve) => {
      // An empty write's callback runs after everything queued before it.
      if ((stream as { writableEnded?: boolean }).writableEnded) resolve();
      else stream.write("", () => resolve());
    });
  const sink: ClosableAuditSink = {
    write(ev) {
      try {
        stream.write(JSON.stringify(ev) + "\n");
      } catch (err) {
        report(err);
      }
    },
    flush: drained,
    // The stream belongs to the caller: close() waits for it but does not end it.
    async close() {
      if (closed) return;
      closed = true;
      await drained();
    },
    [Symbol.asyncDispose]: () => sink.close(),
  };
  return sink;
}
