// Sessions: requests of one caller grouped by the client's session id or by
// idle gaps; each links to its requests in the logs.
import { html } from "../lib/html.js";
import { int, time, usd } from "../lib/format.js";
import { href } from "../lib/route.js";
import { Loading, Problem, useApi } from "../lib/ui.js";
import { Filters } from "./logs.js";

const KEYS = ["user", "node", "model", "since", "until"];

export function SessionsPage({ query, me }) {
  const q = { ...Object.fromEntries(KEYS.map((k) => [k, query[k]])), limit: 200 };
  const { data, error, loading } = useApi("/sessions", q, JSON.stringify(q));
  return html`<section>
    <h1>Sessions</h1>
    <p class="muted">Requests of one caller sharing a client session id (Claude Code's, …), or else until the caller was idle for the gateway's idle gap. Most recently active first.</p>
    <${Filters} page="sessions" query=${query} admin=${me.role === "admin"} keys=${KEYS} />
    ${error ? html`<${Problem} error=${error} what="the sessions" />` : loading && !data ? html`<${Loading} />` : html`
      <table class="list" data-testid="sessions">
        <thead><tr><th>Last active</th><th>First</th><th>User</th><th>Agent</th><th class="num">Requests</th><th class="num">Tokens in / out</th><th class="num">Cost</th><th>Session</th></tr></thead>
        <tbody>
          ${data.sessions.length === 0 ? html`<tr><td colspan="8" class="muted">No sessions match.</td></tr>` : null}
          ${data.sessions.map((s) => html`<tr key=${s.id}>
            <td>${time(s.lastTime)}</td><td>${time(s.firstTime)}</td><td>${s.user}</td><td>${s.node}</td>
            <td class="num">${int(s.requests)}</td><td class="num">${int(s.inputTokens)} / ${int(s.outputTokens)}</td><td class="num">${usd(s.costUsd)}</td>
            <td><a href=${href("logs", { session: s.id })} title=${s.id}>${s.id.slice(0, 18)}${s.id.length > 18 ? "…" : ""}</a></td>
          </tr>`)}
        </tbody>
      </table>`}
  </section>`;
}
