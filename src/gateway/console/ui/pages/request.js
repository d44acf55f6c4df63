// One request in detail: who, what, outcome, usage, timings, the request's
// headers (the gateway never stores credentials) and both bodies. A
// streamed answer is stored as the text the client received (server-sent
// events, or Gemini's JSON array); its text is also shown assembled.
import { html } from "../lib/html.js";
import { int, ms, pretty, time, usd } from "../lib/format.js";
import { href } from "../lib/route.js";
import { deltas } from "../lib/stream.js";
import { Code, Loading, Problem, useApi } from "../lib/ui.js";

/** assemble returns the text a streamed answer carried, or undefined when none can be read from it. */
export function assemble(body) {
  const events = [];
  if (/^\s*\[/.test(body)) {
    try {
      events.push(...JSON.parse(body));
    } catch {
      // a cut stream: nothing to assemble
    }
  } else {
    for (const line of body.split("\n")) {
      if (!line.startsWith("data:")) continue;
      try {
        events.push(JSON.parse(line.slice(5)));
      } catch {
        // [DONE] and the like
      }
    }
  }
  const text = events.flatMap(deltas).join("");
  return text === "" ? undefined : text;
}

export function RequestPage({ id }) {
  const { data, error, loading } = useApi(`/logs/${encodeURIComponent(id)}`, undefined, id);
  if (error) return html`<${Problem} error=${error} what="this request" />`;
  if (loading || !data) return html`<${Loading} />`;
  const r = data.record;
  const row = (k, v) => (v === undefined || v === "" ? null : html`<tr><th>${k}</th><td>${v}</td></tr>`);
  const text = r.stream && r.responseBody ? assemble(r.responseBody) : undefined;
  return html`<section data-testid="request">
    <p><a href=${href("logs")}>← Logs</a></p>
    <h1>Request <code>${r.id}</code></h1>
    <div class="grid2">
      <table class="facts">
        ${row("Time", time(r.time))}
        ${row("User", r.caller.user)}
        ${row("Agent (node)", r.caller.node)}
        ${row("Tags", r.caller.tags.join(", "))}
        ${row("From", `${r.caller.addr} (${r.caller.via})`)}
        ${row("Session", html`<a href=${href("logs", { session: r.sessionId })}>${r.sessionId}</a>`)}
      </table>
      <table class="facts">
        ${row("API", r.operation)}
        ${row("Provider / model", `${r.provider} / ${r.model}`)}
        ${row("Streamed", r.stream ? "yes" : "no")}
        ${row("Outcome", `${r.status} ${r.outcome}`)}
        ${row("Answered by", r.response?.model)}
        ${row("Finish reason", r.response?.finishReasons?.join(", "))}
        ${row("Upstream's id", r.response?.id)}
        ${row("Why", r.reason)}
        ${row("Rule", r.ruleId)}
        ${row("Tokens", r.usage ? `${int(r.usage.inputTokens)} in, ${int(r.usage.outputTokens)} out${r.usage.cacheReadTokens ? `, ${int(r.usage.cacheReadTokens)} cache read` : ""}${r.usage.cacheWriteTokens ? `, ${int(r.usage.cacheWriteTokens)} cache write` : ""}${r.usage.estimated ? " (estimated)" : ""}` : undefined)}
        ${row("Cost", usd(r.costUsd))}
        ${row("Gateway overhead", ms(r.overheadMs))}
        ${row("Time to first token", r.ttftMs === undefined ? undefined : ms(r.ttftMs))}
        ${row("Duration", ms(r.durationMs))}
      </table>
    </div>
    ${r.requestHeaders ? html`<h2>Request headers</h2><p class="muted">Credentials (Authorization, x-api-key, …) are never stored.</p>
      <table class="facts headers">${Object.entries(r.requestHeaders).map(([k, v]) => html`<tr><th>${k}</th><td>${v}</td></tr>`)}</table>` : null}
    ${r.requestBody === undefined && r.responseBody === undefined ? html`<p class="muted">No bodies: the gateway's retention keeps metadata only.</p>` : null}
    ${r.requestBody !== undefined ? html`<h2>Request body</h2><${Code} text=${pretty(r.requestBody)} />` : null}
    ${text !== undefined ? html`<h2>Answer (assembled from the stream)</h2><div class="answer" data-testid="assembled">${text}</div>` : null}
    ${r.responseBody !== undefined ? html`<h2>Response body${r.stream ? " (as streamed)" : ""}</h2><${Code} text=${r.stream ? r.responseBody : pretty(r.responseBody)} />` : null}
  </section>`;
}
