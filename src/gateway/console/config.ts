/**
 * The `console` section of the gateway config: the web console at
 * /console/ (on by default: it shows each caller only what the API lets
 * them read) and the extra names browsers may reach the gateway by.
 */
import { z } from "zod";

/** A DNS name (no scheme, no port). */
const HOST_RE = /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/i;

export const ConsoleConfigSchema = z
  .object({
    enabled: z.boolean().default(true).describe("serve the web console at /console/"),
    hosts: z
      .array(z.string().regex(HOST_RE, 'must be a DNS name such as "ai.example.com" (no scheme, no port)'))
      .default([])
      .describe("other names browsers reach the gateway by (a DNS alias): a browser request naming any other host is refused"),
  })
  .strict();

export type ConsoleConfig = z.output<typeof ConsoleConfigSchema>;
