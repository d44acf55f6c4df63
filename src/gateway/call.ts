/**
 * One LLM call through the gateway, in order:
 *
 *   facts (body, path) → route by model → policy (the guard's engine and
 *   `llm` rules; approve holds for an approver) → quota reservation → pre
 *   hooks → upstream (provider key in, client key out) → the answer (whole,
 *   or streamed chunk by chunk) → post hooks (whole answers) → settle the
 *   reservation, log, usage event.
 *
 * Every path out of here goes through `finish` exactly once (./record.ts),
 * so a request is never charged twice nor left unrecorded.
 */

import type { IncomingMessage, ServerResponse } from "node:http";
import { decideCall, type Decided } from "./approve.js";
import type { Decision, LlmTarget } from "../policy/types.js";
import type { GatewayContext } from "./context.js";
import { bodyFacts, clientSessionId, producesOutput, requestParams, type BodyFacts, type Endpoint } from "./facts.js";
import { clientHeaders, readCallBody, REQUEST_ID, sendError, TOO_LARGE } from "./http-util.js";
import type { Route } from "./providers.js";
import { finish, newCallState, type CallState } from "./record.js";
import { forward } from "./upstream.js";
import { estimateTokens } from "./usage.js";
import type { Caller, CallFacts, Usage } from "./types.js";

/** Reserving for a model whose maximum output is unknown and that the request does not bound. */
const DEFAULT_MAX_OUTPUT = 4096;

/** Settling a reservation a call gave back before it went upstream: nothing was spent. */
const NO_USAGE: Usage = Object.freeze({ inputTokens: 0, outputTokens: 0, estimated: false }) as Usage;

/** Fail answers the client with an error in the API's format and records why. */
type Fail = (kind: Parameters<typeof sendError>[2], outcome: CallState["outcome"], message: string, opts?: Parameters<typeof sendError>[4]) => void;

export async function handleCall(ctx: GatewayContext, req: IncomingMessage, res: ServerResponse, ep: Endpoint, caller: Caller, t0: number, path: string, query: string): Promise<void> {
  const st = newCallState(ctx, caller, ep, t0);
  // From the start: a client may leave while its body is read, an approval is pending or a hook
  // runs. Node keeps a half-closed connection open for the answer, so the client's FIN (socket
  // "end") counts as leaving too: no LLM client half-closes and still waits for its answer.
  const gone = () => {
    if (!res.writableFinished) st.abort.abort();
  };
  const socket = req.socket;
  res.once("close", gone);
  socket.once("end", gone);
  try {
    await run(ctx, st, req, res, ep, caller, path, query);
  } catch (err) {
    // A bug, not a client or upstream problem: answer 500 and record it.
    ctx.warn(err);
    st.outcome = "bad_request";
    st.reason = `internal error: ${(err as Error)?.message ?? String(err)}`;
    if (!res.headersSent) st.status = sendError(res, ep.format, "internal", "the gateway failed to handle the request");
    else res.destroy();
  } finally {
    socket.off("end", gone);
    finish(ctx, st);
  }
}

async function run(ctx: GatewayContext, st: CallState, req: IncomingMessage, res: ServerResponse, ep: Endpoint, caller: Caller, path: string, query: string): Promise<void> {
  const format = ep.format;
  const fail: Fail = (kind, outcome, message, opts) => {
    st.outcome = outcome;
    st.reason = message;
    st.status = sendError(res, format, kind, message, { ...opts, headers: { ...opts?.headers, [REQUEST_ID]: st.id } });
  };

  // 1. The body, bounded.
  const raw = await readCallBody(req, st, ctx.cfg.maxBodyBytes);
  if (raw === undefined) return;
  if (raw === TOO_LARGE) {
    res.shouldKeepAlive = false; // the rest of the body is not read
    return fail("too_large", "bad_request", `the request body is larger than the gateway's limit of ${ctx.cfg.maxBodyBytes} bytes`, { headers: { connection: "close" } });
  }
  st.requestBytes = raw.length;
  let body: Record<string, unknown>;
  try {
    const parsed: unknown = JSON.parse(raw.toString("utf8"));
    if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) return fail("bad_request", "bad_request", "the request body must be a JSON object");
    body = parsed as Record<string, unknown>;
  } catch (err) {
    return fail("bad_request", "bad_request", `the request body is not valid JSON: ${(err as Error).message}`);
  }
  st.requestBody = raw;

  // 2-4. Facts, route, policy, quota.
  let bf = bodyFacts(ep, body);
  let admitted = await admit(ctx, st, req, ep, caller, bf, raw.length, fail, "", undefined);
  if (admitted === undefined) return;
  let { route, facts } = admitted;

  // 5. Pre-request hooks may block or rewrite the body.
  let mutated = route.prefixed && format !== "gemini";
  if (route.prefixed && format !== "gemini") body.model = route.model;
  const headers = clientHeaders(req);
  if (ctx.hooks?.hasPre) {
    const r = await ctx.hooks.pre({ id: st.id, caller: { node: caller.node, user: caller.user, tags: caller.tags, role: caller.role }, facts, headers, body });
    if (r.action === "block") return fail("blocked", "blocked", `blocked by hook ${r.hook}: ${r.message}`, { status: r.status });
    if (r.action === "modify") {
      if (r.body === null || typeof r.body !== "object" || Array.isArray(r.body)) return fail("internal", "blocked", "a pre-request hook returned a body that is not a JSON object");
      const sentModel = ep.pathModel ?? body.model;
      body = r.body as Record<string, unknown>;
      mutated = true;
      st.hookModified = true;
      // A hook never widens what policy allowed: a request whose model, max tokens or
      // size-bound facts a hook changed is routed, decided and reserved again as if the
      // client had sent it so (the first reservation is given back first).
      const nb = bodyFacts(ep, body);
      if (nb.model !== sentModel || nb.maxTokens !== bf.maxTokens || nb.stream !== bf.stream || nb.inputTokens !== bf.inputTokens) {
        if (st.reservation !== undefined && ctx.quotas !== undefined) {
          const held = st.reservation;
          st.reservation = undefined;
          await ctx.quotas.settle(held, NO_USAGE, 0);
        }
        bf = nb;
        admitted = await admit(ctx, st, req, ep, caller, nb, Buffer.byteLength(JSON.stringify(body)), fail, "after a pre-request hook changed the request: ", admitted.decided);
        if (admitted === undefined) return;
        ({ route, facts } = admitted);
        if (route.prefixed && format !== "gemini") body.model = route.model;
      }
    }
  }
  st.requestHeaders = headers;
  // The generation settings are read only for spans, which report them (from the body as it goes upstream).
  if (ctx.cfg.telemetry?.traces === true) facts.params = requestParams(ep, body);

  // 6. Upstream.
  const upstreamPath = route.prefixed && format === "gemini" ? path.replace(/\/models\/.+:/, `/models/${route.model}:`) : path;
  await forward(ctx, st, req, res, route, facts, body, mutated ? undefined : raw, upstreamPath, query);
}

