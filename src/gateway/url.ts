/**
 * The URL of an upstream the gateway calls (a provider, an MCP server): http
 * or https, and no credentials in it (they go in the config's key sources).
 */

import { z } from "zod";

export function upstreamUrlSchema(example: string, opts: { noQuery?: boolean } = {}) {
  return z.string().superRefine((s, ctx) => {
    let u: URL;
    try {
      u = new URL(s);
    } catch {
      ctx.addIssue({ code: "custom", message: `must be a URL such as ${JSON.stringify(example)}` });
      return;
    }
    if (u.protocol !== "http:" && u.protocol !== "https:") ctx.addIssue({ code: "custom", message: "must be an http:// or https:// URL" });
    else if (u.username || u.password) ctx.addIssue({ code: "custom", message: 'must not carry credentials: give the key with "key"' });
    else if (opts.noQuery && (u.search || u.hash)) ctx.addIssue({ code: "custom", message: "must not have a query or fragment" });
  });
}
