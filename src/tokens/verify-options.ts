/**
 * createVerifier's options, validated once at the boundary (zod), with the
 * defaults and bounds a person can read here.
 */

import { z } from "zod";
import { parseWith } from "../config.js";
import { ErrorCode, MeshguardError } from "../errors.js";
import { normalizeAudience } from "../policy/index.js";
import { canonicalOrigin } from "./verify-actions.js";
import type { Ed25519Backend } from "./ed25519.js";
import type { FetchLike } from "./verify-keys.js";
import type { Jwks } from "./types.js";

/** What the verifier needs of a MeshNode: whois of the caller, fetch to the issuer. */
export interface VerifierNode {
  whois(target: import("node:net").Socket | string): Promise<{ node: { id: string; name: string; tags: string[] }; owners: string[] }>;
  fetch?: (input: string, init?: object) => Promise<{ ok: boolean; status: number; text(): Promise<string> }>;
}

const url = z.string().refine((s) => /^https?:\/\/[^/?#]+$/i.test(s.replace(/\/$/, "")), 'an origin such as "http://tokens" (scheme and host, no path)');

export const VerifierOptionsSchema = z
  .object({
    issuer: url.describe("the issuer's URL on the tailnet: tokens must carry it as iss; its JWKS and revocation feed are read from it"),
    jwks: z.object({ keys: z.array(z.record(z.unknown())) }).optional().describe("fixed public keys instead of fetching <issuer>/.well-known/jwks.json"),
    audience: z.string().min(1, "name this service's audience, e.g. \"http://billing\""),
    origin: url.optional().describe("the origin the token's locations are compared with; default: the audience when it is an origin"),
    node: z.custom<VerifierNode>((v) => typeof v === "object" && v !== null && typeof (v as VerifierNode).whois === "function", "a MeshNode (for whois of the caller)").optional(),
    fetch: z.custom<FetchLike>((v) => typeof v === "function", "a fetch function").optional(),
    clockSkewS: z.number().int().min(0).max(300, "at most 300 s: a larger skew keeps expired tokens alive").default(30),
    oneTimeUse: z.union([z.boolean(), z.object({ maxEntries: z.number().int().positive().default(100_000) }).strict()]).default(false),
    revocations: z
      .union([
        z.literal(false),
        z
          .object({
            pollMs: z.number().int().min(100).max(60_000).default(2_000),
            maxStalenessMs: z.number().int().min(1_000).max(3_600_000).default(15_000),
          })
          .strict(),
      ])
      .default({}),
    jwksRefetchMinMs: z.number().int().min(0).default(10_000),
    jwksRefreshMs: z.number().int().min(1_000).default(300_000),
    maxLifetimeS: z.number().int().positive().max(7 * 86_400).default(86_400),
    cacheSize: z.number().int().min(0).default(10_000),
    crypto: z.enum(["node:crypto", "@noble/curves"]).optional(),
    realm: z.string().optional(),
    now: z.custom<() => number>((v) => typeof v === "function", "a function returning epoch milliseconds").optional(),
    onWarning: z.custom<(err: MeshguardError) => void>((v) => typeof v === "function").optional(),
  })
  .strict();

export type VerifierOptions = z.input<typeof VerifierOptionsSchema> & { jwks?: Jwks | { keys: Record<string, unknown>[] }; node?: VerifierNode; fetch?: FetchLike; crypto?: Ed25519Backend };

export interface ResolvedVerifierOptions {
  issuer: string;
  jwks?: Jwks;
  audience: string;
  origin: string | undefined;
  node?: VerifierNode;
  fetch?: FetchLike;
  clockSkewS: number;
  oneTimeMax: number;
  revocations: false | { pollMs: number; maxStalenessMs: number };
  jwksRefetchMinMs: number;
  jwksRefreshMs: number;
  maxLifetimeS: number;
  cacheSize: number;
  crypto?: Ed25519Backend;
  realm: string;
  now: () => number;
  onWarning?: (err: MeshguardError) => void;
}

export function resolveVerifierOptions(input: unknown): ResolvedVerifierOptions {
  const o = parseWith(VerifierOptionsSchema, input, "createVerifier options");
  // The issuer writes aud in canonical form ("HTTP://Billing/" → "http://billing"); compare in that form.
  const audience = normalizeAudience(o.audience);
  if (typeof audience !== "string") throw new MeshguardError(ErrorCode.INVALID_OPTIONS, `invalid createVerifier options: audience: ${audience.error}`);
  const origin = o.origin !== undefined ? canonicalOrigin(o.origin) : canonicalOrigin(audience);
  const fetch = o.fetch ?? (o.node?.fetch ? (o.node.fetch.bind(o.node) as FetchLike) : undefined);
  if (!o.jwks && !fetch) throw new MeshguardError(ErrorCode.INVALID_OPTIONS, "invalid createVerifier options: give node (its fetch reaches the issuer over the tailnet), fetch, or fixed jwks");
  if (o.revocations !== false && !fetch) throw new MeshguardError(ErrorCode.INVALID_OPTIONS, "invalid createVerifier options: revocations: the feed is read with node or fetch; give one, or set revocations: false");
  return {
    issuer: o.issuer.replace(/\/$/, ""),
    ...(o.jwks ? { jwks: o.jwks as unknown as Jwks } : {}),
    audience,
    origin,
    ...(o.node ? { node: o.node } : {}),
    ...(fetch ? { fetch } : {}),
    clockSkewS: o.clockSkewS,
    oneTimeMax: o.oneTimeUse === false ? 0 : o.oneTimeUse === true ? 100_000 : o.oneTimeUse.maxEntries,
    revocations: o.revocations,
    jwksRefetchMinMs: o.jwksRefetchMinMs,
    jwksRefreshMs: o.jwksRefreshMs,
    maxLifetimeS: o.maxLifetimeS,
    cacheSize: o.cacheSize,
    ...(o.crypto ? { crypto: o.crypto } : {}),
    realm: o.realm ?? audience,
    now: o.now ?? Date.now,
    ...(o.onWarning ? { onWarning: o.onWarning } : {}),
  };
}
