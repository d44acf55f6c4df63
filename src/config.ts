import { homedir, tmpdir } from "node:os";
import { createRequire } from "node:module";
import { checkStore, type StateStore } from "./state-store.js";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type * as ZodModule from "zod";
import type { z } from "zod";
import { ErrorCode, MeshguardError } from "./errors.js";
import type { ProgressListener } from "./progress.js";

export type { ProgressEvent, ProgressListener, ProgressPhase } from "./progress.js";

const hostnameRe = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const tagRe = /^tag:[a-zA-Z0-9][a-zA-Z0-9_-]*$/;
const controlUrlRe = /^https?:\/\/[^/\s]+/;
const MAX_TIMEOUT_MS = 10 * 60_000;
const BACKENDS = ["auto", "native", "wasm"] as const;

let zodModule: typeof ZodModule | undefined;

/**
 * loadZod loads zod on first use, synchronously: `require` of its ES module
 * (Node ≥ 22.12), which is the very module instance `import "zod"` gives, so
 * a process that imports zod elsewhere holds one copy. zod costs 1.2-1.4 MB
 * of a node's RSS at online (docs/core.md "Memory"): a node whose options
 * pass the zod-free check below (quickStartOptions) and that validates
 * nothing else never loads it.
 */
export function loadZod(): typeof z {
  if (zodModule === undefined) {
    try {
      zodModule = createRequire(import.meta.url)(fileURLToPath(import.meta.resolve("zod"))) as typeof ZodModule;
    } catch (err) {
      throw new MeshguardError(ErrorCode.INTERNAL, `meshguard could not load its dependency zod (needed to validate options): ${(err as Error).message}`, {
        cause: err,
        hint: "install meshguard with its dependencies (npm install meshguard); a bundle must leave zod resolvable from node_modules, as it does the platform package",
      });
    }
  }
  return zodModule.z;
}

/** schemasOf builds the zod schemas of this file: the single definition of what MeshNode.start and setTailnetIdentity accept. */
function schemasOf(zod: typeof z) {
  const TagOwnersSchema = zod.record(zod.string().regex(tagRe, "must look like tag:name"), zod.array(zod.string()));
  const GroupsSchema = zod.record(zod.string().regex(/^group:/, "must look like group:name"), zod.array(zod.string()));

  /**
   * TailnetIdentitySchema validates the identity part of a tailnet policy
   * (MeshNode.setTailnetIdentity): who owns each tag, who is in each group.
   */
  const TailnetIdentitySchema = zod
    .object({
      tagOwners: TagOwnersSchema.default({}),
      groups: GroupsSchema.default({}),
    })
    .strict();

  /** StartOptionsSchema validates MeshNode.start options (the public boundary). */
  const StartOptionsSchema = zod
    .object({
      controlUrl: zod.string().refine((s) => controlUrlRe.test(s), "must be an http:// or https:// URL, e.g. http://127.0.0.1:8080"),
      authKey: zod.string().min(1, "must not be empty").optional(),
      hostname: zod.string().regex(hostnameRe, "must be a DNS label: 1-63 of a-z, 0-9 and '-', not starting or ending with '-'"),
      dir: zod.string().min(1).optional(),
      ephemeral: zod.boolean().default(false),
      /**
       * Where the node's state goes (src/state-store.ts): a StateStore, e.g.
       * memoryStateStore() or fileStateStore(dir). With it, `dir` is only the
       * core's working copy (a private temporary directory when not given,
       * removed on close). Default: the files in `dir`.
       */
      state: zod.custom<StateStore>(checkStore, "must be a StateStore { get(key), set(key, value), delete?(key) }, e.g. memoryStateStore() or fileStateStore(dir)").optional(),
      tags: zod.array(zod.string().regex(tagRe, "must look like tag:name")).default([]),
      timeoutMs: zod.number().int().positive().max(MAX_TIMEOUT_MS).default(60_000),
      tagOwners: TagOwnersSchema.default({}),
      groups: GroupsSchema.default({}),
      verbose: zod.boolean().default(false),
      addonPath: zod.string().optional(),
      /**
       * Which core runs the node: "native" (the Node addon), "wasm" (the Go
       * core compiled to WebAssembly, in a worker thread; DERP-relayed only,
       * see docs/wasm.md) or "auto" (native, else wasm with a warning).
       * Default: $MESHGUARD_BACKEND, else "auto".
       */
      backend: zod.enum(BACKENDS).optional(),
      /**
       * The node's local control socket (see docs/cli.md): true serves it at
       * DIR/meshguard.sock and fails the start if it cannot; a string serves
       * it at that path; false serves none. Default: served at
       * DIR/meshguard.sock when it safely can (a process warning says why
       * not), unless MESHGUARD_CONTROL_SOCKET=off.
       */
      controlSocket: zod.union([zod.boolean(), zod.string().min(1, "must be a socket path, or true/false")]).optional(),
      tls: zod
        .object({
          ca: zod.union([zod.string(), zod.instanceof(Buffer), zod.array(zod.union([zod.string(), zod.instanceof(Buffer)]))]).optional(),
          cert: zod.union([zod.string(), zod.instanceof(Buffer)]).optional(),
          key: zod.union([zod.string(), zod.instanceof(Buffer)]).optional(),
          rejectUnauthorized: zod.boolean().default(true),
        })
        .optional(),
      onProgress: zod.custom<ProgressListener>((v) => typeof v === "function", "must be a function").optional(),
      signal: zod.custom<AbortSignal>((v) => v instanceof AbortSignal, "must be an AbortSignal").optional(),
    })
    .strict();

  return { TailnetIdentitySchema, StartOptionsSchema };
}

