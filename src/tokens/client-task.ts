/**
 * Task scope (issue 10 item 3): `withTask(opts, fn)` runs `fn` in an
 * AsyncLocalStorage context. Every token a tokens client obtains for a call
 * made inside `fn` (directly, or for a MeshNode.fetch through the fetch
 * channel) is obtained for the task: it carries the task id (`task` claim),
 * it lives no longer than the task's deadline, it is cached for this task
 * only, and it is revoked at the issuer when `fn` settles — whichever comes
 * first of the task's end and its TTL. After that, asking for a token for
 * the task fails with TOKEN_TASK_ENDED.
 *
 * Tasks nest: a task started inside another is its own task (own id, own
 * tokens), ended by its own function.
 */

import { AsyncLocalStorage } from "node:async_hooks";
import { randomBytes } from "node:crypto";
import { parseDuration } from "../policy/index.js";
import { ErrorCode, MeshguardError } from "../errors.js";

/** What a task needs to know of a token to end it. */
export interface TaskToken {
  readonly jti: string;
  release(): Promise<void>;
}

export interface TaskOptions {
  /** The task id carried in the tokens' `task` claim (printable ASCII, ≤ 128). Default: random. */
  id?: string;
  /** The task's longest life: seconds, or a duration such as "5m". Tokens never outlive it. */
  ttl?: number | string;
}

/** Task is the running task: its id, deadline, and the tokens obtained for it so far. */
export class Task {
  readonly id: string;
  /** Epoch milliseconds after which the task is over (Infinity: no TTL). */
  readonly deadlineMs: number;
  private readonly tokens = new Set<TaskToken>();
  private endedWith: string | undefined;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private ending: Promise<void> | undefined;

  /** @internal use withTask */
  constructor(id: string, deadlineMs: number) {
    this.id = id;
    this.deadlineMs = deadlineMs;
    if (Number.isFinite(deadlineMs)) {
      this.timer = setTimeout(() => void this.end("its TTL passed"), Math.max(0, deadlineMs - Date.now()));
      this.timer.unref?.();
    }
  }

  /** ended says whether the task is over (its function settled, or its TTL passed). */
  get ended(): boolean {
    return this.endedWith !== undefined || Date.now() >= this.deadlineMs;
  }

  /** assertOpen throws TOKEN_TASK_ENDED when no token may be obtained for the task any more. */
  assertOpen(nowMs: number): void {
    if (this.endedWith !== undefined || nowMs >= this.deadlineMs) {
      throw new MeshguardError(ErrorCode.TOKEN_TASK_ENDED, `task ${this.id} has ended (${this.endedWith ?? "its TTL passed"}): no token is obtained for it any more`, {
        hint: "make the call inside the task's function, or start a new task",
      });
    }
  }

  /** @internal a client registers each token it obtained for the task. */
  add(token: TaskToken): void {
    if (this.endedWith !== undefined) {
      void token.release().catch(() => {});
      return;
    }
    this.tokens.add(token);
  }

  /** The jtis of the tokens obtained for the task. */
  get jtis(): string[] {
    return [...this.tokens].map((t) => t.jti);
  }

  /** end revokes every token of the task (idempotent; what withTask calls when the function settles). */
  end(why = "its function settled"): Promise<void> {
    this.endedWith ??= why;
    clearTimeout(this.timer);
    this.ending ??= (async () => {
      const all = [...this.tokens];
      this.tokens.clear();
      const results = await Promise.allSettled(all.map((t) => t.release()));
      const failed = results.filter((r): r is PromiseRejectedResult => r.status === "rejected");
      if (failed.length) throw new MeshguardError(ErrorCode.TOKEN_REQUEST_FAILED, `task ${this.id}: ${failed.length} of ${all.length} tokens could not be revoked (they still expire at their exp)`, { cause: failed[0]!.reason });
    })();
    return this.ending;
  }
}

const storage = new AsyncLocalStorage<Task>();

/** currentTask returns the task the caller runs in, if any. */
export function currentTask(): Task | undefined {
  return storage.getStore();
}

const TASK_ID = /^[\x21-\x7e]{1,128}$/;

/**
 * withTask runs `fn` as a task: tokens obtained inside are tied to it and
 * revoked when it settles (or its TTL passes). Resolves or rejects as `fn`
 * does, after the revocations were sent; a failed revocation is reported
 * through `onRevokeError` (the token still dies at its exp), never instead
 * of fn's outcome.
 */
export async function withTask<T>(opts: TaskOptions, fn: (task: Task) => Promise<T> | T, onRevokeError?: (err: unknown) => void): Promise<T> {
  const id = opts.id ?? randomBytes(9).toString("base64url");
  if (!TASK_ID.test(id)) throw new MeshguardError(ErrorCode.INVALID_OPTIONS, `withTask: id must be 1-128 printable ASCII characters without spaces, got ${JSON.stringify(id)}`);
  let ttlMs = Infinity;
  if (opts.ttl !== undefined) {
    const ms = typeof opts.ttl === "number" ? opts.ttl * 1000 : parseDuration(opts.ttl);
    if (ms === undefined || !(ms > 0)) throw new MeshguardError(ErrorCode.INVALID_OPTIONS, `withTask: ttl must be a positive number of seconds or a duration such as "5m", got ${JSON.stringify(opts.ttl)}`);
    ttlMs = ms;
  }
  const task = new Task(id, Date.now() + ttlMs);
  try {
    return await storage.run(task, () => fn(task));
  } finally {
    await task.end().catch((err: unknown) => onRevokeError?.(err));
  }
}
