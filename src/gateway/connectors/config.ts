/**
 * The `connectors` section of the gateway config: third-party HTTP APIs the
 * gateway proxies for agents, holding their credentials
 * (docs/connectors.md#http-api-connectors). A connector is reached at
 * `<prefix>/<name>/<path>` and its upstream request is
 * `<baseUrl><path>`; `auth` says what credential is injected
 * (../credentials/registry.ts lists the kinds).
 */

import { z } from "zod";
import { AuthConfigSchema } from "../credentials/registry.js";
import { BucketRefsSchema } from "../quotas/config.js";
import { upstreamUrlSchema } from "../url.js";

import { CONNECTOR_NAME_RE, CONNECTOR_PREFIX as PREFIX } from "../../guard/gateway-route.js";

export { CONNECTOR_NAME_RE };

export const HttpConnectorSchema = z
  .object({
    baseUrl: upstreamUrlSchema("https://api.github.com", { noQuery: true }).describe("the upstream API; a request's path is appended to it byte for byte"),
    auth: AuthConfigSchema.describe('the credential injected into every call: { "type": "bearer" | "apiKey" | "basic", ... }'),
    prefix: PREFIX.optional().describe("serve this connector under another prefix than the section's"),
    timeout: z.number().int().positive().max(3_600_000).default(60_000).describe("milliseconds until the upstream's response headers, and between body chunks"),
    quotas: BucketRefsSchema.optional(),
  })
  .strict();

export const ConnectorsConfigSchema = z
  .object({
    prefix: PREFIX.default("/v1/connectors").describe("connectors are reached at <prefix>/<name>/..."),
    http: z
      .record(z.string().regex(CONNECTOR_NAME_RE, 'a connector name is lower-case letters, digits, "-" and "_" (it is a path segment)'), HttpConnectorSchema)
      .refine((s) => Object.keys(s).length > 0, "configure at least one connector"),
  })
  .strict()
  .describe("third-party HTTP APIs the gateway proxies with credentials it holds (docs/connectors.md)");

export type ConnectorsConfig = z.output<typeof ConnectorsConfigSchema>;
export type HttpConnectorConfig = z.output<typeof HttpConnectorSchema>;