/**
 * admit routes a request by its facts, asks the policy and reserves quota
 * (steps 2 to 4). It answers the client and returns undefined when any of
 * them refuses; `why` prefixes the reason (a re-check after a hook), and
 * `before` is the first decision of a call decided again.
 */
async function admit(
  ctx: GatewayContext,
  st: CallState,
  req: IncomingMessage,
  ep: Endpoint,
  caller: Caller,
  bf: BodyFacts,
  bodyBytes: number,
  fail: Fail,
  why: string,
  before: Decided | undefined,
): Promise<{ route: Route; facts: CallFacts; decided: Decided } | undefined> {
  const format = ep.format;
  if (bf.model === undefined || bf.model === "") return void fail("bad_request", "bad_request", `${why}the request names no model (a string "model" field)`);
  st.model = bf.model;
  st.stream = bf.stream;
  const route = ctx.router.route(format, bf.model);
  if (route === undefined) return void fail("not_found", "bad_request", `${why}the model ${JSON.stringify(bf.model)} is not served by this gateway for the ${format} API`);
  const facts: CallFacts = { operation: ep.operation, format, provider: route.provider.name, model: route.model, stream: bf.stream };
  if (bf.maxTokens !== undefined) facts.maxTokens = bf.maxTokens;
  const sid = clientSessionId(req.headers);
  if (sid !== undefined) facts.clientSessionId = sid;
  st.facts = facts;

  // 3. Policy.
  const { d, decided } = await decide(ctx, caller, route, facts, before);
  st.ruleId = d.ruleId;
  if (d.effect !== "allow") return void fail("denied", "denied", `${why}denied by policy: ${d.reason}`);

  // 4. Quota: the most this call can cost is held before it goes upstream.
  const price = ctx.prices.priceOf(route.provider.name, route.model, route.provider.prices);
  st.price = price;
  if (ctx.quotas !== undefined) {
    // What produces no output (embeddings, token counts) reserves its input alone.
    const maxOut = producesOutput(ep.operation) ? (facts.maxTokens ?? ctx.prices.maxOutputTokensOf(route.provider.name, route.model) ?? DEFAULT_MAX_OUTPUT) : 0;
    const v = await ctx.quotas.reserve(caller, facts, { inputTokens: bf.inputTokens ?? estimateTokens(bodyBytes), maxOutputTokens: maxOut }, price);
    if (!v.ok && v.permanent === true) return void fail("denied", "quota", `${why}quota: ${v.reason}`);
    if (!v.ok) return void fail("quota", "quota", `${why}quota exhausted (${v.bucket}): ${v.reason}`, { headers: { "retry-after": String(Math.max(1, Math.ceil(v.retryAfterS))) } });
    st.reservation = v.reservation;
  }
  return { route, facts, decided: decided! };
}

/** decide asks the policy about the LLM target of a routed call (./approve.ts decideCall). */
function decide(ctx: GatewayContext, caller: Caller, route: Route, facts: CallFacts, before: Decided | undefined): Promise<{ d: Decision; decided?: Decided }> {
  const target: LlmTarget = { kind: "llm", provider: route.provider.name, model: route.model };
  if (facts.maxTokens !== undefined) target.maxTokens = facts.maxTokens;
  return decideCall(ctx.policy(), ctx.approvals, caller.principal, target, before);
}
