// Types of bench/lib/rest-sim.mjs for the TypeScript tests (see that file's header).

export interface RestSim {
  /** http://127.0.0.1:PORT; base paths /api (bearer), /q (?key=), /h (X-Api-Key), /b (Basic), /o (OAuth 2.0 Bearer by introspection). */
  url: string;
  /** Every request that reached it, in order. */
  requests: Array<{ method: string; url: string; headers: Record<string, string | string[] | undefined> }>;
  close(): Promise<void>;
}

export function startRestSim(opts?: {
  bearer?: string;
  apiKey?: string;
  basic?: [string, string];
  /** An authorization server's introspection: base path /o takes the Bearer tokens it says are active. */
  introspect?: (token: string) => Promise<{ active: boolean; sub?: string }>;
  host?: string;
  port?: number;
}): Promise<RestSim>;
