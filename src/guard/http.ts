/**
 * The HTTP layer of node:http / node:https: `ClientRequest.prototype.onSocket`.
 * Every ClientRequest — `http.request`, `https.request`, `get`, any Agent
 * (custom, keep-alive, the ones axios and got use), `createConnection` —
 * receives its socket through it, synchronously for a new connection and
 * for a reused keep-alive one, before a byte of the request is written.
 *
 * The request is judged here as an HTTP target: method, path, query and
 * headers from the request; host and scheme from the request's own options
 * (the URL the caller asked for — never the Host header, which the caller
 * may set to anything). The verdict is attached to the socket so that the
 * connect-time check (net.ts) holds or refuses the connection itself.
 */

import http from "node:http";
import net from "node:net";
import type { Target } from "../policy/types.js";
import { PolicyDeniedError } from "./errors.js";
import { kInternal } from "./internal.js";
import { kDest, kHttp, type HttpAttachment, type SocketDest } from "./net.js";
import { current } from "./state.js";
import { defaultPort, headerRecord, httpTarget, llmProviderFor, splitPathQuery } from "./targets.js";
import { normalizeHost } from "../policy/hosts.js";

type OnSocket = (this: http.ClientRequest, socket: net.Socket, err?: Error) => void;
type Req = http.ClientRequest & { agent?: { defaultPort?: number; protocol?: string } | false };

let original: OnSocket | undefined;

export function installHttpPatch(): void {
  if (original) return;
  const proto = http.ClientRequest.prototype as unknown as { onSocket: OnSocket };
  original = proto.onSocket;
  proto.onSocket = guardedOnSocket;
}

export function uninstallHttpPatch(): void {
  if (!original) return;
  (http.ClientRequest.prototype as unknown as { onSocket: OnSocket }).onSocket = original;
  original = undefined;
}

function guardedOnSocket(this: Req, socket: net.Socket, err?: Error): void {
  const orig = original!;
  const core = current();
  const s = socket as net.Socket & Record<symbol, unknown>;
  if (core === undefined || err || !socket || s[kInternal] === true) return orig.call(this, socket, err);

  const scheme = (this.protocol === "https:" ? "https" : "http") as "http" | "https";
  const host = normalizeHost(this.host || "localhost");
  const dest = s[kDest] as SocketDest | undefined;
  const headers = headerRecord(this.getHeaders());
  const port = dest !== undefined && dest.host === host ? dest.port : portFromHost(headers.host, scheme);
  const cl = headers["content-length"];
  const bodySize = cl !== undefined && /^\d+$/.test(cl) ? Number(cl) : undefined;
  const t = httpTarget({ scheme, host, port, method: this.method, rawPath: this.path, headers, ...(bodySize !== undefined ? { bodySize } : {}) });

  let verdict = core.check(t, "http");
  // An LLM call needs its body to name the model; node:http streams the body
  // after this point, so a model rule cannot be checked: fail closed.
  const [path] = splitPathQuery(this.path);
  const provider = llmProviderFor(core.llmProviders, host, port, t.method, path);
  if (verdict === undefined && provider !== undefined && core.mode === "enforce") {
    const llm: Target = { kind: "llm", provider, model: "(unknown: body not readable with node:http)" };
    verdict = new PolicyDeniedError(llm, "an LLM API call made with node:http cannot be checked (the model is in the streamed body); use fetch or the provider's SDK");
    core.warn(verdict);
  }
  const att: HttpAttachment = { host, port, verdict };
  s[kHttp] = att;
  if (verdict === undefined) return orig.call(this, socket);
  if (verdict instanceof PolicyDeniedError) return orig.call(this, socket, verdict);
  verdict.then(
    () => orig.call(this, socket),
    (e: unknown) => {
      att.verdict = e as PolicyDeniedError;
      orig.call(this, socket, e as Error);
    },
  );
}

function portFromHost(hostHeader: string | undefined, scheme: string): number {
  const m = hostHeader ? /:(\d+)$/.exec(hostHeader) : null;
  return m ? Number(m[1]) : defaultPort(scheme);
}
