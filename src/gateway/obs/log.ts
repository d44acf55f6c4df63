/**
 * The gateway's own log: JSON lines written by pino (`level`, `time`, `msg`
 * and fields) — start, stop, policy reloads, retention runs, warnings,
 * errors, alerts, and optionally one access line per finished request.
 *
 * No credential reaches a line: every line passes through the key scrubber
 * on its way to the destination, whatever a message or an error's cause
 * holds, and access lines carry metadata only (never headers or bodies).
 *
 * Written in the gateway's own thread (pino's sonic-boom destination, no
 * worker transport: the gateway's self-guard refuses worker threads), and
 * flushed on close.
 */

import pino, { type DestinationStream, type Logger } from "pino";
import type { KeyScrubber } from "../scrub.js";
import type { LogRecord } from "../types.js";
import type { LogConfig } from "./config.js";

export type { Logger };

export interface GatewayLog {
  readonly logger: Logger;
  /** Whether access lines are written. */
  readonly access: boolean;
  /** request writes the access line of one finished request (when configured). */
  request(rec: LogRecord): void;
  /** flush hands what is buffered to the OS; close also ends a file destination. */
  flush(): Promise<void>;
  close(): Promise<void>;
}

type Sink = DestinationStream & { flush?(cb?: (err?: Error) => void): void; end?(): void; once?(event: "close" | "error", f: () => void): void };

/** How long close waits for a log file to be written and closed. */
const CLOSE_MS = 5_000;

/**
 * createGatewayLog opens the log the config's `log` section describes, or
 * writes to `stream` (a library caller's, or a test's). With neither the log
 * is silent.
 */
export function createGatewayLog(cfg: LogConfig | undefined, scrub: KeyScrubber, stream?: DestinationStream): GatewayLog {
  let sink: Sink | undefined;
  let ownFile = false;
  if (stream !== undefined) sink = stream;
  else if (cfg !== undefined) {
    const d = cfg.destination;
    ownFile = d !== "stderr" && d !== "stdout";
    // stdout/stderr: written synchronously, as pino does by default (nothing is lost on exit or crash);
    // a file: asynchronously, ended and waited for on close.
    sink = (ownFile ? pino.destination({ dest: d, append: true, mkdir: true, sync: false }) : pino.destination({ dest: d === "stderr" ? 2 : 1, sync: true })) as unknown as Sink;
  }
  const level = cfg?.level ?? (stream !== undefined ? "info" : "silent");
  const inner = sink;
  const scrubbed: DestinationStream = { write: (line) => inner?.write(scrub.empty ? line : scrub.text(line)) };
  const logger = pino({ name: "meshguard-gateway", level }, scrubbed);
  const access = cfg?.access === true && level !== "silent";

  const flush = () =>
    new Promise<void>((resolve) => {
      if (typeof inner?.flush !== "function") return resolve();
      try {
        inner.flush(() => resolve());
      } catch {
        resolve(); // a destination not yet open has nothing to flush
      }
    });

  return {
    logger,
    access,
    request(rec) {
      if (!access) return;
      const u = rec.usage;
      logger.info(
        {
          request: rec.id,
          session: rec.sessionId,
          user: rec.caller.user,
          node: rec.caller.node,
          via: rec.caller.via,
          operation: rec.operation,
          provider: rec.provider,
          model: rec.model,
          stream: rec.stream,
          status: rec.status,
          outcome: rec.outcome,
          ...(rec.reason !== undefined ? { reason: rec.reason } : {}),
          ...(u !== undefined ? { inputTokens: u.inputTokens, outputTokens: u.outputTokens, ...(u.estimated ? { estimated: true } : {}) } : {}),
          ...(rec.costUsd !== undefined ? { costUsd: rec.costUsd } : {}),
          durationMs: round(rec.durationMs),
          overheadMs: round(rec.overheadMs),
          ...(rec.ttftMs !== undefined ? { ttftMs: round(rec.ttftMs) } : {}),
        },
        "request",
      );
    },
    flush,
    async close() {
      await flush();
      const file = inner;
      if (!ownFile || file?.end === undefined || file.once === undefined) return;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, CLOSE_MS);
        const done = () => (clearTimeout(t), resolve());
        file.once!("close", done);
        file.once!("error", done);
        try {
          file.end!();
        } catch {
          done(); // already destroyed
        }
      });
    },
  };
}

const round = (ms: number) => Math.round(ms * 1000) / 1000;
