/**
 * The SDK layer: the official `openai` and `@anthropic-ai/sdk` clients, and
 * the `@modelcontextprotocol/sdk` client and transports.
 *
 * LLM SDKs send through fetch, where the dispatcher already enforces — but
 * they catch fetch's rejection, retry it twice with back-off, and rethrow it
 * as their own connection error (`APIConnectionError: Connection error.`
 * after ~1.5 s). Two patches on the Stainless-generated client both SDKs
 * share make the denial reach the caller as itself, at once:
 *
 * - The retry loop. `makeRequest` (one attempt; a retry calls it again
 *   through `retryRequest`) runs in an attempt context (sdk-context.ts)
 *   that records any policy denial made while it is in flight, by whichever
 *   layer below made it. `retryRequest` after a denied attempt rejects with
 *   the denial instead of sleeping and retrying, and a final connection
 *   error wrapping a denial is unwrapped. This holds whatever the SDK puts
 *   between its retry loop and fetch (openai 6+ added an async
 *   `fetchWithAuth`; a subclass may add its own), and with any `fetch`
 *   option (MeshNode.fetch over the tailnet).
 * - The decision, one step before fetch: the client's
 *   `fetchWithTimeout(url, init, ms, controller)` (or `fetchWithAuth`
 *   around it when present) judges the call with its body still a string;
 *   a deny is thrown synchronously, before the SDK's `.catch`. An allowed
 *   call goes on to fetch marked as decided (sdk-context.ts), so it is not
 *   judged twice.
 *
 * MCP: see mcp.ts (tools/call is judged in the transport's send).
 * Databases: see pg.ts (node-postgres statements are judged in Client#query)
 * and postgresjs.ts (postgres.js statements are judged as its connection builds them).
 *
 * The SDK classes are found from the application's own resolution paths,
 * both the CommonJS and the ES module build (they are different classes).
 */

import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import type { Target } from "../policy/types.js";
import type { GuardCore } from "./core.js";
import { PolicyDeniedError, deniedCause } from "./errors.js";
import { instrumentMcpClient, instrumentMcpTransport, resetMcp } from "./mcp.js";
import { patchMethod, unpatchAll } from "./patches.js";
import { instrumentPgClient } from "./pg.js";
import { instrumentPostgresQuery } from "./postgresjs.js";
import { attemptDenied, runAttempt, runDecided, type SdkAttempt } from "./sdk-context.js";
import { current } from "./state.js";
import { defaultPort, headerRecord, httpTarget, llmProviderFor, llmTarget } from "./targets.js";
import { normalizeHost } from "../policy/hosts.js";

/** unpatchSdks restores every SDK method the guard replaced and forgets what the SDK layer remembered. */
export function unpatchSdks(): void {
  unpatchAll();
  resetMcp();
  refused.clear();
}

/**
 * forgetSdkDecisions drops what the SDK layer remembered of earlier
 * decisions (refused approvals): a new policy decides afresh.
 */
export function forgetSdkDecisions(): void {
  refused.clear();
}

/** owner finds the prototype on the chain that defines `name`. */
function owner(proto: object | null, name: string): object | undefined {
  for (let p = proto; p && p !== Object.prototype; p = Object.getPrototypeOf(p)) if (Object.hasOwn(p, name)) return p;
  return undefined;
}

// ---- LLM SDKs ----

/** Calls an approver refused, so that the SDK's retry of the same call is refused at once. */
const refused = new Map<string, { err: PolicyDeniedError; until: number }>();

function refusedKey(method: string, url: string, body: string): string {
  return createHash("sha256").update(method).update("\0").update(url).update("\0").update(body).digest("base64");
}

/** instrumentLlmClient patches an OpenAI / Anthropic client class (or any Stainless client: makeRequest, retryRequest, fetchWithTimeout). */
export function instrumentLlmClient(cls: { prototype: object }): boolean {
  const retry = patchRetryLoop(cls.prototype);
  // openai 6+ calls fetchWithTimeout from inside an async fetchWithAuth(url,
  // init, timeout, controller, schemes), whose rejection the retry loop
  // catches: the outermost of the two is the one to patch.
  const name = owner(cls.prototype, "fetchWithAuth") !== undefined ? "fetchWithAuth" : "fetchWithTimeout";
  const proto = owner(cls.prototype, name);
  if (proto === undefined) return retry;
  return patchMethod(proto, name, (original) =>
    // Not async on purpose: a deny must be a synchronous throw (see the file comment).
    function guardedFetch(this: unknown, url: unknown, init: unknown, ...rest: unknown[]) {
      const core = current();
      const call = () => original.call(this, url, init, ...rest);
      if (core === undefined) return call();
      return llmSdkCall(core, String(url), (init ?? {}) as { method?: string; headers?: unknown; body?: unknown }, call);
    },
  );
}

/**
 * patchRetryLoop wraps the client's `makeRequest` (one attempt) in an
 * attempt context and its `retryRequest` so that an attempt the guard
 * refused is not retried (see the file comment). True when it patched
 * either (false: not a Stainless client, or patched already).
 */
