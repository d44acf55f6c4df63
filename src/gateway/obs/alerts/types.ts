/**
 * The shapes the alert engine works with: what it is fed (finished
 * requests, policy decisions, bucket levels) and what it sends (an Alert).
 */

import type { AlertRule } from "../config.js";

/** One alert, as the engine fires it and webhooks receive it (JSON format: `{ version, alert }`). */
export interface Alert {
  /** The rule's name in the config. */
  rule: string;
  kind: AlertRule["kind"];
  /**
   * What the alert is about, the unit of de-duplication: "node:agent-a" or
   * "user:alice@example.com" (denials, usage spikes), a bucket key
   * ("daily/user:alice@example.com"), a provider name (upstream errors).
   */
  subject: string;
  /** "critical": a bucket fully spent; everything else "warning". */
  severity: "warning" | "critical";
  /** Epoch milliseconds. */
  time: number;
  /** One line a person reads first. */
  summary: string;
  /** The figures behind it (counts, window, rates, levels), per kind. */
  details: Record<string, unknown>;
}

/** A bucket instance's level after a quota transaction (what the bucket rule watches). */
export interface BucketLevel {
  /** Instance key, e.g. "daily/user:alice@example.com". */
  key: string;
  /** The configured bucket's name, e.g. "daily". */
  bucket: string;
  unit: "usd" | "tokens" | "calls";
  level: number;
  capacity: number;
  /** A request was refused because this bucket's chain could not cover it. */
  refused?: boolean;
}

/** A policy denial, from the gateway or from a guard's decision event. */
export interface Denial {
  time: number;
  node?: string | undefined;
  user?: string | undefined;
  tags: string[];
  /** Where it was decided: "gateway", or the guard's layer ("fetch", "http", "llm-sdk", ...). */
  layer: string;
  /** The call, as one line ("llm openai/gpt-4o", "GET https://api.example.com/x"). */
  request: string;
  reason: string;
  ruleId?: string | undefined;
}
