import { homedir, tmpdir } from "node:os";
import { checkStore, type StateStore } from "./state-store.js";
import { join } from "node:path";
import { z } from "zod";
import { ErrorCode, MeshguardError } from "./errors.js";
import type { ProgressListener } from "./progress.js";

export type { ProgressEvent, ProgressListener, ProgressPhase } from "./progress.js";

const hostnameRe = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const tagRe = /^tag:[a-zA-Z0-9][a-zA-Z0-9_-]*$/;
const TagOwnersSchema = z.record(z.string().regex(tagRe, "must look like tag:name"), z.array(z.string()));
const GroupsSchema = z.record(z.string().regex(/^group:/, "must look like group:name"), z.array(z.string()));

/**
 * TailnetIdentitySchema validates the identity part of a tailnet policy
 * (MeshNode.setTailnetIdentity): who owns each tag, who is in each group.
 */
export const TailnetIdentitySchema = z
  .object({
    tagOwners: TagOwnersSchema.default({}),
    groups: GroupsSchema.default({}),
  })
  .strict();

/** The identity part of a tailnet policy: `tagOwners` and `groups`, as in a tailnet policy file. */
export type TailnetIdentity = z.input<typeof TailnetIdentitySchema>;

/** StartOptionsSchema validates MeshNode.start options (the public boundary). */
export const StartOptionsSchema = z
  .object({
    controlUrl: z
      .string()
      .refine((s) => /^https?:\/\/[^/\s]+/.test(s), "must be an http:// or https:// URL, e.g. http://127.0.0.1:8080"),
    authKey: z.string().min(1, "must not be empty").optional(),
    hostname: z.string().regex(hostnameRe, "must be a DNS label: 1-63 of a-z, 0-9 and '-', not starting or ending with '-'"),
    dir: z.string().min(1).optional(),
    ephemeral: z.boolean().default(false),
    /**
     * Where the node's state goes (src/state-store.ts): a StateStore, e.g.
     * memoryStateStore() or fileStateStore(dir). With it, `dir` is only the
     * core's working copy (a private temporary directory when not given,
     * removed on close). Default: the files in `dir`.
     */
    state: z.custom<StateStore>(checkStore, "must be a StateStore { get(key), set(key, value), delete?(key) }, e.g. memoryStateStore() or fileStateStore(dir)").optional(),
    tags: z.array(z.string().regex(tagRe, "must look like tag:name")).default([]),
    timeoutMs: z.number().int().positive().max(10 * 60_000).default(60_000),
    tagOwners: TagOwnersSchema.default({}),
    groups: GroupsSchema.default({}),
    verbose: z.boolean().default(false),
    addonPath: z.string().optional(),
    /**
     * Which core runs the node: "native" (the Node addon), "wasm" (the Go
     * core compiled to WebAssembly, in a worker thread; DERP-relayed only,
     * see docs/wasm.md) or "auto" (native, else wasm with a warning).
     * Default: $MESHGUARD_BACKEND, else "auto".
     */
    backend: z.enum(["auto", "native", "wasm"]).optional(),
    /**
     * The node's local control socket (see docs/cli.md): true serves it at
     * DIR/meshguard.sock and fails the start if it cannot; a string serves
     * it at that path; false serves none. Default: served at
     * DIR/meshguard.sock when it safely can (a process warning says why
     * not), unless MESHGUARD_CONTROL_SOCKET=off.
     */
    controlSocket: z.union([z.boolean(), z.string().min(1, "must be a socket path, or true/false")]).optional(),
    tls: z
      .object({
        ca: z.union([z.string(), z.instanceof(Buffer), z.array(z.union([z.string(), z.instanceof(Buffer)]))]).optional(),
        cert: z.union([z.string(), z.instanceof(Buffer)]).optional(),
        key: z.union([z.string(), z.instanceof(Buffer)]).optional(),
        rejectUnauthorized: z.boolean().default(true),
      })
      .optional(),
    onProgress: z.custom<ProgressListener>((v) => typeof v === "function", "must be a function").optional(),
    signal: z.custom<AbortSignal>((v) => v instanceof AbortSignal, "must be an AbortSignal").optional(),
  })
  .strict();

export type StartOptions = z.input<typeof StartOptionsSchema>;
export type ResolvedStartOptions = z.output<typeof StartOptionsSchema> & { dir: string };

/**
 * parseOptions validates once at the boundary and turns every zod issue into
 * one line naming the field: `hostname: must be a DNS label ...`.
 */
export function parseWith<S extends z.ZodType>(schema: S, input: unknown, what: string): z.output<S> {
  const r = schema.safeParse(input);
  if (r.success) return r.data;
  const lines = r.error.issues.map((i) => {
    const path = i.path.length ? i.path.map(String).join(".") : "(options)";
    const msg = i.code === "unrecognized_keys" ? `unknown option(s) ${(i as { keys: string[] }).keys.map((k) => JSON.stringify(k)).join(", ")}` : i.message;
    return `${path}: ${msg}`;
  });
  throw new MeshguardError(ErrorCode.INVALID_OPTIONS, `invalid ${what}: ${lines.join("; ")}`, { cause: r.error });
}

export function resolveStartOptions(input: unknown): ResolvedStartOptions {
  const o = parseWith(StartOptionsSchema, input ?? {}, "MeshNode.start options");
  if (o.tags.length > 0 && o.authKey === undefined) {
    // Advertising tags needs a key allowed to carry them; not an error, but the
    // control server will decide. Nothing to do here.
  }
  const dir = o.dir ?? (o.ephemeral ? join(tmpdir(), `meshguard-${o.hostname}-${process.pid}`) : join(homedir(), ".local", "state", "meshguard", o.hostname));
  return { ...o, dir };
}

/** isLoopbackControl tells whether a control URL points at this machine. */
export function isLoopbackControl(url: string): boolean {
  try {
    const h = new URL(url).hostname.replace(/^\[|\]$/g, "");
    return h === "localhost" || h === "::1" || /^127\./.test(h);
  } catch {
    return false;
  }
}

/**
 * knobsFor returns the Go environment knobs for the first node of a process.
 * Log upload and port mapping are always off unless the caller's environment
 * sets them; a loopback control server also gets plain-HTTP DERP and the
 * guard that panics rather than contact Tailscale's public control server.
 */
export function knobsFor(controlUrl: string): Record<string, string> {
  const k: Record<string, string> = {
    TS_NO_LOGS_NO_SUPPORT: "true",
    TS_DISABLE_PORTMAPPER: "1",
    TS_DISABLE_UPNP: "1",
  };
  if (isLoopbackControl(controlUrl)) {
    k.TS_DEBUG_USE_DERP_HTTP = "1";
    k.TS_PANIC_IF_HIT_MAIN_CONTROL = "1";
    // A loopback tailnet needs no other interface: without this, a node in a
    // network namespace holding only loopback pauses its control client
    // ("no network") and never comes up.
    k.TS_ASSUME_NETWORK_UP_FOR_TEST = "1";
  }
  for (const name of Object.keys(k)) {
    const v = process.env[name];
    if (v !== undefined && v !== "") k[name] = v;
  }
  return k;
}