type Schemas = ReturnType<typeof schemasOf>;
let schemas: Schemas | undefined;

/** configSchemas returns the start-option and identity schemas, loading zod on the first call. */
export function configSchemas(): Schemas {
  return (schemas ??= schemasOf(loadZod()));
}

/** The identity part of a tailnet policy: `tagOwners` and `groups`, as in a tailnet policy file. */
export type TailnetIdentity = z.input<Schemas["TailnetIdentitySchema"]>;

export type StartOptions = z.input<Schemas["StartOptionsSchema"]>;
export type ResolvedStartOptions = z.output<Schemas["StartOptionsSchema"]> & { dir: string };

type ParsedStartOptions = z.output<Schemas["StartOptionsSchema"]>;

/**
 * QUICK_KEYS are the start options quickStartOptions judges itself, each with
 * the test that accepts a value exactly when StartOptionsSchema does, and
 * whose accepted value zod returns unchanged (no copy, no default inside).
 * Any other key present (tagOwners, groups, tls), and any value undefined,
 * goes to zod.
 */
const QUICK_KEYS: Record<string, (v: unknown) => boolean> = {
  controlUrl: (v) => typeof v === "string" && controlUrlRe.test(v),
  authKey: (v) => typeof v === "string" && v.length >= 1,
  hostname: (v) => typeof v === "string" && hostnameRe.test(v),
  dir: (v) => typeof v === "string" && v.length >= 1,
  ephemeral: (v) => typeof v === "boolean",
  state: (v) => checkStore(v),
  timeoutMs: (v) => typeof v === "number" && Number.isInteger(v) && v > 0 && v <= MAX_TIMEOUT_MS,
  verbose: (v) => typeof v === "boolean",
  addonPath: (v) => typeof v === "string",
  backend: (v) => (BACKENDS as readonly unknown[]).includes(v),
  controlSocket: (v) => typeof v === "boolean" || (typeof v === "string" && v.length >= 1),
  onProgress: (v) => typeof v === "function",
  signal: (v) => v instanceof AbortSignal,
};

/**
 * quickStartOptions is the zod-free path of the common case: it returns what
 * StartOptionsSchema would return for options it can judge without zod (a
 * plain object of QUICK_KEYS and tags, every value valid), and undefined for
 * anything else — which zod then judges, with its messages. It only ever
 * accepts; it never rejects. src/config.test.ts checks it against
 * StartOptionsSchema on valid and invalid options alike.
 */
export function quickStartOptions(input: unknown): ParsedStartOptions | undefined {
  if (typeof input !== "object" || input === null) return undefined;
  const proto = Object.getPrototypeOf(input) as unknown;
  if (proto !== Object.prototype && proto !== null) return undefined;
  const o = input as Record<string, unknown>;
  const out: Record<string, unknown> = { ephemeral: false, tags: [], timeoutMs: 60_000, tagOwners: {}, groups: {}, verbose: false };
  for (const k of Object.keys(o)) {
    const v = o[k];
    if (k === "tags") {
      if (!Array.isArray(v) || Object.getPrototypeOf(v) !== Array.prototype) return undefined;
      const tags: string[] = [];
      for (let i = 0; i < v.length; i++) {
        const t: unknown = v[i]; // a hole reads undefined, which zod refuses too
        if (typeof t !== "string" || !tagRe.test(t)) return undefined;
        tags.push(t);
      }
      out.tags = tags;
      continue;
    }
    const ok = Object.hasOwn(QUICK_KEYS, k) ? QUICK_KEYS[k] : undefined;
    if (ok === undefined || v === undefined || !ok(v)) return undefined;
    out[k] = v;
  }
  if (!Object.hasOwn(o, "controlUrl") || !Object.hasOwn(o, "hostname")) return undefined;
  return out as ParsedStartOptions;
}

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
  const o = quickStartOptions(input) ?? parseWith(configSchemas().StartOptionsSchema, input ?? {}, "MeshNode.start options");
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
