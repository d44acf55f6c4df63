/**
 * connect()'s options, validated once at the public boundary (zod). Every
 * issue names its field ("forwards.1.listen: ..."), and an address that is
 * not loopback is refused here unless `allowNonLoopback` says otherwise:
 * whoever can reach a forward's address uses the tailnet as this node.
 */

import { hostname as osHostname } from "node:os";
import { z } from "zod";

import { parseWith } from "../config.js";
import type { ProgressListener } from "../progress.js";
import { isLoopback, parseListen, parseTarget, type HostPort } from "./address.js";

const ForwardSchema = z
  .object({
    /** The tailnet service, "HOST:PORT" (a MagicDNS name or tailnet IP). */
    target: z.string(),
    /** The local address, "HOST:PORT" or "PORT" (127.0.0.1); port 0 picks a free one. Default "127.0.0.1:0". */
    listen: z.string().default("127.0.0.1:0"),
  })
  .strict();

export const ConnectOptionsSchema = z
  .object({
    controlUrl: z.string(),
    /** The node's auth key; default $TS_AUTHKEY (as MeshNode.start). Its tags are the identity the tailnet sees. */
    authKey: z.string().min(1, "must not be empty").optional(),
    /** The node's name on the tailnet; default "connect-" and this machine's name. */
    hostname: z.string().optional(),
    /** The node's state directory. Given, the node is kept across runs (not ephemeral) unless `ephemeral` says so. */
    dir: z.string().min(1).optional(),
    ephemeral: z.boolean().optional(),
    forwards: z.array(ForwardSchema).min(1, "at least one forward is needed, e.g. [{ target: \"gateway:80\", listen: \"127.0.0.1:8080\" }]"),
    /** Listen on addresses other than loopback (a LAN, all interfaces): everyone who reaches them acts as this node. */
    allowNonLoopback: z.boolean().default(false),
    /** How long a tailnet dial for one local connection may take (default 30 s). */
    dialTimeoutMs: z.number().int().positive().max(10 * 60_000).default(30_000),
    /** How long joining the tailnet may take (MeshNode.start's timeoutMs). */
    timeoutMs: z.number().int().positive().max(10 * 60_000).optional(),
    /** One line per event a person should see: a connection that failed, the non-loopback warning. Default: stderr. */
    log: z.custom<(line: string) => void>((v) => typeof v === "function", "must be a function").optional(),
    onProgress: z.custom<ProgressListener>((v) => typeof v === "function", "must be a function").optional(),
    signal: z.custom<AbortSignal>((v) => v instanceof AbortSignal, "must be an AbortSignal").optional(),
  })
  .strict()
  .superRefine((o, ctx) => {
    o.forwards.forEach((f, i) => {
      const t = parseTarget(f.target);
      if (typeof t === "string") ctx.addIssue({ code: "custom", path: ["forwards", i, "target"], message: t });
      const l = parseListen(f.listen);
      if (typeof l === "string") ctx.addIssue({ code: "custom", path: ["forwards", i, "listen"], message: l });
      else if (!o.allowNonLoopback && !isLoopback(l.host)) {
        ctx.addIssue({
          code: "custom",
          path: ["forwards", i, "listen"],
          message: `${l.host} is not a loopback address: anyone who can reach it would use the tailnet as this node; listen on 127.0.0.1, or set allowNonLoopback (--allow-non-loopback) if that is what you want`,
        });
      }
    });
  });

export type ConnectOptions = z.input<typeof ConnectOptionsSchema>;

/** A forward with its addresses read. */
export interface ForwardSpec {
  /** The target as given ("gateway:80"). */
  target: string;
  to: HostPort;
  listen: HostPort;
}

export type ResolvedConnectOptions = Omit<z.output<typeof ConnectOptionsSchema>, "forwards" | "hostname" | "ephemeral" | "log"> & {
  hostname: string;
  ephemeral: boolean;
  forwards: ForwardSpec[];
  log: (line: string) => void;
};

/** resolveConnectOptions validates and fills in the defaults; a bad option is MESHGUARD_INVALID_OPTIONS naming the field. */
export function resolveConnectOptions(input: unknown): ResolvedConnectOptions {
  const o = parseWith(ConnectOptionsSchema, input ?? {}, "connect options");
  const forwards = o.forwards.map((f) => ({ target: f.target, to: parseTarget(f.target) as HostPort, listen: parseListen(f.listen) as HostPort }));
  return {
    ...o,
    hostname: o.hostname ?? defaultHostname(),
    ephemeral: o.ephemeral ?? o.dir === undefined,
    forwards,
    log: o.log ?? ((line) => void process.stderr.write(`meshguard connect: ${line}\n`)),
  };
}

/** defaultHostname is "connect-" and this machine's name made a DNS label (MeshNode.start checks the result). */
export function defaultHostname(machine = osHostname()): string {
  const label = machine
    .toLowerCase()
    .split(".")[0]!
    .replace(/[^a-z0-9-]+/g, "-")
    .replace(/^-+|-+$/g, "");
  return `connect-${label}`.slice(0, 63).replace(/-+$/, "") || "connect";
}
