// Types of bench/lib/llm-sim.mjs for the TypeScript tests (see that file's header).

export type SimFormat = 'openai' | 'anthropic' | 'gemini';

export interface LlmSimOptions {
  /** Provider key to require: one for every format, or one per format. Unset: no check. */
  key?: string | Partial<Record<SimFormat, string>>;
  /** Content chunks per stream (default 5). */
  chunks?: number;
  /** Answer length N in tokens before max_tokens (default 16). */
  outputTokens?: number;
  /** Service time before the answer starts, ms (default 0). */
  delayMs?: number;
  /** Time between content chunks, ms (default 0). */
  chunkDelayMs?: number;
  /** Streams send content chunk n+1 only after next(). */
  lockstep?: boolean;
  /** Keep each request in `requests` (default true). */
  record?: boolean;
  models?: Partial<Record<SimFormat, string[]>>;
  embeddingDims?: number;
  host?: string;
  port?: number;
}

export interface SimRequest {
  seq: number;
  time: number;
  method: string;
  path: string;
  /** The query string with its "?", or "". */
  query: string;
  /** Lower-case header names. */
  headers: Record<string, string | string[] | undefined>;
  /** Parsed JSON, or the raw text when it was not JSON; undefined without a body. */
  body: any;
  format: SimFormat | undefined;
  operation: string | undefined;
  model: string | undefined;
  scenario: string | undefined;
  /** Status sent (0 while hanging or not yet answered). */
  status: number;
  chunksSent: number;
}

export interface SimTotals {
  requests: number;
  inputTokens: number;
  outputTokens: number;
  chunksSent: number;
  byOperation: Record<string, number>;
}

export interface LlmSim extends AsyncDisposable {
  url: string;
  port: number;
  requests: SimRequest[];
  totals: SimTotals;
  options: Required<Omit<LlmSimOptions, 'key' | 'models'>> & { key: LlmSimOptions['key']; models: Record<SimFormat, string[]> };
  /** Serves the simulator from another http.Server too (a tailnet listener). */
  handler(req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse): void;
  next(k?: number): void;
  waiting(): Promise<void>;
  reset(): void;
  close(): Promise<void>;
}

export function startLlmSim(opts?: LlmSimOptions): Promise<LlmSim>;
