/**
 * The issuer's public keys as a verifier holds them: prepared once per kid,
 * looked up synchronously on the hot path, refetched from the JWKS when a
 * token names a kid not seen yet (key rotation) — at most once per
 * `refetchMinMs`, so a stream of made-up kids cannot turn the verifier into
 * a flood of requests to the issuer — and refreshed every `refreshMs` so a
 * key the issuer retired stops being accepted.
 */

import { decodeSegment } from "./jws.js";
import { prepareKey, type Ed25519Backend, type PreparedKey } from "./ed25519.js";
import { TOKEN_ALG, type Jwks } from "./types.js";

/** What the verifier needs of an HTTP client: MeshNode.fetch, or global fetch for a local issuer. */
export type FetchLike = (url: string, init?: { method?: string; headers?: Record<string, string>; body?: string; signal?: AbortSignal }) => Promise<{ ok: boolean; status: number; text(): Promise<string> }>;

export interface JwksCacheOptions {
  /** Fixed keys (no fetching), or undefined to fetch `jwksUri`. */
  jwks?: Jwks;
  jwksUri?: string;
  fetch?: FetchLike;
  refetchMinMs: number;
  refreshMs: number;
  backend?: Ed25519Backend;
  /** Epoch milliseconds. */
  now: () => number;
  /** Told about a failed fetch (the verifier turns it into a warning). */
  onError?: (err: unknown) => void;
}

/** keysOf prepares every usable key of a JWKS; a key that is not an Ed25519 signing key is skipped. */
async function keysOf(jwks: unknown, backend: Ed25519Backend | undefined): Promise<Map<string, PreparedKey>> {
  const out = new Map<string, PreparedKey>();
  const keys = (jwks as { keys?: unknown })?.keys;
  if (!Array.isArray(keys)) throw new Error('the JWKS has no "keys" array');
  for (const k of keys as Record<string, unknown>[]) {
    if (typeof k !== "object" || k === null) continue;
    if (k.kty !== "OKP" || k.crv !== "Ed25519" || typeof k.kid !== "string" || typeof k.x !== "string") continue;
    if (k.use !== undefined && k.use !== "sig") continue;
    if (k.alg !== undefined && k.alg !== TOKEN_ALG) continue;
    if ("d" in k) continue; // a private key published by mistake is not used (and not trusted)
    const raw = decodeSegment(k.x);
    if (raw === undefined || raw.length !== 32) continue;
    out.set(k.kid, await prepareKey(raw, backend));
  }
  return out;
}

export class JwksCache {
  private keys = new Map<string, PreparedKey>();
  private lastFetch = -Infinity;
  private inflight: Promise<void> | undefined;
  private timer: ReturnType<typeof setInterval> | undefined;
  private readonly opts: JwksCacheOptions;

  constructor(opts: JwksCacheOptions) {
    this.opts = opts;
  }

  /** start loads the keys; later refreshes run every refreshMs. */
  async start(): Promise<void> {
    if (this.opts.jwks) {
      this.keys = await keysOf(this.opts.jwks, this.opts.backend);
      return;
    }
    this.timer = setInterval(() => void this.fetchKeys().catch((e: unknown) => this.opts.onError?.(e)), this.opts.refreshMs);
    this.timer.unref?.();
    await this.fetchKeys();
  }

  /** get is the hot-path lookup. */
  get(kid: string): PreparedKey | undefined {
    return this.keys.get(kid);
  }

  /**
   * resolve returns the key for `kid`, refetching the JWKS first when it is
   * unknown and the last fetch is older than refetchMinMs.
   */
  async resolve(kid: string): Promise<PreparedKey | undefined> {
    const k = this.keys.get(kid);
    if (k !== undefined || this.opts.jwks) return k;
    if (this.inflight === undefined && this.opts.now() - this.lastFetch < this.opts.refetchMinMs) return undefined;
    await this.fetchKeys().catch((e: unknown) => this.opts.onError?.(e));
    return this.keys.get(kid);
  }

  /** fetchKeys fetches the JWKS; concurrent callers share one request. */
  private fetchKeys(): Promise<void> {
    this.inflight ??= (async () => {
      this.lastFetch = this.opts.now();
      try {
        const res = await this.opts.fetch!(this.opts.jwksUri!, { headers: { accept: "application/json" } });
        if (!res.ok) throw new Error(`GET ${this.opts.jwksUri} answered ${res.status}`);
        this.keys = await keysOf(JSON.parse(await res.text()), this.opts.backend);
      } finally {
        this.inflight = undefined;
      }
    })();
    return this.inflight;
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
  }
}
