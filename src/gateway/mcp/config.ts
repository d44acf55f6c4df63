/**
 * The `mcp` section of the gateway config: the upstream MCP servers the
 * aggregating endpoint exposes (docs/connectors.md). A server is either a
 * streamable-HTTP URL or a command the gateway runs as a child process
 * (stdio). Its name is the `server` of the policy's `mcp` rules and the
 * prefix of its tools' names (`github__create_issue`), so it is a word
 * without "__".
 */

import { z } from "zod";
import { MCP_SERVER_NAME_RE } from "../../guard/gateway-route.js";
import { AuthConfigSchema } from "../credentials/registry.js";
import { BucketRefsSchema } from "../quotas/config.js";
import { KeySourceSchema } from "../keys.js";
import { upstreamUrlSchema } from "../url.js";

/** Server names: lower-case letters, digits and single "-" / "_" — never "__", the separator of namespaced names. */
export { MCP_SERVER_NAME_RE };

const HttpServerSchema = z
  .object({
    url: upstreamUrlSchema("http://tools.internal:3000/mcp"),
    quotas: BucketRefsSchema.optional(),
    auth: AuthConfigSchema.optional().describe('the credential the gateway sends this server, as an HTTP connector\'s: { "type": "bearer" | "apiKey" | "basic" | "oauth2", ... }; the caller never sees it'),
    timeout: z.number().int().positive().max(3_600_000).default(60_000).describe("milliseconds a request to this server may take"),
  })
  .strict();

const StdioServerSchema = z
  .object({
    command: z.string().min(1, "must name the program to run"),
    args: z.array(z.string()).default([]),
    /**
     * Extra environment for the child (it inherits only PATH, HOME and the
     * locale variables besides): a value as written, or a secret read at
     * start from the gateway's environment or a file ({ "env" } / { "file" }),
     * which is then scrubbed like every credential.
     */
    env: z
      .record(
        z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "must be an environment variable name"),
        z.union([z.string(), KeySourceSchema], {
          errorMap: () => ({ message: 'must be a string (passed as written) or, for a secret, { "env": "NAME" } or { "file": "path" } (read when the gateway starts)' }),
        }),
      )
      .default({}),
    cwd: z.string().optional(),
    quotas: BucketRefsSchema.optional(),
    timeout: z.number().int().positive().max(3_600_000).default(60_000).describe("milliseconds a request to this server may take"),
  })
  .strict();

const SERVER_SHAPE = 'an MCP server is { "url": "http://host/mcp" } (streamable HTTP) or { "command": "node", "args": ["server.js"] } (stdio)';

/**
 * McpServerConfigSchema picks the kind by its key (`url` or `command`) and
 * reports that kind's own issues (a bad `auth` inside a URL server is named
 * as such, not as "neither kind").
 */
export const McpServerConfigSchema = z
  .unknown()
  .superRefine((v, ctx) => {
    if (typeof v !== "object" || v === null || Array.isArray(v) || (!("url" in v) && !("command" in v))) ctx.addIssue({ code: "custom", message: SERVER_SHAPE, fatal: true });
    else if ("url" in v && "command" in v) ctx.addIssue({ code: "custom", message: `give "url" or "command", not both: ${SERVER_SHAPE}`, fatal: true });
  })
  .transform((v, ctx): z.output<typeof HttpServerSchema> | z.output<typeof StdioServerSchema> => {
    const r = ("url" in (v as object) ? HttpServerSchema : StdioServerSchema).safeParse(v);
    if (r.success) return r.data;
    for (const i of r.error.issues) ctx.addIssue({ ...i } as z.IssueData);
    return z.NEVER;
  });

export const McpConfigSchema = z
  .object({
    sessionsPerCaller: z
      .number()
      .int()
      .positive()
      .max(1000)
      .default(8)
      .describe("open sessions one identity may hold (each runs its own upstream connections and stdio children); one more is refused until one closes or idles out"),
    path: z.string().regex(/^\/[A-Za-z0-9/_.-]*$/, 'must be a path such as "/v1/mcp"').default("/v1/mcp").describe("where the aggregating endpoint listens"),
    servers: z
      .record(z.string().regex(MCP_SERVER_NAME_RE, 'a server name is lower-case letters, digits, "-" and single "_" (never "__": it separates server and tool in "github__create_issue")'), McpServerConfigSchema)
      .refine((s) => Object.keys(s).length > 0, "configure at least one MCP server"),
  })
  .strict()
  .describe("the upstream MCP servers of the aggregating endpoint (docs/connectors.md)");

export type McpConfig = z.output<typeof McpConfigSchema>;
export type McpServerConfig = z.output<typeof McpServerConfigSchema>;