function patchRetryLoop(prototype: object): boolean {
  const makeOwner = owner(prototype, "makeRequest");
  const retryOwner = owner(prototype, "retryRequest");
  if (makeOwner === undefined || retryOwner === undefined) return false;
  const made = patchMethod(makeOwner, "makeRequest", (original) =>
    function guardedMakeRequest(this: unknown, ...args: unknown[]) {
      if (current() === undefined) return original.apply(this, args);
      const attempt: SdkAttempt = { denied: undefined };
      // The SDK's own promise type is kept out of it: its request() wraps whatever this returns.
      return Promise.resolve(runAttempt(attempt, () => original.apply(this, args))).catch((err: unknown) => {
        throw attempt.denied ?? deniedCause(err) ?? err;
      });
    },
  );
  const retried = patchMethod(retryOwner, "retryRequest", (original) =>
    function guardedRetryRequest(this: unknown, ...args: unknown[]) {
      // Called by makeRequest, in its attempt's context: a refused attempt is final.
      const denied = attemptDenied();
      if (denied !== undefined && current() !== undefined) return Promise.reject(denied);
      return original.apply(this, args);
    },
  );
  return made || retried;
}

function llmSdkCall(core: GuardCore, url: string, init: { method?: string; headers?: unknown; body?: unknown }, call: () => unknown): unknown {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return call(); // the dispatcher judges what it can
  }
  const scheme = u.protocol === "https:" ? "https" : "http";
  const host = normalizeHost(u.hostname);
  const port = u.port ? Number(u.port) : defaultPort(scheme);
  const method = (init.method ?? "GET").toUpperCase();
  const body = init.body;
  if (body !== undefined && body !== null && typeof body !== "string") return call(); // uploads: the dispatcher decides
  const text = body ?? "";
  const rawPath = u.pathname + u.search;
  const targets: Target[] = [httpTarget({ scheme, host, port, method, rawPath, headers: headerRecord(init.headers), bodySize: Buffer.byteLength(text) })];
  const provider = llmProviderFor(core.llmProviders, host, port, method, u.pathname);
  let parsed: unknown;
  if (provider !== undefined) {
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = undefined;
    }
    targets.push(llmTarget(provider, parsed, u.pathname) ?? { kind: "llm", provider, model: "(unknown: no model in the body)" });
    (targets[0] as { body?: unknown }).body = parsed;
  }
  let key: string | undefined;
  if (refused.size > 0) {
    key = refusedKey(method, url, text);
    const r = refused.get(key);
    if (r !== undefined && r.until > Date.now()) throw r.err;
    if (r !== undefined) refused.delete(key);
  }
  const decided = { scheme, host, port, method, path: u.pathname };
  // The policy that decides: the mark below is good under this policy only.
  const policy = core.evaluator;
  const v = core.checkAll(targets, "llm-sdk");
  if (v === undefined) return runDecided(decided, policy, call);
  if (v instanceof PolicyDeniedError) throw v;
  return v.then(
    () => runDecided(decided, policy, call),
    (err: PolicyDeniedError) => {
      if (refused.size > 256) refused.clear();
      refused.set(key ?? refusedKey(method, url, text), { err, until: Date.now() + 60_000 });
      throw err;
    },
  );
}

/**
 * instrumentSdkClass patches a class the guard did not find by itself: an
 * MCP Client, an openai/Anthropic client, or an MCP transport class.
 */
export function instrumentSdkClass(cls: { prototype: object }): boolean {
  return instrumentMcpClient(cls) || instrumentLlmClient(cls) || instrumentMcpTransport(cls) || instrumentPgClient(cls) || instrumentPostgresQuery(cls);
}

// ---- discovery ----

interface SdkSpec {
  pkg: string;
  subpath: string;
  exportNames: string[];
  instrument: (cls: { prototype: object }) => boolean;
  /** How `instrumented` lists it (default: the package name). */
  label?: string;
  /** The class is not exported: it is in this file beside the entry (in both builds). */
  sibling?: string;
}

const SDKS: SdkSpec[] = [
  { pkg: "openai", subpath: ".", exportNames: ["OpenAI", "default"], instrument: instrumentLlmClient },
  { pkg: "@anthropic-ai/sdk", subpath: ".", exportNames: ["BaseAnthropic", "Anthropic", "default"], instrument: instrumentLlmClient },
  { pkg: "@modelcontextprotocol/sdk", subpath: "./client/index.js", exportNames: ["Client"], instrument: instrumentMcpClient },
  // The transports: tools/call is judged in their send (mcp.ts), and only their endpoints name a server.
  ...(
    [
      ["./client/stdio.js", "StdioClientTransport"],
      ["./client/streamableHttp.js", "StreamableHTTPClientTransport"],
      ["./client/sse.js", "SSEClientTransport"],
      ["./client/websocket.js", "WebSocketClientTransport"],
      ["./inMemory.js", "InMemoryTransport"],
    ] as const
  ).map(([subpath, name]) => ({ pkg: "@modelcontextprotocol/sdk", subpath, exportNames: [name], instrument: instrumentMcpTransport, label: `@modelcontextprotocol/sdk ${name}` })),
  // node-postgres: statements are judged in Client#query (pg.ts). Its ES module build re-exports the same class.
  { pkg: "pg", subpath: ".", exportNames: ["Client"], instrument: instrumentPgClient },
  // postgres.js: statements are judged as its connection builds them (postgresjs.ts), on its Query class (query.js beside index.js).
  { pkg: "postgres", subpath: ".", exportNames: ["Query"], instrument: instrumentPostgresQuery, sibling: "query.js" },
];

/**
 * instrumentInstalledSdks finds the SDKs an application can load from the
 * given directories and patches both their CommonJS and ES module builds.
 * Returns what was patched, e.g. ["openai (cjs)", "openai (esm)"].
 */
export function instrumentInstalledSdks(dirs: string[], warn: (err: unknown) => void): string[] {
  const done: string[] = [];
  const seen = new Set<string>();
  for (const dir of withWrappers(dirs)) {
    const req = createRequire(join(resolve(dir), "noop.js"));
    for (const spec of SDKS) {
      const specifier = spec.subpath === "." ? spec.pkg : `${spec.pkg}/${spec.subpath.slice(2)}`;
      let cjsPath: string;
      try {
        cjsPath = req.resolve(specifier);
      } catch {
        continue; // not installed there
      }
      const esmEntryPath = esmEntry(cjsPath, spec);
      const beside = (f: string | undefined) => (f === undefined || spec.sibling === undefined ? f : join(dirname(f), spec.sibling));
      const esmPath = beside(esmEntryPath);
      for (const [flavor, file] of [["cjs", beside(cjsPath)], ["esm", esmPath]] as const) {
        if (file === undefined || seen.has(file)) continue;
        seen.add(file);
        try {
          const mod = req(file) as Record<string, unknown>;
          for (const name of spec.exportNames) {
            const cls = mod[name] as { prototype?: object } | undefined;
            if (typeof cls === "function" && (cls as { prototype?: object }).prototype && spec.instrument(cls as { prototype: object })) {
              done.push(`${spec.label ?? spec.pkg} (${flavor})`);
              break;
            }
          }
        } catch (err) {
          warn(new Error(`meshguard guard: could not instrument ${spec.pkg} (${flavor}) at ${file}: ${(err as Error).message}`));
        }
      }
    }
  }
  return done;
}

/**
 * Packages that carry an LLM SDK client inside them: the copy they load may
 * be their own nested install (another major than the app's), so the SDKs
 * are also looked up from where each of these is installed.
 */
const WRAPPERS = ["@langchain/openai", "@langchain/anthropic"];

/** withWrappers adds to the search directories the directory of each wrapper package installed there. */
function withWrappers(dirs: string[]): string[] {
  const out = [...dirs];
  for (const dir of dirs) {
    const req = createRequire(join(resolve(dir), "noop.js"));
    for (const w of WRAPPERS) {
      try {
        out.push(dirname(req.resolve(w)));
      } catch {
        // not installed there
      }
    }
  }
  return [...new Set(out)];
}

/** esmEntry finds the ES module file of a package subpath from its package.json `exports` (the "import" condition). */
function esmEntry(cjsPath: string, spec: SdkSpec): string | undefined {
  for (let d = dirname(cjsPath); d !== dirname(d); d = dirname(d)) {
    let pj: { name?: string; exports?: unknown };
    try {
      pj = JSON.parse(readFileSync(join(d, "package.json"), "utf8")) as typeof pj;
    } catch {
      continue;
    }
    if (pj.name !== spec.pkg) continue;
    const rel = pickImport(pj.exports, spec.subpath);
    return rel === undefined ? undefined : join(d, rel);
  }
  return undefined;
}

function pickImport(exportsField: unknown, subpath: string): string | undefined {
  if (!exportsField || typeof exportsField !== "object") return undefined;
  let map = exportsField as Record<string, unknown>;
  // Conditions only ({ import, default }): they are the "." entry.
  if (!Object.keys(map).some((k) => k.startsWith("."))) map = { ".": map };
  let entry = map[subpath];
  let star: string | undefined;
  if (entry === undefined) {
    for (const [k, v] of Object.entries(map)) {
      const i = k.indexOf("*");
      if (i < 0) continue;
      const pre = k.slice(0, i);
      const post = k.slice(i + 1);
      if (subpath.startsWith(pre) && subpath.endsWith(post) && subpath.length >= pre.length + post.length) {
        entry = v;
        star = subpath.slice(pre.length, subpath.length - post.length);
        break;
      }
    }
  }
  const pick = (e: unknown): string | undefined => {
    if (typeof e === "string") return e;
    if (e && typeof e === "object") {
      const o = e as Record<string, unknown>;
      return pick(o.import ?? o.node ?? o.default);
    }
    return undefined;
  };
  const target = pick(entry);
  if (target === undefined) return undefined;
  return star === undefined ? target : target.replace("*", star);
}
